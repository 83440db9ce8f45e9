"""The one plan/execute path shared by ``plan``, ``apply`` and ``watch``.

    resolve hosts -> observe every host (in parallel) -> render -> place
    -> plan -> execute (per host, in parallel; placement fallbacks)
    -> observe and plan again what was written -> converged?

``apply`` is the one apply sequence (gate → execute → check again what was
written, ``Run.check_again`` → what is left) for ``apply`` and ``watch``; it
returns one ``Applied`` report that ``cli`` and ``watch`` only format and log.

Per-host work runs in a thread per host, so independent hosts proceed in
parallel and one unreachable host does not hold up the others.

``Run.scope`` (``watch`` only) narrows a host to some objects: only they are
read again (the rest as the session read it last), planned, executed and
checked; nothing is pruned.

Domains with ``spec.placement`` are assigned to a host only after every host
was observed (``placement.decide``). When define or start of a new placed
domain fails, ``execute`` has already rolled it back on that host; ``Run``
then reads the next fitting candidate again, plans the domain there afresh
and runs that action, until one succeeds. Afterwards the placement is
recorded in the registry of every other reachable candidate.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from lxml import etree

from reconciler import errors, hosts, ownership, placement, plan, render
from reconciler.execute import Outcome, Result, execute_host
from reconciler.hosts import Session
from reconciler.model import Host, Kind, Manifest, ManifestSet
from reconciler.observed import CapsKey, HostState, ObjectKey, object_key

DEFAULT_HOST = "default"
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Target:
    """The hosts a run works on and which desired objects go to each."""

    hosts: tuple[Host, ...]
    assignments: Mapping[str, tuple[Manifest, ...]] = field(default_factory=dict)
    # Domains with spec.placement and their candidate hosts, in order: placed
    # by ``Run`` once the hosts are observed.
    placed: tuple[tuple[Manifest, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What a scoped ``watch`` pass covers on one host: the manifests it plans
    (``plan``), and the objects it reads again (``read``: those, the objects the
    trigger named, the networks and volumes they reference); the rest of the host
    is as the session read it last. No prune (orphans need the whole host)."""

    plan: frozenset[ObjectKey]
    read: frozenset[ObjectKey]
    # The plan needs no domain outside the scope (it plans no network or volume,
    # whose users are every domain, and no cloud-init domain, whose old seeds are).
    narrow: bool = False

    def view(self, state: HostState) -> HostState:
        """The host as the plan sees it: without the other domains when ``narrow``
        (a thousand domains' XML is not parsed again for one)."""
        if not self.narrow:
            return state
        return replace(
            state,
            objects={
                k: o for k, o in state.objects.items() if k[0] is not Kind.DOMAIN or k in self.read
            },
        )


