"""Minimal live changes on a real libvirtd with a booted guest (issue #4).

One guest is booted for the whole module (booting is the slow part); every
test first applies the base manifests (``Lab.reset``), which also reverts what
the previous test changed, so each test starts from the same converged lab:
a dir pool with a qcow2 volume, an active NAT network and a running guest with
one NIC on it and a SATA cdrom with media ``a.iso``.

Tests that restart or stop the guest come last; ``reset`` starts it again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler import manifests, plan, reconcile
from tests.e2e.test_reconcile import CMDLINE, vr
from tests.testbed.daemon import TEST_PREFIX, cleanup_prefixed
from tests.testbed.guest import Guest, make_scratch_dir, wait_for_ready

DOMAIN = "vrt-live"
NETWORK = "vrt-live-net"
POOL = "vrt-live-pool"
VOLUME = "vrt-data.qcow2"
BRIDGE = "vrtlive0"
SUBNET = "10.213.77"


@dataclass(frozen=True, kw_only=True)
class Spec:
    """The parts of the lab a test varies; the defaults are the base lab."""

    memory: str = "192MiB"
    current_memory: str = "128MiB"
    vcpus: int = 1
    machine: str = "q35"
    cpu: str = ""
    restart: str = "never"
    shutdown_timeout: str = "5s"
    state: str = "running"
    media: str = "a.iso"
    extra_disk: bool = False
    extra_nic: bool = False
    volume_capacity: str = "16MiB"
    volume_in_use: bool = False
    dhcp_hosts: tuple[tuple[str, str], ...] = ()
    net_bridge: str = BRIDGE
    net_forward: str = "nat"
    title: str = ""
    description: str = ""


@dataclass
class Lab:
    uri: str
    guest: Guest
    folder: Path
    scratch: Path
    spec: Spec = field(default_factory=Spec)

    @property
    def log(self) -> Path:
        return self.scratch / "serial.log"

    def write(self, spec: Spec) -> None:
        self.spec = spec
        disks = [
            f"    - {{target: sda, bus: sata, device: cdrom, readonly: true, "
            f"source: {{file: {self.scratch / spec.media}}}}}\n"
        ]
        if spec.extra_disk or spec.volume_in_use:
            disks.append(
                f"    - {{target: vdb, bus: virtio, format: qcow2, "
                f"source: {{volume: {{pool: {POOL}, name: {VOLUME}}}}}}}\n"
            )
        nics = ["    - {name: lan, network: " + NETWORK + ", model: virtio}\n"]
        if spec.extra_nic:
            nics.append("    - {name: extra, network: " + NETWORK + ", model: virtio}\n")
        cpu = f"  cpu: {{mode: {spec.cpu}}}\n" if spec.cpu else ""
        texts = "".join(
            f"  {key}: {value}\n"
            for key, value in (("title", spec.title), ("description", spec.description))
            if value
        )
        ports = "".join(
            f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 7)
        )
        dhcp_hosts = "".join(
            f'\n        - {{mac: "{mac}", ip: {ip}}}' for mac, ip in spec.dhcp_hosts
        )
        (self.folder / "lab.yaml").write_text(f"""\
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {{name: {POOL}}}
spec: {{type: dir, target: {self.scratch / "pool"}, state: active}}
---
apiVersion: virt-reconcile/v1
kind: Volume
metadata: {{name: {VOLUME}}}
spec: {{pool: {POOL}, capacity: {spec.volume_capacity}, format: qcow2}}
---
apiVersion: virt-reconcile/v1
kind: Network
metadata: {{name: {NETWORK}}}
spec:
  forward: {spec.net_forward}
  bridge: {spec.net_bridge}
  ip:
    address: {SUBNET}.1
    prefix: 24
    dhcp:
      range: [{SUBNET}.100, {SUBNET}.200]
      hosts:{dhcp_hosts or " []"}
  state: active
