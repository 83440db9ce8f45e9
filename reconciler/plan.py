"""Stage 6 of the pipeline: decide the actions for one host (pure).

``build_host_plan`` takes the desired objects for a host and what ``hosts``
observed there, and returns ordered actions. Each action carries its field
changes (with a disruption class) and the exact libvirt steps that
``execute`` will run, so the executor decides nothing and a dry run shows
precisely what would happen.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lxml import etree

from reconciler import canonical, diff, ownership, units
from reconciler.model import Host, Kind, Manifest, object_ref
from reconciler.observed import HostState, ObjectKey, Observed, object_key
from reconciler.placement import NO_FIT, Placement
from reconciler.render import identity, xmlutil

# ``hosts.normalise``: a desired document as libvirt's parser stores it (None when
# the parser refuses it). Passed in so that planning stays free of libvirt.
Normalise = Callable[[Kind, str], "str | None"]


class ActionType(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ADOPT = "adopt"
    UNCHANGED = "unchanged"
    PENDING_RESTART = "pending-restart"

    @property
    def is_change(self) -> bool:
        return self not in (ActionType.UNCHANGED, ActionType.PENDING_RESTART)


class Disruption(enum.StrEnum):
    NONE = "none"
    LIVE = "live"
    NEXT_START = "next-start"
    RESTART_REQUIRED = "restart-required"
    REPLACE = "replace"

    @property
    def rank(self) -> int:
        return list(Disruption).index(self)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One field-level change, with how it reaches the running object."""

    path: str
    old: str | None
    new: str | None
    disruption: Disruption


@dataclass(frozen=True, kw_only=True)
class Step:
    """One libvirt call for ``execute``; ``call`` names a ``hosts.Session`` method."""

    call: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Action:
    """What happens to one object."""

    kind: Kind
    name: str
    type: ActionType
    pool: str | None = None
    source: str | None = None
    changes: tuple[Change, ...] = ()
    steps: tuple[Step, ...] = ()
    error: str | None = None
    note: str | None = None
    xml_before: str | None = None
    xml_after: str | None = None
    blast_radius: tuple[str, ...] = ()
    # A domain with several candidate hosts: where it goes, and why not elsewhere.
    placement: Placement | None = None

    @property
    def ref(self) -> str:
        return object_ref(self.kind, self.name, self.pool)

    @property
    def disruption(self) -> Disruption | None:
        if not self.changes:
            return Disruption.NONE if self.type is not ActionType.UNCHANGED else None
        return max((c.disruption for c in self.changes), key=lambda d: d.rank)


@dataclass(frozen=True, kw_only=True)
class HostPlan:
    host: Host
    reachable: bool = True
    error: str | None = None
    actions: tuple[Action, ...] = ()

    @property
    def problems(self) -> list[Action]:
        return [a for a in self.actions if a.error is not None]


DEFAULT_MAX_PRUNE = 50


@dataclass(frozen=True, kw_only=True)
class Options:
    """What the user allowed: ``--prune``, ``--replace``, and the prune guard."""

    prune: bool = False
    replace: frozenset[str] = frozenset()
    max_prune: int = DEFAULT_MAX_PRUNE  # percent of a host's managed objects
    force_prune: bool = False


# --- helpers --------------------------------------------------------------------


def _parse(xml: str) -> etree._Element:
    return xmlutil.parse_xml(xml, what="libvirt XML", max_bytes=64 << 20)


def _pretty(el: etree._Element) -> str:
    return xmlutil.to_string(el)


def _desired_flat(
    kind: Kind, desired: etree._Element, normalise: Normalise | None, ignore: Sequence[str] = ()
) -> canonical.Flat:
    """The desired fields, valued as libvirt will store them (``canonical.flatten_desired``)."""
    normalised = None
    if normalise is not None:
        text = normalise(kind, etree.tostring(desired, encoding="unicode"))
        normalised = _parse(text) if text is not None else None
    return canonical.flatten_desired(desired, normalised, kind, ignore=ignore)


def _with_live_macs(m: Manifest, desired: etree._Element, live: etree._Element) -> etree._Element:
    """``desired`` with live MACs for the NICs whose only identity is their position
    (no MAC, no NIC name in the manifest: ``identity.adopt_live_macs``)."""
    named = {
        identity.derive_mac(m.name, str(n["name"]))
        for n in m.spec.get("interfaces", ())
        if "name" in n and "mac" not in n
    }
    derived = {
        identity.derive_mac(m.name, f"nic{i}")
        for i in range(len(desired.findall("devices/interface")))
    } - named
    resolved = etree.fromstring(etree.tostring(desired))
    identity.adopt_live_macs(resolved, live, derived)
    return resolved


def _ignores(m: Manifest) -> list[str]:
    return [str(x) for x in m.spec.get("ignoreDifferences", ())]


def _record(
    m: Manifest, flat: canonical.Flat, host: str, placement: Sequence[str] = ()
) -> ownership.Record:
    prune = not m.prune_protected
    if m.kind is Kind.VOLUME:
        prune = prune and bool(m.spec.get("prune", False))
    return ownership.Record(
        managed=True,
        applied=frozenset(flat.values),
        prune=prune,
        placement=tuple(placement),
        host=host,
    )


def _with_record(el: etree._Element, record: ownership.Record | None) -> str:
    copy = etree.fromstring(etree.tostring(el))
    ownership.write_record(copy, record)
    return etree.tostring(copy, encoding="unicode")


def _to_changes(
    changes: Sequence[diff.FieldChange],
    desired: canonical.Flat,
    live: canonical.Flat | None,
    disruption: Disruption,
) -> list[Change]:
    out = []
    by_path = {c.path: c for c in changes}
    for c in changes:
        source = canonical.implied_by(Kind.DOMAIN, c.path) if c.path in desired.implied else None
        if (
            source is not None
            and source in by_path
            and (by_path[source].old, by_path[source].new) == (c.old, c.new)
        ):
            # Shown as part of the change that implies it (currentMemory follows
            # memory when the manifest does not set it); still applied.
            continue
        old, new = c.old, c.new
        if (
            c.is_element
            and c.added
            and desired.elements.get(c.path) is not None
            and len(desired.elements[c.path]) + len(desired.elements[c.path].attrib)
        ):
            new = diff.element_xml(desired.elements[c.path])
        if (
            c.is_element
            and c.removed
            and live is not None
            and live.elements.get(c.path) is not None
        ):
            el = live.elements[c.path]
            if len(el) + len(el.attrib):
                old = diff.element_xml(el)
        out.append(Change(path=c.path, old=old, new=new, disruption=disruption))
    return out


