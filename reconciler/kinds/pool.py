"""Storage pools: planner, exporter and handler."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lxml import etree

from reconciler import canonical, diff, ownership
from reconciler.actions import (
    Action,
    ActionType,
    Change,
    Disruption,
    Normalise,
    _autostart,
    _desired_flat,
    _parse,
    _pretty,
    _record,
    _to_changes,
)
from reconciler.kinds.base import Context, Handler, RecordHome
from reconciler.kinds.exporting import (
    active_state,
)
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.steps import (
    BuildPool,
    Define,
    RegistrySet,
    SetAutostart,
    Start,
    Step,
    Stop,
    Undefine,
)


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
    reg_step = RegistrySet(kind=Kind.STORAGE_POOL, key=m.name, record=record)
    if obs is None:
        create: list[Step] = [reg_step, Define(kind=Kind.STORAGE_POOL, xml=_pretty(desired))]
        if state in (None, "active"):
            create += [BuildPool(), Start(kind=Kind.STORAGE_POOL)]
        if state is None:
            # Until the start, the record says "starting": a run that finds the
            # pool defined but stopped (a crash in between) still starts it.
            create[0] = RegistrySet(
                kind=Kind.STORAGE_POOL, key=m.name, record=replace(record, restarting=True)
            )
            create.append(reg_step)
        if autostart is not None:
            create.append(SetAutostart(kind=Kind.STORAGE_POOL, on=bool(autostart)))
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
        steps.append(Define(kind=Kind.STORAGE_POOL, xml=_pretty(merged)))
    if starting and not active:
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps += [BuildPool(), Start(kind=Kind.STORAGE_POOL), reg_step]
    elif starting:
        steps.append(reg_step)
    if state == "active" and not active:
        changes.append(
            Change(path="state", old=obs.state, new="active", disruption=Disruption.LIVE)
        )
        steps += [BuildPool(), Start(kind=Kind.STORAGE_POOL)]
    elif state == "inactive" and active:
        changes.append(
            Change(path="state", old="active", new="inactive", disruption=Disruption.LIVE)
        )
        steps.append(Stop(kind=Kind.STORAGE_POOL))
    _autostart(changes, steps, Kind.STORAGE_POOL, autostart, obs)
    kind = ActionType.UPDATE if changes else (ActionType.UNCHANGED if managed else ActionType.ADOPT)
    if kind is ActionType.UNCHANGED:
        steps = [s for s in steps if not isinstance(s, RegistrySet)] if old_record == record else []
    return Action(
        **base,
        type=kind,
        changes=tuple(changes),
        steps=tuple(steps),
        xml_before=_pretty(inactive) if cfg else None,
        xml_after=_pretty(merged) if cfg else None,
    )


# --- the handler ---------------------------------------------------------------------


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    return _plan_pool(m, desired, obs, ctx.host, ctx.registry, ctx.normalise)


def _delete(obs: Observed, registry: Registry) -> tuple[Record | None, list[Step]]:
    steps: list[Step] = [Stop(kind=Kind.STORAGE_POOL)] if obs.active else []
    steps += [
        Undefine(kind=Kind.STORAGE_POOL),
        RegistrySet(kind=Kind.STORAGE_POOL, key=obs.name, record=None),
    ]
    return registry.pools.get(obs.name), steps


def _write_record(obs: Observed, record: Record) -> Step:
    return RegistrySet(kind=Kind.STORAGE_POOL, key=obs.name, record=record)


HANDLER = Handler(
    kind=Kind.STORAGE_POOL,
    label="storage pool",
    root="pool",
    record_home=RecordHome.REGISTRY,
    plan=_plan,
    delete=_delete,
    write_record=_write_record,
    export_state=active_state,
    export_required=("type",),
)
