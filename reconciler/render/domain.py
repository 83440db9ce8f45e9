"""Stage 3 of the pipeline (render): a Domain manifest -> ``<domain>`` XML.

``FIELDS`` declares every friendly Domain field once (``render.bind``): where it
lives in the XML, how it converts, how a running domain takes a change. Render
(here) and export (``kinds.domain``) both walk it. Element order is libvirt's
own (name, memory, currentMemory, vcpu, os, cpu, devices), devices in the order
disks, interfaces, consoles, graphics. Fields that are not libvirt XML (host,
placement, state, autostart, updateStrategy, ignoreDifferences) are not rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler import units
from reconciler.render import bind, domain_rules, identity
from reconciler.render.bind import (
    FLAG,
    INT,
    KIB,
    MAC,
    YES_NO,
    Context,
    Custom,
    Items,
    Live,
    Prop,
    Rule,
    Spec,
    Table,
    Unsayable,
)
from reconciler.render.secret import encryption
from reconciler.render.xmlutil import combine, require, sub

# With a complete document, these friendly elements replace the document's
# instead of merging into it: merging would keep attributes that contradict
# them (a stale vcpu/@current, a file= beside the new pool=/volume=).
_REPLACE_IN_DOCUMENT = (
    "domain/vcpu",
    "domain/devices/disk/source",
    "domain/devices/interface/source",
)


def render_domain(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The domain XML for ``spec`` (a validated Domain spec), including ``spec.xml``."""
    root = combine(
        name,
        spec.get("xml"),
        "domain",
        lambda defaults: bind.render(FIELDS, spec, Context(name=name, defaults=defaults)),
        replace=_REPLACE_IN_DOCUMENT,
    )
    require(
        root.find("memory") is not None,
        "spec.memory",
        "a domain needs memory",
        "<domain> (with <name> and <memory>)",
    )
    identity.assign_controller_indexes(root)
    identity.assign_macs(root, name)
    return root


# --- custom fields: vCPUs, direct kernel boot ---------------------------------------------


def _render_vcpus(root: etree._Element, spec: Mapping[str, Any], ctx: Context) -> None:
    vcpus = spec.get("vcpus", 1 if ctx.defaults else None)
    max_vcpus = spec.get("maxVcpus")
    if max_vcpus is not None:
        sub(root, "vcpu", max_vcpus, current=vcpus)
    elif vcpus is not None:
        sub(root, "vcpu", vcpus)


def _export_vcpus(root: etree._Element, _ctx: Context) -> Spec | None:
    vcpu = root.find("vcpu")
    if vcpu is None:
        return None
    maximum = _int(vcpu.text)
    current = _int(vcpu.get("current")) if vcpu.get("current") else maximum
    if not maximum or not current or current > maximum:
        return None
    if vcpu.get("current") is None:
        return {"vcpus": current}
    return {"vcpus": current, "maxVcpus": maximum}


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _render_kernel(root: etree._Element, kernel: Mapping[str, Any] | None, _ctx: Context) -> None:
    if kernel is None:
        return
    os_el = root.find("os")
    if os_el is None:
        os_el = sub(root, "os")
    sub(os_el, "kernel", kernel["path"])
    if "initrd" in kernel:
        sub(os_el, "initrd", kernel["initrd"])
    if kernel.get("cmdline"):  # libvirt drops an empty <cmdline/>
        sub(os_el, "cmdline", kernel["cmdline"])


def _export_kernel(root: etree._Element, _ctx: Context) -> Spec | None:
    kernel = root.findtext("os/kernel")
    if not kernel:
        return None
    out: Spec = {"path": kernel}
    initrd = root.findtext("os/initrd")
    if initrd:
        out["initrd"] = initrd
    cmdline = root.findtext("os/cmdline")
    if cmdline is not None:
        out["cmdline"] = cmdline
    return out


# --- custom fields of a disk: its source, a union of file/block/volume ---------------------


def _disk_type(disk: Mapping[str, Any]) -> str:
    source = disk.get("source") or {}
    return next((t for t in ("volume", "block") if t in source), "file")


def _render_disk(el: etree._Element, disk: Mapping[str, Any], _i: int, _ctx: Context) -> None:
    el.set("type", _disk_type(disk))


def _render_source(el: etree._Element, source: Mapping[str, Any] | None, _ctx: Context) -> None:
    if not source:  # an empty cdrom/floppy
        return
    if "volume" in source:
        sub(el, "source", pool=source["volume"]["pool"], volume=source["volume"]["name"])
    elif "block" in source:
        sub(el, "source", dev=source["block"])
    else:
        sub(el, "source", file=source["file"])


