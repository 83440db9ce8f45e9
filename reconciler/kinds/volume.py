"""Volumes: planner, exporter and handler."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler import canonical, diff, ownership
from reconciler.actions import (
    Action,
    ActionType,
    Change,
    Disruption,
    Normalise,
    Options,
    _desired_flat,
    _parse,
    _pretty,
    _record,
    _to_changes,
)
from reconciler.kinds.base import Context, Handler, Power, RecordHome, Reference, Spec
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.steps import (
    CloneVolume,
    CreateVolume,
    DeleteVolume,
    RegistrySet,
    ResizeVolume,
    Step,
    UploadVolume,
)


def source_fingerprint(spec: Mapping[str, Any]) -> str:
    """``spec.source`` as compact JSON ("" without one): kept in the record, so a
    changed source is seen (the volume is not read back to compare)."""
    source = spec.get("source")
    return json.dumps(source, sort_keys=True, separators=(",", ":")) if source else ""


def source_file(m: Manifest) -> str | None:
    """The absolute path of ``spec.source.file`` (relative to the manifest's file)."""
    file = (m.spec.get("source") or {}).get("file")
    if file is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(m.source.file)), file))


def backing_volume(spec: Mapping[str, Any]) -> tuple[str, str] | None:
    """``backingStore.volume`` as (pool, name)."""
    ref = (spec.get("backingStore") or {}).get("volume")
    return (str(ref["pool"]), str(ref["name"])) if ref is not None else None


def _fill(m: Manifest, pool: str, xml: str) -> Step:
    """The step that creates the volume: empty, uploaded or cloned (``spec.source``)."""
    source = m.spec.get("source")
    if m.content is not None:
        return UploadVolume(pool=pool, xml=xml, data=m.content)
    if source is None:
        return CreateVolume(pool=pool, xml=xml, backing=backing_volume(m.spec))
    if "volume" in source:
        ref = source["volume"]
        return CloneVolume(pool=pool, xml=xml, from_pool=ref["pool"], from_name=ref["name"])
    return UploadVolume(
        pool=pool,
        xml=xml,
        file=source_file(m),
        url=source.get("url"),
        sha256=source.get("sha256"),
    )


def describe_source(spec: Mapping[str, Any]) -> str | None:
    """What a plan says a new volume is made from (None: it starts empty)."""
    source = spec.get("source")
    if source is None:
        return None
    if "seed" in source:
        return f"cloud-init seed of {source['seed']}"
    if "volume" in source:
        return f"clone of volume {source['volume']['pool']}/{source['volume']['name']}"
    checked = " (sha256 checked)" if "sha256" in source else ""
    if "url" in source:
        return (
            f"download {source['url']}{checked}"
            if not source["url"].startswith("file:")
            else f"upload {source['url']}{checked}"
        )
    return f"upload {source['file']}{checked}"


def _creation(m: Manifest, pool: str, key: str, xml: str, record: Record) -> list[Step]:
    """Record, create (and fill); a volume filled from a source is recorded as
    ``uploading`` until it is full, so an interrupted upload is re-created."""
    if "source" not in m.spec:
        return [RegistrySet(kind=Kind.VOLUME, key=key, record=record), _fill(m, pool, xml)]
    return [
        RegistrySet(kind=Kind.VOLUME, key=key, record=dataclasses.replace(record, uploading=True)),
        _fill(m, pool, xml),
        RegistrySet(kind=Kind.VOLUME, key=key, record=record),
    ]


