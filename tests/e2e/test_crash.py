"""Crash consistency: an ``apply`` killed between any two libvirt calls recovers.

The scenario starts from a host where a first apply made a pool and a volume
holding data (a marker written into its file). The second manifest set grows
that volume and adds a second pool, another volume, a network and two domains
(one running). For every N from 1 to K (K: the mutating libvirt calls the
second apply makes), ``apply`` runs as a subprocess with the test-only hook
``VIRT_RECONCILE_FAULT_AFTER_CALLS=N`` and dies by SIGKILL right after call N.
The next ``apply`` (no hook) must exit 0 and ``plan --detailed-exitcode`` must
then be 0, with exactly the declared objects, each managed, no object
re-created behind the survivor's back (UUIDs kept), and the volume data intact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler import ownership
from tests.testbed.cli import vr
from tests.testbed.daemon import TEST_PREFIX, cleanup_prefixed

MARKER = b"virt-reconcile crash-test marker\n"
MiB = 1 << 20
POOLS = ("vrt-crash-p1", "vrt-crash-p2")
VOLUMES = ("vrt-crash-p1/vrt-crash-a.raw", "vrt-crash-p2/vrt-crash-b.raw")
NETWORK = "vrt-crash-net"
DOMAINS = ("vrt-crash-run", "vrt-crash-off")


def _doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    # JSON is YAML: one document per object, exactly the fields given.
    doc = {"apiVersion": "virt-reconcile/v1", "kind": kind, "metadata": {"name": name}}
    return json.dumps({**doc, "spec": spec})


def _disk(pool: str, volume: str) -> dict[str, Any]:
    return {
        "target": "vda",
        "bus": "virtio",
        "format": "raw",
        "source": {"volume": {"pool": pool, "name": volume}},
    }


def write_manifests(folder: Path, scratch: Path, *, full: bool) -> Path:
    """Stage 1 (``full=False``): pool p1 + volume a. Stage 2: everything, a grown."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        _doc(
            "StoragePool",
            POOLS[0],
            {"type": "dir", "target": str(scratch / "p1"), "state": "active", "autostart": True},
        ),
        _doc(
            "Volume",
            "vrt-crash-a.raw",
            {"pool": POOLS[0], "capacity": f"{1 + full}MiB", "format": "raw", "prune": True},
        ),
    ]
    if full:
        docs += [
            _doc("StoragePool", POOLS[1], {"type": "dir", "target": str(scratch / "p2")}),
            _doc("Volume", "vrt-crash-b.raw", {"pool": POOLS[1], "capacity": "1MiB"}),
            _doc(
                "Network",
                NETWORK,
                {
                    "bridge": "vrtcrash0",
                    "ip": {"address": "10.254.77.1", "prefix": 24},
                    "state": "active",
                    "autostart": True,
                },
            ),
            _doc(
                "Domain",
                DOMAINS[0],
                {
                    "type": "qemu",
                    "memory": "64MiB",
                    "boot": ["hd"],
                    "disks": [_disk(POOLS[0], "vrt-crash-a.raw")],
                    "interfaces": [{"network": NETWORK}],
                    "state": "running",
                    "autostart": True,
                    "updateStrategy": {"shutdownTimeout": "5s"},
                },
            ),
            _doc(
                "Domain",
                DOMAINS[1],
                {"type": "qemu", "memory": "64MiB", "disks": [_disk(POOLS[1], "vrt-crash-b.raw")]},
            ),
        ]
    (folder / "crash.yaml").write_text("\n---\n".join(docs) + "\n")
    return folder


def _registry(conn: libvirt.virConnect) -> ownership.Registry:
    try:
        net = conn.networkLookupByName(ownership.REGISTRY_NETWORK)
    except libvirt.libvirtError:
        return ownership.Registry()
    return ownership.Registry.from_xml(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))


def reset(uri: str, scratch: Path) -> None:
    """No ``vrt-*`` objects, no ``vrt-*`` registry records, no pool directories."""
    cleanup_prefixed(uri, TEST_PREFIX)
    conn = libvirt.open(uri)
    try:
        reg = _registry(conn)
        stale_pools = [k for k in reg.pools if k.startswith(TEST_PREFIX)]
        stale_vols = [k for k in reg.volumes if k.startswith(TEST_PREFIX)]
        for key in stale_pools:
            reg = reg.with_pool(key, None)
        for key in stale_vols:
            reg = reg.with_volume(key, None)
        if stale_pools or stale_vols:
            conn.networkDefineXML(reg.to_xml())
    finally:
        conn.close()
    for sub in ("p1", "p2"):
        shutil.rmtree(scratch / sub, ignore_errors=True)


def volume_path(conn: libvirt.virConnect, key: str) -> str:
    pool, name = key.split("/")
    return str(conn.storagePoolLookupByName(pool).storageVolLookupByName(name).path())


def uuids(conn: libvirt.virConnect) -> dict[str, str]:
    """UUIDs of every ``vrt-*`` domain, network and pool (a re-create changes them)."""
    out = {f"domain/{d.name()}": d.UUIDString() for d in conn.listAllDomains()}
    out |= {f"network/{n.name()}": n.UUIDString() for n in conn.listAllNetworks()}
    out |= {f"pool/{p.name()}": p.UUIDString() for p in conn.listAllStoragePools()}
    return {k: v for k, v in out.items() if k.split("/", 1)[1].startswith(TEST_PREFIX)}


