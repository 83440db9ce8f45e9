"""The ``watch`` daemon: keep hosts matching the manifests, continuously.

Level-based, like controller-runtime: a trigger says only *that* (and, where
known, on which host) something may differ — never what to do.

    triggers ──mark──▶ WorkQueue ──debounced batch──▶ worker: one pass
    (file change, git poll, libvirt event,             load manifests (last good
     resync timer, SIGHUP, POST /-/reload,             on bad input) → Run:
     retry after backoff, reconnect)                   observe → plan → execute
                                                       → observe → converged?

The pass is the same ``reconcile.Run`` that ``apply`` uses; nothing here plans.
A failing host is retried with exponential backoff; a trigger that may bring
new desired state (file, git, reload) retries every host at once.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import http.server
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import prometheus_client
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler import errors, manifests, plan, report, status
from reconciler.execute import Result
from reconciler.hosts import HostEvent, Session, redact_uri
from reconciler.model import Host, ManifestSet
from reconciler.reconcile import Run, Target, residual, resolve_hosts

log = logging.getLogger(__name__)

Clock = Callable[[], float]
LockHook = Callable[[Sequence[Host]], AbstractContextManager[object]]


def no_lock(_hosts: Sequence[Host]) -> AbstractContextManager[object]:
    """The default lock hook: take nothing.

    ``Watcher(lock=...)`` takes a context manager factory over the hosts of a
    pass, held from reading the hosts to the check after executing; the
    per-host apply lock plugs in here (a ReconcileError from it fails the pass
    for those hosts, which are then retried with backoff).
    """
    return contextlib.nullcontext()


# --- triggers and the work queue (pure apart from a lock) -----------------------


class Reason(enum.StrEnum):
    """Why a pass runs. ``urgent`` ones may bring new desired state."""

    START = "start"
    FILE = "file"
    GIT = "git"
    RELOAD = "reload"
    EVENT = "event"
    RESYNC = "resync"
    RETRY = "retry"
    RECONNECT = "reconnect"

    @property
    def urgent(self) -> bool:
        return self in (Reason.START, Reason.FILE, Reason.GIT, Reason.RELOAD)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """What one pass covers: every host, or the named ones, and why."""

    all_hosts: bool
    hosts: frozenset[str]
    reasons: frozenset[Reason]
    causes: tuple[str, ...] = ()

    @property
    def urgent(self) -> bool:
        return any(r.urgent for r in self.reasons)

    def selects(self, host: str) -> bool:
        return self.all_hosts or host in self.hosts


def due_at(first: float, last: float, *, debounce: float, max_delay: float) -> float:
    """When a batch is due: ``debounce`` after the last mark, at most ``max_delay``
    after the first, so a steady stream of marks cannot postpone a pass forever."""
    return min(last + debounce, first + max_delay)


_ALL = "*"


class WorkQueue:
    """Marks from any thread, batches for the one worker.

    ``add`` marks a host (None: every host) as needing a pass; ``add_after``
    marks one later (a retry after backoff); ``get`` blocks until a batch is
    due and returns it, or None once ``close`` was called.
    """

    def __init__(
        self, *, debounce: float = 0.2, max_delay: float = 1.0, clock: Clock = time.monotonic
    ):
        self.debounce = debounce
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._all = False
        self._hosts: set[str] = set()
        self._reasons: set[Reason] = set()
        self._causes: dict[str, None] = {}
        self._first: float | None = None
        self._last = 0.0
        self._later: dict[str, tuple[float, Reason]] = {}
        self._closed = False
        self._in_flight = False

    def add(self, reason: Reason, host: str | None = None, cause: str = "") -> None:
        with self._cond:
            self._mark(reason, host, cause)
            self._cond.notify_all()

    def _mark(self, reason: Reason, host: str | None, cause: str) -> None:
        now = self._clock()
        if host is None:
            self._all = True
        else:
            self._hosts.add(host)
        self._reasons.add(reason)
        if len(self._causes) < 8:
            self._causes[cause or reason.value] = None
        if self._first is None:
            self._first = now
        self._last = now

    def add_after(self, host: str | None, delay: float, reason: Reason = Reason.RETRY) -> None:
        host = _ALL if host is None else host
        with self._cond:
            due = self._clock() + delay
            current = self._later.get(host)
            if current is None or due < current[0]:
                self._later[host] = (due, reason)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def busy(self) -> bool:
        """True while something is marked or a batch is being worked on."""
        with self._cond:
            return self._first is not None or self._in_flight

    def done(self) -> None:
        """The worker finished the batch ``get`` returned."""
        with self._cond:
            self._in_flight = False

    def next_due(self) -> float | None:
        """When ``get`` will next have a batch (None: nothing marked)."""
        with self._cond:
            return self._next_due()

    def _next_due(self) -> float | None:
        times = [due for due, _ in self._later.values()]
        if self._first is not None:
            times.append(
                due_at(self._first, self._last, debounce=self.debounce, max_delay=self.max_delay)
            )
        return min(times) if times else None

    def get(self, timeout: float | None = None) -> Batch | None:
        """The next due batch; None when closed or after ``timeout`` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                for host, (when, reason) in list(self._later.items()):
                    if when <= now:
                        del self._later[host]
                        self._mark(reason, None if host == _ALL else host, reason.value)
                due = self._next_due()
                if self._first is not None and due is not None and due <= now:
                    return self._take()
                wait = None if due is None else due - now
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                self._cond.wait(wait)
            return None

    def _take(self) -> Batch:
        batch = Batch(
            all_hosts=self._all,
            hosts=frozenset(self._hosts),
            reasons=frozenset(self._reasons),
            causes=tuple(self._causes),
        )
        self._in_flight = True
        self._all = False
        self._hosts.clear()
        self._reasons.clear()
        self._causes.clear()
        self._first = None
        return batch


