"""Stage 3 of the pipeline (render): a Domain manifest -> ``<domain>`` XML.

Field by field as documented in ``docs/manifests.md``; element order is
libvirt's own (name, memory, currentMemory, vcpu, os, cpu, devices), devices in
the order disks, interfaces, consoles, graphics. Fields that are not libvirt
XML (host, placement, state, autostart, updateStrategy, ignoreDifferences) are
not rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler import units
from reconciler.render import identity
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
        lambda defaults: _friendly(name, spec, defaults=defaults),
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


def _friendly(name: str, spec: Mapping[str, Any], *, defaults: bool) -> etree._Element:
    dtype = spec.get("type", "kvm" if defaults else None)
    root = etree.Element("domain")
    if dtype is not None:
        root.set("type", dtype)
    sub(root, "name", name)
    if "memory" in spec:
        sub(root, "memory", units.size_kib(spec["memory"]), unit="KiB")
    if "currentMemory" in spec:
        sub(root, "currentMemory", units.size_kib(spec["currentMemory"]), unit="KiB")
    _vcpu(root, spec, defaults=defaults)
    _os(root, spec, defaults=defaults)
    if "cpu" in spec:
        cpu = spec["cpu"]
        cpu_el = sub(root, "cpu", mode=cpu.get("mode"))
        if "model" in cpu:
            sub(cpu_el, "model", cpu["model"])
    _devices(root, name, spec)
    return root


def _vcpu(root: etree._Element, spec: Mapping[str, Any], *, defaults: bool) -> None:
    vcpus = spec.get("vcpus", 1 if defaults else None)
    max_vcpus = spec.get("maxVcpus")
    if max_vcpus is not None:
        sub(root, "vcpu", max_vcpus, current=vcpus)
    elif vcpus is not None:
        sub(root, "vcpu", vcpus)


def _os(root: etree._Element, spec: Mapping[str, Any], *, defaults: bool) -> None:
    arch = spec.get("arch", "x86_64" if defaults else None)
    machine = spec.get("machine")
    os_el = etree.Element("os")
    if "firmware" in spec:
        os_el.set("firmware", spec["firmware"])
    if defaults or arch is not None or machine is not None:
        sub(os_el, "type", "hvm", arch=arch, machine=machine)
    if "secureBoot" in spec:
        fw = sub(os_el, "firmware")
        sub(fw, "feature", enabled=bool(spec["secureBoot"]), name="secure-boot")
    kernel = spec.get("kernel")
    if kernel is not None:
        sub(os_el, "kernel", kernel["path"])
        if "initrd" in kernel:
            sub(os_el, "initrd", kernel["initrd"])
        if kernel.get("cmdline"):  # libvirt drops an empty <cmdline/>
            sub(os_el, "cmdline", kernel["cmdline"])
    for dev in spec.get("boot", ()):
        sub(os_el, "boot", dev=dev)
    if len(os_el) or os_el.attrib:
        root.append(os_el)


def _devices(root: etree._Element, name: str, spec: Mapping[str, Any]) -> None:
    devices = etree.Element("devices")
    for disk in spec.get("disks", ()):
        _disk(devices, disk)
    for position, nic in enumerate(spec.get("interfaces", ())):
        _interface(devices, name, nic, position)
    for console in spec.get("consoles", ()):
        sub(devices, "console", type=console["type"])
    for graphics in spec.get("graphics", ()):
        # SPICE without a port or autoport has no listener at all: libvirt drops
        # ``listen`` (VNC picks a port by itself).
        autoport = True if graphics["type"] == "spice" else None
        sub(
            devices,
            "graphics",
            type=graphics["type"],
            autoport=autoport,
            listen=graphics.get("listen"),
        )
    if len(devices):
        root.append(devices)


def _disk(devices: etree._Element, disk: Mapping[str, Any]) -> None:
    source = disk.get("source") or {}
    if "volume" in source:
        dtype, source_attrs = (
            "volume",
            {
                "pool": source["volume"]["pool"],
                "volume": source["volume"]["name"],
            },
        )
    elif "block" in source:
        dtype, source_attrs = "block", {"dev": source["block"]}
    elif "file" in source:
        dtype, source_attrs = "file", {"file": source["file"]}
    else:  # an empty cdrom/floppy
        dtype, source_attrs = "file", {}
    el = sub(devices, "disk", type=dtype, device=disk.get("device", "disk"))
    if "format" in disk:
        sub(el, "driver", name="qemu", type=disk["format"])
    if source_attrs:
        source_el = sub(el, "source", **source_attrs)
        if "encryption" in disk:
            encryption(source_el, disk["encryption"])
    sub(el, "target", dev=disk["target"], bus=disk.get("bus"))
    if disk.get("readonly"):
        sub(el, "readonly")
    if "serial" in disk:
        sub(el, "serial", disk["serial"])


def _interface(devices: etree._Element, domain: str, nic: Mapping[str, Any], position: int) -> None:
    if "bridge" in nic:
        el = sub(devices, "interface", type="bridge")
    else:
        el = sub(devices, "interface", type="network")
    mac = nic.get("mac") or identity.derive_mac(domain, nic.get("name", f"nic{position}"))
    sub(el, "mac", address=str(mac).lower())
    if "bridge" in nic:
        sub(el, "source", bridge=nic["bridge"])
    else:
        sub(el, "source", network=nic["network"])
    if "model" in nic:
        sub(el, "model", type=nic["model"])
    if "link" in nic:
        sub(el, "link", state=nic["link"])
