"""After planning: the sync state and health of every object a manifest names (pure).

``status`` is a reading of the same plan that ``plan`` and ``apply`` build, so
the three never disagree: an object that ``plan`` would leave alone is
``Synced``, one it would create is ``Missing``, one it would update or adopt
is ``OutOfSync``, one whose definition waits for a restart is
``PendingRestart``; ``Suspended`` objects (the ``virt-reconcile/suspend``
annotation) are shown but never changed; ``Orphan``: managed, named by no
manifest any more (requires pruning; the reason says what ``--prune`` would
do); ``Failed`` means the object cannot be
reconciled now (a plan-time check failed, or its host is unreachable).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.kinds import KINDS
from reconciler.kinds.base import Power
from reconciler.model import Kind, Manifest, object_ref
from reconciler.observed import HostState, object_key
from reconciler.plan import Action, ActionType, HostPlan


class Sync(enum.StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    PENDING_RESTART = "PendingRestart"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    FAILED = "Failed"
    # Managed, but no manifest names it any more: requires pruning.
    ORPHAN = "Orphan"


@dataclass(frozen=True, kw_only=True)
class ObjectStatus:
    """One named object on one host."""

    host: str
    kind: Kind
    name: str
    pool: str | None
    source: str
    sync: Sync
    reason: str
    power: str | None = None
    power_reason: str = ""
    healthy: bool = True

    @property
    def ref(self) -> str:
        return object_ref(self.kind, self.name, self.pool)


@dataclass(frozen=True, kw_only=True)
class HostStatus:
    host: str
    uri: str
    reachable: bool
    error: str | None
    objects: tuple[ObjectStatus, ...]
    revision: str | None = None  # the git revision ``watch`` last applied here


def build(
    assignments: Mapping[str, Sequence[Manifest]],
    plans: Mapping[str, HostPlan],
    states: Mapping[str, HostState],
) -> list[HostStatus]:
    """Status per host, in plan order, for the objects the manifests name."""
    out = []
    for name, hp in plans.items():
        state = states[name]
        by_key = {object_key(a.kind, a.name, a.pool): a for a in hp.actions}
        objects = []
        for m in sorted(
            assignments.get(name, ()),
            key=lambda m: (m.kind.order, m.spec.get("pool", ""), m.name),
        ):
            key = object_key(m.kind, m.name, m.spec.get("pool"))
            objects.append(_object(name, m, by_key.get(key), state))
        objects += [_orphan(name, a, state) for a in hp.actions if a.orphan is not None]
        out.append(
            HostStatus(
                host=name,
                uri=hp.host.uri,
                reachable=hp.reachable,
                error=hp.error,
                objects=tuple(objects),
                revision=state.registry.applied.get("revision"),
            )
        )
    return out


def _object(host: str, m: Manifest, action: Action | None, state: HostState) -> ObjectStatus:
    sync, reason = _sync(m, action, state)
    obs = state.objects.get(object_key(m.kind, m.name, m.spec.get("pool")))
    power, power_reason, healthy = KINDS[m.kind].power(obs) if obs is not None else Power(None)
    return ObjectStatus(
        host=host,
        kind=m.kind,
        name=m.name,
        pool=m.spec.get("pool"),
        source=str(m.source),
        sync=sync,
        reason=reason,
        power=power,
        power_reason=power_reason,
        healthy=healthy,
    )


def _orphan(host: str, a: Action, state: HostState) -> ObjectStatus:
    obs = state.objects.get(object_key(a.kind, a.name, a.pool))
    power, power_reason, healthy = KINDS[a.kind].power(obs) if obs is not None else Power(None)
    return ObjectStatus(
        host=host,
        kind=a.kind,
        name=a.name,
        pool=a.pool,
        source="",
        sync=Sync.ORPHAN,
        reason=a.note or "requires pruning",
        power=power,
        power_reason=power_reason,
        healthy=healthy,
    )


def _sync(m: Manifest, action: Action | None, state: HostState) -> tuple[Sync, str]:
    if not state.reachable:
        return Sync.FAILED, f"host unreachable: {state.error}"
    if m.suspended:
        return Sync.SUSPENDED, "annotation virt-reconcile/suspend is true"
    if action is None:
        return Sync.FAILED, "not planned"
    if action.error:
        return Sync.FAILED, action.error
    paths = _paths(action)
    if action.type is ActionType.CREATE:
        return Sync.MISSING, "not on the host"
    if action.type is ActionType.ADOPT:
        differs = f"; differs: {paths}" if paths else ""
        return Sync.OUT_OF_SYNC, f"exists but is not managed yet{differs}"
    if action.type is ActionType.UPDATE:
        return Sync.OUT_OF_SYNC, f"differs: {paths}"
    if action.type is ActionType.PENDING_RESTART:
        return Sync.PENDING_RESTART, f"waits for a restart: {paths}" if paths else (
            action.note or "the running object waits for a restart"
        )
    return Sync.SYNCED, "matches the manifest"


def _paths(action: Action, limit: int = 4) -> str:
    paths = [c.path for c in action.changes]
    shown = ", ".join(paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def summary(statuses: Sequence[HostStatus]) -> dict[str, int]:
    counts = {s.value: 0 for s in Sync}
    for hs in statuses:
        for o in hs.objects:
            counts[o.sync.value] += 1
    return counts