@dataclass(kw_only=True)
class Backoff:
    """Exponential backoff per host: ``base``, times ``factor`` per failure, up to ``cap``."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def failed(self, host: str, now: float) -> float:
        """Record a failure; returns how long to wait before the next try."""
        n = self._failures.get(host, 0) + 1
        self._failures[host] = n
        delay = min(self.cap, self.base * self.factor ** (n - 1))
        self._until[host] = now + delay
        return delay

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)
        self._until.pop(host, None)

    def gated(self, host: str, now: float) -> bool:
        """True while ``host`` waits out its backoff."""
        return self._until.get(host, 0.0) > now

    def failures(self, host: str) -> int:
        return self._failures.get(host, 0)

    def reset(self) -> None:
        """New desired state: try every host again now (failure counts stay)."""
        self._until.clear()


# --- manifest sources -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Where to read the manifests now: paths, and the git revision they are at."""

    paths: tuple[str, ...]
    revision: str | None = None
    root: str | None = None  # shown relative to this in messages (a git checkout)

    def display(self, text: str) -> str:
        return text.replace(self.root.rstrip("/") + "/", "") if self.root else text


class Source(Protocol):
    def start(self, notify: Callable[[Reason, str], None]) -> None: ...

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
        self._notify: Callable[[Reason, str], None] | None = None

    def describe(self) -> str:
        return ", ".join(self.paths)

    def start(self, notify: Callable[[Reason, str], None]) -> None:
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
    """Passes on changes to manifest files (editors' swap files are ignored)."""

    def __init__(self, notify: Callable[[Reason, str], None], files: set[str]) -> None:
        self._notify = notify
        self._files = files

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [_text(event.src_path), _text(getattr(event, "dest_path", ""))]
        relevant = any(
            p.endswith(manifests.MANIFEST_SUFFIXES) or p in self._files for p in paths if p
        ) or (event.is_directory and event.event_type != "modified")
        if relevant:
            self._notify(Reason.FILE, f"{event.event_type} {paths[1] or paths[0]}")


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
        self._notify: Callable[[Reason, str], None] | None = None
        self.last_error: str | None = None

    def describe(self) -> str:
        return f"{redact_uri(self.url)}@{self.ref}"

    def start(self, notify: Callable[[Reason, str], None]) -> None:
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
            self._notify(Reason.GIT, f"git {sha[:12]}")
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


# --- metrics and the HTTP endpoint ------------------------------------------------