def _power(desired: str | None, observed: str) -> tuple[str | None, list[Step]]:
    """The state change and steps to take a domain from observed to desired."""
    if (
        desired is None
        or desired == observed
        or (desired == "shutoff" and observed in ("shutoff", "crashed", "shutdown"))
    ):
        return None, []
    if desired == "running":
        return "running", [Step(call="dom_resume" if observed == "paused" else "dom_start")]
    if desired == "paused":
        if observed == "running":
            return "paused", [Step(call="dom_suspend")]
        return "paused", [Step(call="dom_start", params={"paused": True})]
    return "shutoff", []


# --- domains --------------------------------------------------------------------

_DEVICE = re.compile(r"^(devices/(disk|interface)\[[^/]*\])(/.*)?$")
_IFACE_LIVE = re.compile(
    r"^devices/interface\[[^/]*\]/(@type|link/@state|source/@network|source/@bridge|bandwidth(/.*)?)$"
)


def _live_op(path: str, desired: canonical.Flat, live: canonical.Flat) -> str | None:
    """Which live call can apply a change to this path on a running domain, if any."""
    # A running guest's balloon and vCPU count can only move up to its maximum.
    if path == "currentMemory":
        return "memory" if _fits(path, "memory", desired, live) else None
    if path == "vcpu/@current":
        return "vcpus" if _fits(path, "vcpu", desired, live) else None
    m = _DEVICE.match(path)
    if not m:
        return None
    device, tag, rest = m.group(1), m.group(2), m.group(3)
    if not rest:
        return "device"
    if tag == "interface" and _IFACE_LIVE.match(path):
        return "update"
    if tag == "disk":
        el = desired.elements.get(device)
        if el is None:
            el = live.elements.get(device)
        kind = el.get("device", "disk") if el is not None else "disk"
        if kind in ("cdrom", "floppy") and re.match(r"^/(@type|source(/.*)?)$", rest):
            return "update"
    return None


def _fits(path: str, maximum: str, desired: canonical.Flat, live: canonical.Flat) -> bool:
    """Whether the desired value of ``path`` is at most the running ``maximum``."""
    new, top = desired.values.get(path), live.values.get(maximum)
    try:
        return new is None or top is None or int(new) <= int(top)
    except ValueError:
        return False


def _plan_domain(
    m: Manifest,
    desired: etree._Element,
    obs: Observed | None,
    host: Host,
    options: Options,
    candidates: Sequence[str] = (),
    normalise: Normalise | None = None,
) -> Action:
    ignore = _ignores(m)
    if obs is not None:
        desired = _with_live_macs(m, desired, _parse(obs.xml))
    dflat = _desired_flat(Kind.DOMAIN, desired, normalise, ignore)
    record = _record(m, dflat, host.name, candidates)
    state = m.spec.get("state")
    timeout = units.parse_duration(m.spec.get("updateStrategy", {}).get("shutdownTimeout", "120s"))
    restart_if_needed = m.spec.get("updateStrategy", {}).get("restart", "never") == "ifNeeded"
    autostart = m.spec.get("autostart")
    base: dict[str, Any] = {"kind": Kind.DOMAIN, "name": m.name, "source": str(m.source)}

    if obs is None:
        create = [Step(call="dom_define", params={"xml": _with_record(desired, record)})]
        if autostart is not None:
            create.append(Step(call="dom_autostart", params={"on": bool(autostart)}))
        made = [Change(path="definition", old=None, new="defined", disruption=Disruption.NONE)]
        if state in ("running", "paused"):
            create.append(Step(call="dom_start", params={"paused": state == "paused"}))
            made.append(Change(path="state", old=None, new=state, disruption=Disruption.LIVE))
        return Action(
            **base,
            type=ActionType.CREATE,
            changes=tuple(made),
            steps=tuple(create),
            xml_after=_pretty(desired),
        )

    inactive = _parse(obs.xml)
    iflat = canonical.flatten(inactive, Kind.DOMAIN, ignore=ignore)
    applied = obs.record.applied if obs.managed and obs.record else frozenset()
    cfg = diff.diff_fields(Kind.DOMAIN, dflat, iflat, applied)
    running = obs.state in ("running", "paused") and obs.live_xml is not None
    lflat = (
        canonical.flatten(_parse(obs.live_xml), Kind.DOMAIN, ignore=ignore)
        if (running and obs.live_xml)
        else None
    )
    live_diff = diff.diff_fields(Kind.DOMAIN, dflat, lflat, applied) if lflat else []
    if lflat is not None and lflat.values.get("currentMemory") == lflat.values.get("memory"):
        # The balloon never moved: the guest has no balloon driver (or has not
        # loaded it yet), so the live value says nothing about drift.
        live_diff = [c for c in live_diff if c.path != "currentMemory"]

    changes: list[Change] = []
    steps: list[Step] = []
    cfg_paths = {c.path for c in cfg}
    live_paths = {c.path for c in live_diff}
    # Live-capable changes, by path, with where they differ.
    ops: dict[str, tuple[str, diff.FieldChange]] = {}
    pending: list[diff.FieldChange] = []
    if running and lflat is not None:
        for c in [*live_diff, *cfg]:
            op = _live_op(c.path, dflat, lflat)
            if op == "vcpus" and c.path not in cfg_paths and _fewer(c):
                # Only the running domain has more vCPUs: the guest refused the
                # unplug at the last apply (hosts fell back to the definition).
                op = None
            if op and c.path not in ops:
                ops[c.path] = (op, c)
            elif not op and c.path in live_paths and c.path not in cfg_paths:
                pending.append(c)
    nonlive_cfg = [c for c in cfg if c.path not in ops]
    may_restart = running and restart_if_needed and state != "shutoff"
    restart = bool(nonlive_cfg) and may_restart
    if nonlive_cfg:
        disruption = Disruption.RESTART_REQUIRED if running else Disruption.NEXT_START
        changes += _to_changes(nonlive_cfg, dflat, iflat, disruption)
    live_changes = [next(c for c in [*live_diff, *cfg] if c.path == p) for p in ops]
    changes += _to_changes(live_changes, dflat, lflat or iflat, Disruption.LIVE)
    restart_pending = not restart and bool(pending) and may_restart
    # A restart is two calls (shutdown, start): a domain whose power state the
    # manifest leaves alone would stay off after a crash between them. So the
    # record says "restarting" from before the shutdown until after the start,
    # and a run that finds a stopped domain so recorded starts it.
    interrupted = obs.record is not None and obs.record.restarting and state is None
    finish = interrupted and not running
    guard = ((restart or restart_pending) and state is None) or finish
    written = replace(record, restarting=True) if guard else record

    merged = etree.fromstring(etree.tostring(inactive))
    mflat = canonical.flatten(merged, Kind.DOMAIN, ignore=ignore)
    diff.apply_changes(mflat, dflat, cfg)
    record_changed = obs.record != written
    define = bool(nonlive_cfg) or (not running and bool(cfg))
    if define:
        steps.append(Step(call="dom_define", params={"xml": _with_record(merged, written)}))
    if running and lflat is not None and not restart:
        steps += _live_steps(ops, dflat, lflat, iflat, cfg_paths, live_paths, config=not define)
    if not define and record_changed and (cfg or ops or not obs.managed or guard or interrupted):
        steps.append(_set_record(written))
    if restart:
        steps.append(Step(call="dom_restart", params={"timeout": timeout}))
    elif restart_pending:
        restart = True
        changes += _to_changes(pending, dflat, lflat, Disruption.RESTART_REQUIRED)
        steps.append(Step(call="dom_restart", params={"timeout": timeout}))
    if finish:
        changes.append(
            Change(path="state", old=obs.state, new="running", disruption=Disruption.LIVE)
        )
        steps.append(Step(call="dom_start"))
    if guard:
        steps.append(_set_record(record))  # restarted
    # Power state and autostart.
    new_state, power_steps = _power(state, obs.state)
    if new_state == "shutoff" and obs.state not in ("shutoff", "crashed", "shutdown"):
        power_steps = [Step(call="dom_shutdown", params={"timeout": timeout})]
    if new_state:
        changes.append(
            Change(path="state", old=obs.state, new=new_state, disruption=Disruption.LIVE)
        )
        steps += power_steps
    _autostart(changes, steps, "dom", autostart, obs)

    if not obs.persistent:
        return Action(
            **base,
            type=ActionType.UNCHANGED,
            error=("a transient domain with this name exists; define it persistently or remove it"),
        )
    kind = _action_type(obs, changes, steps)
    if kind is ActionType.UNCHANGED and pending:
        kind = ActionType.PENDING_RESTART
        changes = _to_changes(pending, dflat, lflat, Disruption.RESTART_REQUIRED)
    return Action(
        **base,
        type=kind,
        changes=tuple(changes),
        steps=tuple(steps),
        xml_before=_pretty(inactive) if cfg else None,
        xml_after=_pretty(merged) if cfg else None,
    )


