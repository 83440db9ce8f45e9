"""virt-reconcile against a real libvirtd: examples, a booted guest, prune, several hosts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.testbed.cli import vr
from tests.testbed.daemon import IsolatedHost
from tests.testbed.guest import Guest, wait_for_ready

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
EXAMPLE_DOMAINS = ("vr-web-1", "vr-web-2", "vr-db-1")
CMDLINE = "console=ttyS0 quiet loglevel=3 panic=-1"


def _remove_examples(uri: str) -> None:
    conn = libvirt.open(uri)
    try:
        for name in EXAMPLE_DOMAINS:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        for name in ("vr-lab-net", "virt-reconcile-registry"):
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError:
                continue
            if net.isActive():
                net.destroy()
            net.undefine()
        try:
            pool = conn.storagePoolLookupByName("vr-lab")
        except libvirt.libvirtError:
            return
        if not pool.isActive():
            pool.create(0)
        for vol in pool.listAllVolumes():
            vol.delete(0)
        pool.destroy()
        pool.undefine()
    finally:
        conn.close()


@pytest.fixture
def clean_examples(system_uri: str) -> Iterator[str]:
    _remove_examples(system_uri)
    yield system_uri
    _remove_examples(system_uri)


def test_examples_apply_and_converge_on_real_libvirtd(clean_examples: str) -> None:
    uri = clean_examples
    result = vr("apply", EXAMPLES, "-c", uri, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["converged"] is True
    assert doc["summary"]["create"] == 8 and doc["summary"]["failed"] == 0
    again = vr("plan", EXAMPLES, "-c", uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    conn = libvirt.open(uri)
    try:
        assert conn.lookupByName("vr-web-1").isActive()
        assert not conn.lookupByName("vr-db-1").isActive()
        assert conn.networkLookupByName("vr-lab-net").isActive()
        vols = conn.storagePoolLookupByName("vr-lab").listAllVolumes()
        assert sorted(v.name() for v in vols) == ["db-1-data.raw", "web-1.qcow2", "web-2.qcow2"]
    finally:
        conn.close()


def guest_manifests(
    folder: Path,
    guest: Guest,
    serial_log: Path,
    *,
    name: str = "vrt-guest",
    host: str | None = None,
    memory: str = "160MiB",
    extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    host_line = f"  host: {host}\n" if host else ""
    ports = "".join(
        f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 5)
    )
    (folder / f"{name}.yaml").write_text(f"""\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {name}}}
spec:
{host_line}  type: qemu
  machine: q35
  memory: {memory}
  vcpus: 1
  maxVcpus: 2
  kernel: {{path: {guest.kernel}, initrd: {guest.initrd}, cmdline: "{CMDLINE}"}}
  state: running
  updateStrategy: {{restart: never, shutdownTimeout: 5s}}
{extra}  xml: |
    <domain>
      <features><acpi/></features>
      <devices>
        {ports}
        <serial type='file'><source path='{serial_log}'/></serial>
        <memballoon model='virtio'/>
      </devices>
    </domain>
