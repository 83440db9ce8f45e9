"""watch: the daemon — one worker runs passes of the same ``reconcile.Run`` as apply."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import http.server
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import errors, manifests, plan, report, status
from reconciler.coordination import CoordinationError, Coordinator
from reconciler.defaults import DEFAULT_ADDRESS
from reconciler.execute import Outcome, Result
from reconciler.hosts import HostEvent, Session
from reconciler.model import Host, ManifestSet
from reconciler.observed import object_key
from reconciler.reconcile import HostResult, Run, Scope, Target, apply, resolve_hosts
from reconciler.watch import notify, page, scope
from reconciler.watch.metrics import Metrics, parse_address, serve_http
from reconciler.watch.sources import FolderSource, GitSource, Snapshot, Source
from reconciler.watch.workqueue import ALL, Backoff, Batch, Clock, Reason, WorkQueue

log = logging.getLogger(__name__)

LockHook = Callable[[Sequence[Host]], AbstractContextManager[object]]


def no_lock(_hosts: Sequence[Host]) -> AbstractContextManager[object]:
    """The default lock hook: take nothing.

    ``Watcher(lock=...)`` takes a context manager factory over the hosts of a
    pass, held from reading the hosts to the check after executing; the
    per-host apply lock plugs in here (a ReconcileError from it fails the pass
    for those hosts, which are then retried with backoff).
    """
    return contextlib.nullcontext()


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
    max_prune: int = plan.DEFAULT_MAX_PRUNE
    force_prune: bool = False
    resync: float = 300.0
    metrics_addr: str | None = DEFAULT_ADDRESS
    dry_run: bool = False  # detect and report drift and pending changes; change nothing
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
    """How one host's pass ended, the changes it made, and what went wrong."""

    host: str
    result: HostResult
    changes: int = 0
    pending: int = 0  # --dry-run: the changes a pass would have made
    errors: tuple[str, ...] = ()
    scoped: bool = False  # the pass covered the objects a trigger named, not every object
    planned: int = 0  # the objects it planned