def _set_record(record: ownership.Record) -> Step:
    return Step(
        call="dom_set_record",
        params={"xml": diff.element_xml(ownership.record_element(record))},
    )


def _fewer(change: diff.FieldChange) -> bool:
    try:
        return int(change.new or 0) < int(change.old or 0)
    except ValueError:
        return False


def _live_steps(
    ops: Mapping[str, tuple[str, diff.FieldChange]],
    dflat: canonical.Flat,
    lflat: canonical.Flat,
    iflat: canonical.Flat,
    cfg_paths: set[str],
    live_paths: set[str],
    *,
    config: bool,
) -> list[Step]:
    steps: list[Step] = []
    updated: set[str] = set()
    for path, (op, change) in sorted(ops.items()):
        flags = {"live": path in live_paths, "config": config and path in cfg_paths}
        if op == "memory":
            flags["live"] = True  # the balloon target is set whatever the guest reported
        if op != "update" and not (flags["live"] or flags["config"]):
            continue
        if op == "memory":
            kib = int(_or_default(change, dflat, lflat, "memory"))
            steps.append(Step(call="dom_set_memory", params={"kib": kib, **flags}))
        elif op == "vcpus":
            count = int(_or_default(change, dflat, lflat, "vcpu"))
            steps.append(Step(call="dom_set_vcpus", params={"count": count, **flags}))
        elif op == "device" and change.added:
            steps.append(
                Step(
                    call="dom_attach",
                    params={"xml": diff.element_xml(dflat.elements[path]), **flags},
                )
            )
        elif op == "device":
            el = lflat.elements.get(path)
            if el is None:
                el = iflat.elements[path]
            alias_el = el.find("alias")
            steps.append(
                Step(
                    call="dom_detach",
                    params={
                        "xml": diff.element_xml(el),
                        "alias": alias_el.get("name") if alias_el is not None else None,
                        **flags,
                    },
                )
            )
        elif op == "update":
            device = _DEVICE.match(path).group(1)  # type: ignore[union-attr]
            if device in updated:
                continue
            updated.add(device)
            # The live device, with every desired change to it applied.
            live_dev = lflat.elements.get(device)
            if live_dev is None:
                live_dev = iflat.elements[device]
            dev_copy = etree.fromstring(etree.tostring(live_dev))
            dev_flat = canonical.flatten(_wrap(dev_copy), Kind.DOMAIN)
            sub = [
                diff.FieldChange(path=c.path, old=c.old, new=c.new)
                for p, (o, c) in ops.items()
                if p.startswith(device + "/")
            ]
            diff.apply_changes(dev_flat, dflat, sub)
            dev_flags = {
                "live": any(p in live_paths for p in ops if p.startswith(device + "/")),
                "config": config and any(p in cfg_paths for p in ops if p.startswith(device + "/")),
            }
            if not (dev_flags["live"] or dev_flags["config"]):
                continue
            steps.append(
                Step(
                    call="dom_update_device",
                    params={"xml": diff.element_xml(dev_copy), **dev_flags},
                )
            )
    return steps