def _plan_volume(
    m: Manifest,
    desired: etree._Element,
    obs: Observed | None,
    host: Host,
    registry: ownership.Registry,
    options: Options,
    running_user: str | None,
    normalise: Normalise | None = None,
    users: tuple[str, ...] = (),
) -> Action:
    pool = str(m.spec["pool"])
    key = f"{pool}/{m.name}"
    dflat = _desired_flat(Kind.VOLUME, desired, normalise)
    record = _record(m, dflat, host.name)
    # A volume holds data: --prune deletes it only when its manifest says spec.prune.
    # A cloud-init seed belongs to its domain: it goes when the domain stops using it.
    record = dataclasses.replace(
        record,
        prune=record.prune and (bool(m.spec.get("prune", False)) or m.owner is not None),
        source=source_fingerprint(m.spec),
        owner=m.owner or "",
    )
    base: dict[str, Any] = {
        "kind": Kind.VOLUME,
        "name": m.name,
        "pool": pool,
        "source": str(m.source),
    }
    reg_step = RegistrySet(kind=Kind.VOLUME, key=key, record=record)
    create = _creation(m, pool, key, _pretty(desired), record)
    if obs is None:
        return Action(
            **base,
            type=ActionType.CREATE,
            steps=tuple(create),
            changes=(
                Change(path="definition", old=None, new="created", disruption=Disruption.NONE),
                *(
                    [Change(path="source", old=None, new=made, disruption=Disruption.NONE)]
                    if (made := describe_source(m.spec))
                    else []
                ),
            ),
            xml_after=_pretty(desired),
        )
    old_record = registry.volumes.get(key)
    managed = old_record is not None and old_record.managed
    if managed and old_record is not None and old_record.uploading:
        # An upload (or clone) that never finished: the volume is not what the
        # source says, whatever its XML looks like.
        return Action(
            **base,
            type=ActionType.UPDATE,
            steps=(DeleteVolume(pool=pool), *create),
            changes=(
                Change(
                    path="source",
                    old="incomplete (an earlier upload did not finish)",
                    new="uploaded again",
                    disruption=Disruption.REPLACE,
                ),
            ),
            xml_after=_pretty(desired),
        )
    current = _parse(obs.xml)
    cflat = canonical.flatten(current, Kind.VOLUME)
    cfg = diff.diff_fields(
        Kind.VOLUME, dflat, cflat, old_record.applied if managed and old_record else ()
    )
    changes: list[Change] = []
    steps: list[Step] = []
    error = None
    others = [c for c in cfg if c.path not in ("capacity", "allocation")]
    # The backing file of other volumes: their data is written against it as it is.
    overlays = [u.removeprefix("volume ") for u in users if u.startswith("volume ")]
    for c in cfg:
        if c.path == "capacity" and c.old is not None and c.new is not None:
            if overlays:
                error = (
                    f"volume {key}: capacity cannot change: it is the backing file of "
                    f"{', '.join(overlays)}"
                )
            elif int(c.new) < int(c.old):
                error = (
                    f"volume {key}: capacity {c.new} bytes is smaller than the current "
                    f"{c.old} bytes; shrinking a volume is refused (it would lose data)"
                )
            else:
                changes.append(
                    Change(path="capacity", old=c.old, new=c.new, disruption=Disruption.LIVE)
                )
                steps.append(
                    # qemu holds an in-use image open (and locked): a running
                    # domain grows it with blockResize.
                    ResizeVolume(pool=pool, capacity=int(c.new), domain=running_user)
                )
    ref = f"{Kind.VOLUME.value}/{pool}/{m.name}"
    replaced = _to_changes(others, dflat, cflat, Disruption.REPLACE)
    if managed and old_record is not None and old_record.source != record.source:
        # A source is read at create time only: another source is another volume.
        replaced.append(
            Change(
                path="source",
                old=old_record.source or None,
                new=record.source or None,
                disruption=Disruption.REPLACE,
            )
        )
    if replaced and error is None and users:
        paths = ", ".join(c.path for c in replaced)
        error = f"volume {key}: {paths} cannot change: it is in use by {', '.join(users)}"
        if ref in options.replace or f"{Kind.VOLUME.value}/{m.name}" in options.replace:
            # The rule prune keeps to: a volume a domain uses is never deleted.
            error = (
                f"volume {key}: --replace {ref} refused: in use by domain(s) "
                f"{', '.join(users)}; deleting it would pull the disk from under them "
                "(remove the disk from those domains first)"
            )
    if replaced and error is None:
        replace_ok = ref in options.replace or f"{Kind.VOLUME.value}/{m.name}" in options.replace
        if replace_ok:
            changes = replaced
            steps = [DeleteVolume(pool=pool), *create]
        else:
            paths = ", ".join(c.path for c in replaced)
            error = (
                f"volume {key}: {paths} cannot change in place; "
                f"apply with --replace {ref} to delete and recreate it (its data is lost)"
            )
    if error:
        return Action(
            **base,
            type=ActionType.UPDATE,
            error=error,
            changes=tuple(
                _to_changes(cfg, dflat, cflat, Disruption.REPLACE)
                + [c for c in replaced if c.path == "source"]
            ),
        )
    if old_record != record and not any(isinstance(s, RegistrySet) for s in steps):
        steps.insert(0, reg_step)
    kind = ActionType.UPDATE if changes else (ActionType.UNCHANGED if managed else ActionType.ADOPT)
    if kind is ActionType.UNCHANGED and old_record == record:
        steps = []
    return Action(**base, type=kind, changes=tuple(changes), steps=tuple(steps))


