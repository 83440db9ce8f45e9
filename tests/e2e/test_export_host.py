"""export on a real libvirtd: virt-install-style domains, networks, a pool: no false diffs.

A private libvirtd (an isolated host, so adopting "everything" touches nothing
else on the machine) gets a dozen domains written the way virt-install writes
them (q35, UEFI and Secure Boot, SATA cdrom, many pcie-root-ports, USB, qemu-ga
and spice channels, TPM, VNC/SPICE, sound, rng, watchdog, serial/console,
video), two of them running the tiny test guest. Then: export -> plan shows
only ``adopt``; ``export --adopt`` -> ``plan --detailed-exitcode`` is 0; one
edited field -> exactly that change. On the system daemon, ``vrt-*`` objects
plus whatever exists export and plan the same way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml
from lxml import etree

from reconciler import canonical, export, manifests, render
from reconciler.model import Kind
from tests.e2e.test_reconcile import CMDLINE, vr
from tests.testbed.daemon import IsolatedHost
from tests.testbed.guest import Guest, make_scratch_dir


def networks(subnet: int) -> tuple[str, str]:
    """A NAT network with DHCP and DNS hosts, and an isolated one, on 10.213.SUBNET(+1)."""
    net = f"""<network><name>vrt-exp-net</name><forward mode='nat'/>
  <bridge name='vrtexp{subnet}' stp='on' delay='0'/><domain name='vrt.lab'/>
  <dns><host ip='10.213.{subnet}.11'><hostname>web</hostname></host></dns>
  <ip address='10.213.{subnet}.1' prefix='24'><dhcp>
  <range start='10.213.{subnet}.100' end='10.213.{subnet}.200'/>
  <host mac='52:54:00:77:00:11' name='web' ip='10.213.{subnet}.11'/></dhcp></ip></network>"""
    isolated = f"""<network><name>vrt-exp-iso</name><bridge name='vrtexp{subnet + 1}'/>
  <ip address='10.213.{subnet + 1}.1' netmask='255.255.255.0'/></network>"""
    return net, isolated


def ports(n: int) -> str:
    """``n`` pcie-root-ports, as virt-install adds them for hot-plug."""
    root = "<controller type='pci' index='0' model='pcie-root'/>"
    return root + "".join("<controller type='pci' model='pcie-root-port'/>" for _ in range(n))


PORTS = ports(14)
GUEST_AGENT = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
CHANNELS = (
    GUEST_AGENT
    + "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
)
SPICE = (
    "<graphics type='spice' autoport='yes'><listen type='address'/>"
    "<image compression='off'/></graphics>"
    "<video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>"
    "</video><redirdev bus='usb' type='spicevmc'/><redirdev bus='usb' type='spicevmc'/>"
)
VNC = (
    "<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='s3cret'>"
    "<listen type='address' address='127.0.0.1'/></graphics>"
    "<video><model type='virtio' heads='1' primary='yes'/></video>"
)
COMMON = (
    "<controller type='usb' model='qemu-xhci' ports='15'/>"
    "<serial type='pty'><target type='isa-serial' port='0'><model name='isa-serial'/></target>"
    "</serial><console type='pty'><target type='serial' port='0'/></console>"
    "<input type='tablet' bus='usb'/><memballoon model='virtio'/>"
    "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
)


def _disk(pool: Path, name: str, fmt: str = "qcow2", dev: str = "vda") -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}' discard='unmap'/>"
        f"<source file='{pool / name}'/><target dev='{dev}' bus='virtio'/></disk>"
    )


CDROM = (
    "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
    "<target dev='sda' bus='sata'/><readonly/></disk>"
)


def _nic(network: str = "vrt-exp-net", model: str = "virtio", extra: str = "") -> str:
    return (
        f"<interface type='network'><source network='{network}'/><model type='{model}'/>"
        f"{extra}</interface>"
    )


def _domain(
    name: str,
    devices: str,
    *,
    machine: str = "q35",
    os_attrs: str = "",
    os_extra: str = "",
    features: str = "<acpi/><apic/>",
    vcpu: str = "<vcpu placement='static'>2</vcpu>",
    memory: int = 262144,
    extra: str = "",
) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
    <libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo></metadata>
  <memory unit='KiB'>{memory}</memory><currentMemory unit='KiB'>{memory}</currentMemory>
  {vcpu}
  <os{os_attrs}><type arch='x86_64' machine='{machine}'>hvm</type>{os_extra}</os>
  <features>{features}</features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/></clock>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>
  {extra}
  <devices>{devices}</devices>
</domain>"""