def _or_default(
    change: diff.FieldChange, dflat: canonical.Flat, lflat: canonical.Flat, maximum: str
) -> str:
    """The new value; a field the manifest stopped setting (currentMemory,
    vcpu/@current) goes back to libvirt's default, all of ``maximum`` — the
    smaller of the desired and the running one, so it fits both."""
    if change.new is not None:
        return change.new
    values = [int(f.values[maximum]) for f in (dflat, lflat) if f.values.get(maximum)]
    return str(min(values, default=0))


def _wrap(device: etree._Element) -> etree._Element:
    root = etree.Element("domain")
    devices = etree.SubElement(root, "devices")
    devices.append(device)
    return root


def _yn(b: bool) -> str:
    return "true" if b else "false"


def _autostart(
    changes: list[Change], steps: list[Step], prefix: str, autostart: Any, obs: Observed
) -> None:
    """The autostart change and step (``{prefix}_autostart``), when it differs."""
    if autostart is None or bool(autostart) == obs.autostart:
        return
    changes.append(
        Change(
            path="autostart",
            old=_yn(obs.autostart),
            new=_yn(bool(autostart)),
            disruption=Disruption.NONE,
        )
    )
    steps.append(Step(call=f"{prefix}_autostart", params={"on": bool(autostart)}))


def _action_type(obs: Observed, changes: Sequence[Change], steps: Sequence[Step]) -> ActionType:
    if changes:
        return ActionType.UPDATE
    if not obs.managed:
        return ActionType.ADOPT
    return ActionType.UPDATE if steps else ActionType.UNCHANGED


# --- networks -------------------------------------------------------------------

_NET_SECTIONS = [
    (re.compile(r"^(ip\[[^/]*\])/dhcp/(host\[[^/]*\])"), "ip-dhcp-host"),
    (re.compile(r"^(ip\[[^/]*\])/dhcp/(range\[[^/]*\])"), "ip-dhcp-range"),
    (re.compile(r"^()dns/(host\[[^/]*\])"), "dns-host"),
    (re.compile(r"^()dns/(txt\[[^/]*\])"), "dns-txt"),
    (re.compile(r"^()dns/(srv\[[^/]*\])"), "dns-srv"),
    (re.compile(r"^()(portgroup\[[^/]*\])"), "portgroup"),
]
_MODIFIABLE = {"ip-dhcp-host", "portgroup"}


def _net_section(path: str) -> tuple[str, str, str] | None:
    """(section, parent ip path, element path) of a path net-update can change."""
    for rx, section in _NET_SECTIONS:
        m = rx.match(path)
        if m:
            ip, el = m.group(1), m.group(2)
            element = (
                f"{ip}/dhcp/{el}" if ip else ("dns/" + el if section.startswith("dns") else el)
            )
            return section, ip, element
    return None


def _plan_network(
    m: Manifest,
    desired: etree._Element,
    obs: Observed | None,
    host: Host,
    running_users: Mapping[str, tuple[str, ...]],
    normalise: Normalise | None = None,
) -> Action:
    dflat = _desired_flat(Kind.NETWORK, desired, normalise)
    record = _record(m, dflat, host.name)
    # Absent: started when created (unusable otherwise), left alone once it exists.
    state = m.spec.get("state")
    autostart = m.spec.get("autostart")
    base: dict[str, Any] = {"kind": Kind.NETWORK, "name": m.name, "source": str(m.source)}
    if obs is None:
        create = [Step(call="net_define", params={"xml": _with_record(desired, record)})]
        if state in (None, "active"):
            create.append(Step(call="net_start"))
        if state is None:
            # As for pools: "starting" until the start is done (see _plan_pool).
            # Both defines name the same UUID (a redefine without it is refused);
            # libvirt would pick a random one, this one is stable per host and name.
            doc = etree.fromstring(etree.tostring(desired))
            if doc.find("uuid") is None:
                uuid_el = etree.Element("uuid")
                uuid_el.text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{host.name}/{m.name}"))
                doc.find("name").addnext(uuid_el)  # type: ignore[union-attr]
            guarded = replace(record, restarting=True)
            create[0] = Step(call="net_define", params={"xml": _with_record(doc, guarded)})
            create.append(Step(call="net_define", params={"xml": _with_record(doc, record)}))
        if autostart is not None:
            create.append(Step(call="net_autostart", params={"on": bool(autostart)}))
        return Action(
            **base,
            type=ActionType.CREATE,
            steps=tuple(create),
            changes=(
                Change(path="definition", old=None, new="defined", disruption=Disruption.NONE),
            ),
            xml_after=_pretty(desired),
        )
    inactive = _parse(obs.xml)
    iflat = canonical.flatten(inactive, Kind.NETWORK)
    applied = obs.record.applied if obs.managed and obs.record else frozenset()
    cfg = diff.diff_fields(Kind.NETWORK, dflat, iflat, applied)
    active = obs.state == "active" and obs.live_xml is not None
    lflat = (
        canonical.flatten(_parse(obs.live_xml), Kind.NETWORK) if active and obs.live_xml else None
    )
    live_diff = diff.diff_fields(Kind.NETWORK, dflat, lflat, applied) if lflat else []

    # A whole <dhcp> or <dns> added or removed is its entries, one by one.
    cfg_entries, cfg_boxes = _net_entries(cfg, dflat, iflat)
    live_entries = _net_entries(live_diff, dflat, lflat)[0] if lflat else []
    entries = [c for c in [*cfg_entries, *live_entries] if _net_section(c.path)]
    updatable = {c.path for c in entries} | cfg_boxes if active else set()
    nonlive = [c for c in cfg if c.path not in updatable]
    changes: list[Change] = []
    disruption = Disruption.RESTART_REQUIRED if active else Disruption.NEXT_START
    changes += _to_changes(nonlive, dflat, iflat, disruption)
    shown = {c.path: c for c in [*cfg, *live_diff] if c.path in updatable}
    changes += _to_changes(list(shown.values()), dflat, lflat or iflat, Disruption.LIVE)
    live_changes = {c.path: c for c in entries}
    merged = etree.fromstring(etree.tostring(inactive))
    mflat = canonical.flatten(merged, Kind.NETWORK)
    diff.apply_changes(mflat, dflat, cfg)
    steps: list[Step] = []
    define = bool(cfg) or obs.record != record
    # Created without state, and stopped before the start (a crash in between).
    starting = obs.record is not None and obs.record.restarting and state is None
    if starting and obs.state != "active":
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps.append(Step(call="net_start"))
    if define:
        steps.append(Step(call="net_define", params={"xml": _with_record(merged, record)}))
    if active and lflat is not None:
        steps += _net_update_steps(
            live_changes,
            dflat,
            lflat,
            {c.path for c in cfg_entries},
            {c.path for c in live_entries},
            config=not define,
        )
    if state == "active" and obs.state != "active":
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps.append(Step(call="net_start"))
    elif state == "inactive" and obs.state == "active":
        changes.append(
            Change(path="state", old="active", new="inactive", disruption=Disruption.LIVE)
        )
        steps.append(Step(call="net_stop"))
    _autostart(changes, steps, "net", autostart, obs)
    kind = _action_type(obs, changes, steps)
    if kind is ActionType.UPDATE and not changes:
        # Only the ownership record changed (e.g. the applied field set).
        kind = ActionType.UNCHANGED if obs.managed else ActionType.ADOPT
        if kind is ActionType.UNCHANGED:
            steps = []
    # The definition matches but the running network still has the old bridge,
    # forward mode or addresses: it waits for a restart, like a domain.
    cfg_paths = {c.path for c in cfg}
    pending = [c for c in live_diff if c.path not in updatable and c.path not in cfg_paths]
    if kind is ActionType.UNCHANGED and pending and state != "inactive":
        kind = ActionType.PENDING_RESTART
        changes = _to_changes(pending, dflat, lflat, Disruption.RESTART_REQUIRED)
    radius = (
        running_users.get(m.name, ())
        if any(c.disruption is Disruption.RESTART_REQUIRED for c in changes)
        else ()
    )
    return Action(
        **base,
        type=kind,
        changes=tuple(changes),
        steps=tuple(steps),
        blast_radius=radius,
        xml_before=_pretty(inactive) if cfg else None,
        xml_after=_pretty(merged) if cfg else None,
    )


