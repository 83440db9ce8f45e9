"""`status`: sync state, power state and health per object, read off the same plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import Run


def _status(run: Run, *argv: str | Path) -> tuple[int, dict[str, dict[str, Any]]]:
    code, out, err = run("status", *argv, "-o", "json")
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["version"] == 1
    objects = {
        (f"{o['kind']}/{o['pool']}/{o['name']}" if o["pool"] else f"{o['kind']}/{o['name']}"): o
        for h in doc["hosts"]
        for o in h["objects"]
    }
    return code, objects


def test_status_follows_the_lifecycle_of_the_examples(
    host_uri: str, examples: Path, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    code, objects = _status(run, examples, "-c", host_uri)
    assert code == 0
    assert {o["sync"] for o in objects.values()} == {"Missing"}
    assert len(objects) == 8

    assert run("apply", examples, "-c", host_uri)[0] == 0
    code, objects = _status(run, examples, "-c", host_uri)
    assert code == 0
    assert {o["sync"] for o in objects.values()} == {"Synced"}
    web = objects["Domain/vr-web-1"]
    assert (web["power"], web["healthy"]) == ("running", True)
    assert web["powerReason"] == "booted"
    assert objects["Domain/vr-web-2"]["power"] == "shutoff"
    assert objects["Network/vr-lab-net"]["power"] == "active"
    assert objects["Volume/vr-lab/web-1.qcow2"]["power"] is None

    # Paused by a person: still healthy, the reason is shown; the manifest wants
    # running, so the object is out of sync.
    conn(host_uri).lookupByName("vr-web-1").suspend()
    _, objects = _status(run, examples, "-c", host_uri)
    web = objects["Domain/vr-web-1"]
    assert (web["power"], web["powerReason"], web["healthy"]) == ("paused", "user", True)
    assert web["sync"] == "OutOfSync" and "state" in web["reason"]


def test_status_pending_restart_and_suspended(host_uri: str, examples: Path, run: Run) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    web = examples / "web.yaml"
    web.write_text(
        web.read_text().replace("  vcpus: 1\n  maxVcpus: 2", "  vcpus: 1\n  maxVcpus: 4")
    )
    _, objects = _status(run, examples, "-c", host_uri)
    assert objects["Domain/vr-web-1"]["sync"] == "OutOfSync"
    assert "vcpu" in objects["Domain/vr-web-1"]["reason"]
    assert run("apply", examples, "-c", host_uri)[0] == 0
    _, objects = _status(run, examples, "-c", host_uri)
    assert objects["Domain/vr-web-1"]["sync"] == "PendingRestart"

    text = web.read_text()
    start = text.index("name: vr-web-2")
    head, tail = text[:start], text[start:]
    tail = tail.replace(
        "name: vr-web-2\n", 'name: vr-web-2\n  annotations: {virt-reconcile/suspend: "true"}\n', 1
    ).replace("memory: 256MiB", "memory: 384MiB", 1)
    web.write_text(head + tail)
    _, objects = _status(run, examples, "-c", host_uri)
    assert objects["Domain/vr-web-2"]["sync"] == "Suspended"


def test_status_of_an_unreachable_host_fails(examples: Path, run: Run, tmp_path: Path) -> None:
    code, objects = _status(run, examples, "-c", f"test://{tmp_path}/missing.xml")
    assert code == 1
    assert {o["sync"] for o in objects.values()} == {"Failed"}
    assert all("unreachable" in o["reason"] for o in objects.values())