def virt_install_domains(pool: Path, guest: Guest, log_dir: Path) -> dict[str, str]:
    """A dozen domains as virt-install writes them (name -> XML)."""
    kernel = (
        f"<kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>"
        f"<cmdline>{CMDLINE}</cmdline>"
    )

    def serial_log(name: str) -> str:
        return f"<serial type='file'><source path='{log_dir / name}.log'/></serial>"

    return {
        "vrt-vi-q35-uefi": _domain(
            "vrt-vi-q35-uefi",
            _disk(pool, "vrt-a.qcow2")
            + CDROM
            + PORTS
            + COMMON
            + _nic()
            + CHANNELS
            + SPICE
            + "<sound model='ich9'/><watchdog model='i6300esb' action='reset'/>"
            + "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>",
            os_attrs=" firmware='efi'",
            os_extra="<boot dev='hd'/>",
        ),
        "vrt-vi-secboot": _domain(
            "vrt-vi-secboot",
            CDROM + PORTS + COMMON + _nic() + VNC,
            os_attrs=" firmware='efi'",
            os_extra="<firmware><feature enabled='yes' name='secure-boot'/>"
            "<feature enabled='yes' name='enrolled-keys'/></firmware><boot dev='cdrom'/>",
            features="<acpi/><apic/><smm state='on'/>",
        ),
        "vrt-vi-bios": _domain(
            "vrt-vi-bios",
            _disk(pool, "vrt-b.raw", "raw")
            + CDROM
            + PORTS
            + COMMON
            + _nic()
            + GUEST_AGENT
            + VNC
            + "<sound model='ich9'/>",
            os_extra="<boot dev='cdrom'/><boot dev='hd'/><bootmenu enable='yes'/>",
        ),
        "vrt-vi-pc": _domain(
            "vrt-vi-pc",
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            "<target dev='hdc' bus='ide'/><readonly/></disk>"
            + COMMON
            + _nic(model="e1000")
            + VNC
            + "<sound model='ac97'/>",
            machine="pc",
        ),
        "vrt-vi-volume": _domain(
            "vrt-vi-volume",
            "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source pool='vrt-exp-pool' volume='vrt-c.qcow2'/><target dev='vda' bus='virtio'/>"
            "<serial>vrt-serial-1</serial></disk>"
            + ports(4)
            + COMMON
            + _nic(extra="<link state='down'/>"),
        ),
        "vrt-vi-multinic": _domain(
            "vrt-vi-multinic",
            PORTS
            + COMMON
            + _nic()
            + _nic("vrt-exp-iso", "e1000e")
            + "<interface type='user'><model type='virtio'/></interface>",
        ),
        "vrt-vi-bridge": _domain(
            "vrt-vi-bridge",
            PORTS
            + COMMON
            + "<interface type='bridge'><source bridge='vrtbr-none'/><model type='virtio'/>"
            "</interface>",
        ),
        "vrt-vi-scsi": _domain(
            "vrt-vi-scsi",
            "<controller type='scsi' model='virtio-scsi'/>"
            + _disk(pool, "vrt-a.qcow2", dev="vdb")
            + "<disk type='block' device='lun'><driver name='qemu' type='raw'/>"
            "<source dev='/dev/null'/><target dev='sdb' bus='scsi'/></disk>" + PORTS + COMMON,
        ),
        "vrt-vi-maxvcpus": _domain(
            "vrt-vi-maxvcpus",
            PORTS + COMMON + _nic(),
            vcpu="<vcpu placement='static' current='1'>4</vcpu>",
            extra="",
        ),
        "vrt-vi-hyperv": _domain(
            "vrt-vi-hyperv",
            PORTS + COMMON + _nic(model="e1000e") + VNC + "<sound model='ich9'/>",
            features="<acpi/><apic/><hyperv mode='custom'><relaxed state='on'/>"
            "<vapic state='on'/><spinlocks state='on' retries='8191'/></hyperv>",
        ),
        "vrt-vi-running": _domain(
            "vrt-vi-running",
            ports(2) + serial_log("vrt-vi-running") + _nic() + "<memballoon model='virtio'/>",
            os_extra=kernel,
            memory=163840,
            vcpu="<vcpu placement='static' current='1'>2</vcpu>",
        ),
        "vrt-vi-paused": _domain(
            "vrt-vi-paused",
            serial_log("vrt-vi-paused") + "<memballoon model='virtio'/>",
            os_extra=kernel,
            memory=131072,
            vcpu="<vcpu>1</vcpu>",
        ),
    }


