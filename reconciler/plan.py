"""Stage 6 of the pipeline: decide the actions for one host (pure).

``build_host_plan`` takes the desired objects for a host and what ``hosts``
observed there, and returns ordered actions. Each action carries its field
changes (with a disruption class) and the exact libvirt steps that
``execute`` will run, so the executor decides nothing and a dry run shows
precisely what would happen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from lxml import etree

from reconciler import cache, cloudinit, fields, ownership
from reconciler.actions import (
    Action,
    ActionType,
    Change,
    Disruption,
    HostPlan,
    Normalise,
    Options,
    Orphan,
    _parse,
)
from reconciler.defaults import DEFAULT_MAX_PRUNE
from reconciler.kinds import KINDS, Context
from reconciler.kinds.base import Reference
from reconciler.model import Kind, Manifest, object_ref
from reconciler.observed import HostState, ObjectKey, Observed, object_key
from reconciler.placement import NO_FIT, Placement
from reconciler.steps import (
    DetachDevice,
    RestartDomain,
    ShutdownDomain,
    Stop,
    UpdateDevice,
)
from reconciler.verdicts import Verdicts, bare

__all__ = [
    "DEFAULT_MAX_PRUNE",
    "Action",
    "ActionType",
    "Change",
    "Disruption",
    "HostPlan",
    "Normalise",
    "Options",
    "Orphan",
    "build_host_plan",
    "disk_refs",
    "prune_refusal",
]

# --- deletion -------------------------------------------------------------------


def _seed_owner(obs: Observed, registry: ownership.Registry) -> str | None:
    """The domain a managed volume is the cloud-init seed of (its record's owner)."""
    if obs.kind is not Kind.VOLUME:
        return None
    record = registry.volumes.get(f"{obs.pool}/{obs.name}")
    if record is None or not record.managed or not record.owner.startswith("Domain/"):
        return None
    return record.owner.removeprefix("Domain/")


# The steps after which a running domain no longer reads its old seed.
_LIVE_SWAP = (UpdateDevice, DetachDevice, RestartDomain, Stop, ShutdownDomain)


def _old_seeds(
    state: HostState,
    actions: Sequence[Action],
    desired_keys: set[ObjectKey],
    users: Mapping[str, tuple[str, ...]],
) -> list[Action]:
    """Seeds of domains that are still declared here but use another seed now:
    deleted after the domain's action has swapped the media (it comes first),
    with or without ``--prune``; kept while anything still uses them. ``users``:
    ``_volume_users`` of the host (no domain leaving)."""
    domains = {a.name: a for a in actions if a.kind is Kind.DOMAIN}
    out = []
    for key, obs in sorted(state.objects.items(), key=lambda kv: kv[0]):
        owner = _seed_owner(obs, state.registry)
        if key in desired_keys or owner is None or owner not in domains:
            continue
        domain = domains[owner]
        action = _plan_delete(obs, state.registry, {})
        if action is None:
            continue
        seed = f"old cloud-init seed of Domain/{owner}"
        others = [u for u in users.get(f"{obs.pool}/{obs.name}", ()) if u != owner]
        dom = state.objects.get(object_key(Kind.DOMAIN, owner, None))
        live_xml = dom.live_xml if dom is not None and dom.active else None
        in_live = f"{obs.pool}/{obs.name}" in disk_refs(live_xml) if live_xml else False
        if domain.error or domain.note == "suspended":
            out.append(_kept(action, f"{seed}: kept until the domain's change is applied"))
        elif others:
            out.append(_kept(action, f"{seed}: in use by {', '.join(others)}"))
        elif in_live and not any(isinstance(s, _LIVE_SWAP) for s in domain.steps):
            out.append(_kept(action, f"{seed}: the running domain reads it until it restarts"))
        else:
            out.append(replace(action, note=f"{seed}: its media was swapped for the new seed"))
    return out


def _plan_delete(
    obs: Observed, registry: ownership.Registry, volume_users: Mapping[str, tuple[str, ...]]
) -> Action | None:
    record, steps = KINDS[obs.kind].delete(obs, registry)
    if record is None or not record.managed:
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
    if not record.prune:
        if obs.kind is Kind.VOLUME:
            return _kept(action, "volume prune is false (or annotation virt-reconcile/prune)")
        return _kept(action, 'annotation virt-reconcile/prune is "false"')
    users = volume_users.get(f"{obs.pool}/{obs.name}", ()) if obs.kind is Kind.VOLUME else ()
    if users:
        return _kept(action, f"in use by {', '.join(users)}")
    return action


def _kept(action: Action, why: str) -> Action:
    """A deletion the guards refuse: the object stays, and the plan says why."""
    return replace(
        action, type=ActionType.UNCHANGED, steps=(), changes=(), note=f"{_NOT_DELETED}{why}"
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


def _keep_secrets_in_use(deletes: list[Action], state: HostState) -> list[Action]:
    """A secret is not deleted while a volume or domain this run keeps names it
    (an encrypted volume cannot be opened without its passphrase)."""
    if not any(d.kind is Kind.SECRET and d.steps for d in deletes):
        return deletes
    going = {(d.kind, d.pool, d.name) for d in deletes if d.steps}
    out = []
    for d in deletes:
        obs = state.objects.get(object_key(d.kind, d.name, d.pool))
        if d.kind is not Kind.SECRET or not d.steps or obs is None or not obs.uuid:
            out.append(d)
            continue
        users = sorted(
            object_ref(o.kind, o.name, o.pool)
            for o in state.objects.values()
            if o.kind in (Kind.VOLUME, Kind.DOMAIN)
            and (o.kind, o.pool, o.name) not in going
            and any(obs.uuid in xml for xml in (o.xml, o.live_xml) if xml)
        )
        out.append(_kept(d, f"in use by {', '.join(users)}") if users else d)
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
    refs: Mapping[str, frozenset[str]],
) -> list[Action]:
    """Managed objects no manifest names: deletions behind the prune guards with
    ``--prune``, else (``_orphan``) unchanged, with a note of what ``--prune`` would do."""
    orphans = [
        obs
        for key, obs in sorted(state.objects.items(), key=lambda kv: (-kv[0][0].order, kv[0][1]))
        if key not in desired_keys
        and (kinds is None or obs.kind in kinds)
        and _selected(obs, state.registry, options)
    ]
    first = [
        d for o in orphans if (d := _plan_delete(o, state.registry, {})) is not None and d.steps
    ]
    # Domains are deleted before volumes, so a volume only they use may go too.
    leaving = frozenset(d.name for d in first if d.kind is Kind.DOMAIN)
    users = _volume_users(state, leaving=leaving, refs=refs) if orphans else {}
    deletes = [d for o in orphans if (d := _plan_delete(o, state.registry, users)) is not None]
    deletes = _keep_pools_with_volumes(deletes, state)
    deletes = _keep_secrets_in_use(deletes, state)
    managed = sum(
        1 for o in state.objects.values() if o.managed and _selected(o, state.registry, options)
    )
    refusal = prune_refusal(len(first), managed, host=state.host.name, options=options)
    refused = [d for d in deletes if d.steps]
    if refusal and refused:
        see = f"prune guard: refused on host {state.host.name}, see {refused[0].ref}"
        deletes = [
            replace(d, error=refusal if d is refused[0] else see) if d.steps else d for d in deletes
        ]
    return [_orphan(d, options) for d in deletes]


_NOT_DELETED = "not deleted: "


def _orphan(d: Action, options: Options) -> Action:
    """The orphan mark of a deletion (or kept object); without --prune only a note."""
    if d.steps and d.error is None:
        orphan = Orphan(delete=True)
    elif d.steps:
        orphan = Orphan(
            delete=False,
            reason=f"prune guard: more than --max-prune {options.max_prune}% of the "
            "managed objects on the host would go (--force-prune)",
        )
    else:
        orphan = Orphan(delete=False, reason=(d.note or "").removeprefix(_NOT_DELETED))
    if options.prune:
        return replace(d, orphan=orphan)
    would = "delete it" if orphan.delete else f"keep it: {orphan.reason}"
    return replace(
        d,
        type=ActionType.UNCHANGED,
        steps=(),
        changes=(),
        error=None,
        note=f"orphan: requires pruning (no manifest names it); --prune would {would}",
        orphan=orphan,
    )


def _selected(obs: Observed, registry: ownership.Registry, options: Options) -> bool:
    """Whether ``--selector``/``--target`` include an object the manifests no longer name:
    by its recorded labels (a record without labels matches no selector)."""
    if not options.narrowed:
        return True
    record = KINDS[obs.kind].delete(obs, registry)[0]
    labels = dict(record.labels) if record is not None else {}
    return options.selects(object_ref(obs.kind, obs.name, obs.pool), labels)


def _relabel(
    action: Action, m: Manifest, obs: Observed | None, registry: ownership.Registry
) -> Action:
    """A managed object whose manifest changed only its labels: record the labels
    (``--prune --selector`` reads them there), a metadata change without disruption."""
    if action.type is not ActionType.UNCHANGED or obs is None or action.note or action.steps:
        return action
    record = KINDS[m.kind].delete(obs, registry)[0]
    labels = tuple(sorted(m.labels.items()))
    if record is None or not record.managed or record.labels == labels:
        return action
    new = replace(record, labels=labels)
    step = KINDS[m.kind].write_record(obs, new)
    change = Change(
        path="metadata.labels",
        old=",".join(f"{k}={v}" for k, v in record.labels),
        new=",".join(f"{k}={v}" for k, v in labels),
        disruption=Disruption.NONE,
    )
    return replace(action, type=ActionType.UPDATE, changes=(change,), steps=(step,))


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


def _domain_refs(state: HostState, verdicts: Verdicts | None = None) -> dict[str, frozenset[str]]:
    """``disk_refs`` of each domain's inactive and live XML, by name (read once per
    plan; with ``verdicts``, kept in its store by the XML's digest: no parse)."""

    def refs(xml: str) -> list[str]:
        if verdicts is None:
            return sorted(disk_refs(xml))
        return verdicts.memo("refs", xml, lambda: sorted(disk_refs(xml)))

    return {
        o.name: frozenset(r for x in (o.xml, o.live_xml) if x for r in refs(x))
        for o in state.objects.values()
        if o.kind is Kind.DOMAIN
    }


def _volume_users(
    state: HostState,
    *,
    leaving: frozenset[str] = frozenset(),
    refs: Mapping[str, frozenset[str]],
) -> dict[str, tuple[str, ...]]:
    """Domains that use each volume (``pool/name``), by source pool+volume or path,
    and the volumes it is the backing file of (``volume POOL/NAME``).

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
        if o.kind is Kind.VOLUME:
            # A volume that is the backing file of another is in use by it.
            try:
                backing = _parse(o.xml).findtext("backingStore/path")
            except ValueError:
                backing = None
            if backing and f"path:{backing}" in keys:
                users.setdefault(keys[f"path:{backing}"], set()).add(f"volume {o.pool}/{o.name}")
        if o.kind is not Kind.DOMAIN or o.name in leaving:
            continue
        for ref in refs.get(o.name, ()):
            if ref in keys:
                users.setdefault(keys[ref], set()).add(o.name)
    return {k: tuple(sorted(v)) for k, v in users.items()}


def _volume_files(state: HostState) -> dict[str, tuple[str, str | None]]:
    """The file and format of each volume on the host (``POOL/NAME``)."""
    files: dict[str, tuple[str, str | None]] = {}
    for o in state.objects.values():
        if o.kind is Kind.VOLUME:
            try:
                el = _parse(o.xml)
            except ValueError:
                continue
            path = el.findtext("target/path")
            fmt = el.find("target/format")
            if path:
                files[f"{o.pool}/{o.name}"] = (path, fmt.get("type") if fmt is not None else None)
    return files


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
    m: Manifest,
    state: HostState,
    desired_keys: set[ObjectKey],
    narrowed: bool = False,
    references: Sequence[Reference] | None = None,
) -> list[str]:
    """Plan-time checks that need the host: referenced pools, volumes, networks
    (``references``: ``m``'s, when known already)."""
    problems = []

    def exists(kind: Kind, name: str, pool: str | None = None) -> bool:
        key = object_key(kind, name, pool)
        return key in state.objects or key in desired_keys

    if references is None:
        references = KINDS[m.kind].references(m)
    for ref in references:
        if not exists(ref.kind, ref.name, ref.pool):
            named = f"{ref.pool}/{ref.name}" if ref.pool else ref.name
            problems.append(
                f"{ref.field}: {KINDS[ref.kind].label} '{named}' does not exist on host "
                f"{state.host.name} and no manifest "
                + ("in this run (narrowed by --selector/--target) " if narrowed else "")
                + "declares it"
            )
    # FILE:LINE of the field, as for every other input error.
    return [f"{m.source_of(p.partition(':')[0])}: {p}" for p in problems]


def _depths(
    manifests: Sequence[Manifest], references: Mapping[int, Sequence[Reference]]
) -> dict[int, int]:
    """How deep each manifest sits below others of its kind that it needs (a clone
    or an overlay after the volume it is made from): 0 needs none of them.
    ``references``: each manifest's, by ``id``."""
    by_key = {object_key(m.kind, m.name, m.spec.get("pool")): m for m in manifests}
    depth: dict[int, int] = {}

    def of(m: Manifest, seen: frozenset[int]) -> int:
        if id(m) in depth:
            return depth[id(m)]
        below = [
            by_key[key]
            for ref in references[id(m)]
            if ref.kind is m.kind
            and (key := object_key(ref.kind, ref.name, ref.pool)) in by_key
            and id(by_key[key]) not in seen
        ]
        depth[id(m)] = 1 + max((of(b, seen | {id(m)}) for b in below), default=-1)
        return depth[id(m)]

    for m in manifests:
        of(m, frozenset())
    return depth


def _in_manifest_terms(action: Action, m: Manifest) -> Action:
    """Each change named by its manifest field, values in the manifest's units."""
    seed = cloudinit.seed_target(m.name, m.spec) if m.kind is Kind.DOMAIN else None
    changes = []
    for c in action.changes:
        if c.path in ("definition", "state", "autostart", "metadata.labels", "keepState"):
            changes.append(replace(c, field=c.path, shown_old=c.old, shown_new=c.new))
            continue
        d = fields.describe(m.kind, m.name, m.spec, c.path, c.old, c.new)
        if seed is not None and (d.field or "").startswith(f"disks[{seed}]"):
            # The seed's cdrom is not in the manifest's disks: its cloudInit is.
            d = replace(d, field="cloudInit")
        changes.append(replace(c, field=d.field, shown_old=d.old, shown_new=d.new))
    return replace(action, changes=tuple(changes))


def build_host_plan(
    desired: Sequence[tuple[Manifest, etree._Element | str]],
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
    Each desired document may come as text (``Manifest.rendered``): it is
    parsed only when its object is planned (not for a cached verdict).
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
    store = cache.Store.open("verdicts", state.host.name.encode(), state.host.uri.encode())
    refs = _domain_refs(state, Verdicts(store, ""))
    context = Context(
        host=state.host,
        options=options,
        registry=state.registry,
        network_users=_network_users(state),
        volume_users=_volume_users(state, refs=refs),
        running_domains=frozenset(
            o.name for o in state.objects.values() if o.kind is Kind.DOMAIN and o.active
        ),
        normalise=normalise,
        volume_files=_volume_files(state),
    )
    verdicts = Verdicts.open(store, state, options, context)
    actions: list[Action] = []
    references = {id(m): KINDS[m.kind].references(m) for m, _ in desired}
    depth = _depths([m for m, _ in desired], references)
    for m, el in sorted(
        desired,
        key=lambda d: (d[0].kind.order, depth[id(d[0])], d[0].spec.get("pool", ""), d[0].name),
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
        problems = _references(m, state, desired_keys, options.narrowed, references[id(m)])
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
        verdict = verdicts.key(m, el, obs, placed)
        if verdict is not None and verdicts.unchanged(verdict):
            actions.append(bare(base))
            continue
        if isinstance(el, str):
            el = etree.fromstring(el)
        try:
            action = _relabel(
                KINDS[m.kind].plan(m, el, obs, replace(context, placement=placed)),
                m,
                obs,
                state.registry,
            )
        except ValueError as e:
            action = Action(**base, type=ActionType.UPDATE, error=str(e))
        action = _in_manifest_terms(action, m)
        if verdict is not None:
            verdicts.remember(verdict, action, bare(base))
        actions.append(action)
    verdicts.save(narrowed=options.narrowed or kinds is not None)
    seeds = _old_seeds(state, actions, desired_keys, context.volume_users)
    # Without --prune, orphans are shown with what --prune would do, and nothing happens.
    actions += seeds
    seed_keys = {object_key(a.kind, a.name, a.pool) for a in seeds}
    actions += _plan_prune(state, desired_keys | seed_keys, options, kinds, refs)
    return HostPlan(host=state.host, actions=tuple(actions))
