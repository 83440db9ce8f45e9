"""placement.decide (pure) and the executor's rollback of a placed domain's failed create."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lxml import etree

from reconciler import errors, execute, placement, plan, steps
from reconciler.model import Host, Kind, Manifest, Source
from reconciler.observed import DomainCaps, HostState, Observed
from reconciler.ownership import Record, Registry

DOMAIN = etree.fromstring(
    "<domain type='kvm'><name>web</name><os firmware='efi'>"
    "<type arch='x86_64' machine='q35'>hvm</type></os></domain>"
)
KEY = ("x86_64", "q35", "kvm")


def _manifest(**spec: Any) -> Manifest:
    return Manifest(kind=Kind.DOMAIN, name="web", spec=spec, source=Source(file="w.yaml", line=1))


def _state(name: str, **kw: Any) -> HostState:
    return HostState(host=Host(name=name, uri=f"test:///{name}"), **kw)


def test_caps_key_reads_the_rendered_domain() -> None:
    assert placement.caps_key(DOMAIN) == KEY


def test_capabilities_skip_hosts_that_cannot_run_the_domain() -> None:
    states = {
        "a": _state("a", capabilities={KEY: DomainCaps(error="machine q35 unknown")}),
        "b": _state("b", capabilities={KEY: DomainCaps(firmware=frozenset({"bios"}))}),
        "c": _state("c", capabilities={KEY: DomainCaps(firmware=frozenset({"efi"}))}),
        "d": _state("d", capabilities=None),  # no domain capabilities: define decides
    }
    got = placement.decide(_manifest(), DOMAIN, ("a", "b", "c", "d"), states, {})
    assert got.host == "c" and got.reason == placement.FIRST_FIT
    assert got.skipped == {
        "a": "capabilities: machine q35 unknown",
        "b": "capabilities: no efi firmware",
    }
    assert got.fallbacks == ("d",)


def test_networks_from_the_same_manifests_count() -> None:
    m = _manifest(interfaces=[{"network": "lab"}])
    states = {"a": _state("a"), "b": _state("b")}
    got = placement.decide(m, DOMAIN, ("a", "b"), states, {"b": frozenset({(Kind.NETWORK, "lab")})})
    assert (got.host, got.skipped) == ("b", {"a": "network lab missing"})


def test_an_existing_or_recorded_domain_stays() -> None:
    here = Observed(kind=Kind.DOMAIN, name="web", xml="<domain/>")
    states = {"a": _state("a"), "b": _state("b", objects={(Kind.DOMAIN, "web"): here})}
    got = placement.decide(_manifest(), DOMAIN, ("a", "b"), states, {})
    assert (got.host, got.reason) == ("b", placement.EXISTING)
    # Only a record on a says where it lives; b is unreachable: pending there.
    registry = Registry(domains={"web": Record(managed=False, host="b", placement=("a", "b"))})
    states = {"a": _state("a", registry=registry), "b": _state("b", reachable=False)}
    got = placement.decide(_manifest(), DOMAIN, ("a", "b"), states, {})
    assert (got.host, got.pending) == ("b", True)


def test_a_candidate_outside_the_run_leaves_an_unplaced_domain_alone() -> None:
    got = placement.decide(_manifest(), DOMAIN, ("a", "b"), {"a": _state("a")}, {})
    assert got.pending and got.host == "" and got.skipped == {"b": "not in this run"}


class _FailingStart:
    """A session whose start fails: the executor must undefine what it defined."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.done: list[str] = []

    def run(self, step: steps.Step, action: plan.Action) -> None:
        if isinstance(step, steps.Start):
            raise errors.ActionError(action.ref, "a", "dom_start: no such file")
        self.done.append(step.label)

    def discard_domain(self, name: str) -> None:
        self.done.append(f"discard {name}")


def test_a_failed_start_of_a_placed_domain_is_rolled_back() -> None:
    chosen = placement.Placement(host="a", candidates=("a", "b"), reason="", fallbacks=("b",))
    action = plan.Action(
        kind=Kind.DOMAIN,
        name="web",
        type=plan.ActionType.CREATE,
        steps=(steps.Define(kind=Kind.DOMAIN, xml="<domain/>"), steps.Start(kind=Kind.DOMAIN)),
        placement=chosen,
    )
    session = _FailingStart()
    hp = plan.HostPlan(host=Host(name="a", uri="test:///a"), actions=(action,))
    [result] = execute.execute_host(session, hp)  # type: ignore[arg-type]
    assert session.done == ["dom_define", "discard web"]
    assert result.result == "failed" and result.rolled_back
    assert "rolled back" in (result.error or "")