def resolve_hosts(
    manifests: ManifestSet,
    *,
    connect: str | None = None,
    only: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """Decide the hosts (SPEC §1 Host) and assign every object to one."""
    env = os.environ if env is None else env
    if manifests.hosts:
        if connect:
            raise errors.ReconcileError(
                "-c/--connect cannot be used when Host documents declare the hosts; "
                "use --host NAME to select hosts or --hosts-override FILE to change URIs"
            )
        hosts = list(manifests.hosts)
        if overrides:
            hosts = [
                Host(
                    name=h.name, uri=overrides.get(h.name, h.uri), labels=h.labels, source=h.source
                )
                for h in hosts
            ]
        unknown = set(only) - {h.name for h in hosts}
        if unknown:
            raise errors.ReconcileError(
                f"--host: no Host document declares {', '.join(sorted(unknown))}"
            )
        if only:
            hosts = [h for h in hosts if h.name in only]
    else:
        if only:
            raise errors.ReconcileError("--host needs Host documents; without them use -c URI")
        uri = connect or env.get("LIBVIRT_DEFAULT_URI")
        if not uri:
            raise errors.ReconcileError(
                "no host to work on: give -c URI, set LIBVIRT_DEFAULT_URI, or declare Host "
                "documents (virt-reconcile never guesses libvirt's default connection)"
            )
        hosts = [Host(name=DEFAULT_HOST, uri=uri)]
    names = {h.name for h in hosts}
    assignments: dict[str, list[Manifest]] = {h.name: [] for h in hosts}
    placed: list[tuple[Manifest, tuple[str, ...]]] = []
    for m in manifests.objects:
        candidates = placement.candidates(m, manifests.hosts)
        if candidates:
            placed.append((m, candidates))
            continue
        host = _host_of(m, manifests)
        if host in names:
            assignments[host].append(m)
    return Target(
        hosts=tuple(hosts),
        assignments={k: tuple(v) for k, v in assignments.items()},
        placed=tuple(placed),
    )


def object_hosts(m: Manifest, manifests: ManifestSet) -> tuple[str, ...]:
    """The host an object goes to; a placed domain's candidate hosts, in order."""
    return placement.candidates(m, manifests.hosts) or (_host_of(m, manifests),)


def _host_of(m: Manifest, manifests: ManifestSet) -> str:
    if m.host:
        return m.host
    if not manifests.hosts:
        return DEFAULT_HOST
    if len(manifests.hosts) == 1:
        return manifests.hosts[0].name
    return ""


def parallel(fn: Callable[[Host], T], hosts: Iterable[Host]) -> dict[str, T]:
    """Run ``fn`` once per host, concurrently; results by host name."""
    hosts = list(hosts)
    if len(hosts) <= 1:
        return {h.name: fn(h) for h in hosts}
    import concurrent.futures  # here: one host (the usual run) needs no threads

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {h.name: pool.submit(fn, h) for h in hosts}
        return {name: f.result() for name, f in futures.items()}


class Prefetch:
    """The one host of ``plan -c URI`` or ``apply -c URI``, read (connect,
    observe) in a thread while the manifests load: the wall time is then about
    the larger of the two, not their sum. An apply starts it only once it holds
    the host's lock (``cli``), and asks for a read-write session. ``Run`` uses
    it when its target is that host, the session is of the kind it needs and it
    needs no domain capabilities; otherwise, or when the read failed, the run
    reads the host itself as always (and reports any error the usual way)."""

    def __init__(self, uri: str, *, read_only: bool = True) -> None:
        self.host = Host(name=DEFAULT_HOST, uri=uri)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._got: tuple[Session, HostState] | None = None
        self._discarded = False
        self._thread = threading.Thread(target=self._read, name="prefetch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        session = None
        try:
            session = Session.open(self.host, read_only=self.read_only)
            got = (session, session.observe())
        except Exception:  # any failure: the run reads again and reports it
            if session is not None:
                session.close()
            return
        with self._lock:
            if not self._discarded:
                self._got = got
                return
        session.close()

    def take(self, host: Host) -> tuple[Session, HostState] | None:
        """The session and state, once, if they are of ``host``."""
        self._thread.join()
        with self._lock:
            got, self._got = self._got, None
            self._discarded = True
        if got is not None and host != self.host:
            got[0].close()
            return None
        return got

    def discard(self) -> None:
        """Not needed (closed now, or by the thread when it ends; not waited for)."""
        with self._lock:
            got, self._got = self._got, None
            self._discarded = True
        if got is not None:
            got[0].close()


@dataclass
class Run:
    """One run over the target hosts: sessions, observations and the plan."""

    target: Target
    options: plan.Options
    sessions: dict[str, Session] = field(default_factory=dict)
    states: dict[str, HostState] = field(default_factory=dict)
    plans: dict[str, plan.HostPlan] = field(default_factory=dict)
    rendered: dict[tuple[Kind, str, str], etree._Element] = field(default_factory=dict)
    # What each host gets, placed domains included (set by build_plans).
    assignments: dict[str, tuple[Manifest, ...]] = field(default_factory=dict)
    placements: dict[str, placement.Placement] = field(default_factory=dict)
    # Read-only connections (``plan``, ``status``, ``export``): observe, never change.
    read_only: bool = False
    # Each action's result as it ends (host, result), for output as it happens.
    on_result: Callable[[str, Result], None] | None = None
    # Around each long wait on a host: (host, what, timeout) -> a context.
    waiting: Callable[[str, str, float], AbstractContextManager[None]] | None = None
    # The run's one host, being read already (``plan -c URI``, ``apply -c URI``).
    prefetch: Prefetch | None = None
    # watch: hosts whose pass is scoped (the others: every object).
    scope: Mapping[str, Scope] = field(default_factory=dict)

    def connect_and_observe(self) -> None:
        wanted: dict[str, set[CapsKey]] = {}
        for m, candidates in self.target.placed:
            for c in candidates:
                wanted.setdefault(c, set()).add(placement.caps_key(self._render(m)))

        prefetch, self.prefetch = self.prefetch, None
        if prefetch is not None and (
            prefetch.read_only != self.read_only or wanted or self.sessions
        ):
            prefetch.discard()
            prefetch = None

        def one(host: Host) -> tuple[Session | None, HostState]:
            got = prefetch.take(host) if prefetch is not None else None
            if got is not None:
                return got
            # Capabilities are read once per host per run: a second observation
            # (the convergence check) reuses them.
            reuse = host.name in self.states and self.states[host.name].reachable
            scope = self.scope.get(host.name)
            try:
                session = self.sessions.get(host.name) or Session.open(
                    host, read_only=self.read_only
                )
                if scope is not None and session.observed is not None:
                    return session, session.observe_some(scope.read)
                state = session.observe(capabilities=wanted.get(host.name, ()), reuse=reuse)
                return session, state
            except errors.HostError as e:
                return None, HostState(host=host, reachable=False, error=str(e))

        for name, (session, state) in parallel(one, self.target.hosts).items():
            if session is not None:
                if self.waiting is not None:
                    session.waiting = functools.partial(self.waiting, name)
                self.sessions[name] = session
            self.states[name] = state

    def place(self) -> None:
        """Decide the host of every placed domain; fills ``assignments``."""
        names = {h.name for h in self.target.hosts}
        assignments = {
            h.name: list(self.target.assignments.get(h.name, ())) for h in self.target.hosts
        }
        provided: dict[str, frozenset[ObjectKey]] = {
            name: frozenset(_key(m) for m in ms if m.kind is not Kind.DOMAIN)
            for name, ms in assignments.items()
        }
        states = {n: s for n, s in self.states.items() if n in names}
        self.placements = {}
        for m, candidates in self.target.placed:
            chosen = placement.decide(m, self._render(m), candidates, states, provided)
            self.placements[m.name] = chosen
            if chosen.host in names:
                assignments[chosen.host].append(m)
        self.assignments = {k: tuple(v) for k, v in assignments.items()}

    def unplaced(self) -> list[tuple[Manifest, placement.Placement]]:
        """Placed domains whose host is not in this run (``--host``): left alone, said so."""
        names = {h.name for h in self.target.hosts}
        return [
            (m, p)
            for m, _ in self.target.placed
            if (p := self.placements.get(m.name)) is not None and p.host not in names
        ]

    def build_plans(self) -> None:
        self.place()
        for host in self.target.hosts:
            scope = self.scope.get(host.name)
            # Rendered text as loaded: parsed by the planner only for what it plans.
            desired: list[tuple[Manifest, etree._Element | str]] = [
                (m, m.rendered if m.rendered is not None else self._render(m))
                for m in self.assignments.get(host.name, ())
                if scope is None or _key(m) in scope.plan
            ]
            self.plans[host.name] = plan.build_host_plan(
                desired,
                self.states[host.name] if scope is None else scope.view(self.states[host.name]),
                self.options,
                kinds=None if scope is None else frozenset(),  # scoped: no prune
                placements=self.placements,
                normalise=hosts.normalise,
            )

    def _render(self, m: Manifest) -> etree._Element:
        key = (m.kind, str(m.spec.get("pool", "")), m.name)
        if key not in self.rendered:
            self.rendered[key] = (
                etree.fromstring(m.rendered) if m.rendered is not None else render.render(m)
            )
        return self.rendered[key]

    def execute(self) -> dict[str, list[Result]]:
        def one(host: Host) -> list[Result]:
            session = self.sessions.get(host.name)
            host_plan = self.plans[host.name]
            if session is None:
                return [plan_failure(a, host_plan) for a in host_plan.actions]
            return execute_host(session, host_plan, self._reporter(host.name))

        results = parallel(one, self.target.hosts)
        self._fall_back(results)
        self._record_placements(results)
        return results

    def _reporter(self, host: str) -> Callable[[Result], None] | None:
        return None if self.on_result is None else functools.partial(self.on_result, host)

    def _fall_back(self, results: dict[str, list[Result]]) -> None:
        """A placed domain whose create failed (rolled back): try the next fitting candidate."""
        done: set[str] = set()
        for host in self.target.hosts:
            for i, r in enumerate(list(results.get(host.name, ()))):
                a = r.action
                failed = r.result == "failed" and a.error is None and r.rolled_back
                if a.placement is None or a.type is not plan.ActionType.CREATE or not failed:
                    continue
                if a.name in done:
                    continue
                done.add(a.name)
                self._try_fallbacks(results, host.name, i)

    def _try_fallbacks(self, results: dict[str, list[Result]], host: str, index: int) -> None:
        first = results[host][index]
        placed = first.action.placement
        m = next((m for m, _ in self.target.placed if m.name == first.action.name), None)
        if placed is None or m is None:
            return
        names = {h.name for h in self.target.hosts}
        skipped = dict(placed.skipped)
        last_host, last_index, last = host, index, first
        for k, nxt in enumerate(placed.fallbacks):
            session = self.sessions.get(nxt)
            if nxt not in names or session is None:
                skipped[nxt] = "not reachable in this run"
                continue
            try:
                # Fresh: this run may have created the domain's networks there.
                self.states[nxt] = session.observe(reuse=True)
            except errors.HostError as e:
                skipped[nxt] = f"unreachable: {e}"
                continue
            results[last_host][last_index] = replace(last, result=Outcome.ROLLED_BACK)
            skipped[last_host] = f"failed there, rolled back: {last.error}"
            moved = replace(
                placed, host=nxt, skipped=dict(skipped), fallbacks=placed.fallbacks[k + 1 :]
            )
            self.placements[m.name] = moved
            fresh = plan.build_host_plan(
                [(m, self._render(m))],
                self.states[nxt],
                plan.Options(),
                placements={m.name: moved},
                normalise=hosts.normalise,
            )
            hp = self.plans[nxt]
            self.plans[nxt] = replace(hp, actions=(*hp.actions, *fresh.actions))
            outcome = execute_host(session, fresh, self._reporter(nxt))[0]
            results.setdefault(nxt, []).append(outcome)
            last_host, last_index, last = nxt, len(results[nxt]) - 1, outcome
            if outcome.result == "ok" or not (outcome.rolled_back or outcome.action.error):
                return

    def _record_placements(self, results: dict[str, list[Result]]) -> None:
        """Record where each placed domain lives on every other reachable candidate."""
        names = {h.name for h in self.target.hosts}
        ok = {
            (host, r.action.name)
            for host, rs in results.items()
            for r in rs
            if r.action.kind is Kind.DOMAIN and r.result == "ok"
        }
        for m, candidates in self.target.placed:
            chosen = self.placements.get(m.name)
            if chosen is None or chosen.pending:
                continue
            if (chosen.host, m.name) not in ok and chosen.reason != placement.EXISTING:
                continue
            record = ownership.Record(
                managed=False, prune=False, placement=tuple(candidates), host=chosen.host
            )
            for c in candidates:
                session = self.sessions.get(c)
                if c == chosen.host or c not in names or session is None:
                    continue
                if not self.states[c].reachable:
                    continue
                try:
                    session.record_placement(m.name, record)
                except errors.ReconcileError as e:
                    action = plan.Action(
                        kind=Kind.DOMAIN,
                        name=m.name,
                        type=plan.ActionType.UNCHANGED,
                        note=f"placement record (placed on host {chosen.host})",
                    )
                    results.setdefault(c, []).append(
                        Result(action=action, result=Outcome.FAILED, error=str(e))
                    )

    def check_again(self, results: Mapping[str, list[Result]]) -> None:
        """The convergence check after ``execute``: observe and plan again what it
        wrote on each host, and what that can change (a pool's volumes, a
        domain's cloud-init seeds); the rest of a host's plan stands, as nothing
        touched it. A host where nothing was written is not read again.

        A host is observed and planned whole when placed domains are in the run
        (placement is decided afresh over every host) or a secret was written
        (secrets are read with the whole host); it is observed whole, and
        planned in part, when many objects were written (one pass over the host
        is then quicker than reading them one by one).
        """
        if self.target.placed:
            self.connect_and_observe()
            self.build_plans()
            return

        def one(host: Host) -> tuple[HostState, plan.HostPlan] | None:
            written = {_key(r.action) for r in results.get(host.name, ()) if r.action.steps}
            session = self.sessions.get(host.name)
            if not written or session is None:
                return None
            state, desired = self.states[host.name], self.assignments.get(host.name, ())
            secret = any(k is Kind.SECRET for k, _ in written)
            scope = None if secret else _affected(written, desired, state)
            try:
                if scope is None or len(written) > _READ_AGAIN_LIMIT:
                    fresh = session.observe(reuse=True)
                else:
                    fresh = session.observe_again(state, written)
            except errors.HostError as e:
                fresh = HostState(host=host, reachable=False, error=str(e))
            options, seen = self.options, fresh
            if scope is not None:
                desired = tuple(m for m in desired if _key(m) in scope)
                options = replace(options, targets=frozenset(_ref(k) for k in scope))
                # Only domains: their plans read no other domain (see ``Scope``).
                only_domains = all(kind is Kind.DOMAIN for kind, _ in scope)
                keys = frozenset(scope)
                seen = Scope(plan=keys, read=keys, narrow=only_domains).view(fresh)
            again = plan.build_host_plan(
                [(m, self._render(m)) for m in desired],
                seen,
                options,
                placements=self.placements,
                normalise=hosts.normalise,
            )
            if scope is not None and fresh.reachable:
                again = replace(again, actions=_merged(self.plans[host.name], again, scope))
            return fresh, again

        for name, done in parallel(one, self.target.hosts).items():
            if done is not None:
                self.states[name], self.plans[name] = done

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


# Written objects above this many are read again with the whole host, in one pass.
_READ_AGAIN_LIMIT = 64


def _key(obj: plan.Action | Manifest) -> ObjectKey:
    pool = obj.pool if isinstance(obj, plan.Action) else obj.spec.get("pool")
    return object_key(obj.kind, obj.name, pool)


def _ref(key: ObjectKey) -> str:
    kind, name = key
    return f"{kind.value}/{name}"  # a volume's name in its key is POOL/NAME


def _affected(
    written: set[ObjectKey], desired: Sequence[Manifest], state: HostState
) -> set[ObjectKey]:
    """What to plan again after an apply wrote ``written``: those objects, the
    volumes of a written pool, and the cloud-init seeds (declared, or recorded
    on the host) of a written domain."""
    pools = {name for kind, name in written if kind is Kind.STORAGE_POOL}
    domains = {f"{Kind.DOMAIN.value}/{name}" for kind, name in written if kind is Kind.DOMAIN}
    scope = set(written)
    scope.update(
        _key(m)
        for m in desired
        if (m.kind is Kind.VOLUME and m.spec.get("pool") in pools) or m.owner in domains
    )
    for key, obs in state.objects.items():
        if obs.kind is not Kind.VOLUME:
            continue
        record = state.registry.volumes.get(key[1])
        if obs.pool in pools or (record is not None and record.owner in domains):
            scope.add(key)
    return scope


def _merged(
    before: plan.HostPlan, again: plan.HostPlan, scope: set[ObjectKey]
) -> tuple[plan.Action, ...]:
    """``before``'s actions, those of ``scope`` replaced by their fresh plan (``again``)."""
    fresh: dict[ObjectKey, list[plan.Action]] = {}
    for a in again.actions:
        if _key(a) in scope:
            fresh.setdefault(_key(a), []).append(a)
    out: list[plan.Action] = []
    for a in before.actions:
        key = _key(a)
        if key not in scope:
            out.append(a)
        elif key in fresh:
            out += fresh.pop(key)
    return (*out, *(a for actions in fresh.values() for a in actions))


def plan_failure(action: plan.Action, host_plan: plan.HostPlan) -> Result:
    return Result(
        action=action,
        result=Outcome.FAILED,
        error=action.error or f"host {host_plan.host.name} is unreachable: {host_plan.error}",
    )


def residual(plans: Mapping[str, plan.HostPlan]) -> list[tuple[str, plan.Action]]:
    """Actions still to do after an apply: what libvirt rewrote or refused."""
    return [
        (name, a)
        for name, hp in plans.items()
        for a in hp.actions
        if a.error is None and a.type.is_change
    ]


# --- the apply sequence ----------------------------------------------------------


class HostResult(enum.StrEnum):
    """How an apply ended on one host."""

    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    NOT_CONVERGED = "not-converged"


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What one apply did, for ``cli`` and ``watch`` to format and log.

    ``plans``: the plans as executed (a placement fallback's actions included);
    ``blocked``: reachable hosts whose plan-time checks failed, with those
    actions (nothing ran there; under ``per_host=False`` nothing ran anywhere);
    ``results``: per executed host; ``left``: what the plan made after
    executing still wants to change (libvirt rewrote or refused it), actions
    that failed left out; ``states``: every host as last observed.
    """

    plans: Mapping[str, plan.HostPlan]
    blocked: Mapping[str, tuple[plan.Action, ...]] = field(default_factory=dict)
    results: Mapping[str, list[Result]] = field(default_factory=dict)
    left: Mapping[str, tuple[plan.Action, ...]] = field(default_factory=dict)
    states: Mapping[str, HostState] = field(default_factory=dict)
    # Objects whose new definition waits for a restart, after the apply (by host).
    pending_restart: Mapping[str, tuple[plan.Action, ...]] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return not any(self.left.values())

    def failed(self, host: str | None = None) -> list[Result]:
        """The results that failed (on ``host``, or anywhere)."""
        return [r for r in self._results(host) if r.result is Outcome.FAILED]

    def made(self, host: str | None = None) -> int:
        """How many changes were made (on ``host``, or anywhere)."""
        return sum(
            1 for r in self._results(host) if r.action.type.is_change and r.result is Outcome.OK
        )

    def outcome(self, host: str) -> HostResult:
        state = self.states.get(host)
        if state is not None and not state.reachable:
            return HostResult.UNREACHABLE
        if host in self.blocked or self.failed(host):
            return HostResult.FAILED
        if self.left.get(host):
            return HostResult.NOT_CONVERGED
        return HostResult.OK

    def _results(self, host: str | None) -> list[Result]:
        if host is not None:
            return list(self.results.get(host, ()))
        return [r for rs in self.results.values() for r in rs]


def apply(
    run: Run,
    *,
    per_host: bool = False,
    before_execute: Callable[[Mapping[str, plan.HostPlan]], None] | None = None,
) -> Applied:
    """Gate, execute, check again what was written, and what is left: the one
    apply sequence.

    ``run`` is observed and planned already. A plan-time problem on a
    reachable host blocks every host, or with ``per_host`` (``watch``) only
    that host; then only hosts with changes run. ``before_execute`` sees the
    plans once the gate let them pass.
    """
    blocked = {
        name: problems
        for name, hp in run.plans.items()
        if run.states[name].reachable and (problems := tuple(a for a in hp.actions if a.error))
    }
    if blocked and not per_host:
        return Applied(plans=dict(run.plans), blocked=blocked, states=dict(run.states))
    hosts = run.target.hosts
    if per_host:
        hosts = tuple(
            h
            for h in hosts
            if run.states[h.name].reachable
            and h.name not in blocked
            and any(a.type.is_change for a in run.plans[h.name].actions)
        )
    if before_execute is not None:
        before_execute(run.plans)
    results: dict[str, list[Result]] = {}
    if hosts:
        # The same Run, narrowed to the hosts that run: execute, observe again.
        doing = Run(
            target=replace(run.target, hosts=hosts),
            options=run.options,
            assignments=run.assignments,
            placements=run.placements,
            sessions=run.sessions,
            states=run.states,
            plans=run.plans,
            rendered=run.rendered,
            on_result=run.on_result,
            waiting=run.waiting,
            scope=run.scope,
        )
        results = doing.execute()
        executed = dict(run.plans)
        doing.check_again(results)
    else:
        executed = dict(run.plans)
    failed = {
        (n, r.action.ref) for n, rs in results.items() for r in rs if r.result is Outcome.FAILED
    }
    left: dict[str, list[plan.Action]] = {}
    for name, a in residual({h.name: run.plans[h.name] for h in hosts}):
        if (name, a.ref) not in failed:
            left.setdefault(name, []).append(a)
    waiting = {
        name: pending
        for name, hp in run.plans.items()
        if (pending := tuple(a for a in hp.actions if a.type is plan.ActionType.PENDING_RESTART))
    }
    return Applied(
        plans=executed,
        blocked=blocked,
        results=results,
        left={n: tuple(v) for n, v in left.items()},
        states=dict(run.states),
        pending_restart=waiting,
    )
