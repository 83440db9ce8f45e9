"""watch: scoped passes — which objects a trigger names, and when that is enough (pure
apart from reading the changed manifest files).

A full pass reads and plans every object of a host; at a thousand domains that
takes seconds. A trigger that names objects (a libvirt event for one domain,
network or pool; a changed manifest file) is reconciled by a *scoped* pass over
those objects: level-based like a full one (their manifests as they are now,
their live state read again), with the rest of the host as the session read it
last. Whatever needs the whole picture falls back to a full pass, with the reason:

- a manifest no longer declares an object (a delete, a rename, ``--prune``);
- Host documents, ``--hosts-override`` or a Secret changed; any encrypted volume
  (its secret and the disks that use it are filled in across files);
- a domain with ``spec.placement`` (placement weighs every candidate host);
- an event on an object no manifest declares while ``--prune`` is on (unless
  the host's last read showed it is not ours);
- an event on the registry network, or one that names no object (a reconnect).

``Watcher`` adds its own conditions (see README "Scoped and full passes").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler import manifests, ownership
from reconciler.kinds import KINDS
from reconciler.model import Kind, Manifest, ManifestSet
from reconciler.observed import HostState, ObjectKey, object_key
from reconciler.reconcile import Scope, object_hosts

# The kinds of libvirt events (``HostEvent.kind``) a scoped pass can read again.
EVENT_KINDS = {"Domain": Kind.DOMAIN, "Network": Kind.NETWORK, "StoragePool": Kind.STORAGE_POOL}
# References a scoped pass reads again with the objects it plans (a pool is read
# with all its volumes: its cached state is used instead).
_READ_REFERENCES = (Kind.NETWORK, Kind.VOLUME)


@dataclass(frozen=True, kw_only=True)
class Changed:
    """What differs between two manifest sets: the objects by host, or why every
    host needs a full pass (``full``)."""

    objects: Mapping[str, frozenset[ObjectKey]]
    full: str | None = None


def key_of(m: Manifest) -> ObjectKey:
    return object_key(m.kind, m.name, m.spec.get("pool"))


def _unscopable(m: Manifest, hosts: Sequence[str]) -> str | None:
    if m.kind is Kind.SECRET:
        return f"{m.ref} changed (a Secret)"
    if m.kind is Kind.VOLUME and "encryption" in m.spec:
        return f"{m.ref} is encrypted"
    if len(hosts) != 1 or "placement" in m.spec:
        return f"{m.ref} is placed (spec.placement)"
    return None


def _same(a: Manifest, b: Manifest) -> bool:
    """Equal but for where they are written (a line moved, another checkout)."""
    return replace(a, source=b.source, lines=b.lines) == b


def changed(old: ManifestSet, new: ManifestSet) -> Changed:
    """The objects whose manifests differ (or are new), by the host they go to."""
    if old.hosts != new.hosts:
        return Changed(objects={}, full="the Host documents changed")
    before = {(key_of(m), object_hosts(m, old)): m for m in old.objects}
    after = {(key_of(m), object_hosts(m, new)): m for m in new.objects}
    gone = sorted(before.keys() - after.keys(), key=repr)
    if gone:
        m = before[gone[0]]
        return Changed(objects={}, full=f"{m.ref} is no longer declared (or moved)")
    out: dict[str, set[ObjectKey]] = {}
    for (key, hosts), m in after.items():
        was = before.get((key, hosts))
        if was is m or (was is not None and _same(was, m)):
            continue
        why = _unscopable(m, hosts)
        if why is not None:
            return Changed(objects={}, full=why)
        out.setdefault(hosts[0], set()).add(key)
    return Changed(objects={h: frozenset(k) for h, k in out.items()})


def event_keys(named: Collection[tuple[str, str]]) -> frozenset[ObjectKey] | None:
    """The objects libvirt events named on a host; None when one cannot be scoped."""
    keys = set()
    for kind, name in named:
        if kind not in EVENT_KINDS or name == ownership.REGISTRY_NETWORK:
            return None
        keys.add(object_key(EVENT_KINDS[kind], name))
    return frozenset(keys)


def host_scope(
    assigned: Sequence[Manifest],
    changed: frozenset[ObjectKey],
    named: frozenset[ObjectKey],
    *,
    prune: bool,
    last: HostState,
) -> Scope | str:
    """The scope of a pass on one host, or why it needs a full pass.

    ``assigned``: the manifests of the host; ``changed``: those that differ
    from the last applied set; ``named``: the objects libvirt events named;
    ``last``: the host as the session read it last.
    """
    desired = {key_of(m): m for m in assigned}
    plan = set(changed)
    for key in named:
        if key in desired:
            plan.add(key)
        elif prune and ((seen := last.objects.get(key)) is None or seen.managed):
            return f"{key[0].value}/{key[1]}: no manifest declares it (--prune)"
        if key[0] is Kind.STORAGE_POOL:  # read with its volumes: plan them too
            plan.update(k for k, m in desired.items() if m.spec.get("pool") == key[1])
    for key in list(plan):  # a domain's cloud-init seed: planned with it (else "old")
        if key[0] is Kind.DOMAIN:
            owner = f"Domain/{key[1]}"
            plan.update(k for k, m in desired.items() if m.owner == owner)
    read = plan | named
    for key in plan:
        m = desired.get(key)
        if m is None:
            continue
        read.update(
            object_key(r.kind, r.name, r.pool)
            for r in KINDS[m.kind].references(m)
            if r.kind in _READ_REFERENCES
        )
    narrow = all(
        k[0] in (Kind.DOMAIN, Kind.STORAGE_POOL)
        and (k not in desired or "cloudInit" not in desired[k].spec)
        for k in plan
    )
    return Scope(plan=frozenset(plan), read=frozenset(read), narrow=narrow)


# --- reading only the changed files ------------------------------------------------------


def _sort_key(m: Manifest) -> tuple[int, str, str, str]:
    return (m.kind.order, m.host or "", m.name, str(m.spec.get("pool", "")))


def _crosses(m: Manifest) -> bool:
    """A manifest ``manifests.load`` completes from other files (encryption)."""
    return m.kind is Kind.SECRET or (m.kind is Kind.VOLUME and "encryption" in m.spec)


def _known(files: Sequence[str], paths: Collection[str]) -> list[str] | None:
    """Each of ``paths`` as ``files`` names it (None: one is not among them).
    Compared as absolute paths first (no system call), then resolved (symlinks)."""
    by_abs = {os.path.abspath(f): f for f in files}
    by_real: dict[str, str] | None = None
    out = []
    for p in paths:
        found = by_abs.get(os.path.abspath(p))
        if found is None:
            if by_real is None:
                by_real = {os.path.realpath(f): f for f in files}
            found = by_real.get(os.path.realpath(p))
        if found is None:
            return None
        out.append(found)
    return out


def reload(previous: ManifestSet, files: Collection[str]) -> ManifestSet | None:
    """``previous`` with only the manifest ``files`` (changed on disk) read again,
    when that is sure to give what reading every file gives; else None (read all).

    Raises ``errors.ManifestError`` for problems in those files. The checks across
    files that ``manifests.load`` makes are kept: the Host documents are read with
    the files; an object no longer declared, one declared twice or a MAC used
    twice sends the caller to a full read, which reports them.
    """
    named = _known(previous.files, files)
    if named is None or not all(map(os.path.isfile, named)):
        return None  # a file created, deleted or moved: the set of files changed
    if any(_crosses(m) for m in previous.objects):
        return None
    host_files = {h.source.file for h in previous.hosts if h.source is not None}
    if {os.path.abspath(f) for f in host_files} & {os.path.abspath(f) for f in named}:
        return None
    loaded = manifests.load(sorted(set(named) | host_files))
    wanted = {os.path.abspath(f) for f in named}

    def source(m: Manifest) -> str:
        return os.path.abspath(m.source.file)

    fresh = [m for m in loaded.objects if source(m) in wanted]
    kept = [m for m in previous.objects if source(m) not in wanted]
    stale = [m for m in previous.objects if source(m) in wanted]
    if loaded.hosts != previous.hosts or any(_crosses(m) for m in fresh):
        return None
    if {key_of(m) for m in stale} - {key_of(m) for m in fresh}:
        return None  # removed or renamed
    if {key_of(m) for m in kept} & {key_of(m) for m in fresh}:
        return None  # declared twice
    macs = {
        mac
        for m in kept
        if m.kind is Kind.DOMAIN
        for _, _, mac in manifests.interface_macs(m.name, m.spec)
    }
    for m in fresh:
        if m.kind is Kind.DOMAIN and any(
            mac in macs for _, _, mac in manifests.interface_macs(m.name, m.spec)
        ):
            return None
    digest = hashlib.sha256(previous.digest.encode())
    digest.update(loaded.digest.encode())
    return replace(
        previous,
        objects=tuple(sorted((*kept, *fresh), key=_sort_key)),
        digest=digest.hexdigest(),
    )