class Metrics:
    """Prometheus metrics of one watcher (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = r = prometheus_client.CollectorRegistry()
        counter, gauge = prometheus_client.Counter, prometheus_client.Gauge

        def labelled(cls: Any, name: str, doc: str, *labels: str) -> Any:
            return cls(f"virt_reconcile_{name}", doc, labels, registry=r)

        self.runs: prometheus_client.Counter = labelled(
            counter, "reconcile_runs", "Reconcile passes per host, by result", "host", "result"
        )
        self.duration = prometheus_client.Histogram(
            "virt_reconcile_reconcile_duration_seconds",
            "Duration of a reconcile pass",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.objects: prometheus_client.Gauge = labelled(
            gauge, "objects", "Objects the manifests name, by host and sync state", "host", "sync"
        )
        self.last_success: prometheus_client.Gauge = labelled(
            gauge, "last_success_timestamp_seconds", "When a host last converged", "host"
        )
        self.drift: prometheus_client.Counter = labelled(
            counter, "drift_corrections", "Changes behind our back, reverted", "host", "kind"
        )
        self.changes: prometheus_client.Counter = labelled(
            counter, "changes", "Changes applied, by host and action", "host", "action"
        )
        self.host_up: prometheus_client.Gauge = labelled(
            gauge, "host_up", "1 when the host was reachable in its last pass", "host"
        )
        self.triggers: prometheus_client.Counter = labelled(
            counter, "triggers", "Marks that asked for a pass, by reason", "reason"
        )
        self.manifests_valid: prometheus_client.Gauge = labelled(
            gauge, "manifests_valid", "1 when the latest manifests loaded without errors"
        )
        self.revision = prometheus_client.Info(
            "virt_reconcile_applied_revision", "Source and revision last applied", registry=r
        )

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9177``) -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9177)")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve_http(watcher: Watcher, address: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    """``GET /metrics``, ``GET /healthz`` and ``POST /-/reload`` (the git webhook)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "virt-reconcile"

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, watcher.metrics.render(), prometheus_client.CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                health = watcher.health()
                code = 200 if health["status"] == "ok" else 503
                self._send(code, json.dumps(health).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))  # a webhook's payload: not needed
            if self.path.split("?", 1)[0] == "/-/reload":
                watcher.reload()
                self._send(202, b"reload triggered\n")
            else:
                self._send(404, b"not found\n")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    server = http.server.ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


# --- the watcher --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config:
    """``virt-reconcile watch`` options."""

    paths: tuple[str, ...] = ()
    git_url: str | None = None
    git_ref: str = "main"
    interval: float = 30.0
    cache_dir: Path | None = None
    connect: str | None = None
    hosts: tuple[str, ...] = ()
    hosts_override: str | None = None
    prune: bool = False
    resync: float = 300.0
    metrics_addr: str | None = "127.0.0.1:9177"
    debounce: float = 0.2
    max_delay: float = 1.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0


@dataclass(frozen=True, kw_only=True)
class Desired:
    """A manifest set that loaded without errors, and where it came from."""

    manifests: ManifestSet
    overrides: Mapping[str, str] | None
    snapshot: Snapshot
    digest: str


@dataclass(frozen=True, kw_only=True)
class HostOutcome:
    """How one host's pass ended: ``ok``, ``failed``, ``unreachable`` or ``not-converged``."""

    host: str
    result: str
    changes: int = 0
    errors: tuple[str, ...] = ()


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "virt-reconcile" / "git"


def make_source(config: Config) -> Source:
    if config.git_url:
        return GitSource(
            config.git_url,
            ref=config.git_ref,
            subpaths=config.paths,
            cache_dir=config.cache_dir or default_cache_dir(),
            interval=config.interval,
        )
    extra = (config.hosts_override,) if config.hosts_override else ()
    return FolderSource(config.paths, extra)