RUNNING = ("vrt-vi-running", "vrt-vi-q35-uefi", "vrt-vi-secboot", "vrt-vi-pc", "vrt-vi-hyperv")


def _volumes(pool: libvirt.virStoragePool, target: Path) -> None:
    for name, fmt, size, backing in (
        ("vrt-a.qcow2", "qcow2", 1 << 30, ""),
        ("vrt-b.raw", "raw", 64 << 20, ""),
        (
            "vrt-c.qcow2",
            "qcow2",
            1 << 30,
            f"<backingStore><path>{target / 'vrt-a.qcow2'}</path>"
            "<format type='qcow2'/></backingStore>",
        ),
    ):
        pool.createXML(
            f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='{fmt}'/></target>{backing}</volume>",
            0,
        )


def populate(
    uri: str, guest: Guest, scratch: Path, *, subnet: int, domains: Collection[str] | None = None
) -> None:
    """Define the networks, the pool with volumes and the domains on a host."""
    nat, isolated = networks(subnet)
    conn = libvirt.open(uri)
    try:
        net = conn.networkDefineXML(nat)
        net.create()
        net.setAutostart(1)
        conn.networkDefineXML(isolated)
        target = scratch / "pool"
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>vrt-exp-pool</name><target><path>{target}</path></target>"
            "</pool>",
            0,
        )
        pool.build(0)
        pool.create(0)
        pool.setAutostart(1)
        _volumes(pool, target)
        for name, xml in virt_install_domains(target, guest, scratch).items():
            if domains is not None and name not in domains:
                continue
            dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            if name in RUNNING:
                # The firmware-only ones sit in OVMF/SeaBIOS: enough for libvirt
                # to fill in what it fills in at start (ports, paths, checks).
                dom.create()
            elif name == "vrt-vi-paused":
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            if name == "vrt-vi-hyperv":
                dom.setAutostart(1)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def adoptable(
    isolated_hosts: Callable[..., list[IsolatedHost]], guest: Guest
) -> Iterator[IsolatedHost]:
    (host,) = isolated_hosts(1, prefix="vrexport")
    scratch = make_scratch_dir("vrt-export-")
    populate(host.uri, guest, scratch, subnet=77)
    yield host
    host.stop()
    shutil.rmtree(scratch, ignore_errors=True)


def _plan(folder: Path, uri: str, *extra: str) -> dict[str, dict[str, Any]]:
    result = vr("plan", folder, "-c", uri, "-o", "json", *extra)
    assert result.returncode in (0, 2), result.stdout + result.stderr
    doc = json.loads(result.stdout)
    return {
        f"{a['kind']}/{a['pool'] + '/' if a.get('pool') else ''}{a['name']}": a
        for h in doc["hosts"]
        for a in h["actions"]
    }