""")
    return folder


def test_booted_guest_then_one_field_change_is_exactly_that_change(
    system_uri: str, guest: Guest, scratch_dir: Path, tmp_path: Path
) -> None:
    log = scratch_dir / "vrt-guest.log"
    folder = guest_manifests(tmp_path / "m", guest, log)
    result = vr("apply", folder, "-c", system_uri)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_ready(log, timeout=90)
    assert vr("plan", folder, "-c", system_uri, "--detailed-exitcode").returncode == 0
    conn = libvirt.open(system_uri)
    try:
        dom_id = conn.lookupByName("vrt-guest").ID()
    finally:
        conn.close()
    guest_manifests(folder, guest, log, memory="192MiB")
    plan = vr("plan", folder, "-c", system_uri, "-o", "json", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    actions = [
        a
        for h in json.loads(plan.stdout)["hosts"]
        for a in h["actions"]
        if "orphan" not in a  # managed objects of other tests on the shared daemon
    ]
    assert len(actions) == 1
    action = actions[0]
    assert action["action"] == "update"
    assert [(c["path"], c["old"], c["new"]) for c in action["changes"]] == [
        ("memory", str(160 * 1024), str(192 * 1024))
    ]
    assert action["disruption"] == "restart-required"
    applied = vr("apply", folder, "-c", system_uri)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = vr("plan", folder, "-c", system_uri, "-o", "json", "--detailed-exitcode")
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["summary"]["pending-restart"] == 1
    conn = libvirt.open(system_uri)
    try:
        assert conn.lookupByName("vrt-guest").ID() == dom_id  # restart: never
    finally:
        conn.close()


def test_prune_removes_managed_and_keeps_unmanaged_same_prefix(
    isolated_hosts: Callable[..., list[IsolatedHost]],
    guest: Guest,
    scratch_dir: Path,
    tmp_path: Path,
) -> None:
    # A private daemon: --force-prune deletes every managed object the manifests do
    # not name, and the system daemon may hold someone's (e.g. scripts/demo.sh's).
    (host,) = isolated_hosts(1, prefix="vrprune")
    folder = tmp_path / "m"
    guest_manifests(folder, guest, scratch_dir / "a.log", name="vrt-prune-a")
    (folder / "b.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: vrt-prune-b}\n"
        "spec: {type: qemu, memory: 64MiB}\n"
    )
    assert vr("apply", folder, "-c", host.uri).returncode == 0
    conn = libvirt.open(host.uri)
    try:
        conn.defineXML(
            "<domain type='qemu'><name>vrt-prune-unmanaged</name>"
            "<memory>65536</memory><os><type>hvm</type></os></domain>"
        )
        (folder / "b.yaml").unlink()
        (folder / "vrt-prune-a.yaml").unlink()
        (folder / "keep.yaml").write_text(
            "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: vrt-prune-keep}\n"
            "spec: {type: qemu, memory: 64MiB}\n"
        )
        # Both managed objects go (100%): the prune guard wants --force-prune.
        refused = vr("apply", folder, "-c", host.uri, "--prune")
        assert refused.returncode == 1 and "prune guard" in refused.stdout
        result = vr("apply", folder, "-c", host.uri, "--prune", "--force-prune", "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        deleted = sorted(
            a["name"]
            for h in json.loads(result.stdout)["hosts"]
            for a in h["actions"]
            if a["action"] == "delete"
        )
        assert deleted == ["vrt-prune-a", "vrt-prune-b"]
        names = {d.name() for d in conn.listAllDomains()}
        assert "vrt-prune-unmanaged" in names and "vrt-prune-keep" in names
        assert not {"vrt-prune-a", "vrt-prune-b"} & names
    finally:
        conn.close()


def _hosts_file(folder: Path, hosts: list[IsolatedHost]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: {h.name}}}\n"
        f'spec: {{uri: "{h.uri}"}}\n'
        for h in hosts
    ]
    (folder / "hosts.yaml").write_text("---\n".join(docs))


def _domain_doc(name: str, host: str) -> str:
    return (
        f"apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {{name: {name}}}\n"
        f"spec: {{host: {host}, type: qemu, memory: 64MiB, machine: q35}}\n"
    )


def _names(uri: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def two_hosts(isolated_hosts: Callable[..., list[IsolatedHost]]) -> list[IsolatedHost]:
    return isolated_hosts(2, prefix="vrhost")


def test_two_isolated_hosts_each_get_their_own_objects(
    two_hosts: list[IsolatedHost], system_uri: str, tmp_path: Path
) -> None:
    a, b = two_hosts
    folder = tmp_path / "m"
    _hosts_file(folder, [a, b])
    (folder / "d.yaml").write_text(
        _domain_doc("vrt-on-a", a.name) + "---\n" + _domain_doc("vrt-on-b", b.name)
    )
    result = vr("apply", folder, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vrt-on-a" in _names(a.uri) and "vrt-on-a" not in _names(b.uri)
    assert "vrt-on-b" in _names(b.uri) and "vrt-on-b" not in _names(a.uri)
    assert not {"vrt-on-a", "vrt-on-b"} & _names(system_uri)
    assert vr("plan", folder, "--detailed-exitcode").returncode == 0
    # --host limits the run to one host.
    only = vr("plan", folder, "--host", a.name, "-o", "json")
    assert [h["host"] for h in json.loads(only.stdout)["hosts"]] == [a.name]


def test_a_stopped_host_fails_alone_and_the_other_converges(
    isolated_hosts: Callable[..., list[IsolatedHost]], tmp_path: Path
) -> None:
    a, b = isolated_hosts(2, prefix="vrdown")
    folder = tmp_path / "m"
    _hosts_file(folder, [a, b])
    (folder / "d.yaml").write_text(
        _domain_doc("vrt-up", a.name) + "---\n" + _domain_doc("vrt-down", b.name)
    )
    b.stop()
    result = vr("apply", folder, "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host[b.name]["reachable"] is False
    assert b.name in (by_host[b.name]["error"] or "")
    assert by_host[a.name]["actions"][0]["result"] == "ok"
    assert "vrt-up" in _names(a.uri)
    plan_a = vr("plan", folder, "--host", a.name, "--detailed-exitcode")
    assert plan_a.returncode == 0, plan_a.stdout + plan_a.stderr
