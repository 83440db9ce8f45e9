"""Real libvirt failures reach the user as object + host + cause (+ what to do)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import libvirt

from reconciler import manifests, plan
from reconciler.reconcile import Run as ReconcileRun
from reconciler.reconcile import resolve_hosts
from tests.integration.conftest import EXAMPLES, Run, host_snapshot

Conn = Callable[[str], libvirt.virConnect]


def test_unreachable_host_names_the_cause_never_the_password(run: Run) -> None:
    uri = "qemu+tcp://admin:hunter22@127.0.0.1:1/system?password=s3cret"
    code, out, err = run("apply", EXAMPLES, "-c", uri)
    assert code == 1
    text = out + err
    assert "host unreachable" in text and "Connection refused" in text
    assert "qemu+tcp://admin:***@127.0.0.1:1/system" in text
    assert "hunter22" not in text and "s3cret" not in text
    assert "Traceback" not in text
    code, out, err = run("plan", EXAMPLES, "-c", uri, "-o", "json")
    assert code == 1
    assert "host unreachable" in out and "hunter22" not in out + err and "s3cret" not in out + err


def test_volume_in_an_inactive_pool(host_uri: str, tmp_path: Path, run: Run, conn: Conn) -> None:
    c = conn(host_uri)
    c.storagePoolDefineXML(
        "<pool type='dir'><name>cold</name><target><path>/srv/cold</path></target></pool>"
    )
    (tmp_path / "vol.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {name: v1.raw}\n"
        "spec: {pool: cold, capacity: 1MiB, format: raw}\n"
    )
    code, out, err = run("apply", tmp_path / "vol.yaml", "-c", host_uri)
    assert code == 1, out + err
    assert "Volume/cold/v1.raw on host default: vol_create: storage pool inactive:" in out
    assert "storage pool 'cold' is not active (start the pool" in out


def test_name_clash_with_an_object_created_after_the_plan(host_uri: str, conn: Conn) -> None:
    """Another actor defines the same name between plan and apply: ours fails, theirs stays."""
    target = resolve_hosts(manifests.load([str(EXAMPLES)]), connect=host_uri)
    r = ReconcileRun(target=target, options=plan.Options())
    r.connect_and_observe()
    r.build_plans()
    c = conn(host_uri)
    theirs = (
        "<domain type='test'><name>vr-web-2</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    c.defineXML(theirs)
    snapshot = host_snapshot(c)["domain/vr-web-2"]
    results = {x.action.ref: x for x in r.execute()["default"]}
    failed = results["Domain/vr-web-2"]
    assert failed.result == "failed" and failed.error is not None
    assert failed.error.startswith("Domain/vr-web-2 on host default: dom_define: name clash: ")
    assert "already exists with uuid" in failed.error
    assert host_snapshot(c)["domain/vr-web-2"] == snapshot
    assert results["Domain/vr-web-1"].result == "ok"