def _export_source(el: etree._Element, _ctx: Context) -> Spec | None:
    source = el.find("source")
    dtype = el.get("type")
    if source is None:
        if dtype != "file":
            raise Unsayable
        return None
    if dtype == "file" and source.get("file"):
        return {"file": source.get("file")}
    if dtype == "block" and source.get("dev"):
        return {"block": source.get("dev")}
    if dtype == "volume" and source.get("pool") and source.get("volume"):
        return {"volume": {"pool": source.get("pool"), "name": source.get("volume")}}
    raise Unsayable


def _render_encryption(el: etree._Element, spec: Mapping[str, Any] | None, _ctx: Context) -> None:
    source = el.find("source")
    if spec is not None and source is not None:
        encryption(source, spec)


def _export_encryption(_el: etree._Element, _ctx: Context) -> None:
    # The secret is named by a UUID derived from its name (not reversible): an
    # encrypted disk's <encryption> stays in the overlay.
    return None


# --- custom fields of an interface: its type (network or bridge) and MAC -------------------


def _render_nic(el: etree._Element, nic: Mapping[str, Any], position: int, ctx: Context) -> None:
    el.set("type", "bridge" if "bridge" in nic else "network")
    mac = nic.get("mac") or identity.derive_mac(ctx.name, nic.get("name", f"nic{position}"))
    sub(el, "mac", address=str(mac).lower())


def _export_nic(el: etree._Element, out: Spec, ctx: Context) -> bool:
    mac_el = el.find("mac")
    mac = (mac_el.get("address") or "") if mac_el is not None else ""
    if not bind.valid("Domain", "interfaces[].mac", mac):
        return False
    # A multicast MAC, or one several domains share, stays in the overlay (a
    # friendly mac must be unique across manifests).
    if int(mac[:2], 16) & 1 or mac.lower() in ctx.shared_macs:
        return False
    if el.get("type") not in ("network", "bridge"):
        return False
    source = el.find("source")
    if source is None or source.get(str(el.get("type"))) is None:
        return False
    out["mac"] = mac.lower()
    return True


# --- custom field of a display: SPICE needs autoport -------------------------------------


def _render_autoport(el: etree._Element, _value: None, _ctx: Context) -> None:
    # SPICE without a port or autoport has no listener at all: libvirt drops
    # ``listen`` (VNC picks a port by itself).
    if el.get("type") == "spice":
        el.set("autoport", "yes")


def _export_autoport(el: etree._Element, _ctx: Context) -> None:
    if el.get("type") == "spice" and el.get("autoport") != "yes":
        raise Unsayable


# --- custom parts of a virtiofs share, a qemu-ga channel, a PCI host device -----------------


def _render_fs(el: etree._Element, _fs: Mapping[str, Any], _i: int, _ctx: Context) -> None:
    el.set("type", "mount")
    el.set("accessmode", "passthrough")


def _export_fs(el: etree._Element, _out: Spec, _ctx: Context) -> bool:
    driver = el.find("driver")
    return (
        el.get("type", "mount") == "mount"
        and el.get("accessmode") == "passthrough"
        and driver is not None
        and driver.get("type") == "virtiofs"
    )


def _render_channel(el: etree._Element, _ch: Mapping[str, Any], _i: int, _ctx: Context) -> None:
    el.set("type", "unix")


def _export_channel(el: etree._Element, _out: Spec, _ctx: Context) -> bool:
    target = el.find("target")
    return el.get("type") == "unix" and target is not None and target.get("type") == "virtio"


def _render_hostdev(el: etree._Element, _dev: Mapping[str, Any], _i: int, _ctx: Context) -> None:
    for name, value in (("mode", "subsystem"), ("type", "pci"), ("managed", "yes")):
        el.set(name, value)


def _export_hostdev(el: etree._Element, _out: Spec, _ctx: Context) -> bool:
    # render writes managed='yes': one without it cannot be said (the overlay
    # cannot remove an attribute).
    return el.get("mode") == "subsystem" and el.get("type") == "pci" and "managed" in el.attrib


_PCI = ("domain", "bus", "slot", "function")
_PCI_WIDTH = {"domain": 4, "bus": 2, "slot": 2, "function": 1}


def _render_pci(el: etree._Element, address: str, _ctx: Context) -> None:
    """``0000:01:00.0`` -> ``<source><address domain='0x0000' bus='0x01' .../>``."""
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    values = dict(zip(_PCI, (domain, bus, slot, function), strict=True))
    attrs = {k: f"0x{int(values[k], 16):0{_PCI_WIDTH[k]}x}" for k in _PCI}
    sub(sub(el, "source"), "address", **attrs)