def assert_converged_state(conn: libvirt.virConnect, scratch: Path) -> None:
    """Exactly the declared objects, each managed, in the declared state."""
    assert set(uuids(conn)) == {
        *(f"domain/{d}" for d in DOMAINS),
        f"network/{NETWORK}",
        *(f"pool/{p}" for p in POOLS),
    }
    for pool_name, sub in zip(POOLS, ("p1", "p2"), strict=True):
        pool = conn.storagePoolLookupByName(pool_name)
        assert pool.isActive()
        pool.refresh(0)
        vols = [v.name() for v in pool.listAllVolumes()]
        assert vols == [k.split("/")[1] for k in VOLUMES if k.startswith(pool_name + "/")]
        # No stray files: every file in the pool's directory is a declared volume.
        assert sorted(os.listdir(scratch / sub)) == sorted(vols)
    assert conn.storagePoolLookupByName(POOLS[0]).autostart()
    reg = _registry(conn)
    assert {k for k in reg.pools if k.startswith(TEST_PREFIX)} == set(POOLS)
    assert {k for k in reg.volumes if k.startswith(TEST_PREFIX)} == set(VOLUMES)
    assert all(reg.pools[p].managed for p in POOLS)
    assert all(reg.volumes[v].managed for v in VOLUMES)
    net = conn.networkLookupByName(NETWORK)
    assert net.isActive() and net.autostart()
    assert ownership.NAMESPACE in net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    for name in DOMAINS:
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert ownership.NAMESPACE in xml, name
    running = conn.lookupByName(DOMAINS[0])
    assert running.isActive() and running.autostart()
    assert not conn.lookupByName(DOMAINS[1]).isActive()
    a = conn.storagePoolLookupByName(POOLS[0]).storageVolLookupByName("vrt-crash-a.raw")
    assert a.info()[1] == 2 * MiB


def read_marker(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(MARKER))


@pytest.fixture
def crash_env(system_uri: str, scratch_dir: Path) -> Iterator[tuple[str, Path]]:
    reset(system_uri, scratch_dir)
    yield system_uri, scratch_dir
    reset(system_uri, scratch_dir)


def stage1(uri: str, folder: Path, scratch: Path) -> str:
    """Reset, apply stage 1, write the marker into volume a; returns its path."""
    reset(uri, scratch)
    write_manifests(folder, scratch, full=False)
    first = vr("apply", folder, "-c", uri)
    assert first.returncode == 0, first.stdout + first.stderr
    conn = libvirt.open(uri)
    try:
        path = volume_path(conn, VOLUMES[0])
    finally:
        conn.close()
    with open(path, "r+b") as f:
        f.write(MARKER)
    write_manifests(folder, scratch, full=True)
    return path


def calls_of(doc: dict[str, Any]) -> int:
    return sum(n for h in doc["hosts"] for a in h["actions"] for n in a.get("calls", {}).values())


def test_apply_killed_after_every_libvirt_call_converges_on_the_next_apply(
    crash_env: tuple[str, Path], tmp_path: Path
) -> None:
    uri, scratch = crash_env
    folder = tmp_path / "m"
    # K: how many mutating calls the uninterrupted stage-2 apply makes.
    marker_path = stage1(uri, folder, scratch)
    clean = vr("apply", folder, "-c", uri, "-o", "json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    total = calls_of(json.loads(clean.stdout))
    assert total >= 10  # pool, volumes, network, domains: a real multi-call apply
    conn = libvirt.open(uri)
    try:
        assert_converged_state(conn, scratch)
        assert read_marker(marker_path) == MARKER
    finally:
        conn.close()

    for n in range(1, total + 1):
        marker_path = stage1(uri, folder, scratch)
        killed = vr("apply", folder, "-c", uri, fault_after=n)
        assert killed.returncode == -signal.SIGKILL, (n, killed.stdout + killed.stderr)
        conn = libvirt.open(uri)
        try:
            survivors = uuids(conn)
        finally:
            conn.close()
        again = vr("apply", folder, "-c", uri, "-o", "json")
        assert again.returncode == 0, (n, again.stdout + again.stderr)
        doc = json.loads(again.stdout)
        assert doc["converged"] is True and doc["summary"]["failed"] == 0, (n, doc)
        # Together, the killed and the recovering run made no more calls than a
        # clean run plus a re-done last call: nothing was done twice over.
        assert calls_of(doc) <= total - n + 1, (n, doc)
        plan = vr("plan", folder, "-c", uri, "--detailed-exitcode")
        assert plan.returncode == 0, (n, plan.stdout + plan.stderr)
        conn = libvirt.open(uri)
        try:
            assert_converged_state(conn, scratch)
            after = uuids(conn)
            # Whatever existed after the crash is the same object now (not re-created).
            assert {k: after[k] for k in survivors} == survivors, n
            assert read_marker(marker_path) == MARKER, n
            assert volume_path(conn, VOLUMES[0]) == marker_path
        finally:
            conn.close()
