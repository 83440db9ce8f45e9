"""Networks: planner, exporter and handler."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping, Sequence
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
from reconciler.kinds.base import Context, Handler, RecordHome, Spec
from reconciler.kinds.exporting import (
    BRIDGE,
    IP,
    MAC,
    active_state,
    to_int,
)
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.render.network import render_network
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


# --- export -----------------------------------------------------------------------

_DNS_DOMAIN = re.compile(r"^[A-Za-z0-9.-]+$")


def _export(root: etree._Element, _shared: Collection[str]) -> Spec:
    spec: Spec = {}
    forwards = root.findall("forward")
    if len(forwards) == 1 and forwards[0].get("mode") in ("nat", "route", "open", "bridge"):
        spec["forward"] = forwards[0].get("mode")
    bridge = root.find("bridge")
    if bridge is not None and BRIDGE.match(bridge.get("name") or ""):
        spec["bridge"] = bridge.get("name")
    domain = root.find("domain")
    if domain is not None and _DNS_DOMAIN.match(domain.get("name") or ""):
        spec["domain"] = domain.get("name")
    mtu_el = root.find("mtu")
    mtu = to_int(mtu_el.get("size")) if mtu_el is not None else None
    if mtu is not None and 68 <= mtu <= 65535:
        spec["mtu"] = mtu
    ips = root.findall("ip")
    if len(ips) == 1:
        ip = _ip(ips[0])
        if ip is not None:
            spec["ip"] = ip
    dns_hosts = root.findall("dns/host")
    hosts = [
        (h.get("ip") or "", [(n.text or "").strip() for n in h.iterfind("hostname")])
        for h in dns_hosts
    ]
    if hosts and all(IP.match(ip) and names and all(names) for ip, names in hosts):
        spec["dns"] = {"hosts": [{"ip": ip, "names": names} for ip, names in hosts]}
    return spec


def _ip(el: etree._Element) -> Spec | None:
    prefix = to_int(el.get("prefix"))
    if not IP.match(el.get("address") or "") or prefix is None or not 0 <= prefix <= 128:
        return None
    ip: Spec = {"address": el.get("address"), "prefix": prefix}
    dhcp_el = el.find("dhcp")
    if dhcp_el is None:
        return ip
    dhcp: Spec = {}
    ranges = dhcp_el.findall("range")
    if len(ranges) == 1 and all(IP.match(ranges[0].get(a) or "") for a in ("start", "end")):
        dhcp["range"] = [ranges[0].get("start"), ranges[0].get("end")]
    hosts = [_dhcp_host(h) for h in dhcp_el.iterfind("host")]
    if hosts and all(h is not None for h in hosts):
        dhcp["hosts"] = hosts
    if dhcp:
        ip["dhcp"] = dhcp
    return ip


def _dhcp_host(el: etree._Element) -> Spec | None:
    if not IP.match(el.get("ip") or ""):
        return None
    host: Spec = {}
    mac = el.get("mac")
    if mac is not None:
        if not MAC.match(mac):
            return None
        host["mac"] = mac.lower()
    if el.get("name"):
        host["name"] = el.get("name")
    host["ip"] = el.get("ip")
    return host


# --- the handler ---------------------------------------------------------------------


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    return _plan_network(m, desired, obs, ctx.host, ctx.network_users, ctx.normalise)


def _delete(obs: Observed, _registry: Registry) -> tuple[Record | None, list[Step]]:
    steps: list[Step] = [Stop(kind=Kind.NETWORK)] if obs.active else []
    steps.append(Undefine(kind=Kind.NETWORK))
    return obs.record, steps


HANDLER = Handler(
    kind=Kind.NETWORK,
    label="network",
    root="network",
    record_home=RecordHome.METADATA,
    render=render_network,
    plan=_plan,
    delete=_delete,
    export=_export,
    export_state=active_state,
)