def _export_pci(el: etree._Element, _ctx: Context) -> str:
    address = el.find("source/address")
    if address is None or address.get("type", "pci") != "pci":
        raise Unsayable
    try:
        n = {k: int(address.get(k) or "", 16) for k in _PCI}
    except ValueError:
        raise Unsayable from None
    pci = f"{n['domain']:04x}:{n['bus']:02x}:{n['slot']:02x}.{n['function']:x}"
    if {k: f"0x{n[k]:0{_PCI_WIDTH[k]}x}" for k in _PCI} != {k: address.get(k) for k in _PCI}:
        raise Unsayable  # written another way than render writes it
    return pci


def _disk_name(_domain: str, spec: Mapping[str, Any], target: str) -> str | None:
    return target if any(d.get("target") == target for d in spec.get("disks", ())) else None


def _nic_name(domain: str, spec: Mapping[str, Any], mac: str) -> str | None:
    """The manifest's name of the NIC with this MAC (its ``name``, else ``nicN``)."""
    mac = mac.lower()
    for position, nic in enumerate(spec.get("interfaces", ())):
        name = str(nic.get("name", f"nic{position}"))
        if str(nic.get("mac", "")).lower() == mac or identity.derive_mac(domain, name) == mac:
            return name
    return None


def _position(key: str) -> bind.ItemName:
    def item(_name: str, spec: Mapping[str, Any], n: str) -> str | None:
        return n if int(n or 0) < len(spec.get(key, ())) else None

    return item


def _has_vcpus_only(spec: Mapping[str, Any]) -> bool:
    return "vcpus" in spec and "maxVcpus" not in spec


def _agree(spec: Spec, _root: etree._Element) -> None:
    """What export leaves out so that the exported fields stand together."""
    if "kernel" in spec:
        spec.pop("boot", None)
    if spec.get("firmware") != "efi":
        spec.pop("secureBoot", None)
    memory, current = spec.get("memory"), spec.get("currentMemory")
    if current is not None and (
        memory is None or units.parse_size(current) > units.parse_size(memory)
    ):
        del spec["currentMemory"]


