"""The one plan/execute path shared by ``plan``, ``apply`` and ``watch``.

    resolve hosts -> observe every host (in parallel) -> render -> plan
    -> execute (per host, in parallel) -> observe again -> converged?

Per-host work runs in a thread per host, so independent hosts proceed in
parallel and one unreachable host does not hold up the others.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree

from reconciler import errors, plan, render
from reconciler.execute import Result, execute_host
from reconciler.hosts import Session
from reconciler.model import Host, Kind, Manifest, ManifestSet
from reconciler.observed import HostState

DEFAULT_HOST = "default"
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Target:
    """The hosts a run works on and which desired objects go to each."""

    hosts: tuple[Host, ...]
    assignments: Mapping[str, tuple[Manifest, ...]] = field(default_factory=dict)


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
    for m in manifests.objects:
        host = _host_of(m, manifests, hosts)
        if host in names:
            assignments[host].append(m)
    return Target(hosts=tuple(hosts), assignments={k: tuple(v) for k, v in assignments.items()})


def _host_of(m: Manifest, manifests: ManifestSet, hosts: Sequence[Host]) -> str:
    if m.host:
        return m.host
    placement = m.spec.get("placement") if m.kind is Kind.DOMAIN else None
    if placement and placement.get("hosts"):
        return str(placement["hosts"][0])
    if placement and placement.get("selector"):
        selector = placement["selector"]
        for h in manifests.hosts:
            if all(h.labels.get(k) == v for k, v in selector.items()):
                return h.name
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
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {h.name: pool.submit(fn, h) for h in hosts}
        return {name: f.result() for name, f in futures.items()}


@dataclass
class Run:
    """One run over the target hosts: sessions, observations and the plan."""

    target: Target
    options: plan.Options
    sessions: dict[str, Session] = field(default_factory=dict)
    states: dict[str, HostState] = field(default_factory=dict)
    plans: dict[str, plan.HostPlan] = field(default_factory=dict)
    rendered: dict[tuple[Kind, str, str], etree._Element] = field(default_factory=dict)

    def connect_and_observe(self) -> None:
        def one(host: Host) -> tuple[Session | None, HostState]:
            try:
                session = self.sessions.get(host.name) or Session.open(host)
                return session, session.observe()
            except errors.HostError as e:
                return None, HostState(host=host, reachable=False, error=str(e))

        for name, (session, state) in parallel(one, self.target.hosts).items():
            if session is not None:
                self.sessions[name] = session
            self.states[name] = state

    def build_plans(self) -> None:
        for host in self.target.hosts:
            desired = [(m, self._render(m)) for m in self.target.assignments.get(host.name, ())]
            self.plans[host.name] = plan.build_host_plan(
                desired, self.states[host.name], self.options
            )

    def _render(self, m: Manifest) -> etree._Element:
        key = (m.kind, str(m.spec.get("pool", "")), m.name)
        if key not in self.rendered:
            self.rendered[key] = render.render(m)
        return self.rendered[key]

    def execute(self) -> dict[str, list[Result]]:
        def one(host: Host) -> list[Result]:
            session = self.sessions.get(host.name)
            host_plan = self.plans[host.name]
            if session is None:
                return [plan_failure(a, host_plan) for a in host_plan.actions]
            return execute_host(session, host_plan)

        return parallel(one, self.target.hosts)

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


def plan_failure(action: plan.Action, host_plan: plan.HostPlan) -> Result:
    return Result(
        action=action,
        result="failed",
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
