"""Stage 6 (plan): actions, disruption classes and libvirt steps, from hand-built host states."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from lxml import etree

from reconciler import canonical, model, ownership, plan, render
from reconciler import steps as st
from reconciler.model import Kind
from reconciler.observed import HostState, Observed, object_key

pytestmark = pytest.mark.unit

HOST = model.Host(name="h", uri="test:///x")
SOURCE = model.Source(file="m.yaml", line=1)

DOMAIN_SPEC: dict[str, Any] = {"type": "kvm", "memory": "1GiB"}
VOLUME_SPEC: dict[str, Any] = {"pool": "p", "capacity": "1GiB", "format": "qcow2"}
POOL_SPEC: dict[str, Any] = {"type": "dir", "target": "/x"}
NETWORK_SPEC: dict[str, Any] = {"forward": "nat", "ip": {"address": "10.0.0.1", "prefix": 24}}


def manifest(
    kind: Kind, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
) -> model.Manifest:
    return model.Manifest(
        kind=kind, name=name, spec=spec, source=SOURCE, host=None, annotations=annotations or {}
    )


def dom(name: str = "d", **spec: Any) -> model.Manifest:
    return manifest(Kind.DOMAIN, name, {**DOMAIN_SPEC, **spec})


def vol(name: str = "v", **spec: Any) -> model.Manifest:
    return manifest(Kind.VOLUME, name, {**VOLUME_SPEC, **spec})


def record_for(m: model.Manifest, **kw: Any) -> ownership.Record:
    """The record a previous apply of ``m`` on host h would have written."""
    applied = frozenset(canonical.flatten(render.render(m), m.kind).values)
    return ownership.Record(applied=applied, host="h", **kw)


def xml_of(m: model.Manifest, record: ownership.Record | None = None, **extra: str) -> str:
    """``m`` rendered as libvirt would show it (uuid added), with the record in metadata."""
    root = render.render(m)
    uuid = etree.Element("uuid")
    uuid.text = "0b6f5a0e-3c2f-4b8a-9a0e-3c2f4b8a9a0e"
    root.insert(1, uuid)
    if record is not None:
        ownership.write_record(root, record)
    return etree.tostring(root, encoding="unicode")


def observed(
    m: model.Manifest,
    *,
    managed: bool = True,
    record: ownership.Record | None = None,
    live: model.Manifest | None = None,
    **kw: Any,
) -> Observed:
    """A domain or network as observed: its record both in the XML and on ``Observed``."""
    rec = (record or record_for(m)) if managed else None
    xml = xml_of(m, rec)
    return Observed(
        kind=m.kind,
        name=m.name,
        xml=xml,
        record=ownership.read_record(etree.fromstring(xml)),
        live_xml=xml_of(live, rec) if live is not None else None,
        **kw,
    )


def volume_xml(capacity: int, fmt: str = "qcow2", name: str = "v") -> str:
    return (
        f"<volume type='file'><name>{name}</name><key>/x/{name}</key>"
        f"<capacity unit='bytes'>{capacity}</capacity>"
        f"<allocation unit='bytes'>196608</allocation>"
        f"<target><path>/x/{name}</path><format type='{fmt}'/></target></volume>"
    )


POOL_OBS = Observed(
    kind=Kind.STORAGE_POOL,
    name="p",
    xml="<pool type='dir'><name>p</name><target><path>/x</path></target></pool>",
    state="active",
)


def host_state(*objects: Observed, **kw: Any) -> HostState:
    return HostState(host=HOST, objects={o.key: o for o in objects}, **kw)


def build(manifests: list[model.Manifest], state: HostState, **options: Any) -> plan.HostPlan:
    return plan.build_host_plan(
        [(m, render.render(m)) for m in manifests], state, plan.Options(**options)
    )


def only(p: plan.HostPlan) -> plan.Action:
    """The one action for a named object (orphans, shown without --prune, left out)."""
    named = [a for a in p.actions if a.orphan is None]
    assert len(named) == 1, p.actions
    return named[0]


def calls(a: plan.Action) -> list[str]:
    return [s.label for s in a.steps]


# --- creation ---------------------------------------------------------------------


def full_set() -> list[model.Manifest]:
    return [
        dom(
            disks=[{"target": "vda", "source": {"volume": {"pool": "p", "name": "v"}}}],
            interfaces=[{"network": "n"}],
        ),
        manifest(Kind.NETWORK, "n", NETWORK_SPEC),
        vol(),
        manifest(Kind.STORAGE_POOL, "p", POOL_SPEC),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empty_host_creates_in_kind_order(seed: int) -> None:
    manifests = full_set()
    random.Random(seed).shuffle(manifests)
    p = build(manifests, host_state())
    assert p.reachable and p.problems == []
    assert [a.kind for a in p.actions] == [
        Kind.STORAGE_POOL,
        Kind.VOLUME,
        Kind.NETWORK,
        Kind.DOMAIN,
    ]
    assert all(a.type is plan.ActionType.CREATE for a in p.actions)


def test_create_steps_per_kind() -> None:
    p = build(full_set(), host_state())
    by_kind = {a.kind: a for a in p.actions}
    # No state: started at creation, the record says "starting" until then.
    assert calls(by_kind[Kind.STORAGE_POOL]) == [
        "registry_set",
        "pool_define",
        "pool_build",
        "pool_start",
        "registry_set",
    ]
    first, last = by_kind[Kind.STORAGE_POOL].steps[0], by_kind[Kind.STORAGE_POOL].steps[-1]
    assert isinstance(first, st.RegistrySet) and isinstance(last, st.RegistrySet)
    assert first.record is not None and first.record.restarting
    assert last.record is not None and not last.record.restarting
    assert calls(by_kind[Kind.VOLUME]) == ["registry_set", "vol_create"]
    assert by_kind[Kind.VOLUME].steps[1].pool == "p"
    assert calls(by_kind[Kind.NETWORK]) == ["net_define", "net_start", "net_define"]
    assert calls(by_kind[Kind.DOMAIN]) == ["dom_define"]  # no state: power not managed


def test_create_domain_define_carries_record_and_start() -> None:
    m = dom(state="running")
    a = only(build([m], host_state()))
    assert a.type is plan.ActionType.CREATE
    assert calls(a) == ["dom_define", "dom_start"]
    assert a.steps[1] == st.Start(kind=Kind.DOMAIN, paused=False)
    defined = etree.fromstring(a.steps[0].xml)
    rec = ownership.read_record(defined)
    assert rec is not None and rec.managed and rec.host == "h" and rec.prune
    assert rec.applied == frozenset(canonical.flatten(render.render(m), Kind.DOMAIN).values)
    assert defined.findtext("memory") == "1048576"
    assert any(c.path == "state" and c.new == "running" for c in a.changes)


def test_create_volume_registry_record_before_create() -> None:
    a = only(build([vol(prune=True)], host_state(POOL_OBS)))
    assert calls(a) == ["registry_set", "vol_create"]
    step = a.steps[0]
    assert isinstance(step, st.RegistrySet)
    assert step.kind is Kind.VOLUME and step.key == "p/v"
    assert step.record is not None and step.record.prune is True


# --- domain updates -------------------------------------------------------------------


def test_shutoff_domain_changed_memory_is_next_start_define() -> None:
    m = dom()
    obs = observed(dom(memory="2GiB"), record=record_for(m), state="shutoff")
    a = only(build([m], host_state(obs)))
    assert a.type is plan.ActionType.UPDATE
    assert a.disruption is plan.Disruption.NEXT_START
    assert [(c.path, c.old, c.new) for c in a.changes] == [("memory", "2097152", "1048576")]
    assert calls(a) == ["dom_define"]
    defined = etree.fromstring(a.steps[0].xml)
    assert defined.findtext("memory") == "1048576"
    assert defined.findtext("uuid") == "0b6f5a0e-3c2f-4b8a-9a0e-3c2f4b8a9a0e"  # kept
    assert ownership.read_record(defined) == record_for(m)


def test_running_domain_added_disk_is_live_attach() -> None:
    vda = {"target": "vda", "source": {"file": "/x/a.img"}, "format": "raw"}
    vdb = {"target": "vdb", "source": {"file": "/x/b.img"}, "format": "raw"}
    before = dom(disks=[vda])
    m = dom(disks=[vda, vdb])
    obs = observed(before, state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert a.error is None
    assert a.type is plan.ActionType.UPDATE
    assert a.disruption is plan.Disruption.LIVE
    assert [c.path for c in a.changes] == ["devices/disk[target=vdb]"]
    attach = [s for s in a.steps if s.label == "dom_attach"]
    assert len(attach) == 1
    assert attach[0].live is True and attach[0].config is True
    disk = etree.fromstring(attach[0].xml)
    assert disk.find("target").get("dev") == "vdb"
    assert "dom_define" not in calls(a)
    assert "dom_restart" not in calls(a)


def cpu_case(**strategy: Any) -> plan.Action:
    m = dom(cpu={"mode": "host-passthrough"}, **strategy)
    old = dom(cpu={"mode": "host-model"}, **strategy)
    obs = observed(old, record=record_for(m), state="running", live=old)
    return only(build([m], host_state(obs)))


def test_running_domain_cpu_change_is_restart_required() -> None:
    a = cpu_case()
    assert a.type is plan.ActionType.UPDATE
    assert a.disruption is plan.Disruption.RESTART_REQUIRED
    assert [(c.path, c.old, c.new) for c in a.changes] == [
        ("cpu/@mode", "host-model", "host-passthrough")
    ]
    assert "dom_define" in calls(a)
    assert "dom_restart" not in calls(a)


def test_running_domain_cpu_change_restarts_if_needed() -> None:
    a = cpu_case(updateStrategy={"restart": "ifNeeded", "shutdownTimeout": "30s"})
    # The record says "restarting" from the define until after the restart.
    assert calls(a) == ["dom_define", "dom_restart", "dom_set_record"]
    assert a.steps[1] == st.RestartDomain(timeout=30.0)
    defined = ownership.read_record(etree.fromstring(a.steps[0].xml))
    assert defined is not None and defined.restarting
    final = ownership.read_record(etree.fromstring(f"<d><metadata>{a.steps[2].xml}</metadata></d>"))
    assert final is not None and not final.restarting


def test_restart_of_a_domain_with_managed_power_state_needs_no_restarting_record() -> None:
    # state: running starts it again anyway should the restart be interrupted.
    a = cpu_case(updateStrategy={"restart": "ifNeeded"}, state="running")
    assert calls(a) == ["dom_define", "dom_restart"]


def test_interrupted_restart_is_finished_by_the_next_run() -> None:
    strategy = {"updateStrategy": {"restart": "ifNeeded"}}
    m = dom(cpu={"mode": "host-passthrough"}, **strategy)
    # Killed between shutdown and start: new definition, stopped, record "restarting".
    obs = observed(m, record=record_for(m, restarting=True), state="shutoff")
    a = only(build([m], host_state(obs)))
    assert calls(a) == ["dom_start", "dom_set_record"]
    assert [(c.path, c.new) for c in a.changes] == [("state", "running")]
    # Killed after the start: only the record is cleared.
    obs = observed(m, record=record_for(m, restarting=True), state="running", live=m)
    a = only(build([m], host_state(obs)))
    assert calls(a) == ["dom_set_record"]
    # A stopped domain that was not restarting stays stopped (power not managed).
    obs = observed(m, record=record_for(m), state="shutoff")
    assert only(build([m], host_state(obs))).type is plan.ActionType.UNCHANGED


def test_inactive_matches_but_live_differs_is_pending_restart() -> None:
    m = dom(cpu={"mode": "host-passthrough"})
    obs = observed(m, state="running", live=dom(cpu={"mode": "host-model"}))
    a = only(build([m], host_state(obs)))
    assert a.type is plan.ActionType.PENDING_RESTART
    assert not a.type.is_change
    assert a.steps == ()
    assert [(c.path, c.disruption) for c in a.changes] == [
        ("cpu/@mode", plan.Disruption.RESTART_REQUIRED)
    ]


def test_managed_identical_domain_is_unchanged() -> None:
    m = dom()
    a = only(build([m], host_state(observed(m))))
    assert a.type is plan.ActionType.UNCHANGED
    assert a.steps == () and a.changes == ()


def test_unmanaged_identical_domain_is_adopted() -> None:
    m = dom()
    a = only(build([m], host_state(observed(m, managed=False))))
    assert a.type is plan.ActionType.ADOPT
    assert a.disruption is plan.Disruption.NONE
    assert calls(a) == ["dom_set_record"]
    el = etree.fromstring(a.steps[0].xml)
    assert el.tag == f"{{{ownership.NAMESPACE}}}owner"


def test_unmanaged_identical_pool_is_adopted() -> None:
    a = only(build([manifest(Kind.STORAGE_POOL, "p", POOL_SPEC)], host_state(POOL_OBS)))
    assert a.type is plan.ActionType.ADOPT
    assert calls(a) == ["registry_set"]
    assert a.steps[0].key == "p"


def test_transient_domain_is_an_error() -> None:
    m = dom()
    a = only(build([m], host_state(observed(m, persistent=False))))
    assert a.error is not None and "transient" in a.error


# --- pruning --------------------------------------------------------------------------


def prunable_state(pool_volume_prune: bool = True) -> HostState:
    d = observed(dom("old-dom"), state="running")
    n = observed(manifest(Kind.NETWORK, "old-net", NETWORK_SPEC), state="active")
    v = Observed(kind=Kind.VOLUME, name="old-vol", pool="p", xml=volume_xml(1 << 30, name="x"))
    registry = ownership.Registry(
        pools={"p": ownership.Record(prune=pool_volume_prune)},
        volumes={"p/old-vol": ownership.Record(prune=pool_volume_prune)},
    )
    return host_state(d, n, v, POOL_OBS, registry=registry)


def test_prune_deletes_managed_in_reverse_kind_order() -> None:
    p = build([], prunable_state(), prune=True)
    assert [(a.kind, a.name, a.type) for a in p.actions] == [
        (Kind.DOMAIN, "old-dom", plan.ActionType.DELETE),
        (Kind.NETWORK, "old-net", plan.ActionType.DELETE),
        (Kind.VOLUME, "old-vol", plan.ActionType.DELETE),
        (Kind.STORAGE_POOL, "p", plan.ActionType.DELETE),
    ]
    steps = {a.kind: calls(a) for a in p.actions}
    assert steps[Kind.DOMAIN] == ["dom_destroy", "dom_undefine"]
    assert steps[Kind.NETWORK] == ["net_stop", "net_undefine"]
    assert steps[Kind.VOLUME] == ["vol_delete", "registry_set"]
    assert steps[Kind.STORAGE_POOL] == ["pool_stop", "pool_undefine", "registry_set"]


def test_no_prune_no_delete() -> None:
    # Shown as orphans that require pruning, with what --prune would do; nothing runs.
    p = build([], prunable_state(), force_prune=True)
    assert [(a.name, a.type, a.steps) for a in p.actions] == [
        ("old-dom", plan.ActionType.UNCHANGED, ()),
        ("old-net", plan.ActionType.UNCHANGED, ()),
        ("old-vol", plan.ActionType.UNCHANGED, ()),
        ("p", plan.ActionType.UNCHANGED, ()),
    ]
    assert all(a.orphan == plan.Orphan(delete=True) for a in p.actions)
    assert all((a.note or "").startswith("orphan: requires pruning") for a in p.actions)
    guarded = build([], prunable_state())
    assert [a.orphan.delete for a in guarded.actions if a.orphan] == [False] * 4
    assert "prune guard" in (guarded.actions[0].note or "")
    assert all(a.error is None and not a.steps for a in guarded.actions)


def test_prune_keeps_desired_objects() -> None:
    p = build([dom("old-dom")], prunable_state(), prune=True)
    assert [a.name for a in p.actions if a.type is plan.ActionType.DELETE] == [
        "old-net",
        "old-vol",
        "p",
    ]


def test_prune_leaves_unmanaged_objects() -> None:
    d = observed(dom("theirs"), managed=False, state="running")
    v = Observed(kind=Kind.VOLUME, name="theirs", pool="p", xml=volume_xml(1 << 30))
    assert build([], host_state(d, v, POOL_OBS), prune=True).actions == ()


def test_prune_respects_record_prune_false() -> None:
    d = observed(dom("kept"), record=record_for(dom("kept"), prune=False))
    p = build([], host_state(d), prune=True)
    # Kept, and said so: the annotation protects it.
    assert [(a.type, a.orphan) for a in p.actions] == [
        (plan.ActionType.UNCHANGED, plan.Orphan(delete=False, reason=ANNOTATED))
    ]
    only_false = build([], prunable_state(pool_volume_prune=False), prune=True)
    deleted = [a for a in only_false.actions if a.type is plan.ActionType.DELETE]
    assert {a.kind for a in deleted} == {Kind.DOMAIN, Kind.NETWORK}
    kept = {a.name: a.orphan for a in only_false.actions if a.type is plan.ActionType.UNCHANGED}
    assert kept["old-vol"] is not None and "volume prune is false" in (kept["old-vol"].reason or "")
    assert kept["p"] is not None and not kept["p"].delete


ANNOTATED = 'annotation virt-reconcile/prune is "false"'


# --- volumes -----------------------------------------------------------------------------


def volume_state(capacity: int, fmt: str = "qcow2") -> HostState:
    v = Observed(kind=Kind.VOLUME, name="v", pool="p", xml=volume_xml(capacity, fmt))
    registry = ownership.Registry(volumes={"p/v": record_for(vol(), prune=False)})
    return host_state(POOL_OBS, v, registry=registry)


def test_volume_unchanged() -> None:
    a = only(build([vol()], volume_state(1 << 30)))
    assert a.type is plan.ActionType.UNCHANGED and a.error is None and a.steps == ()


def test_volume_growth_is_live_resize() -> None:
    a = only(build([vol(capacity="2GiB")], volume_state(1 << 30)))
    assert a.error is None
    assert a.disruption is plan.Disruption.LIVE
    resize = [s for s in a.steps if s.label == "vol_resize"]
    assert [s.capacity for s in resize] == [2 << 30]


def test_volume_shrink_is_refused() -> None:
    a = only(build([vol()], volume_state(2 << 30)))
    assert a.error is not None and "shrinking" in a.error
    assert a.steps == ()


def test_volume_format_change_needs_replace() -> None:
    a = only(build([vol()], volume_state(1 << 30, fmt="raw")))
    assert a.error is not None and "--replace" in a.error and "Volume/p/v" in a.error
    assert a.steps == ()


def test_volume_format_change_with_replace() -> None:
    p = build([vol()], volume_state(1 << 30, fmt="raw"), replace=frozenset({"Volume/p/v"}))
    a = only(p)
    assert a.error is None
    assert a.disruption is plan.Disruption.REPLACE
    assert calls(a) == ["vol_delete", "registry_set", "vol_create"]
    assert [c.path for c in a.changes] == ["target/format/@type"]


def test_volume_in_missing_pool_is_an_error() -> None:
    a = only(build([vol()], host_state()))
    assert a.error is not None and "storage pool 'p'" in a.error


# --- references and reachability ---------------------------------------------------------


def test_domain_disk_with_missing_volume_is_an_error() -> None:
    m = dom(disks=[{"target": "vda", "source": {"volume": {"pool": "p", "name": "missing"}}}])
    a = only(build([m], host_state(POOL_OBS)))
    assert a.type is plan.ActionType.CREATE
    assert a.error is not None and "p/missing" in a.error
    assert a.steps == ()


def test_domain_disk_with_existing_volume_is_fine() -> None:
    m = dom(disks=[{"target": "vda", "source": {"volume": {"pool": "p", "name": "v"}}}])
    v = Observed(kind=Kind.VOLUME, name="v", pool="p", xml=volume_xml(1 << 30))
    assert object_key(Kind.VOLUME, "v", "p") == v.key
    a = only(build([m], host_state(POOL_OBS, v)))
    assert a.error is None and a.type is plan.ActionType.CREATE


def test_unreachable_host_every_action_errors() -> None:
    state = HostState(host=HOST, reachable=False, error="connection refused")
    p = build(full_set(), state)
    assert not p.reachable and p.error == "connection refused"
    assert len(p.actions) == 4
    assert all(a.error and "unreachable" in a.error for a in p.actions)
    assert all(a.steps == () for a in p.actions)
    assert p.problems == list(p.actions)


# --- regressions found by tests/integration/test_properties.py --------------------


def test_dropping_current_memory_resets_the_balloon_to_memory_not_zero() -> None:
    before = dom(memory="1GiB", currentMemory="512MiB")
    m = dom(memory="1GiB")
    obs = observed(before, state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert a.error is None
    steps = [s for s in a.steps if s.label == "dom_set_memory"]
    assert [s.kib for s in steps] == [1048576]


def test_dropping_max_vcpus_sets_the_vcpu_count_not_zero() -> None:
    before = dom(vcpus=2, maxVcpus=4)
    m = dom(vcpus=4)  # <vcpu>4</vcpu>: the applied @current is removed
    obs = observed(before, state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert a.error is None
    steps = [s for s in a.steps if s.label == "dom_set_vcpus"]
    assert [s.count for s in steps] == [4]


def test_dropping_current_memory_means_all_of_memory_at_the_next_start() -> None:
    before = dom(memory="1GiB", currentMemory="512MiB")
    m = dom(memory="2GiB")  # no currentMemory: the balloon is all of memory (2 GiB)
    obs = observed(before, state="running", live=before)
    a = only(build([m], host_state(obs)))
    # 2 GiB is more than the running maximum (1 GiB): both wait for the restart.
    assert not [s for s in a.steps if s.label == "dom_set_memory"]
    assert {(c.path, c.old, c.new, c.disruption) for c in a.changes} == {
        ("memory", "1048576", "2097152", plan.Disruption.RESTART_REQUIRED),
        ("currentMemory", "524288", "2097152", plan.Disruption.RESTART_REQUIRED),
    }


def test_raising_memory_without_current_memory_raises_the_balloon_too() -> None:
    before = dom(memory="1GiB")
    m = dom(memory="2GiB")
    obs = observed(before, record=record_for(before), state="shutoff")
    a = only(build([m], host_state(obs)))
    # One change shown (currentMemory follows memory), both written.
    assert [(c.path, c.old, c.new) for c in a.changes] == [("memory", "1048576", "2097152")]
    (define,) = [s for s in a.steps if s.label == "dom_define"]
    written = etree.fromstring(define.xml.encode())
    assert written.findtext("memory") == written.findtext("currentMemory") == "2097152"


def test_balloon_target_above_the_running_maximum_waits_for_a_restart() -> None:
    before = dom(memory="1GiB", currentMemory="128MiB")
    m = dom(memory="2GiB", currentMemory="1536MiB")  # more than the running 1 GiB
    obs = observed(before, record=record_for(before), state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert "dom_set_memory" not in calls(a)
    assert {c.path: c.disruption for c in a.changes} == {
        "memory": plan.Disruption.RESTART_REQUIRED,
        "currentMemory": plan.Disruption.RESTART_REQUIRED,
    }


def test_raised_max_vcpus_waiting_for_restart_is_no_live_vcpu_change() -> None:
    # Live <vcpu>1</vcpu> already runs the desired 1 vCPU of a new maximum of 8.
    before = dom(vcpus=1)
    m = dom(vcpus=1, maxVcpus=8)
    obs = observed(m, record=record_for(m), state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert a.type is plan.ActionType.PENDING_RESTART
    assert a.steps == ()
    assert [c.path for c in a.changes] == ["vcpu"]


def test_dhcp_host_changing_identity_is_deleted_before_the_new_one_is_added() -> None:
    # Found by tests/integration/test_properties.py: the same IP, once keyed by
    # MAC and now by IP, was added first and libvirt refused the duplicate.
    def net(host: dict[str, str]) -> model.Manifest:
        ip = {**NETWORK_SPEC["ip"], "dhcp": {"hosts": [host]}}
        return manifest(Kind.NETWORK, "n", {**NETWORK_SPEC, "ip": ip})

    before = net({"mac": "52:54:00:00:00:26", "ip": "10.0.0.39"})
    m = net({"name": "web", "ip": "10.0.0.39"})
    obs = observed(before, record=record_for(before), state="active", live=before)
    a = only(build([m], host_state(obs)))
    updates = [
        (s.command, etree.fromstring(s.xml).attrib) for s in a.steps if isinstance(s, st.NetUpdate)
    ]
    assert [(cmd, dict(attrs)) for cmd, attrs in updates] == [
        ("delete", {"mac": "52:54:00:00:00:26", "ip": "10.0.0.39"}),
        ("add-last", {"name": "web", "ip": "10.0.0.39"}),
    ]


def test_volume_growth_in_use_by_a_running_domain_goes_through_it() -> None:
    disk = {"target": "vdb", "source": {"volume": {"pool": "p", "name": "v"}}}
    d = dom(disks=[disk])
    user = observed(d, state="running", live=d)
    stopped = observed(dom("off", disks=[disk]), state="shutoff")
    state = volume_state(1 << 30)
    running = host_state(*state.objects.values(), user, stopped, registry=state.registry)
    a = only(build([vol(capacity="2GiB")], running))
    resize = [s for s in a.steps if s.label == "vol_resize"]
    assert [s.domain for s in resize] == ["d"]
    idle = host_state(*state.objects.values(), stopped, registry=state.registry)
    resize = [s for s in only(build([vol(capacity="2GiB")], idle)).steps if s.label == "vol_resize"]
    assert [s.domain for s in resize] == [None]


def test_vcpus_lowered_in_the_definition_but_not_live_is_pending_restart() -> None:
    # The guest refused the unplug at the last apply: do not try again each run.
    m = dom(vcpus=1, maxVcpus=2)
    obs = observed(m, state="running", live=dom(vcpus=2, maxVcpus=2))
    a = only(build([m], host_state(obs)))
    assert a.type is plan.ActionType.PENDING_RESTART
    assert [(c.path, c.old, c.new) for c in a.changes] == [("vcpu/@current", "2", "1")]
    # A new, lower count in the manifest is tried live (and persisted).
    m2 = dom(vcpus=1, maxVcpus=2)
    obs2 = observed(
        dom(vcpus=2, maxVcpus=2),
        record=record_for(m2),
        state="running",
        live=dom(vcpus=2, maxVcpus=2),
    )
    a2 = only(build([m2], host_state(obs2)))
    step = next(s for s in a2.steps if s.label == "dom_set_vcpus")
    assert step == st.SetVcpus(count=1, live=True, config=True)


def network_case(live_spec: Mapping[str, Any], spec: Mapping[str, Any]) -> plan.Action:
    m = manifest(Kind.NETWORK, "n", spec)
    live = manifest(Kind.NETWORK, "n", live_spec)
    d = dom(interfaces=[{"network": "n"}])
    running = observed(d, state="running", live=d)
    obs = observed(m, state="active", live=live)
    return build([m], host_state(obs, running)).actions[0]


def test_network_running_with_the_old_bridge_is_pending_restart_with_blast_radius() -> None:
    a = network_case({**NETWORK_SPEC, "bridge": "br0"}, {**NETWORK_SPEC, "bridge": "br1"})
    assert a.type is plan.ActionType.PENDING_RESTART and not a.steps
    assert [(c.path, c.old, c.new) for c in a.changes] == [("bridge/@name", "br0", "br1")]
    assert a.blast_radius == ("d",)


def test_network_dhcp_host_only_live_is_a_live_update_not_pending() -> None:
    dhcp: dict[str, Any] = {"range": ["10.0.0.100", "10.0.0.200"]}
    before = {**NETWORK_SPEC, "ip": {**NETWORK_SPEC["ip"], "dhcp": dhcp}}
    host = {"mac": "52:54:00:00:00:01", "ip": "10.0.0.5"}
    spec = {**NETWORK_SPEC, "ip": {**NETWORK_SPEC["ip"], "dhcp": {**dhcp, "hosts": [host]}}}
    a = network_case(before, spec)
    assert a.type is plan.ActionType.UPDATE and a.blast_radius == ()
    assert calls(a) == ["net_update"]
    assert a.steps[0].live is True and a.steps[0].config is False


def test_network_first_and_last_dhcp_host_are_live_updates() -> None:
    # libvirt adds <dhcp> with the first entry and drops it with the last.
    host = {"mac": "52:54:00:00:00:01", "ip": "10.0.0.5"}
    with_host = manifest(
        Kind.NETWORK, "n", {**NETWORK_SPEC, "ip": {**NETWORK_SPEC["ip"], "dhcp": {"hosts": [host]}}}
    )
    without = manifest(Kind.NETWORK, "n", NETWORK_SPEC)
    for desired, before, command in (
        (with_host, without, "add-last"),
        (without, with_host, "delete"),
    ):
        obs = observed(before, record=record_for(with_host), state="active", live=before)
        a = only(build([desired], host_state(obs)))
        assert a.type is plan.ActionType.UPDATE
        assert [(c.path, c.disruption) for c in a.changes] == [
            ("ip[address=10.0.0.1]/dhcp", plan.Disruption.LIVE)
        ]
        update = [s for s in a.steps if isinstance(s, st.NetUpdate)]
        assert [(u.section, u.command, u.live) for u in update] == [("ip-dhcp-host", command, True)]


def test_a_pool_created_without_state_and_stopped_by_a_crash_is_started_next_time() -> None:
    m = manifest(Kind.STORAGE_POOL, "p", POOL_SPEC)
    assert "state" not in m.spec
    starting = ownership.Record(
        managed=True,
        applied=frozenset(canonical.flatten(render.render(m), Kind.STORAGE_POOL).values),
        prune=True,
        host="h",
        restarting=True,
    )
    obs = Observed(kind=Kind.STORAGE_POOL, name=m.name, xml=render.to_string(render.render(m)))
    registry = ownership.Registry(pools={m.name: starting})
    a = only(build([m], host_state(obs, registry=registry)))
    assert calls(a) == ["pool_build", "pool_start", "registry_set"]
    # Once started (or without the mark), absent state leaves the pool alone.
    registry = ownership.Registry(pools={m.name: replace(starting, restarting=False)})
    assert only(build([m], host_state(obs, registry=registry))).type is plan.ActionType.UNCHANGED


@pytest.mark.parametrize("which", ["title", "description"])
def test_title_and_description_change_live_without_a_restart(which: str) -> None:
    """Declared Live.METADATA (render.domain.FIELDS): setMetadata, running or not."""
    before = dom(**{which: "old text"}, updateStrategy={"restart": "ifNeeded"})
    m = dom(**{which: "new text"}, updateStrategy={"restart": "ifNeeded"})
    obs = observed(before, record=record_for(before), state="running", live=before)
    a = only(build([m], host_state(obs)))
    assert [(c.path, c.new, c.disruption) for c in a.changes] == [
        (which, "new text", plan.Disruption.LIVE)
    ]
    assert st.SetDomainText(which=which, text="new text", live=True, config=True) in a.steps  # type: ignore[arg-type]
    assert not any(isinstance(s, (st.RestartDomain, st.Define)) for s in a.steps)