---
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {DOMAIN}}}
spec:
  type: qemu
{texts}  machine: {spec.machine}
  memory: {spec.memory}
  currentMemory: {spec.current_memory}
  vcpus: {spec.vcpus}
  maxVcpus: 2
{cpu}  kernel: {{path: {self.guest.kernel}, initrd: {self.guest.initrd}, cmdline: "{CMDLINE}"}}
  disks:
{"".join(disks)}  interfaces:
{"".join(nics)}  state: {spec.state}
  updateStrategy: {{restart: {spec.restart}, shutdownTimeout: {spec.shutdown_timeout}}}
  xml: |
    <domain>
      <features><acpi/></features>
      <devices>
        {ports}
        <serial type='file'><source path='{self.log}'/></serial>
        <memballoon model='virtio'/>
      </devices>
    </domain>
""")

    # --- running the command line --------------------------------------------------

    def plan(self, *extra: str) -> tuple[int, dict[str, Any]]:
        result = vr("plan", self.folder, "-c", self.uri, "-o", "json", *extra)
        assert result.returncode in (0, 2), result.stdout + result.stderr
        return result.returncode, json.loads(result.stdout)

    def apply(self, *extra: str, ok: bool = True) -> dict[str, Any]:
        result = vr("apply", self.folder, "-c", self.uri, "-o", "json", *extra)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    def assert_converged(self) -> None:
        code, doc = self.plan("--detailed-exitcode")
        assert code == 0, json.dumps(doc, indent=1)

    def reset(self, **changes: Any) -> None:
        """Apply the base lab (plus ``changes``) and wait until the guest is up."""
        # The volume keeps the size a test grew it to: a shrink is refused.
        self.write(replace(Spec(volume_capacity=self.spec.volume_capacity), **changes))
        self.apply()
        with self.conn() as conn:
            dom = conn.lookupByName(DOMAIN)
            if dom.isActive():
                wait_for_ready(self.log, timeout=120, domain=dom)
                self.wait_balloon(units_kib(self.spec.current_memory))
        self.assert_converged()

    def wait_balloon(self, kib: int, timeout: float = 30) -> None:
        """Wait until the guest's balloon reached ``kib`` (libvirt reports it with a lag)."""
        deadline = time.monotonic() + timeout
        while f"<currentMemory unit='KiB'>{kib}</currentMemory>" not in self.live_xml():
            assert time.monotonic() < deadline, f"balloon never reached {kib} KiB"
            time.sleep(0.2)

    # --- looking at the host -------------------------------------------------------

    def conn(self) -> _Conn:
        return _Conn(self.uri)

    def dom_id(self) -> int:
        with self.conn() as conn:
            return int(conn.lookupByName(DOMAIN).ID())

    def live_xml(self) -> str:
        with self.conn() as conn:
            return str(conn.lookupByName(DOMAIN).XMLDesc(0))

    def console(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_console(self, offset: int, *lines: str, timeout: float = 30) -> None:
        """Wait until the guest printed every line (after ``offset``) on its console."""
        deadline = time.monotonic() + timeout
        while not all(line in self.console()[offset:] for line in lines):
            assert time.monotonic() < deadline, f"{lines} not all in {self.console()[offset:]!r}"
            time.sleep(0.1)


class _Conn:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> libvirt.virConnect:
        self.c = libvirt.open(self.uri)
        return self.c

    def __exit__(self, *exc: object) -> None:
        self.c.close()


def units_kib(size: str) -> int:
    number, unit = size[:-3], size[-3:]
    return int(number) * {"KiB": 1, "MiB": 1024, "GiB": 1024 * 1024}[unit]


def actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Actions by ``Kind/name`` (volumes by ``Volume/name``)."""
    return {f"{a['kind']}/{a['name']}": a for h in doc["hosts"] for a in h["actions"]}


def all_calls(doc: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for a in actions(doc).values():
        for k, v in (a.get("calls") or {}).items():
            total[k] = total.get(k, 0) + v
    return total


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def vr_cleanup() -> Iterator[None]:
    """Overrides the per-test cleanup: the module shares one lab (see ``lab``)."""
    yield


@pytest.fixture(scope="module")
def lab(system_uri: str, guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cleanup_prefixed(system_uri, TEST_PREFIX)
    scratch = make_scratch_dir()
    for iso in ("a.iso", "b.iso"):
        (scratch / iso).write_bytes(b"\0" * 2048 * 16)
    folder = tmp_path_factory.mktemp("live")
    the_lab = Lab(uri=system_uri, guest=guest, folder=folder, scratch=scratch)
    try:
        yield the_lab
    finally:
        cleanup_prefixed(system_uri, TEST_PREFIX)
        shutil.rmtree(scratch, ignore_errors=True)


# --- tests ----------------------------------------------------------------------------


def test_disk_and_nic_attach_live_then_detach(lab: Lab) -> None:
    lab.reset()
    before = lab.dom_id()
    seen = len(lab.console())
    lab.write(replace(lab.spec, extra_disk=True, extra_nic=True))
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    dom = actions(planned)[f"Domain/{DOMAIN}"]
    assert dom["action"] == "update" and dom["disruption"] == "live", dom
    applied = lab.apply()
    # Exactly the attaches, plus the ownership record (its last-applied field set
    # now holds the new devices): no define, no destroy, no restart.
    assert all_calls(applied) == {"attachDeviceFlags": 2, "setMetadata": 1}, applied
    live = lab.live_xml()
    assert "<target dev='vdb' bus='virtio'/>" in live
    assert live.count("<interface type='network'>") == 2
    assert lab.dom_id() == before
    # The guest names disks itself: the first virtio disk is its vda, whatever the target.
    lab.wait_console(seen, "VR-GUEST-DEVICE add block vda", "VR-GUEST-DEVICE add net eth1")
    lab.assert_converged()

    seen = len(lab.console())
    lab.write(replace(lab.spec, extra_disk=False, extra_nic=False))
    applied = lab.apply()
    assert all_calls(applied) == {"detachDeviceFlags": 2, "setMetadata": 1}, applied
    live = lab.live_xml()
    assert "vdb" not in live
    assert live.count("<interface type='network'>") == 1
    assert lab.dom_id() == before
    lab.wait_console(seen, "VR-GUEST-DEVICE remove block vda", "VR-GUEST-DEVICE remove net eth1")
    lab.assert_converged()


def test_cdrom_media_memory_and_vcpus_change_live(lab: Lab) -> None:
    lab.reset()
    before = lab.dom_id()
    lab.write(replace(lab.spec, media="b.iso", current_memory="160MiB", vcpus=2))
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    dom = actions(planned)[f"Domain/{DOMAIN}"]
    assert dom["disruption"] == "live"
    assert {c["disruption"] for c in dom["changes"]} == {"live"}, dom
    applied = lab.apply()
    assert all_calls(applied) == {
        "updateDeviceFlags": 1,
        "setMemoryFlags": 1,
        "setVcpusFlags": 1,
    }, applied
    assert lab.dom_id() == before
    live = lab.live_xml()
    assert f"<source file='{lab.scratch / 'b.iso'}'" in live
    with lab.conn() as conn:
        dom_obj = conn.lookupByName(DOMAIN)
        assert dom_obj.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
        assert dom_obj.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 2
        inactive = dom_obj.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"<source file='{lab.scratch / 'b.iso'}'" in inactive
    assert "<currentMemory unit='KiB'>163840</currentMemory>" in inactive
    lab.wait_balloon(160 * 1024)  # the guest's balloon driver gave the memory back
    lab.assert_converged()

    # The tiny guest never releases a vCPU: libvirt times out, the count is
    # persisted, and the running domain waits for a restart.
    lab.write(replace(lab.spec, vcpus=1))
    applied = lab.apply()
    assert all_calls(applied) == {"setVcpusFlags": 1}, applied
    with lab.conn() as conn:
        dom_obj = conn.lookupByName(DOMAIN)
        assert dom_obj.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
        assert dom_obj.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 1
    code, after = lab.plan("--detailed-exitcode")
    assert code == 0
    pending = actions(after)[f"Domain/{DOMAIN}"]
    assert pending["action"] == "pending-restart", pending
    assert [(c["path"], c["old"], c["new"]) for c in pending["changes"]] == [
        ("vcpu/@current", "2", "1")
    ]


def test_title_and_description_change_live_without_a_restart(lab: Lab) -> None:
    """Declared Live.METADATA: setMetadata on the running guest, even under
    restart: ifNeeded (a comment never reboots a guest)."""
    lab.reset(restart="ifNeeded")
    before = lab.dom_id()
    lab.write(replace(lab.spec, title="Lab guest", description="set live"))
    code, planned = lab.plan("--detailed-exitcode")
    dom = actions(planned)[f"Domain/{DOMAIN}"]
    assert code == 2 and dom["disruption"] == "live", dom
    assert {c["field"] for c in dom["changes"]} == {"title", "description"}, dom
    applied = lab.apply()
    # Title, description and the ownership record: three setMetadata, nothing else.
    assert all_calls(applied) == {"setMetadata": 3}, applied
    assert lab.dom_id() == before
    assert "<title>Lab guest</title>" in lab.live_xml()
    with lab.conn() as conn:
        inactive = conn.lookupByName(DOMAIN).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<description>set live</description>" in inactive
    lab.assert_converged()
    lab.write(replace(lab.spec, title="", description=""))  # removed, live too
    lab.apply()
    assert lab.dom_id() == before and "<title>" not in lab.live_xml()
    lab.assert_converged()


def test_live_memory_change_behind_our_back_is_drift_and_reverted(lab: Lab) -> None:
    lab.reset()
    with lab.conn() as conn:
        conn.lookupByName(DOMAIN).setMemoryFlags(144 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    lab.wait_balloon(144 * 1024)
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    dom = actions(planned)[f"Domain/{DOMAIN}"]
    assert [(c["path"], c["old"], c["new"], c["disruption"]) for c in dom["changes"]] == [
        ("currentMemory", str(144 * 1024), str(128 * 1024), "live")
    ]
    # -v prints the libvirt calls each action made.
    result = vr("apply", lab.folder, "-c", lab.uri, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "setMemoryFlags=1" in result.stdout, result.stdout
    lab.wait_balloon(128 * 1024)
    lab.assert_converged()


def _dnsmasq_pid() -> int:
    return int(Path(f"/run/libvirt/network/{NETWORK}.pid").read_text().strip())


def test_dhcp_host_added_to_active_network_without_restart(lab: Lab) -> None:
    lab.reset()
    before, pid = lab.dom_id(), _dnsmasq_pid()
    mac, ip = "52:54:00:aa:bb:01", f"{SUBNET}.50"
    lab.write(replace(lab.spec, dhcp_hosts=((mac, ip),)))
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    net = actions(planned)[f"Network/{NETWORK}"]
    assert net["disruption"] == "live" and "blastRadius" not in net, net
    applied = lab.apply()
    # The running network through networkUpdate; the definition (with the
    # ownership record) through define, which leaves an active network running.
    calls = actions(applied)[f"Network/{NETWORK}"]["calls"]
    assert calls == {"networkUpdate": 1, "networkDefineXMLFlags": 1}, calls
    assert _dnsmasq_pid() == pid
    assert lab.dom_id() == before
    entry = f"<host mac='{mac}' ip='{ip}'/>"
    with lab.conn() as conn:
        network = conn.networkLookupByName(NETWORK)
        assert entry in network.XMLDesc(0)
        assert entry in network.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    lab.assert_converged()


def test_first_and_last_dhcp_host_of_an_active_network_are_live(lab: Lab) -> None:
    name, doc = "vrt-live-net2", lab.folder / "net2.yaml"
    mac, ip = "52:54:00:aa:bb:02", "10.213.78.5"

    def write(hosts: str) -> None:
        doc.write_text(
            "apiVersion: virt-reconcile/v1\nkind: Network\n"
            f"metadata: {{name: {name}}}\n"
            "spec:\n  forward: nat\n  bridge: vrtlive2\n  state: active\n"
            f"  ip: {{address: 10.213.78.1, prefix: 24{hosts}}}\n"
        )

    try:
        write("")
        lab.apply()
        bridge = Path("/sys/class/net/vrtlive2/ifindex").read_text()
        write(f', dhcp: {{hosts: [{{mac: "{mac}", ip: {ip}}}]}}')
        applied = actions(lab.apply())[f"Network/{name}"]
        assert applied["calls"] == {"networkUpdate": 1, "networkDefineXMLFlags": 1}, applied
        with lab.conn() as conn:
            net = conn.networkLookupByName(name)
            for xml in (net.XMLDesc(0), net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)):
                assert f"<host mac='{mac}' ip='{ip}'/>" in xml
        lab.assert_converged()
        write("")
        applied = actions(lab.apply())[f"Network/{name}"]
        assert applied["calls"] == {"networkUpdate": 1, "networkDefineXMLFlags": 1}, applied
        with lab.conn() as conn:
            net = conn.networkLookupByName(name)
            for xml in (net.XMLDesc(0), net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)):
                assert "<dhcp>" not in xml
        lab.assert_converged()
        # The network was not restarted: same bridge device (libvirt itself
        # restarts dnsmasq when DHCP is switched on or off).
        assert Path("/sys/class/net/vrtlive2/ifindex").read_text() == bridge
    finally:
        doc.unlink()


def test_network_bridge_change_is_restart_required_with_blast_radius(lab: Lab) -> None:
    lab.reset()
    before, pid = lab.dom_id(), _dnsmasq_pid()
    lab.write(replace(lab.spec, net_bridge="vrtlive1", net_forward="route"))
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    net = actions(planned)[f"Network/{NETWORK}"]
    assert net["disruption"] == "restart-required", net
    assert net["blastRadius"] == [DOMAIN]
    assert {c["path"] for c in net["changes"]} == {"bridge/@name", "forward/@mode"}
    text = vr("plan", lab.folder, "-c", lab.uri)
    assert f"running domains: {DOMAIN}" in text.stdout, text.stdout
    applied = lab.apply()
    assert actions(applied)[f"Network/{NETWORK}"]["calls"] == {"networkDefineXMLFlags": 1}
    assert _dnsmasq_pid() == pid and lab.dom_id() == before
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    assert not Path("/sys/class/net/vrtlive1").exists()
    code, after = lab.plan("--detailed-exitcode")
    assert code == 0, json.dumps(after, indent=1)
    net = actions(after)[f"Network/{NETWORK}"]
    assert net["action"] == "pending-restart", net
    assert net["blastRadius"] == [DOMAIN]
    assert after["summary"]["update"] == 0


def test_volume_grows_in_place_in_use_through_block_resize_and_never_shrinks(lab: Lab) -> None:
    lab.reset()
    mib = 1024 * 1024
    lab.write(replace(lab.spec, volume_capacity="32MiB"))
    applied = lab.apply()
    assert actions(applied)[f"Volume/{VOLUME}"]["calls"] == {"storageVolResize": 1}
    with lab.conn() as conn:
        vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName(VOLUME)
        assert vol.info()[1] == 32 * mib
    lab.assert_converged()

    # In use by the running guest: qemu holds the image, so it grows through the domain.
    lab.write(replace(lab.spec, volume_in_use=True))
    lab.apply()
    lab.write(replace(lab.spec, volume_capacity="48MiB"))
    applied = lab.apply()
    assert actions(applied)[f"Volume/{VOLUME}"]["calls"] == {"blockResize": 1}
    with lab.conn() as conn:
        assert conn.lookupByName(DOMAIN).blockInfo("vdb")[0] == 48 * mib
        vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName(VOLUME)
        assert vol.info()[1] == 48 * mib
    lab.assert_converged()

    # A shrink is a plan-time error: nothing on the host changes.
    lab.write(replace(lab.spec, volume_capacity="8MiB"))
    result = vr("apply", lab.folder, "-c", lab.uri, "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing was changed" in result.stderr
    vol_action = actions(json.loads(result.stdout))[f"Volume/{VOLUME}"]
    assert f"{POOL}/{VOLUME}" in vol_action["error"] and "shrink" in vol_action["error"]
    with lab.conn() as conn:
        vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName(VOLUME)
        assert vol.info()[1] == 48 * mib
    lab.write(replace(lab.spec, volume_capacity="48MiB"))


def test_a_device_the_guest_does_not_release_fails_and_stays_live_drift(lab: Lab) -> None:
    lab.reset(extra_disk=True)
    with lab.conn() as conn:
        conn.lookupByName(DOMAIN).suspend()  # a paused guest cannot answer the unplug
    lab.write(replace(lab.spec, extra_disk=False))
    # In process, to shorten the wait for DEVICE_REMOVED (20 s by default).
    run = reconcile.Run(
        target=reconcile.resolve_hosts(manifests.load([str(lab.folder)]), connect=lab.uri),
        options=plan.Options(),
    )
    try:
        run.connect_and_observe()
        run.sessions[reconcile.DEFAULT_HOST].detach_timeout = 1.0
        run.build_plans()
        results = run.execute()[reconcile.DEFAULT_HOST]
    finally:
        run.close()
    result = next(r for r in results if r.action.name == DOMAIN)
    assert result.result == "failed" and "did not release" in (result.error or ""), result
    assert result.calls == {"detachDeviceFlags": 1}
    with lab.conn() as conn:
        dom = conn.lookupByName(DOMAIN)
        assert "<target dev='vdb'" in dom.XMLDesc(0)
        assert "<target dev='vdb'" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    changes = {c["path"]: c for c in actions(planned)[f"Domain/{DOMAIN}"]["changes"]}
    assert changes["devices/disk[target=vdb]"]["disruption"] == "live", changes
    assert changes["devices/disk[target=vdb]"]["new"] is None
    # Running again, the guest answers the pending unplug request.
    seen = len(lab.console())
    with lab.conn() as conn:
        conn.lookupByName(DOMAIN).resume()
    lab.wait_console(seen, "VR-GUEST-DEVICE remove block vda")
    lab.assert_converged()


def test_cpu_change_waits_under_never_and_restarts_once_under_if_needed(lab: Lab) -> None:
    lab.reset()
    before = lab.dom_id()
    lab.write(replace(lab.spec, cpu="maximum", machine="pc-q35-7.1"))
    code, planned = lab.plan("--detailed-exitcode")
    assert code == 2
    dom = actions(planned)[f"Domain/{DOMAIN}"]
    assert dom["disruption"] == "restart-required", dom
    paths = {c["path"]: c["disruption"] for c in dom["changes"]}
    assert paths["os/type/@machine"] == "restart-required"
    assert {d for p, d in paths.items() if p.startswith("cpu")} == {"restart-required"}
    applied = lab.apply()
    assert all_calls(applied) == {"defineXMLFlags": 1}, applied
    assert lab.dom_id() == before
    code, after = lab.plan("--detailed-exitcode")
    assert code == 0
    assert actions(after)[f"Domain/{DOMAIN}"]["action"] == "pending-restart"

    lab.write(replace(lab.spec, restart="ifNeeded"))
    applied = lab.apply()
    calls = all_calls(applied)
    # One graceful restart: the guest honours ACPI, so no destroy is needed.
    assert calls == {"shutdown": 1, "createWithFlags": 1}, calls
    assert lab.dom_id() != before
    lab.wait_console(0, "VR-GUEST-READY", timeout=120)  # qemu started a fresh console log
    lab.wait_balloon(128 * 1024)
    lab.assert_converged()
    live = lab.live_xml()
    assert "<cpu mode='maximum'" in live and "machine='pc-q35-7.1'" in live


def test_shutoff_is_a_graceful_shutdown_when_the_guest_honours_acpi(lab: Lab) -> None:
    lab.reset()
    lab.write(replace(lab.spec, state="shutoff", shutdown_timeout="20s"))
    applied = lab.apply()
    assert all_calls(applied) == {"shutdown": 1}, applied  # no destroy
    with lab.conn() as conn:
        assert not conn.lookupByName(DOMAIN).isActive()
    lab.assert_converged()


def test_shutoff_destroys_after_the_timeout_when_acpi_is_ignored(lab: Lab) -> None:
    # No OS (firmware looking for a boot device): the ACPI power button goes unheard.
    name = "vrt-live-noos"
    (lab.folder / "noos.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  type: qemu\n  machine: q35\n  memory: 64MiB\n  state: running\n"
        "  updateStrategy: {shutdownTimeout: 2s}\n"
        "  xml: <domain><features><acpi/></features></domain>\n"
    )
    try:
        lab.apply()
        noos = actions(lab.apply())
        assert noos[f"Domain/{name}"]["action"] == "unchanged"
        text = (lab.folder / "noos.yaml").read_text()
        (lab.folder / "noos.yaml").write_text(text.replace("state: running", "state: shutoff"))
        started = time.monotonic()
        applied = lab.apply()
        took = time.monotonic() - started
        assert actions(applied)[f"Domain/{name}"]["calls"] == {"shutdown": 1, "destroy": 1}
        assert took >= 2
        with lab.conn() as conn:
            assert not conn.lookupByName(name).isActive()
        lab.assert_converged()
    finally:
        (lab.folder / "noos.yaml").unlink()
