"""The domain's comparison rules, ``COMPARE`` (``render.domain`` re-exports it):
units, implied and derived values, what libvirt generates or fills in (with the
defaults the QEMU driver adds at define) and rewrites into an equivalent form.
``canonical`` applies them; each rule is described there."""

from __future__ import annotations

import re
from collections.abc import Callable

from lxml import etree

from reconciler import units
from reconciler.model import Kind
from reconciler.render import identity
from reconciler.render.rules import Fields, Filled, Rules, filled

_DEV = r"^devices/[^/]+"


# --- values libvirt writes differently in the live XML of a running domain ---------
#
# Both sides are flattened the same way, so each rule is a statement about
# what a document *means*, true of desired, inactive and live XML alike.


def _firmware_from_loader(values: Fields, elements: dict[str, etree._Element]) -> None:
    """A pflash ``<loader>`` is UEFI firmware: ``os/@firmware='efi'``. A running
    domain's XML has the firmware libvirt chose for ``firmware='efi'`` as a
    ``<loader>`` and no longer says ``firmware``."""
    os_el = elements.get("os")
    if os_el is None or "os/@firmware" in values:
        return
    loader = os_el.find("loader")
    if loader is not None and loader.get("type") == "pflash":
        values["os/@firmware"] = "efi"


_DISK = re.compile(r"^(devices/disk\[[^/]*\])/driver/@type$")


def _no_format_without_media(values: Fields, elements: dict[str, etree._Element]) -> None:
    """An empty cdrom or floppy has no format: a running domain's XML drops
    ``<driver type='raw'/>`` of a drive with no medium."""
    for path in [p for p in values if _DISK.match(p)]:
        disk = elements.get(_DISK.match(path).group(1))  # type: ignore[union-attr]
        if disk is not None and disk.find("source") is None:
            del values[path]


# --- defaults the QEMU driver adds at define (x86, libvirt 9.0) ----------------------
#
# Probed on a real libvirtd 9.0 / QEMU 7.2 (``tests/e2e/test_export_host.py`` defines
# an examples-style q35 domain, exports it, defines the export again and compares
# everything). Each rule drops a value only when the document says libvirt would
# add exactly that value back: the device is in its default shape (addresses and
# aliases aside), the only one of its kind where position matters, on a qemu/kvm
# x86 domain of the right machine type.


def _domain_of(el: etree._Element) -> etree._Element:
    return el.getroottree().getroot()


def _machine(root: etree._Element) -> str | None:
    """``q35``, ``pc`` (i440fx) or None, for a qemu/kvm x86 HVM domain only."""
    os_type = root.find("os/type")
    if root.get("type") not in ("qemu", "kvm") or os_type is None:
        return None
    if (os_type.text or "").strip() != "hvm" or os_type.get("arch") not in ("x86_64", "i686"):
        return None
    machine = os_type.get("machine") or ""
    if machine == "q35" or machine.startswith("pc-q35-"):
        return "q35"
    if machine == "pc" or machine.startswith("pc-i440fx-"):
        return "pc"
    return None


def _x86(el: etree._Element) -> bool:
    return _machine(_domain_of(el)) is not None


def _bare(el: etree._Element) -> str:
    """An element's content without what libvirt assigns to every device (bus
    address, alias), comparable with ``_bare`` of a template."""
    children = sorted(_bare(c) for c in el if isinstance(c.tag, str) and c.tag not in _ASSIGNED)
    attrs = sorted((str(k), str(v)) for k, v in el.attrib.items())
    return repr((str(el.tag), attrs, (el.text or "").strip(), children))


_ASSIGNED = ("address", "alias")


def _shaped(*templates: str, machines: tuple[str, ...] = ("q35", "pc")) -> Callable[..., bool]:
    """The element is one of ``templates`` (addresses and aliases aside) on one of
    ``machines``; a positional device only when it is the last of its tag, so
    leaving it out moves no other device."""
    shapes = {_bare(etree.fromstring(t)) for t in templates}

    def when(el: etree._Element) -> bool:
        if _machine(_domain_of(el)) not in machines or _bare(el) not in shapes:
            return False
        later = (s for s in el.itersiblings() if s.tag == el.tag and el.tag != "controller")
        return all(_bare(s) in shapes for s in later)

    return when


def _attrs(el: etree._Element) -> dict[str, str]:
    return {str(k): str(v) for k, v in el.attrib.items()}


