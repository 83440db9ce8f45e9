"""Per-host run locks: two processes on this machine never change one host at once.

``apply`` (and ``watch``, for each pass) holds an exclusive ``flock`` on one
file per host from before it reads the host until after it has changed it, so
two runs cannot both plan against the same state and then interleave their
changes. ``plan`` and ``apply --dry-run`` change nothing and take no lock.

Scope: processes on the same machine that see the same lock directory. The
key is a hash of the host's URI with passwords removed, so two spellings of
one host (``qemu:///system`` and ``qemu+unix:///system``) are two locks, and
runs on other machines are not seen at all (see README "Safety").

The lock directory, first that applies: ``$VIRT_RECONCILE_LOCK_DIR``;
``/run/virt-reconcile`` for root; ``$XDG_RUNTIME_DIR/virt-reconcile``;
``/tmp/virt-reconcile-UID``. The kernel drops a ``flock`` when its process
exits, however it exits, so a crashed run never leaves a host locked; lock
files stay (removing them would race with a waiting process).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler import errors
from reconciler.model import Host
from reconciler.uris import redact_uri

LOCK_DIR_ENV = "VIRT_RECONCILE_LOCK_DIR"
_POLL = 0.1


class HostLocked(errors.ReconcileError):
    """Another process on this machine holds the lock of a host."""

    def __init__(self, host: Host, holder: str, path: Path, waited: float) -> None:
        self.host = host
        self.holder = holder
        waited_text = f"waited {waited:g}s; " if waited else ""
        super().__init__(
            f"host {host.name} ({redact_uri(host.uri)}) is locked by another virt-reconcile "
            f"run on this machine ({holder}); {waited_text}nothing was changed. Wait for it "
            f"to finish, or give --lock-timeout SECONDS to wait for it (lock file {path})"
        )


@dataclass(frozen=True, kw_only=True)
class Holder:
    """What the process holding a lock wrote into the lock file."""

    pid: int | None
    command: str = ""
    since: str = ""

    def __str__(self) -> str:
        if self.pid is None:
            return "holder pid unknown"
        extra = ", ".join(
            x for x in (self.command, f"since {self.since}" if self.since else "") if x
        )
        return f"pid {self.pid}" + (f", {extra}" if extra else "")


def lock_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    if os.geteuid() == 0:
        return Path("/run/virt-reconcile")
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "virt-reconcile"
    return Path(tempfile.gettempdir()) / f"virt-reconcile-{os.getuid()}"


def lock_path(uri: str, directory: Path) -> Path:
    """The lock file of a host: keyed by its URI without passwords."""
    digest = hashlib.sha256(redact_uri(uri).encode("utf-8")).hexdigest()[:32]
    return directory / f"host-{digest}.lock"


def read_holder(path: Path) -> Holder:
    try:
        fields = path.read_text(encoding="utf-8").split("\t")
    except OSError:
        return Holder(pid=None)
    try:
        pid = int(fields[0])
    except ValueError:
        return Holder(pid=None)
    return Holder(
        pid=pid,
        command=fields[1] if len(fields) > 1 else "",
        since=fields[2].strip() if len(fields) > 2 else "",
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _acquire(
    host: Host,
    path: Path,
    *,
    deadline: float,
    timeout: float,
    command: str,
    on_wait: Callable[[Host, Holder], None] | None,
) -> int:
    """Lock one host's file; returns the open descriptor that holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        told = False
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise HostLocked(host, str(read_holder(path)), path, timeout)
            if not told and on_wait is not None:
                on_wait(host, read_holder(path))
                told = True
            time.sleep(_POLL)
        since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\t{command}\t{since}\n".encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def hold(
    hosts: Sequence[Host],
    *,
    timeout: float = 0.0,
    command: str = "apply",
    directory: Path | None = None,
    on_wait: Callable[[Host, Holder], None] | None = None,
) -> Iterator[None]:
    """Hold the locks of ``hosts`` for the ``with`` block, waiting up to ``timeout`` s.

    Locks are taken in one global order (by lock file), so two runs over
    overlapping host sets cannot deadlock; if one is not free in time, those
    already taken are released and ``HostLocked`` names the host and holder.
    """
    directory = lock_dir() if directory is None else directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise errors.ReconcileError(
            f"cannot create the lock directory {directory}: {e.strerror or e}; "
            f"set {LOCK_DIR_ENV} to a writable directory"
        ) from e
    paths = sorted({lock_path(h.uri, directory): h for h in hosts}.items())
    deadline = time.monotonic() + max(0.0, timeout)
    fds: list[int] = []
    try:
        for path, host in paths:
            fds.append(
                _acquire(
                    host, path, deadline=deadline, timeout=timeout, command=command, on_wait=on_wait
                )
            )
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing the descriptor drops the flock
