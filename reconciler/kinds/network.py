"""Networks: planner, exporter and handler."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from lxml import etree

from reconciler import canonical, diff
from reconciler.actions import (
    Action,
    ActionType,
    Change,
    Disruption,
    Normalise,
    _action_type,
    _autostart,
    _desired_flat,
    _parse,
    _pretty,
    _record,
    _to_changes,
    _with_record,
)
from reconciler.kinds.base import Context, Handler, RecordHome
from reconciler.kinds.exporting import (
    active_state,
)
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.steps import (
    Define,
    NetCommand,
    NetSection,
    NetUpdate,
    SetAutostart,
    Start,
    Step,
    Stop,
    Undefine,
)

_NET_SECTIONS = [
    (re.compile(r"^(ip\[[^/]*\])/dhcp/(host\[[^/]*\])"), NetSection.IP_DHCP_HOST),
    (re.compile(r"^(ip\[[^/]*\])/dhcp/(range\[[^/]*\])"), NetSection.IP_DHCP_RANGE),
    (re.compile(r"^()dns/(host\[[^/]*\])"), NetSection.DNS_HOST),
    (re.compile(r"^()dns/(txt\[[^/]*\])"), NetSection.DNS_TXT),
    (re.compile(r"^()dns/(srv\[[^/]*\])"), NetSection.DNS_SRV),
    (re.compile(r"^()(portgroup\[[^/]*\])"), NetSection.PORTGROUP),
]


_MODIFIABLE = {NetSection.IP_DHCP_HOST, NetSection.PORTGROUP}


def _net_section(path: str) -> tuple[NetSection, str, str] | None:
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
        create: list[Step] = [Define(kind=Kind.NETWORK, xml=_with_record(desired, record))]
        if state in (None, "active"):
            create.append(Start(kind=Kind.NETWORK))
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
            create[0] = Define(kind=Kind.NETWORK, xml=_with_record(doc, guarded))
            create.append(Define(kind=Kind.NETWORK, xml=_with_record(doc, record)))
        if autostart is not None:
            create.append(SetAutostart(kind=Kind.NETWORK, on=bool(autostart)))
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
        steps.append(Start(kind=Kind.NETWORK))
    if define:
        steps.append(Define(kind=Kind.NETWORK, xml=_with_record(merged, record)))
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
        steps.append(Start(kind=Kind.NETWORK))
    elif state == "inactive" and obs.state == "active":
        changes.append(
            Change(path="state", old="active", new="inactive", disruption=Disruption.LIVE)
        )
        steps.append(Stop(kind=Kind.NETWORK))
    _autostart(changes, steps, Kind.NETWORK, autostart, obs)
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
        update = partial(
            NetUpdate,
            section=section,
            parent_index=ips.index(ip) if ip in ips else -1,
            live=any(p in live_paths for p in touched),
            config=config and any(p in cfg_paths for p in touched),
        )
        new_el, old_el = dflat.elements.get(element), lflat.elements.get(element)
        if new_el is not None and old_el is not None and section in _MODIFIABLE:
            steps.append(update(command=NetCommand.MODIFY, xml=diff.element_xml(new_el)))
            continue
        if old_el is not None:
            steps.append(update(command=NetCommand.DELETE, xml=diff.element_xml(old_el)))
        if new_el is not None:
            steps.append(update(command=NetCommand.ADD_LAST, xml=diff.element_xml(new_el)))
    return steps


# --- the handler ---------------------------------------------------------------------


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    return _plan_network(m, desired, obs, ctx.host, ctx.network_users, ctx.normalise)


def _delete(obs: Observed, _registry: Registry) -> tuple[Record | None, list[Step]]:
    steps: list[Step] = [Stop(kind=Kind.NETWORK)] if obs.active else []
    steps.append(Undefine(kind=Kind.NETWORK))
    return obs.record, steps


def _write_record(obs: Observed, record: Record) -> Step:
    return Define(kind=Kind.NETWORK, xml=_with_record(_parse(obs.xml), record))


HANDLER = Handler(
    kind=Kind.NETWORK,
    label="network",
    root="network",
    record_home=RecordHome.METADATA,
    plan=_plan,
    delete=_delete,
    write_record=_write_record,
    export_state=active_state,
)