_NET_BOXES = re.compile(r"^(ip\[[^/]*\]/dhcp|dns)$")


def _net_entries(
    changes: Sequence[diff.FieldChange], dflat: canonical.Flat, other: canonical.Flat
) -> tuple[list[diff.FieldChange], set[str]]:
    """``changes`` with an added/removed ``<dhcp>``/``<dns>`` replaced by its entries.

    libvirt adds the container with its first entry and drops it with its last
    (net-update), so a container without attributes whose entries net-update can
    all change is live too. Returns the changes and the containers expanded.
    """
    out: list[diff.FieldChange] = []
    boxes: set[str] = set()
    for c in changes:
        flat = dflat if c.added else other
        el = flat.elements.get(c.path)
        if c.is_element and (c.added or c.removed) and _NET_BOXES.match(c.path) and el is not None:
            kids = [
                p
                for p in flat.elements
                if p.startswith(c.path + "/") and "/" not in p[len(c.path) + 1 :]
            ]
            if kids and not el.attrib and all(_net_section(k) for k in kids):
                boxes.add(c.path)
                out += [
                    diff.FieldChange(
                        path=k,
                        old=None if c.added else flat.values[k],
                        new=flat.values[k] if c.added else None,
                    )
                    for k in kids
                ]
                continue
        out.append(c)
    return out, boxes


def _net_update_steps(
    live_changes: Mapping[str, diff.FieldChange],
    dflat: canonical.Flat,
    lflat: canonical.Flat,
    cfg_paths: set[str],
    live_paths: set[str],
    *,
    config: bool,
) -> list[Step]:
    steps: list[Step] = []
    done: set[str] = set()
    ips = [p for p in lflat.values if re.fullmatch(r"ip(\[[^/]*\])?", p)]
    # Removals first: an entry that only changes identity (a DHCP host keyed by
    # MAC, now by IP) must be gone before libvirt accepts the new one.
    for path in sorted(live_changes, key=lambda p: (live_changes[p].new is not None, p)):
        found = _net_section(path)
        if found is None:
            continue
        section, ip, element = found
        if element in done:
            continue
        done.add(element)
        touched = [p for p in live_changes if p == element or p.startswith(element + "/")]
        flags = {
            "live": any(p in live_paths for p in touched),
            "config": config and any(p in cfg_paths for p in touched),
        }
        parent = ips.index(ip) if ip in ips else -1
        new_el, old_el = dflat.elements.get(element), lflat.elements.get(element)
        base: dict[str, Any] = {"section": section, "parent_index": parent, **flags}
        if new_el is not None and old_el is not None and section in _MODIFIABLE:
            steps.append(
                Step(
                    call="net_update",
                    params={"command": "modify", "xml": diff.element_xml(new_el), **base},
                )
            )
            continue
        if old_el is not None:
            steps.append(
                Step(
                    call="net_update",
                    params={"command": "delete", "xml": diff.element_xml(old_el), **base},
                )
            )
        if new_el is not None:
            steps.append(
                Step(
                    call="net_update",
                    params={"command": "add-last", "xml": diff.element_xml(new_el), **base},
                )
            )
    return steps


# --- storage --------------------------------------------------------------------