# --- the handler ---------------------------------------------------------------------


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    # qemu holds an in-use image open: a running domain grows it (blockResize).
    users = ctx.volume_users.get(f"{m.spec['pool']}/{m.name}", ())
    running = [d for d in users if d in ctx.running_domains]
    backing = backing_volume(m.spec)
    if backing is not None and "/".join(backing) in ctx.volume_files:
        # The base exists: its file is the backing path to compare with.
        path, fmt = ctx.volume_files["/".join(backing)]
        desired = etree.fromstring(etree.tostring(desired))
        backing_el = etree.SubElement(desired, "backingStore")
        etree.SubElement(backing_el, "path").text = path
        fmt = m.spec["backingStore"].get("format", fmt)
        if fmt:
            etree.SubElement(backing_el, "format", type=fmt)
    return _plan_volume(
        m,
        desired,
        obs,
        ctx.host,
        ctx.registry,
        ctx.options,
        running[0] if running else None,
        ctx.normalise,
        users,
    )


def _delete(obs: Observed, registry: Registry) -> tuple[Record | None, list[Step]]:
    key = f"{obs.pool}/{obs.name}"
    return registry.volumes.get(key), [
        DeleteVolume(pool=str(obs.pool)),
        RegistrySet(kind=Kind.VOLUME, key=key, record=None),
    ]


def _export_state(obs: Observed) -> Spec:
    return {"pool": obs.pool}


def _references(m: Manifest) -> list[Reference]:
    refs = [Reference(field="spec.pool", kind=Kind.STORAGE_POOL, name=str(m.spec["pool"]))]
    if "encryption" in m.spec:
        refs.append(
            Reference(
                field="spec.encryption.secret",
                kind=Kind.SECRET,
                name=str(m.spec["encryption"]["secret"]),
            )
        )
    for field in ("source", "backingStore"):
        other = (m.spec.get(field) or {}).get("volume")
        if other is not None:
            refs.append(
                Reference(
                    field=f"spec.{field}.volume",
                    kind=Kind.VOLUME,
                    name=str(other["name"]),
                    pool=str(other["pool"]),
                )
            )
    return refs


def _write_record(obs: Observed, record: Record) -> Step:
    return RegistrySet(kind=Kind.VOLUME, key=f"{obs.pool}/{obs.name}", record=record)


HANDLER = Handler(
    kind=Kind.VOLUME,
    label="volume",
    root="volume",
    record_home=RecordHome.REGISTRY,
    plan=_plan,
    delete=_delete,
    write_record=_write_record,
    export_state=_export_state,
    export_required=("capacity",),
    references=_references,
    power=lambda _obs: Power(None),
)