@dataclass(frozen=True, kw_only=True)
class HostView:
    """What the status page shows of one host: its last pass and its objects."""

    host: str
    uri: str
    at: float  # wall-clock time the last pass ended
    outcome: HostOutcome
    objects: tuple[status.ObjectStatus, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One recent happening: ``change``, ``drift`` (a change that reverted drift),
    ``would`` (--dry-run: a change not made) or ``error``."""

    at: float
    host: str
    what: str
    text: str
    count: int = 1  # the same happening again (a retried error) moves it up and counts


RECENT = 50  # entries the status page keeps


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
        coordination: Coordinator | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        # watch --coordination: pass only the hosts this replica owns, each under its
        # distributed lock, and let every libvirt write ask ``coordination.check`` first.
        self.coordination = coordination
        if coordination is not None:
            coordination.on_change = self._ownership_changed
        self.source = source or make_source(config)
        self.lock = lock
        self._clock = clock
        self.queue = WorkQueue(debounce=config.debounce, max_delay=config.max_delay, clock=clock)
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_cap)
        self.metrics = Metrics()
        self.options = plan.Options(
            prune=config.prune, max_prune=config.max_prune, force_prune=config.force_prune
        )
        self.passes = 0
        self.good: Desired | None = None
        self.last_outcomes: dict[str, HostOutcome] = {}
        self.views: dict[str, HostView] = {}
        self.recent: collections.deque[Entry] = collections.deque(maxlen=RECENT)
        self.last_pass: tuple[float, str] | None = None  # wall time, the pass's log line
        self.started_at = time.time()
        self._hosts: tuple[str, ...] | None = None  # the hosts of the current manifests
        self._notified_ready = False
        self._pending_seen: dict[str, frozenset[str]] = {}
        self._objects: dict[str, status.HostStatus] = {}  # of the pass that runs
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
        """Open the metrics endpoint, join the group, start the sources, timer and worker."""
        if self.coordination is not None:
            self.coordination.start()
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
            "watching %s (resync every %gs%s%s)",
            self.source.describe(),
            self.config.resync,
            ", prune" if self.config.prune else "",
            ", dry run: nothing is changed" if self.config.dry_run else "",
        )

    @property
    def metrics_port(self) -> int | None:
        return int(self._http.server_address[1]) if self._http else None

    def stop(self) -> None:
        """Finish the current pass, then stop (SIGTERM, SIGINT)."""
        self._stopping.set()
        notify.stopping()
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
        notify.reloading()  # READY=1 follows the pass of the batch that holds this reload
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
            "dryRun": self.config.dry_run,
            **(
                {"coordination": self.coordination.view().as_json()}
                if self.coordination is not None
                else {}
            ),
        }

    def page(self) -> str:
        """The status page (``GET /``)."""
        return page.render(self)

    def waiting_for(self) -> list[str] | None:
        """Hosts of the manifests that had no pass yet (None: no valid manifests yet)."""
        if self._hosts is None:
            return None
        hosts = self._hosts
        if self.coordination is not None:
            hosts = self.coordination.owned()
        return [h for h in hosts if h not in self.last_outcomes]

    def readiness(self) -> dict[str, Any]:
        """``/readyz``: ready once every host of the manifests had a full pass."""
        waiting = self.waiting_for()
        ready = waiting == [] and self.health()["status"] == "ok"
        return {
            "ready": ready,
            "waitingFor": waiting if waiting is not None else "valid manifests",
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

    def _mark(
        self,
        reason: Reason,
        cause: str = "",
        host: str | None = None,
        *,
        obj: tuple[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        self.metrics.triggers.labels(reason.value).inc()
        self.queue.add(reason, host, cause, obj=obj, path=path)

    def on_event(self, event: HostEvent) -> None:
        """A libvirt event (in libvirt's event thread): mark that host, naming the object."""
        what = f"{event.kind}/{event.name} {event.event}" if event.name else event.event
        log.debug("event on %s: %s", event.host, what)
        if event.kind == "Connection":
            self._mark(Reason.RECONNECT, f"{event.host}: {what}", host=event.host)
            return
        obj = (event.kind, event.name) if event.name else None
        self._mark(Reason.EVENT, f"{event.host}: {what}", host=event.host, obj=obj)

    def _work(self) -> None:
        try:
            while True:
                batch = self.queue.get()
                if batch is None:
                    break
                try:
                    self.run_pass(batch)
                    self.backoff.succeeded(ALL)
                except Exception:  # a bug must not end the daemon: log, back off, go on
                    log.exception("pass %d failed unexpectedly", self.passes)
                    self.queue.add_after(None, self.backoff.failed(ALL, self._clock()))
                finally:
                    self.queue.done()
                    self._notify(batch)
        finally:
            self._shutdown()

    def _notify(self, batch: Batch) -> None:
        """Tell systemd: READY=1 after the first batch and after a reload's, STATUS always.

        The first batch covers every host, so ``systemctl start`` returns once
        the hosts were reconciled once (or the manifests were found invalid).
        """
        waiting = self.waiting_for()
        if waiting is None:
            text = "waiting for valid manifests"
        else:
            results = collections.Counter(o.result.value for o in self.last_outcomes.values())
            text = f"{self.passes} pass(es); hosts " + ", ".join(
                f"{n} {r}" for r, n in sorted(results.items())
            )
            if waiting:
                text += f"; waiting for {', '.join(waiting)}"
        if not self._notified_ready or Reason.RELOAD in batch.reasons:
            self._notified_ready = True
            notify.ready(text)
        else:
            notify.status(text)

    def _shutdown(self) -> None:
        self.source.stop()
        if self.coordination is not None:
            self.coordination.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        log.info("stopped after %d pass(es)", self.passes)

    # --- one pass ----------------------------------------------------------------

    def load(self, batch: Batch | None = None) -> Desired | None:
        """The manifests to apply: freshly read, or the last good ones on bad input.

        A batch of libvirt events only keeps the manifests as they are (every change
        of the source marks work of its own); one of changed manifest files (a
        folder) reads only those files when ``scope.reload`` can (else every file).
        """
        good = self.good
        if batch is not None and good is not None and batch.reasons <= {Reason.EVENT}:
            return good
        snap = self.source.snapshot()
        if snap is None:
            if good is None:
                log.info("waiting for the first checkout of %s", self.source.describe())
            return good
        if good is not None and snap.revision and snap.revision == good.snapshot.revision:
            return good  # a git checkout never changes
        try:
            partial = None
            if (
                batch is not None
                and good is not None
                and batch.files
                and not batch.all_full
                and batch.reasons <= {Reason.EVENT, Reason.FILE}
                and not snap.revision
                and snap == good.snapshot
                and self._load_error is None
            ):
                partial = scope.reload(good.manifests, batch.files)
            if partial is not None and good is not None:
                digest = hashlib.sha256((good.digest + partial.digest).encode()).hexdigest()
                desired = dataclasses.replace(good, manifests=partial, digest=digest)
                self.good = desired
                return desired
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
        previous = self.good
        desired = self.load(batch)
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
        self._hosts = tuple(h.name for h in target.hosts)
        for gone in set(self.views) - set(self._hosts):  # no manifest names it any more
            del self.views[gone]
        now = self._clock()
        hosts = tuple(
            h for h in target.hosts if batch.selects(h.name) and not self.backoff.gated(h.name, now)
        )
        scopes = self._scopes(batch, previous, desired, target, hosts)
        for name in [n for n, sc in scopes.items() if not sc.read]:
            # Nothing of this host changed: it stays converged, at the new manifests too.
            if previous is not None and self._applied.get(name) == previous.digest:
                self._applied[name] = desired.digest
            del scopes[name]
            hosts = tuple(h for h in hosts if h.name != name)
        with contextlib.ExitStack() as held:
            dry = self.config.dry_run
            if self.coordination is not None:
                hosts, dry = self._shard(target, hosts, held, dry)
            if not hosts:
                return {}
            self.passes += 1
            self._drop_dead_sessions(target.hosts)
            sub = dataclasses.replace(target, hosts=hosts)
            # Observing only (the coordination backend is silent): every object, as
            # --dry-run, so the pending changes it reports are the whole host's.
            scopes = {} if dry else {h.name: scopes[h.name] for h in hosts if h.name in scopes}
            try:
                with self.lock(hosts):
                    outcomes = self._reconcile(sub, desired, dry, scopes)
            except errors.ReconcileError as e:  # e.g. an apply holds a host's lock: retry later
                outcomes = {
                    h.name: HostOutcome(host=h.name, result=HostResult.FAILED, errors=(str(e),))
                    for h in hosts
                }
        elapsed = time.monotonic() - started
        self.metrics.duration.observe(elapsed)
        self._record(outcomes, desired)
        rev = f" at {desired.snapshot.revision[:12]}" if desired.snapshot.revision else ""
        summary = "; ".join(_outcome_text(o) for o in outcomes.values())
        planned = sum(o.planned for o in outcomes.values())
        scoped = bool(outcomes) and all(o.scoped for o in outcomes.values())
        self.metrics.pass_objects.labels("scoped" if scoped else "full").observe(planned)
        # Scoped passes say so (and how many objects they planned); full ones need not.
        how = f" (scoped: {planned} object{'s' if planned != 1 else ''})" if scoped else ""
        log.info(
            "pass %d (%s)%s: %s in %.2fs%s",
            self.passes,
            _causes(batch),
            rev,
            summary,
            elapsed,
            how,
            extra={
                "pass": self.passes,
                "seconds": round(elapsed, 3),
                "revision": rev[4:] or None,
                "scope": "scoped" if scoped else "full",
                "objects": planned,
            },
        )
        self.last_pass = (time.time(), f"pass {self.passes}{rev}: {summary} in {elapsed:.2f}s")
        return outcomes

    def _shard(
        self, target: Target, hosts: tuple[Host, ...], held: contextlib.ExitStack, dry: bool
    ) -> tuple[tuple[Host, ...], bool]:
        """watch --coordination: the hosts of this pass this replica owns and could lock.

        While the backend does not answer, the owned hosts are only observed and
        planned (pending changes reported, nothing written). A host another writer
        holds (an apply, a replica that owned it before) is retried shortly.
        """
        assert self.coordination is not None
        c = self.coordination
        c.set_hosts(self._hosts or (), (candidates for _, candidates in target.placed))
        self._show_ownership()
        owned = set(c.owned())
        if c.view().usable:  # hosts gone to another replica: no connection, no events
            for name in [n for n in self._sessions if n not in owned]:
                log.info("host %s: owned by another replica now; disconnecting", name)
                self._sessions.pop(name).close()
        mine = tuple(h for h in hosts if h.name in owned)
        if dry or not mine:
            return mine, True
        if not c.usable():
            return mine, True
        try:
            locked = held.enter_context(c.hold(h.name for h in mine))
        except CoordinationError as e:
            log.warning("%s; this pass changes nothing", e)
            return mine, True
        for name in locked.busy:
            log.info("host %s: locked by another writer; retrying in %gs", name, c.lease / 2)
            self.queue.add_after(name, c.lease / 2)
        return tuple(h for h in mine if h.name in locked.hosts), False

    def _ownership_changed(self, gained: frozenset[str], lost: frozenset[str]) -> None:
        """(The coordination thread.) Pass the hosts gained; all owned ones when the
        backend answers again; update the ownership metrics."""
        assert self.coordination is not None
        self._show_ownership()
        if gained:
            for name in sorted(gained):
                self._mark(Reason.RECONNECT, f"{name}: now owned by this replica", host=name)
        elif not lost and self.coordination.usable():
            for name in self.coordination.owned():
                self._mark(Reason.RECONNECT, f"{name}: coordination backend answers", host=name)

    def _show_ownership(self) -> None:
        assert self.coordination is not None
        view = self.coordination.view()
        self.metrics.coordination_up.set(1 if view.usable else 0)
        self.metrics.owned_hosts.set(len(view.owned))
        self.metrics.host_owner.clear()
        for host, replica in view.owners.items():
            self.metrics.host_owner.labels(host, replica).set(1)

    def _drop_dead_sessions(self, hosts: Sequence[Host]) -> None:
        by_name = {h.name: h for h in hosts}
        for name, session in list(self._sessions.items()):
            host = by_name.get(name)
            if host is None or host.uri != session.host.uri or not session.alive():
                if host is not None and host.uri == session.host.uri:
                    log.warning("host %s: connection lost; reconnecting", name)
                session.close()
                del self._sessions[name]

    def _scopes(
        self,
        batch: Batch,
        previous: Desired | None,
        desired: Desired,
        target: Target,
        hosts: Sequence[Host],
    ) -> dict[str, Scope]:
        """The hosts of this pass that a scoped pass covers, and its scope there
        (``watch.scope``); the others get a full pass.

        A host is scoped only when no mark asked for a full pass of it, it
        converged at the manifests applied before (its last pass ended ok), and
        its connection read it whole before (it is not new or reconnected).
        """
        if self.config.dry_run or target.placed or previous is None or batch.all_full:
            return {}
        if desired is previous:
            changed = scope.Changed(objects={})
        elif desired.overrides != previous.overrides:
            return {}
        else:
            changed = scope.changed(previous.manifests, desired.manifests)
            if changed.full is not None:
                log.debug("full pass: %s", changed.full)
                return {}
        out: dict[str, Scope] = {}
        for h in hosts:
            session = self._sessions.get(h.name)
            last = self.last_outcomes.get(h.name)
            if (
                batch.full(h.name)
                or session is None
                or session.observed is None
                or not session.alive()
                or last is None
                or last.result is not HostResult.OK
                or self._applied.get(h.name) != previous.digest
            ):
                continue
            named = scope.event_keys(batch.objects.get(h.name, frozenset()))
            if named is None:
                continue
            got = scope.host_scope(
                target.assignments.get(h.name, ()),
                changed.objects.get(h.name, frozenset()),
                named,
                prune=self.options.prune,
                last=session.observed,
            )
            if isinstance(got, str):
                log.debug("host %s: full pass: %s", h.name, got)
                continue
            out[h.name] = got
        return out

    def _reconcile(
        self, target: Target, desired: Desired, dry: bool, scopes: Mapping[str, Scope]
    ) -> dict[str, HostOutcome]:
        run = Run(target=target, options=self.options, sessions=self._sessions, scope=scopes)
        run.connect_and_observe()
        if self.coordination is not None:
            for name, opened in run.sessions.items():
                opened.guard = functools.partial(self.coordination.check, name)
        self._subscribe(run)
        run.build_plans()
        if any(a.error for name in scopes for a in run.plans[name].actions):
            # A plan-time problem (say a referenced network missing): a full pass
            # reports it as one always does, with the whole host in view.
            log.info("a scoped pass found a plan-time problem; planning every object instead")
            run = Run(target=target, options=self.options, sessions=self._sessions)
            run.connect_and_observe()
            run.build_plans()
        if dry:
            return self._report(run, target, desired)
        applied = apply(run, per_host=True)
        for name, rs in applied.results.items():
            for r in rs:
                if r.action.type.is_change or r.result is not Outcome.OK:
                    self._log_result(name, r, desired)
        self._update_objects(run, target)
        outcomes: dict[str, HostOutcome] = {}
        for h in target.hosts:
            result = applied.outcome(h.name)
            made = applied.made(h.name)
            problems: tuple[str, ...] = ()
            if result is HostResult.UNREACHABLE:
                state = applied.states[h.name]
                problems = ((state.error or "").removeprefix(f"host {h.name}: "),)
                # Drop the session so the retry reconnects (and resyncs).
                session = self._sessions.pop(h.name, None)
                if session is not None:
                    log.warning("host %s: connection lost; reconnecting", h.name)
                    session.close()
            elif h.name in applied.blocked:
                problems = tuple(  # one log line per plan-time problem
                    f"{a.ref}: {line}"
                    for a in applied.blocked[h.name]
                    for line in (a.error or "").splitlines()
                )
            elif result is HostResult.FAILED:
                problems = tuple(f"{r.action.ref}: {r.error}" for r in applied.failed(h.name))
            elif result is HostResult.NOT_CONVERGED:
                problems = tuple(
                    f"{a.ref} still plans {a.type.value}: " + ", ".join(c.label for c in a.changes)
                    for a in applied.left[h.name]
                )
            else:
                self._record_revision(run, h.name, desired)
            sc = run.scope.get(h.name)
            outcomes[h.name] = HostOutcome(
                host=h.name,
                result=result,
                changes=made,
                errors=problems,
                scoped=sc is not None,
                planned=len(sc.plan) if sc is not None else len(run.assignments.get(h.name, ())),
            )
        return outcomes

    def _report(self, run: Run, target: Target, desired: Desired) -> dict[str, HostOutcome]:
        """--dry-run: what a pass would change, logged (when it differs from the last
        pass) and counted in ``virt_reconcile_pending_changes``; nothing is executed."""
        self._update_objects(run, target)
        outcomes: dict[str, HostOutcome] = {}
        for h in target.hosts:
            state, hp = run.states[h.name], run.plans[h.name]
            if not state.reachable:
                outcomes[h.name] = HostOutcome(
                    host=h.name,
                    result=HostResult.UNREACHABLE,
                    errors=((state.error or "").removeprefix(f"host {h.name}: "),),
                )
                session = self._sessions.pop(h.name, None)
                if session is not None:  # the retry reconnects (and resyncs)
                    session.close()
                continue
            problems = tuple(f"{a.ref}: {a.error}" for a in hp.actions if a.error)
            changes = [a for a in hp.actions if a.type.is_change and not a.error]
            counts = collections.Counter(a.type.value for a in changes)
            for action in plan.ActionType:
                if action.is_change:
                    self.metrics.pending.labels(h.name, action.value).set(counts[action.value])
            drift = self._applied.get(h.name) == desired.digest
            seen = self._pending_seen.get(h.name, frozenset())
            lines = [(a, f"{a.type.value} {a.ref}: {_paths(a)}") for a in changes]
            for a, line in lines:
                if line not in seen:  # each pending change is logged once, when it appears
                    self._log_would(h.name, a, drift)
            self._pending_seen[h.name] = frozenset(line for _, line in lines)
            if not changes and not problems:
                self._applied[h.name] = desired.digest  # in sync: a later difference is drift
            outcomes[h.name] = HostOutcome(
                host=h.name,
                result=HostResult.FAILED if problems else HostResult.OK,
                pending=len(changes),
                errors=problems,
            )
        return outcomes

    def _log_would(self, host: str, a: plan.Action, drift: bool) -> None:
        paths = _paths(a)
        text = f"{report.SYMBOLS[a.type]} {a.type.value} {a.ref}" + (f": {paths}" if paths else "")
        tag = " [drift]" if drift else ""
        log.warning(
            "host %s: would %s%s (dry run)",
            host,
            text,
            tag,
            extra={"host": host, "action": a.type.value, "object": a.ref, "drift": drift},
        )
        self._remember(host, "would", text + tag)

    def _remember(self, host: str, what: str, text: str) -> None:
        """Add to the status page's recent list; a repeat replaces its earlier entry."""
        count = 1
        for old in list(self.recent):
            if (old.host, old.what, old.text) == (host, what, text):
                self.recent.remove(old)
                count += old.count
        self.recent.append(Entry(at=time.time(), host=host, what=what, text=text, count=count))

    def _record_revision(self, run: Run, host: str, desired: Desired) -> None:
        """Write the applied git revision to the host's registry (``status`` shows it)."""
        revision = desired.snapshot.revision
        session = run.sessions.get(host)
        if not revision or session is None:
            return
        if run.states[host].registry.applied.get("revision") == revision:
            return
        try:
            session.record_applied({"revision": revision, "source": self.source.describe()})
        except errors.ReconcileError as e:  # unreachable, or the write guard refused
            log.warning("%s", e)

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
        assignments = {
            name: tuple(
                m for m in ms if name not in run.scope or scope.key_of(m) in run.scope[name].plan
            )
            for name, ms in run.assignments.items()
        }
        for hs in status.build(assignments, run.plans, run.states):
            sc = run.scope.get(hs.host)
            view = self.views.get(hs.host)
            if sc is not None and view is not None:  # the other objects as last shown
                fresh = {
                    o.ref: o for o in hs.objects if object_key(o.kind, o.name, o.pool) in sc.plan
                }
                merged = [fresh.pop(o.ref, o) for o in view.objects]
                hs = dataclasses.replace(hs, objects=(*merged, *fresh.values()))
            self._objects[hs.host] = hs
            counts = {s: 0 for s in status.Sync}
            for o in hs.objects:
                counts[o.sync] += 1
            for sync, n in counts.items():
                self.metrics.objects.labels(hs.host, sync.value).set(n)

    def _log_result(self, host: str, r: Result, desired: Desired) -> None:
        a = r.action
        drift = " [drift]" if self._applied.get(host) == desired.digest else ""
        paths = _paths(a)
        detail = f": {paths}" if paths else ""
        fields = {"host": host, "action": a.type.value, "object": a.ref, "drift": bool(drift)}
        if r.result is Outcome.OK:
            log.info(
                "host %s: %s %s %s%s%s",
                host,
                report.SYMBOLS[a.type],
                a.type.value,
                a.ref,
                detail,
                drift,
                extra=fields,
            )
            if a.type.is_change:
                text = f"{report.SYMBOLS[a.type]} {a.type.value} {a.ref}{detail}"
                self._remember(host, "drift" if drift else "change", text)
        else:
            log.error("host %s: %s %s failed: %s", host, a.type.value, a.ref, r.error, extra=fields)
        if r.result is Outcome.OK and a.type.is_change:
            self.metrics.changes.labels(host, a.type.value).inc()
            if drift:
                self.metrics.drift.labels(host, a.kind.value).inc()

    def _record(self, outcomes: Mapping[str, HostOutcome], desired: Desired) -> None:
        now = self._clock()
        objects, self._objects = self._objects, {}
        for name, o in outcomes.items():
            self.last_outcomes[name] = o
            hs = objects.get(name)
            self.views[name] = HostView(
                host=name,
                uri=hs.uri if hs else self.views[name].uri if name in self.views else "",
                at=time.time(),
                outcome=o,
                objects=hs.objects if hs else (),
            )
            for e in o.errors:
                self._remember(name, "error", desired.snapshot.display(e))
            self.metrics.runs.labels(name, o.result).inc()
            self.metrics.host_up.labels(name).set(0 if o.result is HostResult.UNREACHABLE else 1)
            if o.result is HostResult.OK:
                self.backoff.succeeded(name)
                if not o.pending:  # --dry-run: only a host in sync is "converged"
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
    pending = f", {o.pending} pending change(s)" if o.pending else ""
    return f"{o.host} {o.result}{changes}{pending}"


def _paths(a: plan.Action) -> str:
    """The changed fields of an update or adopt (a create or delete is whole)."""
    shown = a.type in (plan.ActionType.UPDATE, plan.ActionType.ADOPT)
    return ", ".join(c.label for c in a.changes) if shown else ""