def _plan_pool(
    m: Manifest,
    desired: etree._Element,
    obs: Observed | None,
    host: Host,
    registry: ownership.Registry,
    normalise: Normalise | None = None,
) -> Action:
    dflat = _desired_flat(Kind.STORAGE_POOL, desired, normalise)
    record = _record(m, dflat, host.name)
    # Absent: started when created (unusable otherwise), left alone once it exists.
    state = m.spec.get("state")
    autostart = m.spec.get("autostart")
    base: dict[str, Any] = {"kind": Kind.STORAGE_POOL, "name": m.name, "source": str(m.source)}
    reg_step = Step(
        call="registry_set", params={"kind": "pool", "key": m.name, "record": record.to_json()}
    )
    if obs is None:
        create = [reg_step, Step(call="pool_define", params={"xml": _pretty(desired)})]
        if state in (None, "active"):
            create += [Step(call="pool_build"), Step(call="pool_start")]
        if state is None:
            # Until the start, the record says "starting": a run that finds the
            # pool defined but stopped (a crash in between) still starts it.
            create[0] = _registry_step("pool", m.name, replace(record, restarting=True))
            create.append(reg_step)
        if autostart is not None:
            create.append(Step(call="pool_autostart", params={"on": bool(autostart)}))
        return Action(
            **base,
            type=ActionType.CREATE,
            steps=tuple(create),
            changes=(
                Change(path="definition", old=None, new="defined", disruption=Disruption.NONE),
            ),
            xml_after=_pretty(desired),
        )
    old_record = registry.pools.get(m.name)
    managed = old_record is not None and old_record.managed
    inactive = _parse(obs.xml)
    iflat = canonical.flatten(inactive, Kind.STORAGE_POOL)
    cfg = diff.diff_fields(
        Kind.STORAGE_POOL, dflat, iflat, old_record.applied if managed and old_record else ()
    )
    active = obs.state == "active"
    changes = _to_changes(
        cfg, dflat, iflat, Disruption.RESTART_REQUIRED if active else Disruption.NEXT_START
    )
    steps: list[Step] = []
    starting = old_record is not None and old_record.restarting and state is None
    if old_record != record and not starting:
        steps.append(reg_step)
    merged = etree.fromstring(etree.tostring(inactive))
    if cfg:
        diff.apply_changes(canonical.flatten(merged, Kind.STORAGE_POOL), dflat, cfg)
        steps.append(Step(call="pool_define", params={"xml": _pretty(merged)}))
    if starting and not active:
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps += [Step(call="pool_build"), Step(call="pool_start"), reg_step]
    elif starting:
        steps.append(reg_step)
    if state == "active" and not active:
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps += [Step(call="pool_build"), Step(call="pool_start")]
    elif state == "inactive" and active:
        changes.append(
            Change(path="state", old="active", new="inactive", disruption=Disruption.LIVE)
        )
        steps.append(Step(call="pool_stop"))
    _autostart(changes, steps, "pool", autostart, obs)
    kind = ActionType.UPDATE if changes else (ActionType.UNCHANGED if managed else ActionType.ADOPT)
    if kind is ActionType.UNCHANGED:
        steps = [s for s in steps if s.call != "registry_set"] if old_record == record else []
    return Action(
        **base,
        type=kind,
        changes=tuple(changes),
        steps=tuple(steps),
        xml_before=_pretty(inactive) if cfg else None,
        xml_after=_pretty(merged) if cfg else None,
    )


def _registry_step(kind: str, key: str, record: ownership.Record | None) -> Step:
    return Step(
        call="registry_set",
        params={"kind": kind, "key": key, "record": None if record is None else record.to_json()},
    )


def _plan_volume(
    m: Manifest,
    desired: etree._Element,
    obs: Observed | None,
    host: Host,
    registry: ownership.Registry,
    options: Options,
    running_user: str | None,
    normalise: Normalise | None = None,
) -> Action:
    pool = str(m.spec["pool"])
    key = f"{pool}/{m.name}"
    dflat = _desired_flat(Kind.VOLUME, desired, normalise)
    record = _record(m, dflat, host.name)
    base: dict[str, Any] = {
        "kind": Kind.VOLUME,
        "name": m.name,
        "pool": pool,
        "source": str(m.source),
    }
    reg_step = Step(
        call="registry_set", params={"kind": "volume", "key": key, "record": record.to_json()}
    )
    create = Step(call="vol_create", params={"pool": pool, "xml": _pretty(desired)})
    if obs is None:
        return Action(
            **base,
            type=ActionType.CREATE,
            steps=(reg_step, create),
            changes=(
                Change(path="definition", old=None, new="created", disruption=Disruption.NONE),
            ),
            xml_after=_pretty(desired),
        )
    old_record = registry.volumes.get(key)
    managed = old_record is not None and old_record.managed
    current = _parse(obs.xml)
    cflat = canonical.flatten(current, Kind.VOLUME)
    cfg = diff.diff_fields(
        Kind.VOLUME, dflat, cflat, old_record.applied if managed and old_record else ()
    )
    changes: list[Change] = []
    steps: list[Step] = []
    error = None
    others = [c for c in cfg if c.path not in ("capacity", "allocation")]
    for c in cfg:
        if c.path == "capacity" and c.old is not None and c.new is not None:
            if int(c.new) < int(c.old):
                error = (
                    f"volume {key}: capacity {c.new} bytes is smaller than the current "
                    f"{c.old} bytes; shrinking a volume is refused (it would lose data)"
                )
            else:
                changes.append(
                    Change(path="capacity", old=c.old, new=c.new, disruption=Disruption.LIVE)
                )
                steps.append(
                    Step(
                        call="vol_resize",
                        # qemu holds an in-use image open (and locked): a running
                        # domain grows it with blockResize.
                        params={"pool": pool, "capacity": int(c.new), "domain": running_user},
                    )
                )
    ref = f"{Kind.VOLUME.value}/{pool}/{m.name}"
    if others and error is None:
        replace_ok = ref in options.replace or f"{Kind.VOLUME.value}/{m.name}" in options.replace
        if replace_ok:
            changes = _to_changes(others, dflat, cflat, Disruption.REPLACE)
            steps = [Step(call="vol_delete", params={"pool": pool}), reg_step, create]
        else:
            paths = ", ".join(c.path for c in others)
            error = (
                f"volume {key}: {paths} cannot change in place; "
                f"apply with --replace {ref} to delete and recreate it (its data is lost)"
            )
    if error:
        return Action(
            **base,
            type=ActionType.UPDATE,
            error=error,
            changes=tuple(_to_changes(cfg, dflat, cflat, Disruption.REPLACE)),
        )
    if old_record != record and not any(s.call == "registry_set" for s in steps):
        steps.insert(0, reg_step)
    kind = ActionType.UPDATE if changes else (ActionType.UNCHANGED if managed else ActionType.ADOPT)
    if kind is ActionType.UNCHANGED and old_record == record:
        steps = []
    return Action(**base, type=kind, changes=tuple(changes), steps=tuple(steps))


# --- deletion -------------------------------------------------------------------