def _single(el: etree._Element) -> bool:
    parent = el.getparent()
    return parent is not None and len(parent.findall(str(el.tag))) == 1


def _pci_slot(el: etree._Element) -> int | None:
    """``slot * 8 + function`` of the element's PCI address on bus 0 (a root port's port)."""
    address = el.find("address")
    if address is None or address.get("type") != "pci" or _hex(address.get("bus")) != 0:
        return None
    slot, function = _hex(address.get("slot")), _hex(address.get("function") or "0")
    return None if slot is None or function is None else slot * 8 + function


def _hex(text: str | None) -> int | None:
    try:
        return int(text or "", 0)
    except ValueError:
        return None


def _root_port(el: etree._Element) -> bool:
    """A pcie-root-port as libvirt adds it: model name, chassis = index, port = slot."""
    model, target = el.find("model"), el.find("target")
    if el.get("type") != "pci" or el.get("model") != "pcie-root-port" or target is None:
        return False
    bare = {str(c.tag) for c in el if isinstance(c.tag, str)} - {*_ASSIGNED, "model", "target"}
    return (
        not bare
        and set(el.attrib) == {"type", "index", "model"}
        and model is not None
        and _attrs(model) == {"name": "pcie-root-port"}
        and set(target.attrib) == {"chassis", "port"}
        and target.get("chassis") == el.get("index")
        and _hex(target.get("port")) == _pci_slot(el)
    )


def _libvirts_root_ports(el: etree._Element) -> bool:
    """q35: libvirt adds a pcie-root-port for each PCIe device plus one spare for
    hot-plug. The ports are left out only when they are exactly that set: all in
    libvirt's shape, every one but the last holding a device, the last empty (a
    host with more spare ports, as virt-install makes, keeps them all)."""
    devices = el.getparent()
    if devices is None or _machine(_domain_of(el)) != "q35":
        return False
    ports = [c for c in devices.iterfind("controller[@type='pci']") if c.get("index", "0") != "0"]
    if el not in ports or not all(_root_port(p) for p in ports):
        return False
    used = {
        _hex(a.get("bus"))
        for a in devices.iterfind("*/address[@type='pci']")
        if a.getparent() not in ports
    }
    empty = [p for p in ports if _hex(p.get("index")) not in used]
    return empty == ports[-1:]


def _kept_root_port_chassis(el: etree._Element) -> bool:
    controller = el.getparent()
    return (
        controller is not None
        and _x86(el)
        and controller.get("model") == "pcie-root-port"
        and el.get("chassis") == controller.get("index")
    )


def _kept_root_port_port(el: etree._Element) -> bool:
    controller = el.getparent()
    return (
        controller is not None
        and _x86(el)
        and controller.get("model") == "pcie-root-port"
        and _hex(el.get("port")) == _pci_slot(controller)
    )


def _model_name_is_model(el: etree._Element) -> bool:
    controller = el.getparent()
    return (
        controller is not None
        and _x86(el)
        and controller.get("type") == "pci"
        and _attrs(el) == {"name": controller.get("model", "")}
    )


def _console_mirrors(serial: etree._Element) -> bool:
    """The only serial, a copy of the first console (type, source) with libvirt's
    isa-serial target: libvirt creates it from a serial-target console."""
    devices = serial.getparent()
    console = devices.find("console") if devices is not None else None
    if console is None or not _single(serial) or not _x86(serial):
        return False
    target = console.find("target")
    if target is not None and target.get("type", "serial") != "serial":
        return False
    own = [c for c in serial if isinstance(c.tag, str) and c.tag not in (*_ASSIGNED, "target")]
    theirs = [c for c in console if isinstance(c.tag, str) and c.tag not in (*_ASSIGNED, "target")]
    same = _attrs(serial) == _attrs(console) and sorted(map(_bare, own)) == sorted(
        map(_bare, theirs)
    )
    serial_target = serial.find("target")
    return same and serial_target is not None and _bare(serial_target) == _ISA_SERIAL


_ISA_SERIAL = _bare(
    etree.fromstring("<target type='isa-serial' port='0'><model name='isa-serial'/></target>")
)


def _first_console(el: etree._Element) -> bool:
    console = el.getparent()
    return (
        console is not None
        and _x86(el)
        and console.getparent() is not None
        and console.getparent().find("console") is console  # type: ignore[union-attr]
    )


