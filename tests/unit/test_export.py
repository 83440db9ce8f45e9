"""Export (pure): libvirt-filled values left out, friendly fields + overlay, YAML that reloads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from reconciler import canonical, export, manifests, units
from reconciler.model import Host, Kind
from reconciler.observed import HostState, Observed

pytestmark = pytest.mark.unit

# --- canonical.FILLED: one example per rule (and a counter-example where it has a condition)

DOMAIN = """
<domain type='kvm' id='7'>
  <name>a</name>
  <uuid>0b6f5a0e-3c2f-4b8a-9a0e-3c2f4b8a9a0e</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' detect_zeroes='unmap'/>
      <source file='/srv/a.qcow2'/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <console type='pty'><target type='serial' port='0'/></console>
    <panic model='isa'><address type='isa' iobase='0x505'/></panic>
  </devices>
  <seclabel type='dynamic' model='selinux' relabel='yes'/>
</domain>
"""

NETWORK = "<network connections='2'><name>n</name><uuid>1</uuid></network>"
POOL = (
    "<pool type='dir'><name>p</name><uuid>1</uuid><capacity>1</capacity>"
    "<allocation>1</allocation><available>1</available><target><path>/p</path></target></pool>"
)
VOLUME = """
<volume type='file'>
  <name>v</name><key>/p/v</key>
  <source/>
  <capacity unit='bytes'>1024</capacity><allocation unit='bytes'>0</allocation>
  <physical unit='bytes'>0</physical>
  <target><path>/p/v</path><format type='qcow2'/><permissions><mode>0600</mode></permissions>
    <timestamps><atime>1</atime></timestamps></target>
  <backingStore><path>/p/base</path><format type='raw'/><permissions/></backingStore>
</volume>
"""

FILLED_EXAMPLES = [
    (Kind.DOMAIN, DOMAIN, "uuid", True),
    (Kind.DOMAIN, DOMAIN, "@id", True),
    (Kind.DOMAIN, DOMAIN, "devices/disk[target=vda]/address", True),
    (Kind.DOMAIN, DOMAIN, "devices/panic[#0]/address", False),  # ISA iobase: the user's
    (Kind.DOMAIN, DOMAIN, "devices/disk[target=vda]/alias", True),
    (Kind.DOMAIN, DOMAIN, "devices/emulator[#0]", True),
    (Kind.DOMAIN, DOMAIN, "devices/controller[type=pci,index=0]", True),
    (Kind.DOMAIN, DOMAIN, "devices/controller[type=pci,index=1]", False),
    (Kind.DOMAIN, DOMAIN, "vcpu/@placement", True),
    (Kind.DOMAIN, DOMAIN, "on_poweroff", True),
    (Kind.DOMAIN, DOMAIN, "on_reboot", True),
    (Kind.DOMAIN, DOMAIN, "on_crash", True),
    (Kind.DOMAIN, DOMAIN, "devices/console[#0]/target/@port", True),
    (Kind.DOMAIN, DOMAIN, "seclabel", True),
    (Kind.DOMAIN, DOMAIN, "os/type/@machine", False),
    (Kind.NETWORK, NETWORK, "uuid", True),
    (Kind.NETWORK, NETWORK, "@connections", True),
    (Kind.STORAGE_POOL, POOL, "uuid", True),
    (Kind.STORAGE_POOL, POOL, "capacity", True),
    (Kind.STORAGE_POOL, POOL, "target/path", False),
    (Kind.VOLUME, VOLUME, "key", True),
    (Kind.VOLUME, VOLUME, "@type", True),
    (Kind.VOLUME, VOLUME, "allocation", True),
    (Kind.VOLUME, VOLUME, "source", True),
    (Kind.VOLUME, VOLUME, "target/path", True),
    (Kind.VOLUME, VOLUME, "target/permissions", True),
    (Kind.VOLUME, VOLUME, "backingStore/permissions", True),
    (Kind.VOLUME, VOLUME, "backingStore/path", False),
    (Kind.VOLUME, VOLUME, "capacity", False),
]


# canonical.QEMU_DEFAULTS: the inactive XML libvirt 9.0 wrote for examples/manifests/web.yaml
# (vr-web-1) on qemu:///system, and variants of it.
WEB = """
<domain type='qemu'>
  <name>vr-web-1</name>
  <uuid>43715367-5885-40f0-a852-0ccce30385d4</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>196608</currentMemory>
  <vcpu placement='static' current='1'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/><source pool='vr-lab' volume='web-1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci'>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'/>
    PORTS
    <interface type='network'>
      <mac address='52:54:00:77:00:11'/><source network='vr-lab-net'/><model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <audio id='1' type='none'/>
    <video>
      <model type='cirrus' vram='16384' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </memballoon>
  </devices>
