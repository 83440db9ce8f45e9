"""Domains: planner, exporter and handler."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from lxml import etree

from reconciler import canonical, diff, fields, ownership, units
from reconciler.actions import (
    Action,
    ActionType,
    Change,
    Disruption,
    Normalise,
    Options,
    _action_type,
    _autostart,
    _desired_flat,
    _ignores,
    _parse,
    _pretty,
    _record,
    _to_changes,
    _with_record,
)
from reconciler.fields import Live
from reconciler.kinds.base import Context, Handler, Power, RecordHome, Reference, Spec
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.render import identity
from reconciler.steps import (
    AttachDevice,
    Define,
    DetachDevice,
    RestartDomain,
    ResumeDomain,
    SetAutostart,
    SetDomainRecord,
    SetDomainText,
    SetMemory,
    SetVcpus,
    ShutdownDomain,
    Start,
    Step,
    Stop,
    SuspendDomain,
    Undefine,
    UpdateDevice,
)


def _power(desired: str | None, observed: str) -> tuple[str | None, list[Step]]:
    """The state change and steps to take a domain from observed to desired."""
    if (
        desired is None
        or desired == observed
        or (desired == "shutoff" and observed in ("shutoff", "crashed", "shutdown"))
    ):
        return None, []
    if desired == "running":
        return "running", [ResumeDomain() if observed == "paused" else Start(kind=Kind.DOMAIN)]
    if desired == "paused":
        if observed == "running":
            return "paused", [SuspendDomain()]
        return "paused", [Start(kind=Kind.DOMAIN, paused=True)]
    return "shutoff", []


_DEVICE = re.compile(r"^(devices/(disk|interface)\[[^/]*\])(/.*)?$")
# Parts of an interface that change live besides its declared fields (the type
# goes with network/bridge; bandwidth comes from spec.xml).
_IFACE_LIVE = re.compile(r"^devices/interface\[[^/]*\]/(@type|bandwidth(/.*)?)$")


def _live_op(path: str, desired: canonical.Flat, live: canonical.Flat) -> str | None:
    """Which live call can apply a change to this path on a running domain, if any:
    the declared field's ``Live`` (``render.domain.FIELDS``), with the limits of
    a running guest."""
    declared = fields.field_at(Kind.DOMAIN, path)
    how = declared.live if declared is not None else Live.NEXT_START
    # A running guest's balloon and vCPU count can only move up to its maximum.
    if how is Live.MEMORY:
        return "memory" if _fits(path, "memory", desired, live) else None
    if how is Live.VCPUS:
        return "vcpus" if _fits(path, "vcpu", desired, live) else None
    if how is Live.METADATA:
        return "metadata"
    m = _DEVICE.match(path)
    if not m:
        return None
    device, tag, rest = m.group(1), m.group(2), m.group(3)
    if not rest:
        return "device"
    if tag == "interface" and (how is Live.UPDATE or _IFACE_LIVE.match(path)):
        return "update"
    if tag == "disk" and how is Live.UPDATE:
        # Only a cdrom's or floppy's medium changes live.
        el = desired.elements.get(device)
        if el is None:
            el = live.elements.get(device)
        kind = el.get("device", "disk") if el is not None else "disk"
        if kind in ("cdrom", "floppy"):
            return "update"
    return None


def _fits(path: str, maximum: str, desired: canonical.Flat, live: canonical.Flat) -> bool:
    """Whether the desired value of ``path`` is at most the running ``maximum``."""
    new, top = desired.values.get(path), live.values.get(maximum)
    try:
        return new is None or top is None or int(new) <= int(top)
    except ValueError:
        return False


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
    if not identity.uses_derived_macs(desired, derived):
        return desired  # nothing to adopt: no copy (the planner only reads it)
    resolved = etree.fromstring(etree.tostring(desired))
    identity.adopt_live_macs(resolved, live, derived)
    return resolved


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
    inactive = _parse(obs.xml) if obs is not None else None  # read only, parsed once
    if inactive is not None:
        desired = _with_live_macs(m, desired, inactive)
    dflat = _desired_flat(Kind.DOMAIN, desired, normalise, ignore)
    record = replace(
        _record(m, dflat, host.name, candidates), keep_state=bool(m.spec.get("keepState", True))
    )
    state = m.spec.get("state")
    timeout = units.parse_duration(m.spec.get("updateStrategy", {}).get("shutdownTimeout", "120s"))
    restart_if_needed = m.spec.get("updateStrategy", {}).get("restart", "never") == "ifNeeded"
    autostart = m.spec.get("autostart")
    base: dict[str, Any] = {"kind": Kind.DOMAIN, "name": m.name, "source": str(m.source)}

    if obs is None:
        create: list[Step] = [Define(kind=Kind.DOMAIN, xml=_with_record(desired, record))]
        if autostart is not None:
            create.append(SetAutostart(kind=Kind.DOMAIN, on=bool(autostart)))
        made = [Change(path="definition", old=None, new="defined", disruption=Disruption.NONE)]
        if state in ("running", "paused"):
            create.append(Start(kind=Kind.DOMAIN, paused=state == "paused"))
            made.append(Change(path="state", old=None, new=state, disruption=Disruption.LIVE))
        return Action(
            **base,
            type=ActionType.CREATE,
            changes=tuple(made),
            steps=tuple(create),
            xml_after=_pretty(desired),
        )

    assert inactive is not None
    iflat = canonical.flatten_text(obs.xml, inactive, Kind.DOMAIN, ignore=ignore)
    applied = obs.record.applied if obs.managed and obs.record else frozenset()
    cfg = diff.diff_fields(Kind.DOMAIN, dflat, iflat, applied)
    running = obs.state in ("running", "paused") and obs.live_xml is not None
    lflat = (
        canonical.flatten_text(obs.live_xml, _parse(obs.live_xml), Kind.DOMAIN, ignore=ignore)
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
    if cfg:  # nothing to write: the copy stays the inactive document (no flatten)
        diff.apply_changes(canonical.flatten(merged, Kind.DOMAIN, ignore=ignore), dflat, cfg)
    record_changed = obs.record != written
    if obs.record is not None and obs.managed and obs.record.keep_state != record.keep_state:
        changes.append(
            Change(
                path="keepState",
                old=str(obs.record.keep_state).lower(),
                new=str(record.keep_state).lower(),
                disruption=Disruption.NONE,
            )
        )
    define = bool(nonlive_cfg) or (not running and bool(cfg))
    if define:
        steps.append(Define(kind=Kind.DOMAIN, xml=_with_record(merged, written)))
    if running and lflat is not None and not restart:
        steps += _live_steps(ops, dflat, lflat, iflat, cfg_paths, live_paths, config=not define)
    keep_changed = any(c.path == "keepState" for c in changes)
    if (
        not define
        and record_changed
        and (cfg or ops or not obs.managed or guard or interrupted or keep_changed)
    ):
        steps.append(_set_record(written))
    if restart:
        steps.append(RestartDomain(timeout=timeout))
    elif restart_pending:
        restart = True
        changes += _to_changes(pending, dflat, lflat, Disruption.RESTART_REQUIRED)
        steps.append(RestartDomain(timeout=timeout))
    if finish:
        changes.append(
            Change(path="state", old=obs.state, new="running", disruption=Disruption.LIVE)
        )
        steps.append(Start(kind=Kind.DOMAIN))
    if guard:
        steps.append(_set_record(record))  # restarted
    # Power state and autostart.
    new_state, power_steps = _power(state, obs.state)
    if new_state == "shutoff" and obs.state not in ("shutoff", "crashed", "shutdown"):
        power_steps = [ShutdownDomain(timeout=timeout)]
    if new_state:
        changes.append(
            Change(path="state", old=obs.state, new=new_state, disruption=Disruption.LIVE)
        )
        steps += power_steps
    _autostart(changes, steps, Kind.DOMAIN, autostart, obs)

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
    return SetDomainRecord(xml=diff.element_xml(ownership.record_element(record)))


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
        # The balloon target is set whatever the guest reported.
        live = op == "memory" or path in live_paths
        cfg = config and path in cfg_paths
        if op != "update" and not (live or cfg):
            continue
        if op == "memory":
            kib = int(_or_default(change, dflat, lflat, "memory"))
            steps.append(SetMemory(kib=kib, live=live, config=cfg))
        elif op == "vcpus":
            count = int(_or_default(change, dflat, lflat, "vcpu"))
            steps.append(SetVcpus(count=count, live=live, config=cfg))
        elif op == "metadata":
            which: Literal["title", "description"] = "title" if path == "title" else "description"
            steps.append(SetDomainText(which=which, text=change.new, live=live, config=cfg))
        elif op == "device" and change.added:
            steps.append(
                AttachDevice(xml=diff.element_xml(dflat.elements[path]), live=live, config=cfg)
            )
        elif op == "device":
            el = lflat.elements.get(path)
            if el is None:
                el = iflat.elements[path]
            alias_el = el.find("alias")
            steps.append(
                DetachDevice(
                    xml=diff.element_xml(el),
                    alias=alias_el.get("name") if alias_el is not None else None,
                    live=live,
                    config=cfg,
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
            dev_live = any(p in live_paths for p in ops if p.startswith(device + "/"))
            dev_cfg = config and any(p in cfg_paths for p in ops if p.startswith(device + "/"))
            if not (dev_live or dev_cfg):
                continue
            steps.append(
                UpdateDevice(xml=diff.element_xml(dev_copy), live=dev_live, config=dev_cfg)
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


# --- the handler ---------------------------------------------------------------------


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    placed = ctx.placement
    action = _plan_domain(
        m,
        desired,
        obs,
        ctx.host,
        ctx.options,
        placed.candidates if placed else (),
        normalise=ctx.normalise,
    )
    return replace(action, placement=placed) if placed is not None else action


def _delete(obs: Observed, _registry: Registry) -> tuple[Record | None, list[Step]]:
    steps: list[Step] = [Stop(kind=Kind.DOMAIN)] if obs.active else []
    keep = obs.record.keep_state if obs.record is not None else True
    steps.append(Undefine(kind=Kind.DOMAIN, keep_state=keep))
    return obs.record, steps


# A crashed or shut-down domain is "shutoff" to the planner; a pmsuspended one
# has no manifest state (starting it would be a change), so state stays unmanaged.
_DOMAIN_STATES = {
    "running": "running",
    "paused": "paused",
    "shutoff": "shutoff",
    "shutdown": "shutoff",
    "crashed": "shutoff",
}


def _export_state(obs: Observed) -> Spec:
    spec: Spec = {}
    state = _DOMAIN_STATES.get(obs.state)
    if state is not None:
        spec["state"] = state
    spec["autostart"] = obs.autostart
    return spec


def _references(m: Manifest) -> list[Reference]:
    out = []
    for i, disk in enumerate(m.spec.get("disks", ())):
        vol = disk.get("source", {}).get("volume")
        if vol:
            field = f"spec.disks.{i}.source.volume"
            name, pool = str(vol["name"]), str(vol["pool"])
            out.append(Reference(field=field, kind=Kind.VOLUME, name=name, pool=pool))
    for i, nic in enumerate(m.spec.get("interfaces", ())):
        net = nic.get("network")
        if net:
            field = f"spec.interfaces.{i}.network"
            out.append(Reference(field=field, kind=Kind.NETWORK, name=str(net)))
    return out


# Pause and crash reasons that mean something is wrong with the guest, not that
# someone chose the state (libvirt's virDomainPausedReason / CrashedReason names).
_UNHEALTHY_PAUSE = frozenset({"ioerror", "watchdog", "crashed", "postcopy_failed"})


def _power_state(obs: Observed) -> Power:
    # "unknown" is libvirt's reason for a domain never started: say nothing.
    reason = "" if obs.state_reason == "unknown" else obs.state_reason
    healthy = obs.state != "crashed" and not (
        obs.state == "paused" and obs.state_reason in _UNHEALTHY_PAUSE
    )
    return Power(obs.state, reason, healthy)


def _write_record(_obs: Observed, record: Record) -> Step:
    return _set_record(record)


HANDLER = Handler(
    kind=Kind.DOMAIN,
    label="domain",
    root="domain",
    record_home=RecordHome.METADATA,
    plan=_plan,
    delete=_delete,
    write_record=_write_record,
    export_state=_export_state,
    export_required=("memory",),
    references=_references,
    power=_power_state,
)
