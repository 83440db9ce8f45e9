"""Stage 5½ of the pipeline: choose the host of a domain with several candidates (pure).

SPEC §3 Placement. ``reconcile.Run`` observes every candidate, then
``decide`` picks, for one domain, in this order:

1. a candidate that already holds the domain (it stays where it is);
2. the host named by a placement record (on the domain itself or in the
   registry of any reachable candidate): once placed, a domain stays, and when
   that host is unreachable it is *pending* there, never created elsewhere;
3. otherwise the first reachable candidate, in candidate order, that holds
   (or will hold, from the same manifests) the domain's networks and volumes
   and whose domain capabilities support its arch, machine, type and
   firmware. The candidates that also fit come after it as ``fallbacks``:
   when define or start fails on the chosen host, the executor rolls it back
   and tries them in order.

Candidates that are unreachable are skipped with a reason (a warning, not a
failure: they hold nothing the run needs). A domain not placed yet whose
candidates are not all in the run (``--host``, a ``watch`` pass over some
hosts) is left alone: an unselected candidate might hold it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from reconciler.model import Host, Kind, Manifest
from reconciler.observed import CapsKey, DomainCaps, HostState, ObjectKey, object_key

EXISTING = "exists there"
RECORDED = "placed there by an earlier run"
FIRST_FIT = "first candidate that fits"
NO_FIT = "no candidate fits"
NOT_IN_RUN = "not every candidate is in this run"


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a domain goes and why the candidates before it were skipped."""

    host: str
    candidates: tuple[str, ...]
    reason: str
    skipped: Mapping[str, str] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
    # The recorded host is unreachable: report the domain pending, create nothing.
    pending: bool = False


def candidates(m: Manifest, hosts: Sequence[Host]) -> tuple[str, ...]:
    """The candidate hosts of a domain's ``spec.placement``, in order (``hosts``: declared)."""
    spec = m.spec.get("placement") if m.kind is Kind.DOMAIN else None
    if not spec:
        return ()
    if spec.get("hosts"):
        return tuple(str(h) for h in spec["hosts"])
    selector = spec.get("selector") or {}
    return tuple(h.name for h in hosts if all(h.labels.get(k) == v for k, v in selector.items()))


def caps_key(desired: etree._Element) -> CapsKey:
    """What a rendered domain asks of the hypervisor: (arch, machine, type)."""
    os_type = desired.find("os/type")
    arch = os_type.get("arch", "") if os_type is not None else ""
    machine = os_type.get("machine", "") if os_type is not None else ""
    return (arch, machine, desired.get("type", ""))


def _firmware(desired: etree._Element, caps: DomainCaps) -> str | None:
    """Why the host cannot give the domain its firmware, if it cannot."""
    os_el = desired.find("os")
    if os_el is None:
        return None
    wanted = os_el.get("firmware")
    if wanted and wanted not in caps.firmware:
        return f"no {wanted} firmware"
    loader = os_el.find("loader")
    kind = loader.get("type") if loader is not None else None
    if kind and kind not in caps.loaders:
        return f"no {kind} loader"
    return None


def _missing(m: Manifest, state: HostState, provided: frozenset[ObjectKey]) -> list[str]:
    """The networks and volumes the domain needs that the host lacks (and will not get)."""

    def has(key: ObjectKey) -> bool:
        return key in state.objects or key in provided

    out = []
    for nic in m.spec.get("interfaces", ()):
        net = nic.get("network")
        if net and not has(object_key(Kind.NETWORK, str(net))):
            out.append(f"network {net} missing")
    for disk in m.spec.get("disks", ()):
        vol = disk.get("source", {}).get("volume")
        if vol and not has(object_key(Kind.VOLUME, str(vol["name"]), str(vol["pool"]))):
            out.append(f"volume {vol['pool']}/{vol['name']} missing")
    return out


def _unsupported(desired: etree._Element, state: HostState) -> str | None:
    if state.capabilities is None:
        return None  # no domain capabilities (test driver): define decides
    key = caps_key(desired)
    caps = state.capabilities.get(key)
    if caps is None:
        return None
    if caps.error:
        return f"capabilities: {caps.error}"
    firmware = _firmware(desired, caps)
    return f"capabilities: {firmware}" if firmware else None


def _recorded(name: str, cands: Sequence[str], states: Mapping[str, HostState]) -> str | None:
    """The host a placement record names (on a reachable candidate), if it is a candidate."""
    for c in cands:
        state = states.get(c)
        if state is None or not state.reachable:
            continue
        obs = state.objects.get(object_key(Kind.DOMAIN, name))
        records = [obs.record] if obs is not None and obs.record is not None else []
        if name in state.registry.domains:
            records.append(state.registry.domains[name])
        for record in records:
            if record.host in cands:
                return record.host
    return None


def decide(
    m: Manifest,
    desired: etree._Element,
    cands: Sequence[str],
    states: Mapping[str, HostState],
    provided: Mapping[str, frozenset[ObjectKey]],
) -> Placement:
    """Choose the host of one domain among its candidates (see the module docstring).

    ``states`` holds the hosts of this run (a candidate missing there was not
    selected with ``--host``); ``provided`` the objects each host gets from
    the manifests of this run.
    """
    cands = tuple(cands)
    key = object_key(Kind.DOMAIN, m.name)
    skipped: dict[str, str] = {}
    for c in cands:
        state = states.get(c)
        if state is not None and state.reachable and key in state.objects:
            return Placement(host=c, candidates=cands, reason=EXISTING)
    recorded = _recorded(m.name, cands, states)
    if recorded is not None:
        state = states.get(recorded)
        pending = state is None or not state.reachable
        return Placement(host=recorded, candidates=cands, reason=RECORDED, pending=pending)
    outside = [c for c in cands if c not in states]
    if outside:
        return Placement(
            host="",
            candidates=cands,
            reason=NOT_IN_RUN,
            skipped={c: "not in this run" for c in outside},
            pending=True,
        )
    fitting: list[str] = []
    for c in cands:
        state = states[c]
        if not state.reachable:
            skipped[c] = f"unreachable: {state.error}"
            continue
        why = _missing(m, state, provided.get(c, frozenset()))
        unsupported = _unsupported(desired, state)
        if unsupported:
            why.append(unsupported)
        if why:
            skipped[c] = "; ".join(why)
        else:
            fitting.append(c)
    if not fitting:
        # Nothing fits: plan it on the first reachable candidate, whose plan-time
        # checks then name what is missing (or on the first one, unreachable).
        reachable = [c for c in cands if states[c].reachable]
        host = (reachable or list(cands))[0]
        return Placement(host=host, candidates=cands, reason=NO_FIT, skipped=skipped)
    return Placement(
        host=fitting[0],
        candidates=cands,
        reason=FIRST_FIT,
        skipped=skipped,
        fallbacks=tuple(fitting[1:]),
    )
