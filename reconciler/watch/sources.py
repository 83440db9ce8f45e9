"""watch: where the manifests come from — a folder on disk or a git repository.

Each source calls ``notify`` when the manifests may have changed and gives
the worker a ``Snapshot`` of paths to read; a git source never hands out a
checkout that is still being written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler import errors, manifests
from reconciler.uris import redact_uri
from reconciler.watch.workqueue import Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Where to read the manifests now: paths, and the git revision they are at."""

    paths: tuple[str, ...]
    revision: str | None = None
    root: str | None = None  # shown relative to this in messages (a git checkout)

    def display(self, text: str) -> str:
        return text.replace(self.root.rstrip("/") + "/", "") if self.root else text


class Notify(Protocol):
    """How a source marks work: why, a text for the log, and what changed when it
    knows (``path``): a manifest file (a scoped pass may read only that file), or
    a new git checkout (a scoped pass compares its objects with those applied)."""

    def __call__(self, reason: Reason, cause: str = "", *, path: str | None = None) -> None: ...


class Source(Protocol):
    """A manifest source: announces possible changes, hands out snapshots to read."""

    def start(self, notify: Notify) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> Snapshot | None: ...

    def poll_now(self) -> None: ...

    def keep(self, revision: str | None) -> None: ...

    def describe(self) -> str: ...


class FolderSource:
    """Manifest files and folders on disk, watched with watchdog (inotify on Linux)."""

    def __init__(self, paths: Sequence[str], extra_files: Sequence[str] = ()) -> None:
        self.paths = tuple(paths)
        self._files = {str(Path(p).resolve()) for p in (*paths, *extra_files) if Path(p).is_file()}
        self._observer: Any = None
        self._notify: Notify | None = None

    def describe(self) -> str:
        return ", ".join(self.paths)

    def start(self, notify: Notify) -> None:
        self._notify = notify
        observer = Observer()
        handler = _ManifestEvents(notify, self._files)
        folders = {str(Path(p).resolve()) for p in self.paths if Path(p).is_dir()}
        for d in folders:
            observer.schedule(handler, d, recursive=True)
        for f in self._files:
            parent = str(Path(f).parent)
            if not any(parent == d or parent.startswith(d + "/") for d in folders):
                observer.schedule(handler, parent, recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)

    def snapshot(self) -> Snapshot:
        return Snapshot(paths=self.paths)

    def poll_now(self) -> None:
        if self._notify is not None:
            self._notify(Reason.RELOAD, "reload")

    def keep(self, revision: str | None) -> None:
        """Files on disk have no revisions to keep."""


_CHANGES = ("created", "modified", "deleted", "moved")


class _ManifestEvents(FileSystemEventHandler):
    """Passes on changes to manifest files, each named (editors' swap files are
    ignored); a change to a folder itself names no file."""

    def __init__(self, notify: Notify, files: set[str]) -> None:
        self._notify = notify
        self._files = files

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [_text(event.src_path), _text(getattr(event, "dest_path", ""))]
        cause = f"{event.event_type} {paths[1] or paths[0]}"
        if event.is_directory:
            if event.event_type != "modified":
                self._notify(Reason.FILE, cause)
            return
        for p in paths:
            if p and (p.endswith(manifests.MANIFEST_SUFFIXES) or p in self._files):
                self._notify(Reason.FILE, cause, path=p)


def _text(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path


class GitError(errors.ReconcileError):
    """A git command failed (fetch, archive)."""


class GitSource:
    """A git repository polled every ``interval``; each revision is checked out once.

    A bare cache repository under ``cache_dir`` is fetched from ``url``; each
    new revision of ``ref`` is extracted (``git archive``) into its own folder,
    so the previous checkout stays intact while a new one is read. A failed
    fetch keeps the last checkout: a source that cannot be read is never
    mistaken for an empty one.
    """

    def __init__(
        self,
        url: str,
        *,
        ref: str = "main",
        subpaths: Sequence[str] = (),
        cache_dir: Path,
        interval: float = 30.0,
    ) -> None:
        for what, value in (("URL", url), ("--ref", ref)):
            if not value or value.startswith("-"):
                # git would read it as an option (--upload-pack=... runs a command).
                raise GitError(f"git {what} {value!r}: must not be empty or start with '-'")
        self.url = url
        self.ref = ref
        self.subpaths = tuple(subpaths)
        self.interval = interval
        self.cache = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16]
        self._repo = self.cache / "repo.git"
        self._lock = threading.Lock()
        self._current: str | None = None
        self._kept: str | None = None
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify: Notify | None = None
        self.last_error: str | None = None

    def describe(self) -> str:
        return f"{redact_uri(self.url)}@{self.ref}"

    def start(self, notify: Notify) -> None:
        self._notify = notify
        self._thread = threading.Thread(target=self._loop, name="git-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(30)

    def poll_now(self) -> None:
        self._poke.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poke.clear()
            self.poll()
            self._poke.wait(self.interval)

    def poll(self) -> bool:
        """Fetch; True when ``ref`` moved to a new revision (checked out and announced)."""
        try:
            sha = self._fetch()
            with self._lock:
                if sha == self._current:
                    self.last_error = None
                    return False
            self._checkout(sha)
        except GitError as e:
            self.last_error = str(e)
            kept = f"; keeping {self._current[:12]}" if self._current else ""
            log.warning("git: %s%s", e, kept)
            return False
        self.last_error = None
        with self._lock:
            previous, self._current = self._current, sha
        self._cleanup()
        log.info(
            "git: %s is at %s%s",
            self.describe(),
            sha[:12],
            f" (was {previous[:12]})" if previous else "",
        )
        if self._notify is not None:
            checkout = self.cache / "checkouts" / sha
            self._notify(Reason.GIT, f"git {sha[:12]}", path=str(checkout))
        return True

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            sha = self._current
        if sha is None:
            return None
        root = self.cache / "checkouts" / sha
        paths = tuple(str(root / p) for p in self.subpaths) or (str(root),)
        return Snapshot(paths=paths, revision=sha, root=str(root))

    def keep(self, revision: str | None) -> None:
        """The revision whose manifests are applied: its checkout is never removed."""
        with self._lock:
            self._kept = revision

    def _git(self, *args: str, timeout: float = 300) -> bytes:
        try:
            proc = subprocess.run(
                ["git", *args],
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GitError(f"git {args[0]}: {e}") from e
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            detail = redact_uri(lines[-1]) if lines else f"exit code {proc.returncode}"
            raise GitError(f"git {args[0]} {redact_uri(self.url)} {self.ref}: {detail}")
        return proc.stdout

    def _fetch(self) -> str:
        if not (self._repo / "HEAD").exists():
            self._repo.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet", "--bare", str(self._repo))
        self._git(
            "-C", str(self._repo), "fetch", "--quiet", "--no-tags", "--force", self.url, self.ref
        )
        out = self._git("-C", str(self._repo), "rev-parse", "--verify", "FETCH_HEAD^{commit}")
        return out.decode().strip()

    def _checkout(self, sha: str) -> None:
        dest = self.cache / "checkouts" / sha
        if dest.exists():
            return
        tmp = dest.with_name(sha + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        data = self._git("-C", str(self._repo), "archive", "--format=tar", sha)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(dest)

    def _cleanup(self) -> None:
        with self._lock:
            keep = {self._current, self._kept}
        checkouts = self.cache / "checkouts"
        for d in checkouts.iterdir() if checkouts.exists() else ():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
