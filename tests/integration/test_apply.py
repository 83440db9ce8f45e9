"""apply/plan end to end on file-backed test-driver hosts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import EXAMPLES, Run, host_snapshot


def _actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for host in doc["hosts"]:
        for a in host["actions"]:
            key = f"{a['kind']}/{a['pool'] + '/' if 'pool' in a else ''}{a['name']}"
            out[key] = a
    return out


def _changed(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: a for k, a in _actions(doc).items() if a["action"] != "unchanged"}


def test_apply_examples_converges_and_replan_is_empty(host_uri: str, run: Run) -> None:
    code, out, err = run("apply", EXAMPLES, "-c", host_uri)
    assert code == 0, out + err
    assert "Converged" in out
    code, out, err = run("plan", EXAMPLES, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err
    assert "no changes" in out


def test_apply_creates_every_object_with_ownership(
    host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    code, out, err = run("apply", EXAMPLES, "-c", host_uri)
    assert code == 0, out + err
    c = conn(host_uri)
    assert {d.name() for d in c.listAllDomains()} == {"vr-web-1", "vr-web-2", "vr-db-1"}
    web1 = c.lookupByName("vr-web-1")
    assert web1.isActive()
    assert "virt-reconcile.dev/xmlns/owner/v1" in web1.XMLDesc(0)
    net = c.networkLookupByName("vr-lab-net")
    assert net.isActive() and net.autostart()
    assert "virt-reconcile.dev/xmlns/owner/v1" in net.XMLDesc(0)
    pool = c.storagePoolLookupByName("vr-lab")
    assert pool.isActive() and pool.autostart()
    assert sorted(v.name() for v in pool.listAllVolumes()) == [
        "db-1-data.raw",
        "web-1.qcow2",
        "web-2.qcow2",
    ]
    # Pools and volumes are recorded in the per-host registry.
    registry = c.networkLookupByName("virt-reconcile-registry")
    assert not registry.isActive()
    text = registry.XMLDesc(0)
    assert '"vr-lab"' in text and '"vr-lab/web-1.qcow2"' in text


def test_plan_json_document(host_uri: str, plan_json: Callable[..., dict[str, Any]]) -> None:
    doc = plan_json(EXAMPLES, "-c", host_uri)
    assert doc["version"] == 1
    assert doc["hosts"][0]["host"] == "default"
    assert doc["hosts"][0]["reachable"] is True
    kinds = [a["kind"] for a in doc["hosts"][0]["actions"]]
    # pools -> volumes -> networks -> domains
    assert kinds == [
        "StoragePool",
        "Volume",
        "Volume",
        "Volume",
        "Network",
        "Domain",
        "Domain",
        "Domain",
    ]
    assert doc["summary"]["create"] == 8
    a = doc["hosts"][0]["actions"][0]
    assert a["source"] == str(EXAMPLES / "storage.yaml") + ":3"  # after the modeline and a comment


def test_one_changed_field_is_exactly_one_update(
    host_uri: str, examples: Path, run: Run, plan_json: Callable[..., dict[str, Any]]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("memory: 512MiB", "memory: 1GiB"))
    doc = plan_json(examples, "-c", host_uri)
    changed = _changed(doc)
    assert list(changed) == ["Domain/vr-db-1"]
    action = changed["Domain/vr-db-1"]
    assert action["action"] == "update"
    assert [(c["path"], c["old"], c["new"]) for c in action["changes"]] == [
        ("memory", "524288", "1048576")
    ]
    # vr-db-1 is not running: the change waits for the next start.
    assert action["disruption"] == "next-start"
    code, out, err = run("apply", examples, "-c", host_uri, "-o", "json")
    assert code == 0, out + err
    applied = _changed(json.loads(out))["Domain/vr-db-1"]
    assert applied["result"] == "ok"
    assert applied["calls"] == {"defineXMLFlags": 1}
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_removing_a_field_reverts_it(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    dom = conn(host_uri).lookupByName("vr-db-1")
    assert "<apic/>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("<acpi/><apic/>", "<acpi/>"))
    changes = _changed(plan_json(examples, "-c", host_uri))["Domain/vr-db-1"]["changes"]
    assert [(c["path"], c["new"]) for c in changes] == [("features/apic", None)]
    assert run("apply", examples, "-c", host_uri)[0] == 0
    assert "<apic/>" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_redefine_keeps_uuid_and_libvirt_filled_values(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    dom = conn(host_uri).lookupByName("vr-db-1")
    uuid = dom.UUIDString()
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("vcpus: 2", "vcpus: 3"))
    assert run("apply", examples, "-c", host_uri)[0] == 0
    dom = conn(host_uri).lookupByName("vr-db-1")
    after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert dom.UUIDString() == uuid
    assert ">3</vcpu>" in after
    # The derived MAC of the interface without `mac` stays the same.
    mac = [line for line in before.splitlines() if "mac address" in line]
    assert mac and all(line in after for line in mac)


def test_prune_deletes_only_managed_objects(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    c = conn(host_uri)
    c.defineXML(
        "<domain type='test'><name>vr-web-unmanaged</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    (examples / "web.yaml").unlink()
    # Without --prune nothing is deleted.
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    assert {"vr-web-1", "vr-web-2"} <= {d.name() for d in c.listAllDomains()}
    code, out, err = run("apply", examples, "-c", host_uri, "--prune")
    assert code == 0, out + err
    names = {d.name() for d in c.listAllDomains()}
    assert "vr-web-1" not in names and "vr-web-2" not in names
    assert {"vr-db-1", "vr-web-unmanaged"} <= names
    # Volumes stay: their manifests still exist.
    pool = c.storagePoolLookupByName("vr-lab")
    assert "web-1.qcow2" in [v.name() for v in pool.listAllVolumes()]


def test_prune_annotation_protects(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    web = examples / "web.yaml"
    web.write_text(
        web.read_text().replace(
            "  name: vr-web-2\n",
            '  name: vr-web-2\n  annotations: {virt-reconcile/prune: "false"}\n',
        )
    )
    assert run("apply", examples, "-c", host_uri)[0] == 0
    web.unlink()
    assert run("apply", examples, "-c", host_uri, "--prune")[0] == 0
    names = {d.name() for d in conn(host_uri).listAllDomains()}
    assert "vr-web-2" in names and "vr-web-1" not in names


def test_unmanaged_same_named_object_is_adopted_not_recreated(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    # libvirt 9.0's test driver shows an active network's new definition only
    # after a restart, so this adoption uses an inactive network.
    net_yaml = examples / "network.yaml"
    net_yaml.write_text(net_yaml.read_text().replace("state: active", "state: inactive"))
    c = conn(host_uri)
    net = c.networkDefineXML(
        "<network><name>vr-lab-net</name><forward mode='nat'/><bridge name='vrlab0'/>"
        "<ip address='10.77.0.1' prefix='24'><dhcp><range start='10.77.0.100' end='10.77.0.200'/>"
        "<host mac='52:54:00:77:00:11' name='web-1' ip='10.77.0.11'/>"
        "<host mac='52:54:00:77:00:12' name='web-2' ip='10.77.0.12'/></dhcp></ip>"
        "<dns><host ip='10.77.0.11'><hostname>web-1</hostname></host>"
        "<host ip='10.77.0.12'><hostname>web-2</hostname></host></dns></network>"
    )
    net.setAutostart(1)
    uuid = net.UUIDString()
    actions = _actions(plan_json(examples, "-c", host_uri))
    assert actions["Network/vr-lab-net"]["action"] == "adopt"
    assert actions["Network/vr-lab-net"]["changes"] == []
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    net = c.networkLookupByName("vr-lab-net")
    assert net.UUIDString() == uuid
    assert "virt-reconcile.dev/xmlns/owner/v1" in net.XMLDesc(0)
    actions = _actions(plan_json(examples, "-c", host_uri))
    assert actions["Network/vr-lab-net"]["action"] == "unchanged"


def test_adopted_object_that_differs_is_an_update(
    host_uri: str,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    conn(host_uri).networkDefineXML(
        "<network><name>vr-lab-net</name><forward mode='nat'/><bridge name='vrlab0'/>"
        "<ip address='10.77.0.1' prefix='24'/></network>"
    )
    action = _actions(plan_json(EXAMPLES, "-c", host_uri))["Network/vr-lab-net"]
    assert action["action"] == "update"
    assert {c["path"] for c in action["changes"]} >= {"ip[address=10.77.0.1]/dhcp", "dns", "state"}


def test_running_domain_memory_changes_live(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    dom = conn(host_uri).lookupByName("vr-web-1")
    dom_id = dom.ID()
    web = examples / "web.yaml"
    web.write_text(web.read_text().replace("currentMemory: 192MiB", "currentMemory: 224MiB"))
    action = _changed(plan_json(examples, "-c", host_uri))["Domain/vr-web-1"]
    assert action["disruption"] == "live"
    assert [c["path"] for c in action["changes"]] == ["currentMemory"]
    code, out, err = run("apply", examples, "-c", host_uri, "-o", "json")
    assert code == 0, out + err
    result = _changed(json.loads(out))["Domain/vr-web-1"]
    assert "defineXMLFlags" not in result["calls"]
    assert result["calls"].get("setMemoryFlags", 0) >= 1
    assert dom.ID() == dom_id
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_restart_required_then_pending_restart(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    dom = conn(host_uri).lookupByName("vr-web-1")
    dom_id = dom.ID()
    web = examples / "web.yaml"
    web.write_text(
        web.read_text().replace("  vcpus: 1\n  maxVcpus: 2", "  vcpus: 1\n  maxVcpus: 4")
    )
    action = _changed(plan_json(examples, "-c", host_uri))["Domain/vr-web-1"]
    assert action["disruption"] == "restart-required"
    assert run("apply", examples, "-c", host_uri)[0] == 0
    assert dom.ID() == dom_id  # restart: never
    doc = plan_json(examples, "-c", host_uri)
    assert _actions(doc)["Domain/vr-web-1"]["action"] == "pending-restart"
    assert doc["summary"]["pending-restart"] == 1
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_state_shutoff_stops_a_running_domain(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    web = examples / "web.yaml"
    web.write_text(web.read_text().replace("state: running", "state: shutoff"))
    assert run("apply", examples, "-c", host_uri)[0] == 0
    assert not conn(host_uri).lookupByName("vr-web-1").isActive()
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_bad_manifest_changes_nothing(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    before = host_snapshot(conn(host_uri))
    web = examples / "web.yaml"
    web.write_text(
        web.read_text()
        .replace("memory: 256MiB", "memory: 256 MB", 1)
        .replace("currentMemory: 192MiB", "currentMemory: 200MiB")
    )
    code, _out, err = run("apply", examples, "-c", host_uri)
    assert code == 1
    assert f"{web}:" in err and "spec.memory" in err
    assert "Traceback" not in err
    assert host_snapshot(conn(host_uri)) == before


def test_dangling_volume_reference_fails_before_any_change(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    web = examples / "web.yaml"
    web.write_text(web.read_text().replace("name: web-2.qcow2", "name: nope.qcow2"))
    before = host_snapshot(conn(host_uri))
    code, out, _err = run("apply", examples, "-c", host_uri)
    assert code == 1
    assert "vr-lab/nope.qcow2" in out and "does not exist" in out
    assert host_snapshot(conn(host_uri)) == before


def test_volume_growth_is_planned_live_and_shrink_is_refused(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    # The test driver has no virStorageVolResize: the growth itself is an e2e test.
    assert run("apply", examples, "-c", host_uri)[0] == 0
    st = examples / "storage.yaml"
    text = st.read_text()
    st.write_text(text.replace("capacity: 32MiB", "capacity: 48MiB"))
    action = _changed(plan_json(examples, "-c", host_uri))["Volume/vr-lab/db-1-data.raw"]
    assert [(c["path"], c["new"], c["disruption"]) for c in action["changes"]] == [
        ("capacity", str(48 << 20), "live")
    ]
    st.write_text(text.replace("capacity: 32MiB", "capacity: 16MiB"))
    before = host_snapshot(conn(host_uri))
    code, out, _err = run("apply", examples, "-c", host_uri)
    assert code == 1
    assert "vr-lab/db-1-data.raw" in out and "shrinking a volume is refused" in out
    assert host_snapshot(conn(host_uri)) == before


def test_corpus_host_objects_not_named_are_untouched(
    corpus_uri: str,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    before = host_snapshot(conn(corpus_uri))
    doc = plan_json(EXAMPLES, "-c", corpus_uri, "--prune")
    assert all(a["action"] == "create" for a in _actions(doc).values())
    assert len(_actions(doc)) == 8
    code, out, err = run("apply", EXAMPLES, "-c", corpus_uri, "--prune")
    assert code == 0, out + err
    after = host_snapshot(conn(corpus_uri))
    for key, xml in before.items():
        assert after.get(key) == xml, key