def _not_adopt(actions: dict[str, dict[str, Any]], allowed: set[str]) -> dict[str, Any]:
    return {
        ref: [(c["path"], c["old"], c["new"]) for c in a["changes"]] or a.get("error")
        for ref, a in actions.items()
        if a["action"] not in allowed or a.get("error")
    }


def readable(path: Path) -> dict[str, Any]:
    """The spec of an exported manifest, asserting the readable form: friendly
    fields and an overlay, never the fallback to a complete document (which
    carries the object's name and memory again)."""
    spec: dict[str, Any] = yaml.safe_load(path.read_text())["spec"]
    if "xml" in spec:
        overlay = etree.fromstring(spec["xml"].encode())
        assert overlay.find("name") is None and overlay.find("memory") is None, path
    return spec


def test_export_then_plan_is_only_adopt(adoptable: IsolatedHost, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = vr("export", "-c", adoptable.uri, "-d", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vr("validate", out).returncode == 0
    for path in out.rglob("*.yaml"):
        readable(path)
    actions = _plan(out, adoptable.uri)
    domains = [ref for ref in actions if ref.startswith("Domain/")]
    assert len(domains) == 12 and len(actions) == 12 + 2 + 1 + 3
    wrong = _not_adopt(actions, {"adopt"})
    assert not wrong, f"{len(wrong)} of {len(actions)} objects do not round-trip: {wrong}"
    running = yaml.safe_load((out / "default/domain/vrt-vi-running.yaml").read_text())["spec"]
    assert running["state"] == "running" and running["vcpus"] == 1 and running["maxVcpus"] == 2
    paused = yaml.safe_load((out / "default/domain/vrt-vi-paused.yaml").read_text())["spec"]
    assert paused["state"] == "paused"
    uefi = yaml.safe_load((out / "default/domain/vrt-vi-q35-uefi.yaml").read_text())["spec"]
    assert uefi["firmware"] == "efi" and uefi["disks"][1]["device"] == "cdrom"
    assert uefi["interfaces"][0]["mac"].startswith("52:54:00:")


def test_export_adopt_then_plan_has_no_changes(adoptable: IsolatedHost, tmp_path: Path) -> None:
    out = tmp_path / "adopted"
    result = vr("export", "-c", adoptable.uri, "-d", out, "--adopt")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = vr("plan", out, "-c", adoptable.uri, "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    wrong = _not_adopt(_plan(out, adoptable.uri), {"unchanged"})
    assert not wrong, json.dumps(wrong, indent=1)


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc["spec"])
    path.write_text(export.to_yaml(doc))


def test_one_edited_field_is_exactly_that_change(adoptable: IsolatedHost, tmp_path: Path) -> None:
    out = tmp_path / "edited"
    assert vr("export", "-c", adoptable.uri, "-d", out).returncode == 0
    folder = out / "default"

    def memory(spec: dict[str, Any]) -> None:
        spec["memory"] = "2GiB"

    def nic_network(spec: dict[str, Any]) -> None:
        spec["interfaces"][0]["network"] = "vrt-exp-iso"

    def dhcp_range(spec: dict[str, Any]) -> None:
        spec["ip"]["dhcp"]["range"] = ["10.213.77.100", "10.213.77.150"]

    def pool_target(spec: dict[str, Any]) -> None:
        spec["target"] = spec["target"] + "-moved"

    _edit(folder / "domain/vrt-vi-bios.yaml", memory)
    _edit(folder / "domain/vrt-vi-running.yaml", nic_network)
    _edit(folder / "network/vrt-exp-net.yaml", dhcp_range)
    _edit(folder / "storagepool/vrt-exp-pool.yaml", pool_target)
    actions = _plan(out, adoptable.uri)
    changed = {
        ref: [(c["path"], c["new"], c["disruption"]) for c in a["changes"]]
        for ref, a in actions.items()
        if a["action"] not in ("adopt", "unchanged")  # adopted by the test before, or not
    }
    mac = yaml.safe_load((folder / "domain/vrt-vi-running.yaml").read_text())["spec"]["interfaces"][
        0
    ]["mac"]
    assert changed.pop("Domain/vrt-vi-bios") == [("memory", "2097152", "next-start")]
    assert changed.pop("Domain/vrt-vi-running") == [
        (f"devices/interface[mac={mac}]/source/@network", "vrt-exp-iso", "live")
    ]
    ((path, new, disruption),) = changed.pop("Network/vrt-exp-net")
    assert path.endswith("/dhcp/range[start=10.213.77.100]/@end") and new == "10.213.77.150"
    assert disruption == "live"
    ((path, new, _),) = changed.pop("StoragePool/vrt-exp-pool")
    assert path == "target/path" and new.endswith("-moved")
    assert not changed


def test_system_daemon_vrt_objects_and_whatever_exists(
    system_uri: str, guest: Guest, scratch_dir: Path, tmp_path: Path
) -> None:
    populate(
        system_uri,
        guest,
        scratch_dir,
        subnet=87,
        domains=("vrt-vi-q35-uefi", "vrt-vi-bios", "vrt-vi-pc", "vrt-vi-paused"),
    )
    everything = tmp_path / "all"
    result = vr("export", "-c", system_uri, "-d", everything)
    assert result.returncode == 0, result.stdout + result.stderr
    actions = _plan(everything, system_uri)
    assert {"Domain/vrt-vi-bios", "Network/vrt-exp-net", "Volume/vrt-exp-pool/vrt-c.qcow2"} <= set(
        actions
    )
    # Objects other sessions manage are "unchanged", the rest "adopt".
    assert not _not_adopt(actions, {"adopt", "unchanged"})
    # Adopt only ours: the system daemon's other objects are not this test's to own.
    ours = tmp_path / "ours"
    names = [ref.rsplit("/", 1)[1] for ref in actions if ref.rsplit("/", 1)[1].startswith("vrt-")]
    args = [a for n in names for a in ("--name", n)]
    result = vr("export", "-c", system_uri, "-d", ours, "--adopt", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    for path in ours.rglob("*.yaml"):
        readable(path)
    plan = vr("plan", ours, "-c", system_uri, "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr


# --- what export leaves out, libvirt adds back -------------------------------------


def web_like() -> str:
    """examples/manifests/web.yaml's vr-web-1, rendered as apply defines it, on this test's
    pool and network."""
    (doc,) = [
        m
        for m in manifests.load(
            [str(Path(__file__).parents[2] / "examples/manifests/web.yaml")]
        ).objects
        if m.name == "vr-web-1"
    ]
    spec = {k: v for k, v in doc.spec.items() if k not in ("state", "updateStrategy")}
    volume = {"pool": "vrt-exp-pool", "name": "vrt-c.qcow2"}
    spec["disks"] = [{**spec["disks"][0], "source": {"volume": volume}}]
    spec["interfaces"] = [{**spec["interfaces"][0], "network": "vrt-exp-net"}]
    spec["interfaces"][0]["mac"] = "52:54:00:77:00:31"
    web = dataclasses.replace(doc, name="vrt-exp-web", spec=spec)
    return etree.tostring(render.render(web), encoding="unicode")


# CPUs without the check, match, fallback and migratable libvirt adds to each.
CPUS = (
    "<cpu mode='host-passthrough'/>",
    "<cpu mode='host-model'/>",
    "<cpu mode='maximum'/>",
    "<cpu mode='custom'><model>Skylake-Client</model></cpu>",
)


def _definition(dom: libvirt.virDomain) -> dict[str, str]:
    """Everything of an inactive definition but the UUID libvirt generates and the
    ownership record apply writes (flatten skips it; its <metadata> may be new)."""
    values = canonical.flatten(
        etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()), Kind.DOMAIN
    ).values
    values.pop("uuid")
    values.pop("metadata", None)  # present or not; what it holds is compared
    return values


@pytest.fixture(scope="module")
def defined_only(
    isolated_hosts: Callable[..., list[IsolatedHost]], guest: Guest
) -> Iterator[tuple[IsolatedHost, Path]]:
    """A host with the networks and pool, and every domain defined, none started."""
    (host,) = isolated_hosts(1, prefix="vrexpdef")
    scratch = make_scratch_dir("vrt-export-def-")
    populate(host.uri, guest, scratch, subnet=79, domains=())
    yield host, scratch
    host.stop()
    shutil.rmtree(scratch, ignore_errors=True)


def test_export_leaves_out_what_libvirt_adds_and_libvirt_adds_it_back(
    defined_only: tuple[IsolatedHost, Path], guest: Guest, tmp_path: Path
) -> None:
    host, scratch = defined_only
    domains = {
        **virt_install_domains(scratch / "pool", guest, scratch),
        "vrt-exp-web": web_like(),
        **{
            f"vrt-exp-cpu-{i}": _domain(f"vrt-exp-cpu-{i}", "<console type='pty'/>").replace(
                "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64"
                "</model></cpu>",
                cpu,
            )
            for i, cpu in enumerate(CPUS)
        },
    }
    conn = libvirt.open(host.uri)
    try:
        for xml in domains.values():
            conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        before = {name: _definition(conn.lookupByName(name)) for name in domains}
        web = conn.lookupByName("vrt-exp-web").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        out = tmp_path / "exported"
        result = vr("export", "-c", host.uri, "-d", out, "--kind", "Domain")
        assert result.returncode == 0, result.stdout + result.stderr
        files = {path.stem: path for path in out.rglob("*.yaml")}
        assert set(files) == set(domains)
        specs = {name: readable(path) for name, path in files.items()}

        # The examples' web server: libvirt 9.0 added all of these to its definition...
        for added in (
            "<controller type='sata' index='0'>",
            "<controller type='usb' index='0' model='qemu-xhci'>",
            "model='pcie-root-port'",
            "<serial type='pty'>",
            "<input type='mouse' bus='ps2'/>",
            "port='-1' autoport='yes'",
            "<listen type='address' address='127.0.0.1'/>",
            "<audio id='1' type='none'/>",
            "<model type='cirrus'",
            "<memballoon model='virtio'>",
            "<model fallback='forbid'>qemu64</model>",
            "<clock offset='utc'/>",
        ):
            assert added in web, added
        # ... and the export says only what the manifest said: no overlay at all.
        web_spec = specs["vrt-exp-web"]
        assert "xml" not in web_spec and "cpu" not in web_spec, web_spec
        assert web_spec["graphics"] == [{"type": "vnc", "listen": "127.0.0.1"}]
        assert web_spec["consoles"] == [{"type": "pty"}]
        # virt-install's spare root ports are the user's: kept, without libvirt's numbers.
        uefi = etree.fromstring(specs["vrt-vi-q35-uefi"]["xml"].encode())
        ports = uefi.findall("devices/controller[@model='pcie-root-port']")
        assert len(ports) >= 14 and all(not len(p) for p in ports)
        assert (
            uefi.find("devices/memballoon") is None
            and uefi.find("devices/input[@bus='ps2']") is None
        )

        # Applied to a host without them, the exports give back the same definitions,
        # every value libvirt filled in included (the UUID aside).
        for name in domains:
            conn.lookupByName(name).undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
            )
        result = vr("apply", out, "-c", host.uri)
        assert result.returncode == 0, result.stdout + result.stderr
        plan = vr("plan", out, "-c", host.uri, "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        after = {name: _definition(conn.lookupByName(name)) for name in domains}
    finally:
        conn.close()
    differences = {
        name: {
            path: (before[name].get(path), after[name].get(path))
            for path in before[name].keys() | after[name].keys()
            if before[name].get(path) != after[name].get(path)
        }
        for name in domains
    }
    assert not any(differences.values()), differences
