"""On-disk caches: only what this machine can compute again, keyed so that a
stale entry is never used.

Every key includes ``fingerprint()``, a digest of the package's own source and
schemas, so an upgrade (or an edit of a checkout) starts from an empty cache.
Reads and writes are best effort: a cache that cannot be read or written only
makes a run slower, never different. Entries are private to the user (0600 in
0700 folders); nothing holding a secret's value is ever written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from reconciler import __version__

_log = logging.getLogger(__name__)

CACHE_ENV = "VIRT_RECONCILE_CACHE_DIR"


def cache_dir() -> str:
    """``$VIRT_RECONCILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/virt-reconcile``
    (``~/.cache/virt-reconcile``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "virt-reconcile")


@functools.cache
def fingerprint() -> str:
    """A digest of this version's code and schemas (read once per process)."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".json") and path.is_file():
            digest.update(f"{path.relative_to(package)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def entry(namespace: str, *parts: bytes) -> str:
    """The file of the entry keyed by ``parts`` (and the code's fingerprint)."""
    digest = hashlib.sha256(fingerprint().encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    hexed = digest.hexdigest()
    return os.path.join(cache_dir(), namespace, hexed[:2], hexed[2:])


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write(path: str, data: bytes) -> None:
    """Atomic (a reader sees the old entry or the new one) and best effort."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        _log.debug("cache entry not written (%s): %s", path, e)


class Store:
    """Many small entries in one file: a whole run's worth read and written at once.

    A no-op plan asks thousands of questions of the cache (one per object); one
    file per answer costs an open and a read each, which is most of the answer.
    A store is one JSON object ``{key: value}`` under ``entry(namespace, *parts)``:
    read once (``open``), looked up in memory, and written back once (``save``)
    only when this run added an entry. Entries this run did not use stay (a
    narrowed run must not empty it for the next full one) until they outnumber
    the used ones twice over (plus ``_SLACK``): then they go, so a store never
    grows without bound.
    Keys are digests the caller makes of every input of the value; a store that
    cannot be read or parsed is an empty one, one that cannot be written is
    only slower next time.
    """

    __slots__ = ("_added", "_entries", "_path", "_used")

    def __init__(self, path: str, entries: dict[str, str]) -> None:
        self._path = path
        # Each value as its JSON text: what ``get`` gives is the caller's to change.
        self._entries = entries
        self._used: set[str] = set()
        self._added = False

    @classmethod
    def open(cls, namespace: str, *parts: bytes) -> Store:
        path = entry(namespace, *parts)
        raw = read(path)
        entries: dict[str, str] = {}
        if raw is not None:
            try:
                loaded = json.loads(raw)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                entries = {k: v for k, v in loaded.items() if isinstance(v, str)}
        return cls(path, entries)

    @classmethod
    def memory(cls) -> Store:
        """A store that is never saved (``save`` writes nothing)."""
        return cls("", {})

    def get(self, key: str) -> object | None:
        """The value of ``key`` (a fresh copy), or None."""
        text = self._entries.get(key)
        if text is None:
            return None
        if text == "true":  # a cached verdict: no JSON parse (thousands per plan)
            self._used.add(key)
            return True
        try:
            value: object = json.loads(text)
        except ValueError:
            return None
        self._used.add(key)
        return value

    def put(self, key: str, value: object) -> None:
        """Remember ``value`` (JSON data, not None) for ``key``."""
        text = json.dumps(value, separators=(",", ":"))
        if self._entries.get(key) != text:
            self._entries[key] = text
            self._added = True
        self._used.add(key)

    def save(self, *, unused: int | None = None, narrowed: bool = False) -> None:
        """Write the store if this run added to it; ``unused``: keep at most that
        many of the entries this run did not use (the latest added). A
        ``narrowed`` run (some objects of many) drops none: it used few, and the
        next whole run needs the others."""
        if not self._added or not self._path:
            return
        kept = self._entries
        if narrowed:
            pass
        elif unused is not None:
            old = [k for k in kept if k not in self._used]
            drop = set(old[: max(0, len(old) - unused)])
            kept = {k: v for k, v in kept.items() if k not in drop}
        elif len(kept) > 3 * len(self._used) + _SLACK:
            kept = {k: v for k, v in kept.items() if k in self._used}
        write(self._path, json.dumps(kept, separators=(",", ":")).encode())
        self._entries, self._added = kept, False


_SLACK = 1024


def digest(*parts: str | bytes) -> str:
    """A key for ``Store``: the sha256 of ``parts``, each length-prefixed."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()