def _plan_delete(
    obs: Observed, registry: ownership.Registry, volume_users: Mapping[str, tuple[str, ...]]
) -> Action | None:
    if obs.kind is Kind.DOMAIN:
        record = obs.record
        steps = ([Step(call="dom_destroy")] if obs.active else []) + [Step(call="dom_undefine")]
    elif obs.kind is Kind.NETWORK:
        record = obs.record
        steps = ([Step(call="net_stop")] if obs.active else []) + [Step(call="net_undefine")]
    elif obs.kind is Kind.STORAGE_POOL:
        record = registry.pools.get(obs.name)
        steps = ([Step(call="pool_stop")] if obs.active else []) + [
            Step(call="pool_undefine"),
            Step(call="registry_set", params={"kind": "pool", "key": obs.name, "record": None}),
        ]
    else:
        key = f"{obs.pool}/{obs.name}"
        record = registry.volumes.get(key)
        steps = [
            Step(call="vol_delete", params={"pool": obs.pool}),
            Step(call="registry_set", params={"kind": "volume", "key": key, "record": None}),
        ]
    if record is None or not record.managed or not record.prune:
        return None
    action = Action(
        kind=obs.kind,
        name=obs.name,
        pool=obs.pool,
        type=ActionType.DELETE,
        steps=tuple(steps),
        changes=(
            Change(
                path="definition",
                old="defined",
                new=None,
                disruption=Disruption.NONE,
            ),
        ),
    )
    users = volume_users.get(f"{obs.pool}/{obs.name}", ()) if obs.kind is Kind.VOLUME else ()
    if users:
        return _kept(action, f"in use by {', '.join(users)}")
    return action


def _kept(action: Action, why: str) -> Action:
    """A deletion the guards refuse: the object stays, and the plan says why."""
    return replace(
        action, type=ActionType.UNCHANGED, steps=(), changes=(), note=f"not deleted: {why}"
    )


def _keep_pools_with_volumes(deletes: list[Action], state: HostState) -> list[Action]:
    """A pool is not deleted while it holds a volume this run keeps (any volume)."""
    going = {(d.pool, d.name) for d in deletes if d.kind is Kind.VOLUME and d.steps}
    if not any(d.kind is Kind.STORAGE_POOL for d in deletes):
        return deletes
    out = []
    for d in deletes:
        kept = sorted(
            o.name
            for o in state.objects.values()
            if d.kind is Kind.STORAGE_POOL
            and o.kind is Kind.VOLUME
            and o.pool == d.name
            and (o.pool, o.name) not in going
        )
        out.append(_kept(d, f"it holds volumes {', '.join(kept)}") if kept else d)
    return out


def prune_refusal(orphans: int, managed: int, *, host: str, options: Options) -> str | None:
    """The prune guard: why pruning is refused on a host, if it is (pure).

    ``orphans`` counts the managed objects that no manifest names and that
    ``--prune`` may delete (their record allows it; an in-use volume counts,
    though it is kept). When they are more than ``options.max_prune`` percent of
    the ``managed`` objects on the host, the run looks like an empty folder, a
    wrong path or a file that parses to nothing, and must not empty the host.
    The share is compared strictly (1 of 2 is 50%: allowed under the default),
    so on a host with one managed object, deleting it is 100% and always needs
    ``--force-prune``.
    """
    if options.force_prune or orphans == 0 or orphans * 100 <= options.max_prune * managed:
        return None
    share = orphans * 100 // managed if managed else 100
    only = " (the only one)" if managed == 1 else ""
    return (
        f"prune guard: no manifest names {orphans} of the {managed} managed objects on host "
        f"{host}{only} ({share}%), more than --max-prune {options.max_prune}%; nothing was "
        "changed. Check the manifest paths (an empty folder or a file that parses to nothing "
        "looks like this); if the deletions are intended, run again with --force-prune"
    )


def _plan_prune(
    state: HostState,
    desired_keys: set[ObjectKey],
    options: Options,
    kinds: frozenset[Kind] | None,
) -> list[Action]:
    """Deletions of managed objects no manifest names, behind the prune guards."""
    orphans = [
        obs
        for key, obs in sorted(state.objects.items(), key=lambda kv: (-kv[0][0].order, kv[0][1]))
        if key not in desired_keys and (kinds is None or obs.kind in kinds)
    ]
    first = [d for o in orphans if (d := _plan_delete(o, state.registry, {})) is not None]
    # Domains are deleted before volumes, so a volume only they use may go too.
    leaving = frozenset(d.name for d in first if d.kind is Kind.DOMAIN)
    users = _volume_users(state, leaving=leaving)
    deletes = [d for o in orphans if (d := _plan_delete(o, state.registry, users)) is not None]
    deletes = _keep_pools_with_volumes(deletes, state)
    managed = sum(1 for o in state.objects.values() if o.managed)
    refusal = prune_refusal(len(first), managed, host=state.host.name, options=options)
    if refusal:
        refused = [d for d in deletes if d.steps]
        see = f"prune guard: refused on host {state.host.name}, see {refused[0].ref}"
        deletes = [
            replace(d, error=refusal if d is refused[0] else see) if d.steps else d for d in deletes
        ]
    return deletes


def _pending_note(placed: Placement | None) -> str | None:
    if placed is None or not placed.pending:
        return None
    return (
        f"pending: placed on host {placed.host} by an earlier run; it stays there and is "
        "not created on another candidate"
    )


# --- the host plan --------------------------------------------------------------


def disk_refs(domain_xml: str) -> set[str]:
    """What a domain's disks (and their backing chains) point at (pure).

    ``POOL/VOLUME`` for volume sources, ``path:PATH`` for file and block sources.
    ``hosts`` uses it too, to check again just before deleting a volume.
    """
    refs: set[str] = set()
    for src in _parse(domain_xml).iterfind(".//source"):
        if src.get("pool") and src.get("volume"):
            refs.add(f"{src.get('pool')}/{src.get('volume')}")
        refs.update(f"path:{src.get(a)}" for a in ("file", "dev") if src.get(a))
    return refs


def _volume_users(
    state: HostState, *, leaving: frozenset[str] = frozenset()
) -> dict[str, tuple[str, ...]]:
    """Domains that use each volume (``pool/name``), by source pool+volume or path.

    Any domain, managed or not, except those in ``leaving`` (deleted earlier in
    the same run); the live XML too, for a disk hot-plugged only live.
    """
    keys: dict[str, str] = {}
    for o in state.objects.values():
        if o.kind is Kind.VOLUME:
            keys[f"{o.pool}/{o.name}"] = f"{o.pool}/{o.name}"
            try:
                p = _parse(o.xml).findtext("target/path")
            except ValueError:
                p = None
            if p:
                keys[f"path:{p}"] = f"{o.pool}/{o.name}"
    users: dict[str, set[str]] = {}
    for o in state.objects.values():
        if o.kind is not Kind.DOMAIN or o.name in leaving:
            continue
        for xml in (o.xml, o.live_xml):
            for ref in disk_refs(xml) if xml else ():
                if ref in keys:
                    users.setdefault(keys[ref], set()).add(o.name)
    return {k: tuple(sorted(v)) for k, v in users.items()}