FIELDS = Table(
    kind="Domain",
    root="domain",
    agree=_agree,
    made={
        "os/type": ("hvm", {}),
        "devices/disk/driver": (None, {"name": "qemu"}),
        "devices/filesystem/driver": (None, {"type": "virtiofs"}),
        "devices/channel/target": (None, {"type": "virtio"}),
        "devices/tpm/backend": (None, {"type": "emulator"}),
        "devices/rng/backend": (None, {"model": "random"}),
    },
    always={
        "devices/filesystem": ("driver",),
        "devices/tpm": ("backend",),
        "devices/rng": ("backend",),
    },
    fields=(
        Prop(key="type", at="@type", default="kvm"),
        Prop(key="title", at="title", live=Live.METADATA),
        Prop(key="description", at="description", live=Live.METADATA),
        Prop(key="memory", at="memory", conv=KIB),
        Prop(key="currentMemory", at="currentMemory", conv=KIB, live=Live.MEMORY),
        Prop(key="memoryBacking.hugepages", at="memoryBacking/hugepages", conv=FLAG),
        Prop(key="memoryBacking.source", at="memoryBacking/source/@type"),
        Prop(key="memoryBacking.access", at="memoryBacking/access/@mode"),
        Custom(
            key="vcpus",
            also=("maxVcpus",),
            render=_render_vcpus,
            export=_export_vcpus,
            whole=True,
            words=(
                # Only the current count moves on a running domain.
                ("vcpus", r"vcpu/@current", ("vcpus",), Live.VCPUS),
                ("maxVcpus", r"vcpu", ("maxVcpus",)),
                ("vcpus", r"vcpu", _has_vcpus_only),
            ),
        ),
        Prop(key="cputune.shares", at="cputune/shares", conv=INT),
        Prop(key="numatune.mode", at="numatune/memory/@mode"),
        Prop(key="numatune.nodeset", at="numatune/memory/@nodeset"),
        Prop(key="firmware", at="os/@firmware"),
        Prop(key="arch", at="os/type/@arch", default="x86_64"),
        Prop(key="machine", at="os/type/@machine"),
        Prop(
            key="secureBoot",
            at="os/firmware/feature[@name=secure-boot]/@enabled",
            conv=YES_NO,
            flat=r"os/firmware(/.*)?",
        ),
        Custom(
            key="kernel",
            render=_render_kernel,
            export=_export_kernel,
            words=(
                ("kernel.path", r"os/kernel", ("kernel",)),
                ("kernel.initrd", r"os/initrd", ("kernel", "initrd")),
                ("kernel.cmdline", r"os/cmdline", ("kernel", "cmdline")),
            ),
        ),
        Prop(key="boot", at="os/boot/@dev", repeated=True),
        Prop(key="cpu.mode", at="cpu/@mode"),
        Prop(key="cpu.model", at="cpu/model"),
        Prop(key="cpu.topology.sockets", at="cpu/topology/@sockets", conv=INT),
        Prop(key="cpu.topology.dies", at="cpu/topology/@dies", conv=INT),
        Prop(key="cpu.topology.cores", at="cpu/topology/@cores", conv=INT),
        Prop(key="cpu.topology.threads", at="cpu/topology/@threads", conv=INT),
        Items(
            key="disks",
            at="devices/disk",
            flat=r"devices/disk\[target=(?P<key>[^\]]+)\]",
            item_name=_disk_name,
            unique="target",
            live=Live.DEVICE,
            render_item=_render_disk,
            fields=(
                Prop(key="device", at="@device", default="disk", implied=True),
                Prop(key="format", at="driver/@type"),
                Prop(key="cache", at="driver/@cache"),
                Prop(key="io", at="driver/@io"),
                Prop(key="discard", at="driver/@discard"),
                Custom(
                    key="source",
                    render=_render_source,
                    export=_export_source,
                    # A cdrom's or floppy's medium changes live (kinds.domain).
                    live=Live.UPDATE,
                    words=(("source", r"(@type|source(?!/encryption)(/.*)?)", ()),),
                ),
                Custom(
                    key="encryption",
                    render=_render_encryption,
                    export=_export_encryption,
                    words=(("encryption", r"source/encryption(/.*)?", ()),),
                ),
                Prop(key="target", at="target/@dev"),
                Prop(key="bus", at="target/@bus"),
                Prop(key="bootOrder", at="boot/@order", conv=INT),
                Prop(key="readonly", at="readonly", conv=FLAG),
                Prop(key="shareable", at="shareable", conv=FLAG),
                Prop(key="serial", at="serial"),
            ),
        ),
        Items(
            key="filesystems",
            at="devices/filesystem",
            flat=r"devices/filesystem\[#(?P<key>\d+)\]",
            item_name=_position("filesystems"),
            whole=True,
            render_item=_render_fs,
            export_item=_export_fs,
            fields=(
                Prop(key="source", at="source/@dir"),
                Prop(key="target", at="target/@dir"),
            ),
        ),
        Items(
            key="interfaces",
            at="devices/interface",
            flat=r"devices/interface\[mac=(?P<key>[^\]]+)\]",
            item_name=_nic_name,
            live=Live.DEVICE,
            render_item=_render_nic,
            export_item=_export_nic,
            fields=(
                Prop(key="mac", at="mac/@address", conv=MAC, rendered=False),
                Prop(key="network", at="source/@network", live=Live.UPDATE),
                Prop(key="bridge", at="source/@bridge", live=Live.UPDATE),
                Prop(key="model", at="model/@type"),
                Prop(key="bootOrder", at="boot/@order", conv=INT),
                Prop(key="link", at="link/@state", live=Live.UPDATE),
            ),
        ),
        Items(
            key="consoles",
            at="devices/console",
            flat=r"devices/console\[#(?P<key>\d+)\]",
            item_name=_position("consoles"),
            rule=Rule.ALL,
            whole=True,
            fields=(Prop(key="type", at="@type"),),
        ),
        Items(
            key="channels",
            at="devices/channel",
            flat=r"devices/channel\[#(?P<key>\d+)\]",
            item_name=_position("channels"),
            whole=True,
            render_item=_render_channel,
            export_item=_export_channel,
            fields=(Prop(key="name", at="target/@name"),),
        ),
        Prop(key="tpm.model", at="devices/tpm/@model"),
        Prop(key="tpm.version", at="devices/tpm/backend/@version"),
        Items(
            key="graphics",
            at="devices/graphics",
            flat=r"devices/graphics\[#(?P<key>\d+)\]",
            item_name=_position("graphics"),
            rule=Rule.ALL,
            whole=True,
            fields=(
                Prop(key="type", at="@type"),
                Custom(key=None, render=_render_autoport, export=_export_autoport),
                Prop(key="listen", at="@listen"),
            ),
        ),
        Prop(key="sound.model", at="devices/sound/@model"),
        Prop(key="video.model", at="devices/video/model/@type"),
        Items(
            key="hostdevs",
            at="devices/hostdev",
            flat=r"devices/hostdev\[#(?P<key>\d+)\]",
            item_name=_position("hostdevs"),
            whole=True,
            render_item=_render_hostdev,
            export_item=_export_hostdev,
            fields=(
                Custom(
                    key="pci",
                    render=_render_pci,
                    export=_export_pci,
                    words=(("pci", r"source(/.*)?", ()),),
                ),
            ),
        ),
        Prop(key="watchdog.model", at="devices/watchdog/@model"),
        Prop(key="watchdog.action", at="devices/watchdog/@action"),
        Prop(key="rng.model", at="devices/rng/@model"),
        Prop(key="rng.source", at="devices/rng/backend"),
    ),
)  # fmt: skip

# The comparison rules (``canonical``): long enough for a module of their own.
COMPARE = domain_rules.COMPARE