def _vnc_autoport(el: etree._Element) -> bool:
    return (
        _x86(el) and el.get("type") == "vnc" and el.get("port") == "-1"
        and el.get("autoport") == "yes"
    )  # fmt: skip


def _listen_mirror(el: etree._Element) -> bool:
    """The only ``<listen type='address'>``: the graphics' ``listen`` attribute
    again, or with no address libvirt's default (VNC; SPICE with autoport)."""
    graphics = el.getparent()
    if graphics is None or not _x86(el) or not _single(el):
        return False
    if set(el.attrib) - {"type", "address"} or el.get("type") != "address" or len(el):
        return False
    if el.get("address") is not None:
        return el.get("address") == graphics.get("listen")
    return graphics.get("listen") is None and (
        graphics.get("type") == "vnc" or graphics.get("autoport") == "yes"
    )


def _default_audio(el: etree._Element) -> bool:
    """libvirt adds one audio backend: ``spice`` with SPICE graphics, else ``none``."""
    devices = el.getparent()
    if devices is None or not _single(el) or not _x86(el) or len(el):
        return False
    spice = devices.find("graphics[@type='spice']") is not None
    return _attrs(el) == {"id": "1", "type": "spice" if spice else "none"}


def _default_video(el: etree._Element) -> bool:
    """With graphics and no video, libvirt adds a cirrus card."""
    devices = el.getparent()
    return (
        devices is not None
        and _single(el)
        and devices.find("graphics") is not None
        and _shaped("<video><model type='cirrus' vram='16384' heads='1' primary='yes'/></video>")(
            el
        )
    )


# Video RAM libvirt sets for a model that does not say (KiB).
_VIDEO_MEMORY = {
    ("qxl", "ram"): "65536",
    ("qxl", "vram"): "65536",
    ("qxl", "vgamem"): "16384",
    ("cirrus", "vram"): "16384",
    ("vga", "vram"): "16384",
}


def _video_memory_default(attr: str) -> Callable[[etree._Element], bool]:
    def when(model: etree._Element) -> bool:
        return _x86(model) and model.get(attr) == _VIDEO_MEMORY.get((model.get("type", ""), attr))

    return when


def _only_video(model: etree._Element) -> bool:
    video = model.getparent()
    return video is not None and _x86(model) and _single(video)


_DEFAULT_CPU = (
    "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
)


def _cpu_check_default(cpu: etree._Element) -> bool:
    """The ``check`` libvirt picks for the mode: none for host-passthrough and
    maximum, partial for host-model, and for a custom model none under TCG
    (``type='qemu'``), partial under KVM."""
    if not _x86(cpu):
        return False
    mode = cpu.get("mode", "custom")
    tcg = _domain_of(cpu).get("type") == "qemu"
    default = {
        "host-passthrough": "none",
        "maximum": "none",
        "host-model": "partial",
        "custom": "none" if tcg else "partial",
    }.get(mode)
    return cpu.get("check") == default


def _passthrough(cpu: etree._Element) -> bool:
    return _x86(cpu) and cpu.get("mode") == "host-passthrough"


def _custom_cpu(el: etree._Element) -> bool:
    cpu = el if el.tag == "cpu" else el.getparent()
    return cpu is not None and _x86(el) and cpu.get("mode", "custom") == "custom"


def _current_is_memory(el: etree._Element) -> bool:
    root = _domain_of(el)
    memory, current = root.find("memory"), root.find("currentMemory")
    if memory is None or current is None:
        return False
    try:
        return units.libvirt_scaled(
            memory.text or "", memory.get("unit"), default_unit="KiB"
        ) == units.libvirt_scaled(current.text or "", current.get("unit"), default_unit="KiB")
    except ValueError:
        return False


def _default_boot(el: etree._Element) -> bool:
    """With no boot order anywhere, libvirt boots from the disk (even with a kernel)."""
    root = _domain_of(el)
    os_el = el.getparent()
    return (
        _x86(el)
        and os_el is not None
        and _single(el)
        and _attrs(el) == {"dev": "hd"}
        and root.find("devices/*/boot") is None
    )


_D = Kind.DOMAIN


def _builtin(ctype: str, machine: str, why: str, model: str | None = None) -> Filled:
    """Controller index 0 of ``ctype`` that the machine type comes with."""
    shape = f"<controller type='{ctype}' index='0'{f' model={model!r}' if model else ''}/>"
    return filled(
        _D,
        rf"^devices/controller\[type={ctype},index=0\]$",
        why,
        when=_shaped(shape, machines=(machine,)),
    )