class Watcher:
    """The daemon: sources and libvirt events mark work; one worker thread does it."""

    def __init__(
        self,
        config: Config,
        *,
        source: Source | None = None,
        lock: LockHook = no_lock,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source or make_source(config)
        self.lock = lock
        self._clock = clock
        self.queue = WorkQueue(debounce=config.debounce, max_delay=config.max_delay, clock=clock)
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_cap)
        self.metrics = Metrics()
        self.options = plan.Options(prune=config.prune)
        self.passes = 0
        self.good: Desired | None = None
        self.last_outcomes: dict[str, HostOutcome] = {}
        self._sessions: dict[str, Session] = {}
        self._watched: weakref.WeakSet[Session] = weakref.WeakSet()
        self._applied: dict[str, str] = {}  # host -> digest of the manifests last converged
        self._load_error: str | None = None
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._http: http.server.ThreadingHTTPServer | None = None

    # --- life cycle --------------------------------------------------------------

    def start(self) -> None:
        """Open the metrics endpoint, start the sources, the timer and the worker."""
        if self.config.metrics_addr:
            self._http = serve_http(self, parse_address(self.config.metrics_addr))
            host, port = self._http.server_address[:2]
            log.info("metrics on http://%s:%s/metrics", host, port)
        self.source.start(self._mark)
        self.queue.add(Reason.START)
        self._ticker = threading.Thread(target=self._tick, name="resync", daemon=True)
        self._ticker.start()
        self._worker = threading.Thread(target=self._work, name="reconcile", daemon=True)
        self._worker.start()
        log.info(
            "watching %s (resync every %gs%s)",
            self.source.describe(),
            self.config.resync,
            ", prune" if self.config.prune else "",
        )

    @property
    def metrics_port(self) -> int | None:
        return int(self._http.server_address[1]) if self._http else None

    def stop(self) -> None:
        """Finish the current pass, then stop (SIGTERM, SIGINT)."""
        self._stopping.set()
        self.queue.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ended; True when it did."""
        if self._worker is None:
            return True
        self._worker.join(timeout)
        return not self._worker.is_alive()

    def reload(self) -> None:
        """SIGHUP or ``POST /-/reload``: poll the source now and reconcile everything."""
        log.info("reload requested")
        self.source.poll_now()
        self.queue.add(Reason.RELOAD, cause="reload")

    def health(self) -> dict[str, Any]:
        alive = self._worker is not None and self._worker.is_alive()
        snap = self.good.snapshot if self.good else None
        return {
            "status": "ok" if alive else "stopped",
            "passes": self.passes,
            "revision": snap.revision if snap else None,
            "manifestsValid": self._load_error is None,
            "hosts": {n: o.result for n, o in sorted(self.last_outcomes.items())},
        }

    def wait_idle(self, timeout: float) -> bool:
        """True once no work is marked and no pass runs (retries later do not count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queue.busy():
                return True
            time.sleep(0.02)
        return False

    def _tick(self) -> None:
        while not self._stopping.wait(self.config.resync):
            self._mark(Reason.RESYNC, "resync")

    def _mark(self, reason: Reason, cause: str = "", host: str | None = None) -> None:
        self.metrics.triggers.labels(reason.value).inc()
        self.queue.add(reason, host, cause)

    def on_event(self, event: HostEvent) -> None:
        """A libvirt event (in libvirt's event thread): mark that host."""
        what = f"{event.kind}/{event.name} {event.event}" if event.name else event.event
        log.debug("event on %s: %s", event.host, what)
        reason = Reason.RECONNECT if event.kind == "Connection" else Reason.EVENT
        self._mark(reason, f"{event.host}: {what}", host=event.host)

    def _work(self) -> None:
        try:
            while True:
                batch = self.queue.get()
                if batch is None:
                    break
                try:
                    self.run_pass(batch)
                except Exception:  # a bug must not end the daemon: log, back off, go on
                    log.exception("pass %d failed unexpectedly", self.passes)
                    self.queue.add_after(None, self.backoff.failed(_ALL, self._clock()))
                finally:
                    self.queue.done()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.source.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        log.info("stopped after %d pass(es)", self.passes)

    # --- one pass ----------------------------------------------------------------

    def load(self) -> Desired | None:
        """The manifests to apply: freshly read, or the last good ones on bad input."""
        snap = self.source.snapshot()
        if snap is None:
            if self.good is None:
                log.info("waiting for the first checkout of %s", self.source.describe())
            return self.good
        if self.good is not None and snap.revision and snap.revision == self.good.snapshot.revision:
            return self.good  # a git checkout never changes
        try:
            loaded = manifests.load(list(snap.paths))
            overrides = (
                manifests.load_hosts_override(self.config.hosts_override)
                if self.config.hosts_override
                else None
            )
        except errors.ManifestError as e:
            text = "\n".join(snap.display(str(p)) for p in e.problems)
            self.metrics.manifests_valid.set(0)
            if text != self._load_error:
                self._load_error = text
                for line in text.splitlines():
                    log.error("%s", line)
                kept = (
                    "the last good manifests stay applied" if self.good else "nothing applied yet"
                )
                log.error("%d error(s) in the manifests; %s", len(e.problems), kept)
            return self.good
        digest = hashlib.sha256(repr((loaded, overrides)).encode()).hexdigest()
        if self._load_error is not None:
            log.info("manifests are valid again")
        self._load_error = None
        self.metrics.manifests_valid.set(1)
        desired = Desired(manifests=loaded, overrides=overrides, snapshot=snap, digest=digest)
        if self.good is None or self.good.digest != digest or self.good.snapshot != snap:
            self.source.keep(snap.revision)
            self.metrics.revision.info(
                {"source": self.source.describe(), "revision": snap.revision or ""}
            )
        self.good = desired
        return desired

    def run_pass(self, batch: Batch) -> dict[str, HostOutcome]:
        """Reconcile the hosts ``batch`` names (all: every host), skipping backed-off ones."""
        started = time.monotonic()
        if batch.urgent:
            self.backoff.reset()
        desired = self.load()
        if desired is None:
            return {}
        try:
            target = resolve_hosts(
                desired.manifests,
                connect=self.config.connect,
                only=self.config.hosts,
                overrides=desired.overrides,
            )
        except errors.ReconcileError as e:
            log.error("error: %s", e)
            return {}
        now = self._clock()
        hosts = tuple(
            h for h in target.hosts if batch.selects(h.name) and not self.backoff.gated(h.name, now)
        )
        if not hosts:
            return {}
        self.passes += 1
        self._drop_dead_sessions(target.hosts)
        sub = Target(hosts=hosts, assignments=target.assignments)
        try:
            with self.lock(hosts):
                outcomes = self._reconcile(sub, desired)
        except errors.ReconcileError as e:  # e.g. an apply holds a host's lock: try again later
            outcomes = {
                h.name: HostOutcome(host=h.name, result="failed", errors=(str(e),)) for h in hosts
            }
        elapsed = time.monotonic() - started
        self.metrics.duration.observe(elapsed)
        self._record(outcomes, desired)
        rev = f" at {desired.snapshot.revision[:12]}" if desired.snapshot.revision else ""
        log.info(
            "pass %d (%s)%s: %s in %.2fs",
            self.passes,
            _causes(batch),
            rev,
            "; ".join(_outcome_text(o) for o in outcomes.values()),
            elapsed,
        )
        return outcomes

    def _drop_dead_sessions(self, hosts: Sequence[Host]) -> None:
        by_name = {h.name: h for h in hosts}
        for name, session in list(self._sessions.items()):
            host = by_name.get(name)
            if host is None or host.uri != session.host.uri or not session.alive():
                if host is not None and host.uri == session.host.uri:
                    log.warning("host %s: connection lost; reconnecting", name)
                session.close()
                del self._sessions[name]

    def _reconcile(self, target: Target, desired: Desired) -> dict[str, HostOutcome]:
        run = Run(target=target, options=self.options, sessions=self._sessions)
        run.connect_and_observe()
        self._subscribe(run)
        run.build_plans()
        blocked = {
            n: tuple(f"{a.ref}: {a.error}" for a in hp.actions if a.error)
            for n, hp in run.plans.items()
            if run.states[n].reachable and any(a.error for a in hp.actions)
        }
        todo = tuple(
            h
            for h in target.hosts
            if run.states[h.name].reachable
            and h.name not in blocked
            and any(a.type.is_change for a in run.plans[h.name].actions)
        )
        results: dict[str, list[Result]] = {}
        if todo:
            # The same Run, narrowed to the hosts that have work: execute, observe again.
            doing = Run(
                target=Target(hosts=todo, assignments=target.assignments),
                options=run.options,
                sessions=run.sessions,
                states=run.states,
                plans=run.plans,
                rendered=run.rendered,
            )
            results = doing.execute()
            for name, rs in results.items():
                for r in rs:
                    if r.action.type.is_change or r.result != "ok":
                        self._log_result(name, r, desired)
            doing.connect_and_observe()
            doing.build_plans()
        left: dict[str, list[plan.Action]] = {}
        for name, a in residual({h.name: run.plans[h.name] for h in todo}):
            left.setdefault(name, []).append(a)
        self._update_objects(run, target)
        outcomes: dict[str, HostOutcome] = {}
        for h in target.hosts:
            state = run.states[h.name]
            rs = results.get(h.name, [])
            made = sum(1 for r in rs if r.action.type.is_change and r.result == "ok")
            failed = tuple(f"{r.action.ref}: {r.error}" for r in rs if r.result == "failed")
            if not state.reachable:
                outcome = HostOutcome(
                    host=h.name, result="unreachable", errors=(state.error or "",)
                )
                # Drop the session so the retry reconnects (and resyncs).
                session = self._sessions.pop(h.name, None)
                if session is not None:
                    session.close()
            elif h.name in blocked:
                outcome = HostOutcome(host=h.name, result="failed", errors=blocked[h.name])
            elif failed:
                outcome = HostOutcome(host=h.name, result="failed", changes=made, errors=failed)
            elif h.name in left:
                outcome = HostOutcome(
                    host=h.name,
                    result="not-converged",
                    changes=made,
                    errors=tuple(
                        f"{a.ref} still plans {a.type.value}: "
                        + ", ".join(c.path for c in a.changes)
                        for a in left[h.name]
                    ),
                )
            else:
                outcome = HostOutcome(host=h.name, result="ok", changes=made)
            outcomes[h.name] = outcome
        return outcomes

    def _subscribe(self, run: Run) -> None:
        """Subscribe to the events of sessions this pass opened; resync them once more."""
        for name, session in run.sessions.items():
            if session in self._watched:
                continue
            try:
                session.watch(self.on_event)
            except errors.HostError as e:
                log.warning("%s; drift is found by --resync only", e)
            self._watched.add(session)
            # Anything changed between observing and subscribing is caught by one more pass.
            self._mark(Reason.RECONNECT, f"{name}: connected", host=name)

    def _update_objects(self, run: Run, target: Target) -> None:
        for hs in status.build(target.assignments, run.plans, run.states):
            counts = {s: 0 for s in status.Sync}
            for o in hs.objects:
                counts[o.sync] += 1
            for sync, n in counts.items():
                self.metrics.objects.labels(hs.host, sync.value).set(n)

    def _log_result(self, host: str, r: Result, desired: Desired) -> None:
        a = r.action
        drift = " [drift]" if self._applied.get(host) == desired.digest else ""
        shown = a.type in (plan.ActionType.UPDATE, plan.ActionType.ADOPT)
        paths = ", ".join(c.path for c in a.changes) if shown else ""
        detail = f": {paths}" if paths else ""
        if r.result == "ok":
            log.info(
                "host %s: %s %s %s%s%s",
                host,
                report.SYMBOLS[a.type],
                a.type.value,
                a.ref,
                detail,
                drift,
            )
        else:
            log.error("host %s: %s %s failed: %s", host, a.type.value, a.ref, r.error)
        if r.result == "ok" and a.type.is_change:
            self.metrics.changes.labels(host, a.type.value).inc()
            if drift:
                self.metrics.drift.labels(host, a.kind.value).inc()

    def _record(self, outcomes: Mapping[str, HostOutcome], desired: Desired) -> None:
        now = self._clock()
        for name, o in outcomes.items():
            self.last_outcomes[name] = o
            self.metrics.runs.labels(name, o.result).inc()
            self.metrics.host_up.labels(name).set(0 if o.result == "unreachable" else 1)
            if o.result == "ok":
                self.backoff.succeeded(name)
                self._applied[name] = desired.digest
                self.metrics.last_success.labels(name).set_to_current_time()
                continue
            for e in o.errors:
                log.error("host %s: %s", name, desired.snapshot.display(e))
            delay = self.backoff.failed(name, now)
            log.warning("host %s: %s; retrying in %gs", name, o.result, delay)
            self.queue.add_after(name, delay)


def _causes(batch: Batch, most: int = 3) -> str:
    more = len(batch.causes) - most
    return ", ".join(batch.causes[:most]) + (f", +{more} more" if more > 0 else "")


def _outcome_text(o: HostOutcome) -> str:
    changes = f", {o.changes} change(s)" if o.changes else ""
    return f"{o.host} {o.result}{changes}"