def _network_users(state: HostState) -> dict[str, tuple[str, ...]]:
    """Running domains attached to each network (the blast radius of a restart)."""
    users: dict[str, list[str]] = {}
    for o in state.objects.values():
        if o.kind is Kind.DOMAIN and o.active and o.live_xml:
            for src in _parse(o.live_xml).iterfind("devices/interface/source"):
                if src.get("network"):
                    users.setdefault(str(src.get("network")), []).append(o.name)
    return {k: tuple(sorted(set(v))) for k, v in users.items()}


def _references(
    m: Manifest, desired: etree._Element, state: HostState, desired_keys: set[ObjectKey]
) -> list[str]:
    """Plan-time checks that need the host: referenced pools, volumes, networks."""
    problems = []

    def exists(kind: Kind, name: str, pool: str | None = None) -> bool:
        key = object_key(kind, name, pool)
        return key in state.objects or key in desired_keys

    if m.kind is Kind.VOLUME and not exists(Kind.STORAGE_POOL, str(m.spec["pool"])):
        problems.append(
            f"spec.pool: storage pool '{m.spec['pool']}' does not exist on host "
            f"{state.host.name} and no manifest declares it"
        )
    if m.kind is Kind.DOMAIN:
        for i, disk in enumerate(m.spec.get("disks", ())):
            vol = disk.get("source", {}).get("volume")
            if vol and not exists(Kind.VOLUME, str(vol["name"]), str(vol["pool"])):
                problems.append(
                    f"spec.disks.{i}.source.volume: volume '{vol['pool']}/{vol['name']}'"
                    f" does not exist on host {state.host.name} and no manifest declares it"
                )
        for i, nic in enumerate(m.spec.get("interfaces", ())):
            net = nic.get("network")
            if net and not exists(Kind.NETWORK, str(net)):
                problems.append(
                    f"spec.interfaces.{i}.network: network '{net}' does not exist on "
                    f"host {state.host.name} and no manifest declares it"
                )
    # FILE:LINE of the field, as for every other input error.
    return [f"{m.source_of(p.partition(':')[0])}: {p}" for p in problems]


def build_host_plan(
    desired: Sequence[tuple[Manifest, etree._Element]],
    state: HostState,
    options: Options,
    *,
    kinds: frozenset[Kind] | None = None,
    placements: Mapping[str, Placement] | None = None,
    normalise: Normalise | None = None,
) -> HostPlan:
    """All actions for one host, in execution order.

    ``placements``: the decided placement of each domain (by name) that has
    several candidate hosts; it goes into the domain's record and action.
    """
    placements = placements or {}
    if not state.reachable:
        return HostPlan(
            host=state.host,
            reachable=False,
            error=state.error,
            actions=tuple(
                Action(
                    kind=m.kind,
                    name=m.name,
                    pool=m.spec.get("pool"),
                    type=ActionType.UNCHANGED,
                    source=str(m.source),
                    error=f"host {state.host.name} is unreachable: {state.error}",
                    placement=placements.get(m.name) if m.kind is Kind.DOMAIN else None,
                    note=_pending_note(placements.get(m.name) if m.kind is Kind.DOMAIN else None),
                )
                for m, _ in desired
            ),
        )
    desired_keys = {object_key(m.kind, m.name, m.spec.get("pool")) for m, _ in desired}
    net_users = _network_users(state)
    vol_users = _volume_users(state)
    running_domains = {o.name for o in state.objects.values() if o.kind is Kind.DOMAIN and o.active}
    actions: list[Action] = []
    for m, el in sorted(
        desired, key=lambda d: (d[0].kind.order, d[0].spec.get("pool", ""), d[0].name)
    ):
        key = object_key(m.kind, m.name, m.spec.get("pool"))
        obs = state.objects.get(key)
        base: dict[str, Any] = {
            "kind": m.kind,
            "name": m.name,
            "pool": m.spec.get("pool"),
            "source": str(m.source),
        }
        placed = placements.get(m.name) if m.kind is Kind.DOMAIN else None
        if placed is not None:
            base["placement"] = placed
        if m.suspended:
            actions.append(Action(**base, type=ActionType.UNCHANGED, note="suspended"))
            continue
        problems = _references(m, el, state, desired_keys)
        if placed is not None and placed.reason == NO_FIT and obs is None:
            problems = [
                f"{m.source_of('spec.placement')}: spec.placement: no candidate host fits: "
                + "; ".join(f"{h}: {why}" for h, why in placed.skipped.items())
            ]
        if problems:
            actions.append(
                Action(
                    **base,
                    type=ActionType.CREATE if obs is None else ActionType.UPDATE,
                    error="\n".join(problems),
                )
            )
            continue
        try:
            if m.kind is Kind.DOMAIN:
                action = _plan_domain(
                    m,
                    el,
                    obs,
                    state.host,
                    options,
                    placed.candidates if placed else (),
                    normalise=normalise,
                )
                if placed is not None:
                    action = replace(action, placement=placed)
            elif m.kind is Kind.NETWORK:
                action = _plan_network(m, el, obs, state.host, net_users, normalise)
            elif m.kind is Kind.STORAGE_POOL:
                action = _plan_pool(m, el, obs, state.host, state.registry, normalise)
            else:
                running = [d for d in vol_users.get(key[1], ()) if d in running_domains]
                action = _plan_volume(
                    m,
                    el,
                    obs,
                    state.host,
                    state.registry,
                    options,
                    running[0] if running else None,
                    normalise,
                )
        except ValueError as e:
            action = Action(**base, type=ActionType.UPDATE, error=str(e))
        actions.append(action)
    if options.prune:
        actions += _plan_prune(state, desired_keys, options, kinds)
    return HostPlan(host=state.host, actions=tuple(actions))
