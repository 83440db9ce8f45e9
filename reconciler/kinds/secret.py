"""Secrets: planner, exporter and handler.

A secret's definition (usage, private, ephemeral) is compared field by field;
its value never is, because it is never kept: the planner reads it (from the
file or the environment variable ``spec.value`` names), makes its keyed digest
(``values``) and drops it. The digest is compared with the one in the secret's
record (what virt-reconcile last set) and, for a secret that is not private,
with the digest of the value libvirt gives back (drift made outside).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lxml import etree

from reconciler import values
from reconciler.actions import Action, ActionType, Change, Disruption, _parse, _pretty
from reconciler.kinds.base import Context, Handler, Power, RecordHome, Spec
from reconciler.model import Kind, Manifest
from reconciler.observed import Observed
from reconciler.ownership import Record, Registry
from reconciler.render.secret import USAGE_ELEMENTS, secret_uuid
from reconciler.steps import DefineSecret, RegistrySet, SetSecretValue, Step, UndefineSecret

# Fields of the definition libvirt cannot change on a defined secret.
_FIXED = ("@private", "@ephemeral")


def _fields(root: etree._Element) -> dict[str, str]:
    usage = root.find("usage")
    kind = usage.get("type", "") if usage is not None else ""
    element = USAGE_ELEMENTS.get(kind)
    return {
        "@private": root.get("private", "no"),
        "@ephemeral": root.get("ephemeral", "no"),
        "description": (root.findtext("description") or "").strip(),
        "usage/@type": kind,
        "usage": (usage.findtext(element) or "").strip() if usage is not None and element else "",
    }


def _plan(m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context) -> Action:
    base: dict[str, Any] = {"kind": Kind.SECRET, "name": m.name, "source": str(m.source)}
    uuid = secret_uuid(m.name)
    ref = values.ValueRef.of(m.spec["value"], m.source.file)
    try:
        value = values.read(ref)
    except values.UnreadableValue as e:
        return Action(
            **base,
            type=ActionType.CREATE if obs is None else ActionType.UPDATE,
            error=f"{m.source_of('spec.value')}: spec.value: {e}",
        )
    key = ctx.registry.secret_key
    wanted = values.digest(key, value) if key else None
    del value
    record = Record(
        managed=True,
        prune=not m.prune_protected,
        host=ctx.host.name,
        labels=tuple(sorted(m.labels.items())),
    )
    xml = _pretty(desired)
    set_value = SetSecretValue(uuid=uuid, value=ref, record=record)
    if obs is None:
        return Action(
            **base,
            type=ActionType.CREATE,
            # Recorded first, so a run that stops midway still owns what it made.
            steps=(
                RegistrySet(kind=Kind.SECRET, key=m.name, record=record),
                DefineSecret(xml=xml),
                set_value,
            ),
            changes=(
                Change(path="definition", old=None, new="defined", disruption=Disruption.NONE),
                Change(path="value", old=None, new=f"from {ref}", disruption=Disruption.NONE),
            ),
            xml_after=xml,
        )
    if obs.uuid != uuid:
        return Action(
            **base,
            type=ActionType.UPDATE,
            error=(
                f"{m.source_of('metadata.name')}: secret {m.name!r} on host {ctx.host.name} has "
                f"UUID {obs.uuid}; virt-reconcile gives it UUID {uuid} (derived from the name, "
                "so volumes and disks can refer to it): undefine the old secret or rename this one"
            ),
        )
    old_record = ctx.registry.secrets.get(m.name)
    managed = old_record is not None and old_record.managed
    live, want = _fields(_parse(obs.xml)), _fields(desired)
    differ = [f for f in want if live.get(f) != want[f]]
    fixed = [f for f in differ if f in _FIXED]
    changes = [
        Change(
            path=f,
            old=live.get(f),
            new=want[f],
            disruption=Disruption.REPLACE if fixed else Disruption.NONE,
        )
        for f in differ
    ]
    steps: list[Step] = []
    note = None
    if fixed:
        # libvirt keeps private and ephemeral as defined: the secret is defined
        # anew, with the same UUID, and its value set again from the source.
        steps = [UndefineSecret(uuid=uuid), DefineSecret(xml=xml), set_value]
    else:
        if differ:
            steps.append(DefineSecret(xml=xml))
        why = _value_drift(obs, old_record, wanted, managed)
        if why is not None:
            changes.append(
                Change(path="value", old=why, new=f"from {ref}", disruption=Disruption.LIVE)
            )
            steps.append(set_value)
        elif old_record is None or old_record != _with_digest(record, old_record):
            steps.append(
                RegistrySet(kind=Kind.SECRET, key=m.name, record=_with_digest(record, old_record))
            )
        if obs.value_digest is None and why is None:
            note = (
                "private: libvirt does not give the value back; it is compared with the "
                "value virt-reconcile last set"
            )
    kind = ActionType.UPDATE if changes else (ActionType.UNCHANGED if managed else ActionType.ADOPT)
    return Action(
        **base,
        type=kind,
        changes=tuple(changes),
        steps=tuple(steps),
        note=note,
        xml_before=_pretty(_parse(obs.xml)) if differ else None,
        xml_after=xml if differ else None,
    )


def _with_digest(record: Record, old: Record | None) -> Record:
    return dataclasses.replace(record, digest=old.digest if old is not None else "")


def _value_drift(
    obs: Observed, old: Record | None, wanted: str | None, managed: bool
) -> str | None:
    """Why the value must be set again (None: it is the manifest's); never the value."""
    if wanted is None:
        return "never set by virt-reconcile on this host"
    if obs.value_digest == "":
        return "the secret has no value"
    if obs.value_digest is not None:
        if obs.value_digest != wanted:
            return "differs from the manifest's (changed on the host, or in the manifest's source)"
        return None
    # Private: only what virt-reconcile set last can be compared.
    if not managed or old is None or not old.digest:
        return "private and never set by virt-reconcile: cannot be checked"
    if old.digest != wanted:
        return "the manifest's value changed since it was set"
    return None


# --- export -----------------------------------------------------------------------


def value_file(name: str) -> str:
    """Where an exported Secret says its value goes (beside its manifest)."""
    return f"{name}.value"


def _export_more(root: etree._Element) -> Spec:
    return {"value": {"file": value_file(_name(root))}}


def _name(root: etree._Element) -> str:
    return (root.findtext("description") or "").strip() or (root.findtext("uuid") or "")


def _delete(obs: Observed, registry: Registry) -> tuple[Record | None, list[Step]]:
    return registry.secrets.get(obs.name), [
        UndefineSecret(uuid=obs.uuid),
        RegistrySet(kind=Kind.SECRET, key=obs.name, record=None),
    ]


def _export_state(_obs: Observed) -> Spec:
    return {}


def _write_record(obs: Observed, record: Record) -> Step:
    return RegistrySet(kind=Kind.SECRET, key=obs.name, record=record)


HANDLER = Handler(
    kind=Kind.SECRET,
    label="secret",
    root="secret",
    record_home=RecordHome.REGISTRY,
    plan=_plan,
    delete=_delete,
    write_record=_write_record,
    export_more=_export_more,
    export_state=_export_state,
    export_required=("usage", "value"),
    power=lambda _obs: Power(None),
    overlay=False,
)