</domain>
"""


def root_ports(n: int) -> str:
    """``n`` pcie-root-ports as libvirt writes them (slot 2, functions 0.., chassis = index)."""
    return "".join(
        f"<controller type='pci' index='{i}' model='pcie-root-port'>"
        f"<model name='pcie-root-port'/><target chassis='{i}' port='{hex(15 + i)}'/>"
        f"<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='{hex(i - 1)}'/>"
        "</controller>"
        for i in range(1, n + 1)
    )


WEB_Q35 = WEB.replace("PORTS", root_ports(5))  # 4 devices on ports 1-4, port 5 spare
SPARES = WEB.replace("PORTS", root_ports(7))  # two more spares (virt-install): kept
PC = (
    WEB_Q35.replace("pc-q35-7.2", "pc-i440fx-7.2")
    .replace("model='qemu-xhci'", "model='piix3-uhci'")
    .replace("type='sata'", "type='ide'")
)
NOT_QEMU = WEB_Q35.replace("type='qemu'", "type='test'", 1)
SPICE = WEB_Q35.replace("type='vnc' port='-1' autoport='yes'", "type='spice' autoport='yes'")
CUSTOM = (
    WEB_Q35.replace("fallback='forbid'>qemu64", "fallback='allow'>Skylake-Client")
    .replace(
        "<clock offset='utc'/>", "<clock offset='utc'><timer name='hpet' present='no'/></clock>"
    )
    .replace("196608", "262144")
    .replace(
        "<model type='cirrus' vram='16384' heads='1' primary='yes'/>",
        "<model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>",
    )
)
ODD = (
    WEB_Q35.replace("<input type='mouse' bus='ps2'/>", "<input type='mouse' bus='ps2'/>"
                    "<input type='tablet' bus='usb'/>")
    .replace("port='-1' autoport='yes'", "port='5901' autoport='no'")
    .replace("address='127.0.0.1'/>", "address='::1'/>")
    .replace("<target type='isa-serial' port='0'>", "<target type='pci-serial' port='0'>")
    .replace("<memballoon model='virtio'>", "<memballoon model='virtio'><stats period='10'/>")
    .replace("bus='virtio'/>", "bus='virtio'/><boot order='1'/>")
    .replace("vram='16384'", "vram='32768'")
)  # fmt: skip
KVM_CUSTOM = CUSTOM.replace("type='qemu'", "type='kvm'", 1)
PASSTHROUGH = re.sub(
    r"<cpu .*?</cpu>",
    "<cpu mode='host-passthrough' check='none' migratable='on'/>",
    WEB_Q35,
    flags=re.S,
)
NO_GRAPHICS = re.sub(r"<graphics.*?</graphics>", "", WEB_Q35, flags=re.S)

FILLED_EXAMPLES += [
    (Kind.DOMAIN, WEB_Q35, "devices/controller[type=sata,index=0]", True),
    (Kind.DOMAIN, PC, "devices/controller[type=ide,index=0]", True),
    (Kind.DOMAIN, WEB_Q35, "devices/controller[type=usb,index=0]", True),
    (Kind.DOMAIN, PC, "devices/controller[type=usb,index=0]", True),
    (
        Kind.DOMAIN,
        PC.replace("piix3-uhci", "qemu-xhci"),
        "devices/controller[type=usb,index=0]",
        False,
    ),
    (Kind.DOMAIN, WEB_Q35, "devices/controller[type=pci,index=1]", True),
    (Kind.DOMAIN, WEB_Q35, "devices/controller[type=pci,index=5]", True),
    (Kind.DOMAIN, SPARES, "devices/controller[type=pci,index=5]", False),
    (Kind.DOMAIN, SPARES, "devices/controller[type=pci,index=1]/model", True),
    (Kind.DOMAIN, SPARES, "devices/controller[type=pci,index=6]/target/@chassis", True),
    (Kind.DOMAIN, SPARES, "devices/controller[type=pci,index=6]/target/@port", True),
    (Kind.DOMAIN, WEB_Q35, "devices/input[#0]", True),
    (Kind.DOMAIN, WEB_Q35, "devices/input[#1]", True),
    (Kind.DOMAIN, ODD, "devices/input[#0]", False),  # a tablet after it: positions would move
    (Kind.DOMAIN, ODD, "devices/input[#2]", True),
    (Kind.DOMAIN, WEB_Q35, "devices/serial[#0]", True),
    (Kind.DOMAIN, ODD, "devices/serial[#0]", False),
    (Kind.DOMAIN, WEB_Q35, "devices/console[#0]/target/@type", True),
    (Kind.DOMAIN, WEB_Q35, "devices/graphics[#0]/@port", True),
    (Kind.DOMAIN, WEB_Q35, "devices/graphics[#0]/@autoport", True),
    (Kind.DOMAIN, ODD, "devices/graphics[#0]/@port", False),
    (Kind.DOMAIN, WEB_Q35, "devices/graphics[#0]/listen", True),
    (Kind.DOMAIN, ODD, "devices/graphics[#0]/listen", False),
    (Kind.DOMAIN, WEB_Q35, "devices/audio[#0]", True),
    (Kind.DOMAIN, SPICE, "devices/audio[#0]", False),  # SPICE gets type='spice'
    (Kind.DOMAIN, SPICE.replace("type='none'", "type='spice'"), "devices/audio[#0]", True),
    (Kind.DOMAIN, WEB_Q35, "devices/video[#0]", True),
    (Kind.DOMAIN, NO_GRAPHICS, "devices/video[#0]", False),
    (Kind.DOMAIN, CUSTOM, "devices/video[#0]/model/@heads", True),
    (Kind.DOMAIN, CUSTOM, "devices/video[#0]/model/@primary", True),
    (Kind.DOMAIN, CUSTOM, "devices/video[#0]/model/@ram", True),
    (Kind.DOMAIN, CUSTOM, "devices/video[#0]/model/@vram", True),
    (Kind.DOMAIN, CUSTOM, "devices/video[#0]/model/@vgamem", True),
    (Kind.DOMAIN, ODD, "devices/video[#0]/model/@vram", False),
    (Kind.DOMAIN, WEB_Q35, "devices/memballoon[#0]", True),
    (Kind.DOMAIN, ODD, "devices/memballoon[#0]", False),
    (Kind.DOMAIN, NOT_QEMU, "devices/memballoon[#0]", False),  # another driver: its defaults
    (Kind.DOMAIN, WEB_Q35, "cpu", True),
    (Kind.DOMAIN, CUSTOM, "cpu", False),
    (Kind.DOMAIN, CUSTOM, "cpu/@match", True),
    (Kind.DOMAIN, CUSTOM, "cpu/model/@fallback", True),
    (Kind.DOMAIN, CUSTOM, "cpu/@check", True),
    (Kind.DOMAIN, KVM_CUSTOM, "cpu/@check", False),  # KVM checks a custom model: partial
    (Kind.DOMAIN, KVM_CUSTOM.replace("check='none'", "check='partial'"), "cpu/@check", True),
    (Kind.DOMAIN, PASSTHROUGH, "cpu/@check", True),
    (Kind.DOMAIN, PASSTHROUGH, "cpu/@migratable", True),
    (Kind.DOMAIN, PASSTHROUGH.replace("'on'", "'off'"), "cpu/@migratable", False),
    (Kind.DOMAIN, WEB_Q35, "clock", True),
    (Kind.DOMAIN, CUSTOM, "clock", False),  # with timers the schema wants the offset
    (Kind.DOMAIN, CUSTOM, "currentMemory", True),
    (Kind.DOMAIN, WEB_Q35, "currentMemory", False),
    (Kind.DOMAIN, WEB_Q35, "os/boot", True),
    (Kind.DOMAIN, ODD, "os/boot", False),
]


@pytest.mark.parametrize(("kind", "xml", "path", "filled"), FILLED_EXAMPLES)
def test_filled_rule(kind: Kind, xml: str, path: str, filled: bool) -> None:
    flat = canonical.flatten(etree.fromstring(xml), kind)
    assert path in flat.values
    value, element = flat.values[path], canonical.owner(flat, path)
    assert canonical.is_filled(kind, path, value, element) is filled


def test_every_filled_rule_has_an_example() -> None:
    used = set()
    for kind, xml, path, filled in FILLED_EXAMPLES:
        flat = canonical.flatten(etree.fromstring(xml), kind)
        for i, rule in enumerate(canonical.FILLED):
            if filled and rule.matches(kind, path, flat.values[path], canonical.owner(flat, path)):
                used.add(i)
    missing = [r.path.pattern for i, r in enumerate(canonical.FILLED) if i not in used]
    assert not missing


def test_default_values_only_when_default() -> None:
    flat = canonical.flatten(etree.fromstring(DOMAIN.replace("destroy", "preserve")), Kind.DOMAIN)
    assert not canonical.is_filled(Kind.DOMAIN, "on_crash", flat.values["on_crash"])


# --- exporting one object ------------------------------------------------------


def _export(kind: Kind, xml: str, **kw: object) -> dict[str, object]:
    obs = Observed(kind=kind, name=etree.fromstring(xml).findtext("name") or "", xml=xml, **kw)  # type: ignore[arg-type]
    spec, form = export.export_object(obs)
    assert form == "overlay"
    return spec


def test_domain_friendly_fields_and_overlay_for_the_rest() -> None:
    spec = _export(Kind.DOMAIN, DOMAIN, state="running", autostart=True)
    assert spec["memory"] == "1GiB"
    assert spec["vcpus"] == 2 and spec["machine"] == "pc-q35-7.2" and spec["type"] == "kvm"
    assert spec["disks"] == [
        {"target": "vda", "bus": "virtio", "source": {"file": "/srv/a.qcow2"}, "format": "qcow2"}
    ]
    assert spec["consoles"] == [{"type": "pty"}]
    assert spec["state"] == "running" and spec["autostart"] is True
    overlay = etree.fromstring(str(spec["xml"]))
    # Only what the friendly fields do not say; nothing libvirt filled in.
    assert overlay.find("name") is None and overlay.find("uuid") is None
    assert overlay.find("memory") is None
    # The disk stays only for what the friendly fields cannot say, found by its target.
    disk = overlay.find("devices/disk")
    assert disk is not None and [(c.tag, dict(c.attrib)) for c in disk] == [
        ("driver", {"detect_zeroes": "unmap"}),
        ("target", {"dev": "vda"}),
    ]
    assert overlay.find("devices/emulator") is None and overlay.find("seclabel") is None
    assert overlay.find("devices/controller").get("model") == "pcie-root-port"  # type: ignore[union-attr]
    assert overlay.find("devices/panic/address").get("iobase") == "0x505"  # type: ignore[union-attr]
    # The console's target (type='serial', port 0) is libvirt's: nothing left to say.
    assert overlay.find("devices/console") is None


def test_crashed_is_shutoff_and_pmsuspended_is_not_managed() -> None:
    assert _export(Kind.DOMAIN, DOMAIN, state="crashed")["state"] == "shutoff"
    assert "state" not in _export(Kind.DOMAIN, DOMAIN, state="pmsuspended")


def test_odd_disk_goes_to_the_overlay_after_the_friendly_ones() -> None:
    xml = DOMAIN.replace(
        "<controller type='pci' index='0'",
        "<disk type='network' device='disk'><source protocol='nbd' name='x'>"
        "<host name='h'/></source><target dev='vdb' bus='virtio'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>"
        "<controller type='pci' index='0'",
    )
    spec = _export(Kind.DOMAIN, xml)
    assert [d["target"] for d in spec["disks"]] == ["vda"]  # type: ignore[index]
    overlay = etree.fromstring(str(spec["xml"]))
    targets = [t.get("dev") for t in overlay.iterfind("devices/disk/target")]
    assert targets == ["vda", "vdb", "sda"]  # vda: its driver's detect_zeroes only


def test_network_friendly_fields() -> None:
    xml = """<network connections='1'><name>lab</name><uuid>u</uuid>
      <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
      <bridge name='virbr9' stp='on' delay='0'/><mac address='52:54:00:aa:bb:cc'/>
      <ip address='10.9.0.1' prefix='24'><dhcp><range start='10.9.0.10' end='10.9.0.20'/>
      <host mac='52:54:00:00:00:01' name='web' ip='10.9.0.11'/></dhcp></ip></network>"""
    spec = _export(Kind.NETWORK, xml, state="active", autostart=False)
    assert spec["forward"] == "nat" and spec["bridge"] == "virbr9"
    assert spec["ip"] == {
        "address": "10.9.0.1",
        "prefix": 24,
        "dhcp": {
            "range": ["10.9.0.10", "10.9.0.20"],
            "hosts": [{"mac": "52:54:00:00:00:01", "name": "web", "ip": "10.9.0.11"}],
        },
    }
    overlay = etree.fromstring(str(spec["xml"]))
    assert overlay.find("forward/nat/port") is not None
    assert overlay.find("bridge").attrib == {"stp": "on", "delay": "0"}  # type: ignore[union-attr]
    assert overlay.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert overlay.get("connections") is None


def test_volume_and_pool() -> None:
    spec = _export(Kind.VOLUME, VOLUME, pool="p")
    assert spec == {
        "capacity": "1KiB",
        "format": "qcow2",
        "backingStore": {"path": "/p/base", "format": "raw"},
        "pool": "p",
    }
    assert _export(Kind.STORAGE_POOL, POOL, state="active") == {
        "type": "dir",
        "target": "/p",
        "state": "active",
        "autostart": False,
    }


def test_sizes_use_the_largest_exact_unit() -> None:
    assert units.format_size(2 << 30) == "2GiB"
    assert units.format_size(1536 << 20) == "1536MiB"
    assert units.format_size(1000) == "1000B"
    assert units.format_size(0) == "0B"


# --- the host: selection, transient, LUNs, shared MACs -------------------------

NIC = "<interface type='network'><mac address='{mac}'/><source network='default'/></interface>"


def _domain(name: str, mac: str, persistent: bool = True) -> Observed:
    xml = (
        f"<domain type='kvm'><name>{name}</name><memory>1024</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{NIC.format(mac=mac)}</devices></domain>"
    )
    return Observed(kind=Kind.DOMAIN, name=name, xml=xml, persistent=persistent)


def _state(*objects: Observed) -> HostState:
    return HostState(host=Host(name="kvm-a", uri="test:///x"), objects={o.key: o for o in objects})


def test_host_export_skips_transient_and_luns_and_keeps_shared_macs_in_the_overlay() -> None:
    lun_pool = Observed(
        kind=Kind.STORAGE_POOL, name="san", xml="<pool type='iscsi'><name>san</name></pool>"
    )
    lun = Observed(kind=Kind.VOLUME, name="unit:0:0:1", pool="san", xml=VOLUME)
    state = _state(
        _domain("a", "52:54:00:00:00:01"),
        _domain("b", "52:54:00:00:00:01"),
        _domain("c", "52:54:00:00:00:02"),
        _domain("t", "52:54:00:00:00:03", persistent=False),
        lun_pool,
        lun,
    )
    result = export.export_host(state, host_field="kvm-a")
    by_ref = {o.ref: o for o in result.objects}
    assert set(by_ref) == {"Domain/a", "Domain/b", "Domain/c", "StoragePool/san"}
    assert {s.ref for s in result.skipped} == {"Domain/t", "Volume/san/unit:0:0:1"}
    assert "interfaces" not in by_ref["Domain/a"].document["spec"]
    assert by_ref["Domain/c"].document["spec"]["interfaces"][0]["mac"] == "52:54:00:00:00:02"
    assert by_ref["Domain/c"].document["spec"]["host"] == "kvm-a"
    assert by_ref["Domain/c"].path == "kvm-a/domain/c.yaml"


def test_selection_by_kind_and_name_takes_the_pool_volumes_along() -> None:
    pool = Observed(kind=Kind.STORAGE_POOL, name="p", xml=POOL)
    vol = Observed(kind=Kind.VOLUME, name="v", pool="p", xml=VOLUME)
    state = _state(pool, vol, _domain("a", "52:54:00:00:00:01"))
    refs = {o.ref for o in export.export_host(state, kinds={Kind.STORAGE_POOL}).objects}
    assert refs == {"StoragePool/p", "Volume/p/v"}
    refs = {o.ref for o in export.export_host(state, names={"a"}).objects}
    assert refs == {"Domain/a"}


def test_file_names_are_safe_and_never_hidden() -> None:
    assert export.file_path("h", Kind.VOLUME, ".hidden", "p") == "h/volume/p/%2Ehidden.yaml"
    assert export.file_path("h", Kind.DOMAIN, "a b&c") == "h/domain/a%20b%26c.yaml"


# --- YAML -------------------------------------------------------------------------


def test_yaml_reloads_as_the_same_strings(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "virt-reconcile/v1",
        "kind": "Domain",
        "metadata": {"name": "0042"},
        "spec": {
            "memory": "1GiB",
            "interfaces": [{"network": "no", "mac": "52:54:00:12:34:56"}],
            "disks": [{"target": "vda", "serial": "on"}],
            "xml": "<domain>\n  <features><acpi/></features>\n</domain>\n",
        },
    }
    path = tmp_path / "d.yaml"
    path.write_text(export.to_yaml(doc))
    (loaded,) = manifests.load([str(path)]).objects
    assert loaded.name == "0042"
    assert loaded.spec["interfaces"][0] == {"network": "no", "mac": "52:54:00:12:34:56"}
    assert loaded.spec["disks"][0]["serial"] == "on"
    assert loaded.spec["xml"] == doc["spec"]["xml"]  # type: ignore[index]
    assert "xml: |" in path.read_text()


# --- canonical.EQUIVALENT rules the export round trips revealed ------------------


def test_running_domain_reports_checked_cpu_as_full() -> None:
    assert canonical.equivalent(Kind.DOMAIN, "cpu/@check", "none", "full")
    assert canonical.equivalent(Kind.DOMAIN, "cpu/@check", "partial", "full")
    # A real change of the definition is still one.
    assert not canonical.equivalent(Kind.DOMAIN, "cpu/@check", "full", "none")
    assert not canonical.equivalent(Kind.DOMAIN, "cpu/@check", "none", "partial")


def test_autoport_equals_the_port_a_running_domain_got() -> None:
    path = "devices/graphics[#0]/@port"
    assert canonical.equivalent(Kind.DOMAIN, path, "-1", "5901")
    assert not canonical.equivalent(Kind.DOMAIN, path, "5900", "5901")
    assert not canonical.equivalent(Kind.DOMAIN, "devices/serial[#0]/@port", "-1", "5901")


def test_a_pflash_loader_means_efi_firmware() -> None:
    running = (
        "<domain><os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/"
        "OVMF_CODE_4M.ms.fd</loader></os></domain>"
    )
    desired = "<domain><os firmware='efi'><type>hvm</type></os></domain>"
    live = canonical.flatten(etree.fromstring(running), Kind.DOMAIN).values
    assert (
        live["os/@firmware"]
        == canonical.flatten(etree.fromstring(desired), Kind.DOMAIN).values["os/@firmware"]
    )
    rom = running.replace("pflash", "rom")
    assert "os/@firmware" not in canonical.flatten(etree.fromstring(rom), Kind.DOMAIN).values


def test_an_empty_drive_has_no_format() -> None:
    xml = (
        "<domain><devices><disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
        "<target dev='sda' bus='sata'/></disk><disk type='file' device='cdrom'>"
        "<driver name='qemu' type='raw'/><source file='/x.iso'/><target dev='sdb' bus='sata'/>"
        "</disk></devices></domain>"
    )
    values = canonical.flatten(etree.fromstring(xml), Kind.DOMAIN).values
    assert "devices/disk[target=sda]/driver/@type" not in values
    assert values["devices/disk[target=sda]/driver/@name"] == "qemu"
    assert values["devices/disk[target=sdb]/driver/@type"] == "raw"


# --- exports of QEMU domains say what the user chose --------------------------------


def test_examples_style_q35_domain_has_no_overlay() -> None:
    spec = _export(Kind.DOMAIN, WEB_Q35, state="running")  # asserts the readable form
    assert "xml" not in spec and "cpu" not in spec and "boot" not in spec
    assert spec["consoles"] == [{"type": "pty"}]
    assert spec["graphics"] == [{"type": "vnc", "listen": "127.0.0.1"}]
    assert spec["currentMemory"] == "192MiB" and spec["maxVcpus"] == 2


def test_spare_root_ports_stay_without_what_libvirt_numbers() -> None:
    overlay = etree.fromstring(str(_export(Kind.DOMAIN, SPARES)["xml"]))
    ports = overlay.findall("devices/controller[@type='pci']")
    assert [dict(p.attrib) for p in ports] == [
        {"type": "pci", "index": str(i), "model": "pcie-root-port"} for i in range(1, 8)
    ]
    assert not [c for p in ports for c in p]  # model name, chassis and port: libvirt's


def test_non_default_parts_of_an_element_stay() -> None:
    overlay = etree.fromstring(str(_export(Kind.DOMAIN, CUSTOM)["xml"]))
    assert overlay.find("cpu") is None  # mode and model are friendly fields
    assert overlay.find("clock").attrib == {"offset": "utc"}  # type: ignore[union-attr]
    assert overlay.find("clock/timer") is not None
    # The video model is a friendly field; what libvirt filled in (heads, vram) is gone.
    assert _export(Kind.DOMAIN, CUSTOM)["video"] == {"model": "qxl"}
    assert overlay.find("devices/video") is None
    odd = etree.fromstring(str(_export(Kind.DOMAIN, ODD)["xml"]))
    assert [i.get("type") for i in odd.iterfind("devices/input")] == ["mouse", "tablet"]
    assert odd.find("devices/graphics").attrib == {"port": "5901", "autoport": "no"}  # type: ignore[union-attr]
    assert odd.find("devices/memballoon/stats") is not None
    assert odd.find("devices/serial/target").get("type") == "pci-serial"  # type: ignore[union-attr]


def test_another_driver_keeps_everything() -> None:
    overlay = etree.fromstring(str(_export(Kind.DOMAIN, NOT_QEMU)["xml"]))
    assert overlay.find("devices/memballoon") is not None
    assert overlay.find("devices/controller[@type='sata']") is not None


@pytest.mark.parametrize(("autoport", "friendly"), [("yes", True), (None, False)])
def test_spice_display_is_friendly_only_with_autoport(autoport: str | None, friendly: bool) -> None:
    """A friendly SPICE display renders with autoport='yes'; one without it stays
    in the overlay, so the export still reads back exactly."""
    attrs = f" autoport='{autoport}'" if autoport else ""
    xml = (
        "<domain type='test'><name>s</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices><graphics type='spice'{attrs}/>"
        "</devices></domain>"
    )
    spec = _export(Kind.DOMAIN, xml)
    assert ("graphics" in spec) is friendly
    if not friendly:
        assert etree.fromstring(str(spec["xml"])).find("devices/graphics") is not None


def test_a_driver_without_qemu_name_keeps_its_format_in_the_overlay() -> None:
    """Render always writes ``<driver name='qemu'>`` (the table's fixed content):
    an overlay cannot remove an attribute, so such a driver's fields stay in it."""
    xml = DOMAIN.replace("<driver name='qemu' type='qcow2'", "<driver type='qcow2'")
    spec = _export(Kind.DOMAIN, xml)
    assert spec["disks"][0]["target"] == "vda" and "format" not in spec["disks"][0]  # type: ignore[index]
    overlay = etree.fromstring(str(spec["xml"]))
    assert overlay.find("devices/disk/driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_ipv6_is_friendly_only_with_the_ipv4_ip_or_alone() -> None:
    """The overlay matches <ip> elements by position: with an IPv4 <ip> the
    friendly fields cannot say (a netmask), the IPv6 one stays in the overlay too."""
    v6 = "<ip family='ipv6' address='fd00::1' prefix='64'/>"
    both = f"<network><name>d</name><ip address='10.0.0.1' netmask='255.0.0.0'/>{v6}</network>"
    spec = _export(Kind.NETWORK, both)
    assert "ip" not in spec and "ipv6" not in spec
    alone = _export(Kind.NETWORK, f"<network><name>d</name>{v6}</network>")
    assert alone["ipv6"] == {"address": "fd00::1", "prefix": 64} and "xml" not in alone