QEMU_DEFAULTS: tuple[Filled, ...] = (
    _builtin("sata", "q35", "q35's built-in SATA (AHCI) controller"),
    _builtin("ide", "pc", "i440fx's built-in IDE controller"),
    _builtin("usb", "q35", "q35's default USB controller", model="qemu-xhci"),
    _builtin("usb", "pc", "i440fx's default USB controller", model="piix3-uhci"),
    filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]$",
        "q35: one pcie-root-port per PCIe device plus one spare, added at define",
        when=_libvirts_root_ports,
    ),
    filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/model$",
        "a PCI controller's model name is its model",
        when=_model_name_is_model,
    ),
    filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/target/@chassis$",
        "a pcie-root-port's chassis is its index",
        when=_kept_root_port_chassis,
    ),
    filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/target/@port$",
        "a pcie-root-port's port is its slot and function, assigned with its address",
        when=_kept_root_port_port,
    ),
    filled(
        _D, r"^devices/input\[#\d+\]$", "x86 guests get a PS/2 mouse and keyboard",
        when=_shaped("<input type='mouse' bus='ps2'/>", "<input type='keyboard' bus='ps2'/>"),
    ),
    filled(
        _D, r"^devices/serial\[#0\]$",
        "a console with a serial target gets a serial device of its own type",
        when=_console_mirrors,
    ),
    filled(
        _D, r"^devices/console\[#0\]/target/@type$", "an x86 console's target is the serial port",
        value="serial", when=_first_console,
    ),
    filled(
        _D, r"^devices/graphics\[#\d+\]/@(port|autoport)$",
        "VNC without a port: port='-1' autoport='yes' (any free port at start)",
        when=_vnc_autoport,
    ),
    filled(
        _D, r"^devices/graphics\[#\d+\]/listen$",
        "the <listen> element libvirt writes for the listen attribute (or its default)",
        when=_listen_mirror,
    ),
    filled(
        _D, r"^devices/audio\[#0\]$",
        "one audio backend is added: spice with SPICE graphics, else none",
        when=_default_audio,
    ),
    filled(
        _D, r"^devices/video\[#0\]$", "graphics without a video device get a cirrus card",
        when=_default_video,
    ),
    filled(
        _D, r"^devices/video\[#0\]/model/@heads$", "one head is the default", value="1",
        when=_x86,
    ),
    filled(
        _D, r"^devices/video\[#0\]/model/@primary$", "the only video card is the primary one",
        value="yes", when=_only_video,
    ),
    *(
        filled(
            _D, rf"^devices/video\[#\d+\]/model/@{attr}$", f"the model's default {attr} size",
            when=_video_memory_default(attr),
        )
        for attr in ("ram", "vram", "vgamem")
    ),
    filled(
        _D, r"^devices/memballoon\[#0\]$", "a virtio balloon is added to every guest",
        when=_shaped("<memballoon model='virtio'/>"),
    ),
    filled(
        _D, r"^cpu$", "with no <cpu>, a TCG/KVM x86 guest gets libvirt's qemu64 model",
        when=_shaped(_DEFAULT_CPU),
    ),
    filled(
        _D, r"^cpu/@match$", "'exact' is the default for a custom model", value="exact",
        when=_custom_cpu,
    ),
    filled(
        _D, r"^cpu/model/@fallback$", "'allow' is the default for a named model", value="allow",
        when=_custom_cpu,
    ),
    filled(
        _D, r"^cpu/@check$", "the check libvirt picks for the CPU mode",
        when=_cpu_check_default,
    ),
    filled(
        _D, r"^cpu/@migratable$", "a host-passthrough CPU is migratable by default",
        value="on", when=_passthrough,
    ),
    filled(
        _D, r"^clock$",
        "a guest clock is UTC unless it says otherwise (only the bare element: with timers,"
        " the schema wants the offset)",
        when=_shaped("<clock offset='utc'/>"),
    ),
    filled(
        _D, r"^currentMemory$", "the balloon starts at the full memory",
        when=_current_is_memory,
    ),
    filled(
        _D, r"^os/boot$", "with no boot order anywhere, libvirt boots from the disk",
        when=_default_boot,
    ),
)  # fmt: skip

FILLED: tuple[Filled, ...] = (
    filled(Kind.DOMAIN, r"^uuid$", "generated at define; a redefine keeps the live one"),
    filled(Kind.DOMAIN, r"^@id$", "the running domain's id"),
    filled(
        Kind.DOMAIN,
        _DEV + r"/address$",
        "bus addresses are assigned at define (an ISA iobase is the device's own choice)",
        of_type="pci|drive|virtio-serial|ccid|usb|spapr-vio|ccw|virtio-mmio|unassigned",
    ),
    filled(Kind.DOMAIN, _DEV + r"/alias$", "device aliases are assigned at start"),
    filled(Kind.DOMAIN, r"^devices/emulator\[#0\]$", "the host's default emulator binary"),
    filled(
        Kind.DOMAIN,
        r"^devices/controller\[type=pci,index=0\]$",
        "the PCI root (pci-root / pcie-root) comes with the machine type",
    ),
    filled(Kind.DOMAIN, r"^vcpu/@placement$", "'static' is the default", value="static"),
    filled(Kind.DOMAIN, r"^on_poweroff$", "'destroy' is the default", value="destroy"),
    filled(Kind.DOMAIN, r"^on_reboot$", "'restart' is the default", value="restart"),
    filled(Kind.DOMAIN, r"^on_crash$", "'destroy' is the default", value="destroy"),
    filled(
        Kind.DOMAIN,
        r"^devices/console\[#\d+\]/target/@port$",
        "console ports are numbered by libvirt, and renumbered when the domain starts",
    ),
    filled(Kind.DOMAIN, r"^seclabel(\[#\d+\])?$", "security labels are assigned at start"),
    *QEMU_DEFAULTS,
)

# --- values libvirt rewrites into an equivalent form ------------------------------

_MACHINE_ALIASES = {"q35": "pc-q35-", "pc": "pc-i440fx-"}


def _same_machine(desired: str, live: str) -> bool:
    prefix = _MACHINE_ALIASES.get(desired)
    return prefix is not None and live.startswith(prefix)


def _checked_cpu(desired: str, live: str) -> bool:
    # A running domain reports check='full' once QEMU has checked its CPU,
    # whatever the definition says.
    return live == "full" and desired in ("none", "partial")


def _auto_port(desired: str, live: str) -> bool:
    # port='-1' (autoport) in a definition; a running domain shows the port it got.
    return desired == "-1" and live.isdigit()


COMPARE = Rules(
    children={"devices": identity.device_keys},
    scaled={"memory": (1024, "KiB"), "currentMemory": (1024, "KiB"), "maxMemory": (1024, "KiB")},
    generated=(
        (
            re.compile(r"^os/nvram$"),
            lambda values, path: values[path] == "",
            "an <nvram> without a path: the QEMU driver picks"
            " /var/lib/libvirt/qemu/nvram/NAME_VARS.fd",
        ),
        (
            re.compile(r"^devices/channel\[[^/]*\]/source(/@mode|/@path)?$"),
            lambda values, path: values.get(
                path.partition("/source")[0] + "/source/@path", ""
            ).startswith("/var/lib/libvirt/qemu/channel/target/"),
            "a socket in libvirt's own channel folder is generated per start; the QEMU driver"
            " leaves it out of the definition",
        ),
    ),
    kept_by_hosts=(
        (
            re.compile(r"^devices/panic\[#\d+\](/.*)?$"),
            "the test driver has no panic device; QEMU keeps it",
        ),
    ),
    # Attributes libvirt leaves out when they equal another value: ``<vcpu current='2'>2</vcpu>``
    # reads back as ``<vcpu>2</vcpu>``; both flatten to the same fields.
    implied={
        "vcpu/@current": "vcpu",
        # A domain without <currentMemory> balloons to all of its memory: libvirt
        # fills it in so at define, and a manifest without currentMemory means the
        # same on a domain that exists (raising memory raises the balloon too).
        "currentMemory": "memory",
    },
    derived=(_firmware_from_loader, _no_format_without_media),
    filled=FILLED,
    drop_emptied=True,
    equivalent=(
        (re.compile(r"^devices/graphics\[[^/]*\]/@(port|tlsPort|websocket)$"), _auto_port),
        (re.compile(r"^os/type/@machine$"), _same_machine),
        (re.compile(r"^cpu/@check$"), _checked_cpu),
    ),
    # libvirt writes ``<graphics listen='A'>`` with a ``<listen type='address'
    # address='A'/>`` child and refuses a definition where the two disagree.
    derived_children=((re.compile(r"^devices/graphics\[[^/]*\]/@listen$"), "listen"),),
)
