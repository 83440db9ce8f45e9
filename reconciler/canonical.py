"""Stage 4 of the pipeline: turn desired and live XML into comparable fields.

A document becomes a flat mapping ``path -> value``:

* ``memory`` -> ``"2097152"`` (an element's text; ``""`` for an empty element,
  so the key's presence also says "this element exists"),
* ``os/type/@machine`` -> ``"q35"`` (an attribute),
* ``devices/disk[target=vda]/source/@file`` (devices and other repeated
  elements are keyed by identity, never by position, see ``IDENTITY``).

Only the paths the manifest determines are compared (``diff``), so anything
libvirt fills in by itself (uuid, addresses, aliases, auto-added controllers,
seclabel, ...) never shows as a difference. What remains are values libvirt
*rewrites*; each such rule lives here, with a unit test
(``tests/unit/test_canonical.py``, ``tests/unit/test_export.py``):

* ``_SCALED`` and ``_normalise_attr``: units and MAC case;
* ``IMPLIED``: attributes libvirt leaves out when they equal another value
  (``<vcpu current='2'>2</vcpu>`` reads back as ``<vcpu>2</vcpu>``);
* ``_DERIVED``: what a document means, stated the same for desired, inactive and
  live XML (a pflash loader is ``firmware='efi'``; an empty drive has no format);
* ``EQUIVALENT``: a desired value and the value libvirt shows for it (``q35`` is
  ``pc-q35-7.2``, ``port='-1'`` is the port a running domain got, ...);
* ``FILLED``: what libvirt fills in by itself, which ``export`` leaves out;
  ``QEMU_DEFAULTS`` (part of it): the defaults the QEMU driver adds at define;
* ``keep_implied`` and ``DERIVED_CHILDREN``: what a redefine (``diff.apply_changes``)
  must write out or drop so libvirt reads it as meant.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from lxml import etree

from reconciler import cache, ownership, units
from reconciler.model import Kind
from reconciler.render import identity

Fields = dict[str, str]


class Flat:
    """A flattened document: values by path, and the element behind each path.

    ``implied``: paths the document does not state whose value is implied by
    another (``IMPLIED``): compared like the rest, shown as part of what
    implies them. A Flat read from the cache (``cached``) finds its elements
    when first asked (only a change needs them).
    """

    __slots__ = ("_elements", "_find", "implied", "values")

    def __init__(
        self,
        *,
        values: Fields,
        elements: dict[str, etree._Element] | None = None,
        implied: frozenset[str] = frozenset(),
        find: Callable[[], dict[str, etree._Element]] | None = None,
    ) -> None:
        self.values = values
        self.implied = implied
        self._elements = elements
        self._find = find

    @property
    def elements(self) -> dict[str, etree._Element]:
        if self._elements is None:
            assert self._find is not None, "a Flat has elements or a way to find them"
            self._elements = self._find()
        return self._elements


_FLAT_KEY = f"{etree.LXML_VERSION}\0{etree.LIBXML_VERSION}".encode()


def cached(
    parts: Iterable[str],
    compute: Callable[[], Flat],
    find: Callable[[], dict[str, etree._Element]],
) -> Flat:
    """``compute()``, or its values and implied paths from the on-disk cache
    (``reconciler.cache``) when computed before for the same ``parts``: every
    input of ``compute`` (documents as text, kind, ignore XPaths), so an entry
    is never stale. ``find`` gives the elements, when asked for (``Flat``).

    An unchanged no-op plan then flattens nothing: a domain costs several
    flattens (desired, libvirt's reading of it, inactive, live) of ~0.2 ms each.
    """
    entry = cache.entry("flat", _FLAT_KEY, *(p.encode() for p in parts))
    raw = cache.read(entry)
    if raw is not None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            stored = json.loads(raw)
            values = stored["values"]
            if isinstance(values, dict) and all(isinstance(v, str) for v in values.values()):
                return Flat(values=values, implied=frozenset(stored["implied"]), find=find)
    flat = compute()
    data = {"values": flat.values, "implied": sorted(flat.implied)}
    cache.write(entry, json.dumps(data, ensure_ascii=False).encode())
    return flat


def flatten_text(
    text: str, root: etree._Element, kind: Kind, *, ignore: Sequence[str] = ()
) -> Flat:
    """``flatten(root, kind, ignore=ignore)`` where ``root`` is ``text`` parsed (cached)."""

    def compute() -> Flat:
        return flatten(root, kind, ignore=ignore)

    return cached(
        ("flatten", kind.value, text, *ignore),
        compute,
        lambda: compute().elements,
    )


# --- identity of repeated, non-device elements (devices: render.identity) ---------


def _attr_key(*names: str) -> Callable[[etree._Element], str | None]:
    def key(el: etree._Element) -> str | None:
        for name in names:
            value = el.get(name)
            if value is not None:
                return f"{name}={value.lower() if name == 'mac' else value}"
        return None

    return key


def _srv_key(el: etree._Element) -> str | None:
    return f"service={el.get('service')},protocol={el.get('protocol')},target={el.get('target')}"


IDENTITY: dict[tuple[Kind, str], Callable[[etree._Element], str | None]] = {
    (Kind.NETWORK, "ip"): _attr_key("address"),
    (Kind.NETWORK, "host"): _attr_key("mac", "id", "ip", "name"),
    (Kind.NETWORK, "range"): _attr_key("start"),
    (Kind.NETWORK, "portgroup"): _attr_key("name"),
    (Kind.NETWORK, "txt"): _attr_key("name"),
    (Kind.NETWORK, "srv"): _srv_key,
    (Kind.NETWORK, "route"): _attr_key("address"),
    (Kind.STORAGE_POOL, "host"): _attr_key("name"),
    (Kind.STORAGE_POOL, "device"): _attr_key("path"),
}

# Elements whose text is a scaled size: canonical unit and default unit.
_SCALED: dict[tuple[Kind, str], tuple[int, str]] = {
    (Kind.DOMAIN, "memory"): (1024, "KiB"),
    (Kind.DOMAIN, "currentMemory"): (1024, "KiB"),
    (Kind.DOMAIN, "maxMemory"): (1024, "KiB"),
    (Kind.VOLUME, "capacity"): (1, "bytes"),
    (Kind.VOLUME, "allocation"): (1, "bytes"),
}

# Values libvirt never shows (without secure flags): never compared.
HIDDEN = (re.compile(r"^devices/graphics\[[^/]*\]/@passwd(ValidTo)?$"),)
_HIDDEN_ANY = re.compile("|".join(f"(?:{h.pattern})" for h in HIDDEN))  # one match per attribute

# Subtrees that are not part of the compared definition.
_SKIPPED_TAGS = {f"{{{ownership.NAMESPACE}}}owner", f"{{{ownership.NAMESPACE}}}registry"}


def _normalise_text(kind: Kind, tag: str, el: etree._Element) -> tuple[str, bool]:
    """The element's canonical text, and whether its ``unit`` was folded in."""
    text = (el.text or "").strip()
    scaled = _SCALED.get((kind, tag))
    if scaled and text:
        factor, default_unit = scaled
        try:
            return str(
                units.libvirt_scaled(text, el.get("unit"), default_unit=default_unit) // factor
            ), True
        except ValueError:
            return text, False
    return text, False


_MAC = re.compile(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")


def _normalise_attr(name: str, value: str) -> str:
    if name == "address" and _MAC.fullmatch(value):
        return value.lower()
    return value.strip()


def _child_keys(
    kind: Kind, parent_path: str, parent: etree._Element
) -> Iterable[tuple[str, etree._Element]]:
    children = [c for c in parent if isinstance(c.tag, str) and c.tag not in _SKIPPED_TAGS]
    if parent_path == "devices" and kind is Kind.DOMAIN:
        yield from identity.device_keys(parent)
        return
    seen: dict[str, int] = {}
    for child in children:
        tag = str(child.tag)
        ident = IDENTITY.get((kind, tag))
        key = ident(child) if ident else None
        if key is not None:
            yield f"{tag}[{key}]", child
            continue
        n = seen.get(tag, 0)
        seen[tag] = n + 1
        yield (tag if n == 0 else f"{tag}[#{n}]"), child


def split_path(path: str) -> tuple[str, str]:
    """``(parent, last step)`` of a flattened path; a ``/`` inside an identity
    (``source/device[path=/dev/sdb1]``) does not split."""
    depth = 0
    for i in range(len(path) - 1, -1, -1):
        ch = path[i]
        if ch == "]":
            depth += 1
        elif ch == "[":
            depth -= 1
        elif ch == "/" and depth == 0:
            return path[:i], path[i + 1 :]
    return "", path


def flatten(root: etree._Element, kind: Kind, *, ignore: Iterable[str] = ()) -> Flat:
    """Flatten a document; ``ignore`` holds XPaths (as in ``ignoreDifferences``)."""
    skipped: set[int] = set()
    skipped_attrs: set[tuple[int, str]] = set()
    for xpath in ignore:
        try:
            hits = root.getroottree().xpath(xpath)
        except etree.XPathError:
            continue
        for hit in hits if isinstance(hits, list) else []:
            if isinstance(hit, etree._Element):
                skipped.add(id(hit))
            elif getattr(hit, "is_attribute", False):
                parent = getattr(hit, "getparent")()  # noqa: B009 - lxml smart string
                skipped_attrs.add((id(parent), str(getattr(hit, "attrname", ""))))
    values: Fields = {}
    elements: dict[str, etree._Element] = {}
    scaled = {tag: rule for (k, tag), rule in _SCALED.items() if k is kind}

    def walk(el: etree._Element, path: str, key: str) -> None:
        # ``key`` is the last step of ``path`` (what _child_keys needs).
        tag = el.tag
        text = (el.text or "").strip()
        unit_folded = False
        if text and tag in scaled:
            text, unit_folded = _normalise_text(kind, str(tag), el)
        values[path] = text if text or len(el) == 0 else ""
        elements[path] = el
        attrib = el.attrib
        if attrib:
            # lxml gives attribute names and values as str (the stubs allow bytes).
            for name, value in cast("list[tuple[str, str]]", sorted(attrib.items())):
                if unit_folded and name == "unit":
                    continue
                if skipped_attrs and (id(el), name) in skipped_attrs:
                    continue
                apath = f"{path}/@{name}"
                if _HIDDEN_ANY.match(apath):
                    continue
                values[apath] = _normalise_attr(name, value)
        if len(el):
            for child_key, child in _child_keys(kind, key, el):
                if skipped and id(child) in skipped:
                    continue
                walk(child, f"{path}/{child_key}", child_key)

    # The root itself is implicit: its attributes live at "@attr", children at "tag".
    for name, value in sorted((str(k), str(v)) for k, v in root.attrib.items()):
        if (id(root), name) not in skipped_attrs:
            values[f"@{name}"] = _normalise_attr(name, value)
    for key, child in _child_keys(kind, "", root):
        if id(child) in skipped:
            continue
        walk(child, key, key)
    implied = set()
    for (k, path), source in IMPLIED.items():
        if k is kind and path not in values and source in values:
            values[path] = values[source]
            implied.add(path)
    for rule in _DERIVED.get(kind, ()):
        rule(values, elements)
    return Flat(values=values, elements=elements, implied=frozenset(implied))


def flatten_desired(
    doc: etree._Element,
    normalised: etree._Element | None,
    kind: Kind,
    *,
    ignore: Iterable[str] = (),
) -> Flat:
    """The desired fields: what ``doc`` states, valued as libvirt's parser stores it.

    ``normalised`` is ``doc`` read back from libvirt (``hosts.normalise``). Of its
    fields only those ``doc`` states are kept (the rest libvirt filled in), with
    libvirt's spelling of their values (hex numbers, case, units); a field the
    parser drops (``port='-1'``, a bind socket without a path) is not compared,
    because libvirt would drop it from the host too — unless the test driver
    drops something a real host keeps (``KEPT_BY_HOSTS``). Without ``normalised``
    (the parser refused the document) the document is compared as written.
    """
    own = flatten(doc, kind, ignore=ignore)
    generated = {
        p
        for k, rx, test, _ in GENERATED
        if k is kind
        for p in own.values
        if rx.match(p) and test(own.values, p)
    }
    for path in generated:
        del own.values[path]
    if normalised is None:
        return own
    norm = flatten(normalised, kind, ignore=ignore)
    values: Fields = {}
    for path, value in own.values.items():
        if path in norm.values:
            values[path] = norm.values[path]
        elif any(k is kind and rx.match(path) for k, rx, _ in KEPT_BY_HOSTS):
            values[path] = value
    return Flat(values=values, elements=own.elements, implied=own.implied)


# Values a document may state that libvirt measures or generates itself: not a
# wish, never compared. (kind, path, test on the document's values at that path, why)
GENERATED: tuple[tuple[Kind, re.Pattern[str], Callable[[Fields, str], bool], str], ...] = (
    (
        Kind.STORAGE_POOL,
        re.compile(r"^(capacity|allocation|available)(/@unit)?$"),
        lambda _values, _path: True,
        "a pool's sizes are measured by libvirt (a dumped pool states them)",
    ),
    (
        Kind.DOMAIN,
        re.compile(r"^os/nvram$"),
        lambda values, path: values[path] == "",
        "an <nvram> without a path: the QEMU driver picks /var/lib/libvirt/qemu/nvram/NAME_VARS.fd",
    ),
    (
        Kind.DOMAIN,
        re.compile(r"^devices/channel\[[^/]*\]/source(/@mode|/@path)?$"),
        lambda values, path: values.get(
            path.partition("/source")[0] + "/source/@path", ""
        ).startswith("/var/lib/libvirt/qemu/channel/target/"),
        "a socket in libvirt's own channel folder is generated per start; the QEMU driver"
        " leaves it out of the definition",
    ),
)


# What the test driver's parser drops that a real host's driver keeps: compared
# as the document writes it. (kind, path, why).
KEPT_BY_HOSTS: tuple[tuple[Kind, re.Pattern[str], str], ...] = (
    (
        Kind.DOMAIN,
        re.compile(r"^devices/panic\[#\d+\](/.*)?$"),
        "the test driver has no panic device; QEMU keeps it",
    ),
)


# Attributes libvirt leaves out when they equal another value: (kind, path) -> the
# path whose value they then have. ``<vcpu current='2'>2</vcpu>`` reads back as
# ``<vcpu>2</vcpu>``; both flatten to the same fields.
IMPLIED: dict[tuple[Kind, str], str] = {
    (Kind.DOMAIN, "vcpu/@current"): "vcpu",
    # A domain without <currentMemory> balloons to all of its memory: libvirt
    # fills it in so at define, and a manifest without currentMemory means the
    # same on a domain that exists (raising memory raises the balloon too).
    (Kind.DOMAIN, "currentMemory"): "memory",
}


def implied_by(kind: Kind, path: str) -> str | None:
    """The path whose value ``path`` takes when the document does not state it."""
    return IMPLIED.get((kind, path))


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


_DERIVED: dict[Kind, tuple[Callable[[Fields, dict[str, etree._Element]], None], ...]] = {
    Kind.DOMAIN: (_firmware_from_loader, _no_format_without_media),
}


# --- values libvirt fills in by itself -------------------------------------------
#
# A manifest that does not set these gets them from libvirt; a manifest that
# does set them is compared on them like on anything else (``diff`` compares
# only the paths the manifest determines). ``export`` leaves them out, so an
# exported manifest says what the user chose, not what libvirt derived, and
# the same manifest applies to another host. One rule per value, with why.


@dataclass(frozen=True, kw_only=True)
class Filled:
    """A value libvirt fills in: ``path`` (flattened, regex), optionally only with
    ``value``, only for an element whose ``type`` attribute matches ``of_type``, or
    only ``when`` the element (for an attribute: the element owning it) and the
    document around it say libvirt would add exactly this back."""

    kind: Kind
    path: re.Pattern[str]
    why: str
    value: re.Pattern[str] | None = None
    of_type: re.Pattern[str] | None = None
    when: Callable[[etree._Element], bool] | None = None

    def matches(
        self, kind: Kind, path: str, value: str, element: etree._Element | None = None
    ) -> bool:
        if kind is not self.kind or self.path.match(path) is None:
            return False
        if self.value is not None and self.value.fullmatch(value) is None:
            return False
        if self.when is not None and (element is None or not self.when(element)):
            return False
        if self.of_type is not None:
            return (
                element is not None and self.of_type.fullmatch(element.get("type", "")) is not None
            )
        return True


def _filled(
    kind: Kind,
    path: str,
    why: str,
    value: str | None = None,
    of_type: str | None = None,
    when: Callable[[etree._Element], bool] | None = None,
) -> Filled:
    return Filled(
        kind=kind,
        path=re.compile(path),
        why=why,
        value=None if value is None else re.compile(value),
        of_type=None if of_type is None else re.compile(of_type),
        when=when,
    )


_DEV = r"^devices/[^/]+"


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
    return _filled(
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
    _filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]$",
        "q35: one pcie-root-port per PCIe device plus one spare, added at define",
        when=_libvirts_root_ports,
    ),
    _filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/model$",
        "a PCI controller's model name is its model",
        when=_model_name_is_model,
    ),
    _filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/target/@chassis$",
        "a pcie-root-port's chassis is its index",
        when=_kept_root_port_chassis,
    ),
    _filled(
        _D, r"^devices/controller\[type=pci,index=[1-9][0-9]*\]/target/@port$",
        "a pcie-root-port's port is its slot and function, assigned with its address",
        when=_kept_root_port_port,
    ),
    _filled(
        _D, r"^devices/input\[#\d+\]$", "x86 guests get a PS/2 mouse and keyboard",
        when=_shaped("<input type='mouse' bus='ps2'/>", "<input type='keyboard' bus='ps2'/>"),
    ),
    _filled(
        _D, r"^devices/serial\[#0\]$",
        "a console with a serial target gets a serial device of its own type",
        when=_console_mirrors,
    ),
    _filled(
        _D, r"^devices/console\[#0\]/target/@type$", "an x86 console's target is the serial port",
        value="serial", when=_first_console,
    ),
    _filled(
        _D, r"^devices/graphics\[#\d+\]/@(port|autoport)$",
        "VNC without a port: port='-1' autoport='yes' (any free port at start)",
        when=_vnc_autoport,
    ),
    _filled(
        _D, r"^devices/graphics\[#\d+\]/listen$",
        "the <listen> element libvirt writes for the listen attribute (or its default)",
        when=_listen_mirror,
    ),
    _filled(
        _D, r"^devices/audio\[#0\]$",
        "one audio backend is added: spice with SPICE graphics, else none",
        when=_default_audio,
    ),
    _filled(
        _D, r"^devices/video\[#0\]$", "graphics without a video device get a cirrus card",
        when=_default_video,
    ),
    _filled(
        _D, r"^devices/video\[#0\]/model/@heads$", "one head is the default", value="1",
        when=_x86,
    ),
    _filled(
        _D, r"^devices/video\[#0\]/model/@primary$", "the only video card is the primary one",
        value="yes", when=_only_video,
    ),
    *(
        _filled(
            _D, rf"^devices/video\[#\d+\]/model/@{attr}$", f"the model's default {attr} size",
            when=_video_memory_default(attr),
        )
        for attr in ("ram", "vram", "vgamem")
    ),
    _filled(
        _D, r"^devices/memballoon\[#0\]$", "a virtio balloon is added to every guest",
        when=_shaped("<memballoon model='virtio'/>"),
    ),
    _filled(
        _D, r"^cpu$", "with no <cpu>, a TCG/KVM x86 guest gets libvirt's qemu64 model",
        when=_shaped(_DEFAULT_CPU),
    ),
    _filled(
        _D, r"^cpu/@match$", "'exact' is the default for a custom model", value="exact",
        when=_custom_cpu,
    ),
    _filled(
        _D, r"^cpu/model/@fallback$", "'allow' is the default for a named model", value="allow",
        when=_custom_cpu,
    ),
    _filled(
        _D, r"^cpu/@check$", "the check libvirt picks for the CPU mode",
        when=_cpu_check_default,
    ),
    _filled(
        _D, r"^cpu/@migratable$", "a host-passthrough CPU is migratable by default",
        value="on", when=_passthrough,
    ),
    _filled(
        _D, r"^clock$",
        "a guest clock is UTC unless it says otherwise (only the bare element: with timers,"
        " the schema wants the offset)",
        when=_shaped("<clock offset='utc'/>"),
    ),
    _filled(
        _D, r"^currentMemory$", "the balloon starts at the full memory",
        when=_current_is_memory,
    ),
    _filled(
        _D, r"^os/boot$", "with no boot order anywhere, libvirt boots from the disk",
        when=_default_boot,
    ),
)  # fmt: skip

FILLED: tuple[Filled, ...] = (
    _filled(Kind.DOMAIN, r"^uuid$", "generated at define; a redefine keeps the live one"),
    _filled(Kind.DOMAIN, r"^@id$", "the running domain's id"),
    _filled(
        Kind.DOMAIN,
        _DEV + r"/address$",
        "bus addresses are assigned at define (an ISA iobase is the device's own choice)",
        of_type="pci|drive|virtio-serial|ccid|usb|spapr-vio|ccw|virtio-mmio|unassigned",
    ),
    _filled(Kind.DOMAIN, _DEV + r"/alias$", "device aliases are assigned at start"),
    _filled(Kind.DOMAIN, r"^devices/emulator\[#0\]$", "the host's default emulator binary"),
    _filled(
        Kind.DOMAIN,
        r"^devices/controller\[type=pci,index=0\]$",
        "the PCI root (pci-root / pcie-root) comes with the machine type",
    ),
    _filled(Kind.DOMAIN, r"^vcpu/@placement$", "'static' is the default", value="static"),
    _filled(Kind.DOMAIN, r"^on_poweroff$", "'destroy' is the default", value="destroy"),
    _filled(Kind.DOMAIN, r"^on_reboot$", "'restart' is the default", value="restart"),
    _filled(Kind.DOMAIN, r"^on_crash$", "'destroy' is the default", value="destroy"),
    _filled(
        Kind.DOMAIN,
        r"^devices/console\[#\d+\]/target/@port$",
        "console ports are numbered by libvirt, and renumbered when the domain starts",
    ),
    _filled(Kind.DOMAIN, r"^seclabel(\[#\d+\])?$", "security labels are assigned at start"),
    _filled(Kind.NETWORK, r"^uuid$", "generated at define"),
    _filled(Kind.NETWORK, r"^@connections$", "the number of attached interfaces (live state)"),
    _filled(Kind.STORAGE_POOL, r"^uuid$", "generated at define"),
    _filled(Kind.STORAGE_POOL, r"^(capacity|allocation|available)$", "measured by libvirt"),
    _filled(Kind.VOLUME, r"^key$", "derived from the path"),
    _filled(Kind.VOLUME, r"^@type$", "derived from the pool type"),
    _filled(Kind.VOLUME, r"^(allocation|physical)$", "measured by libvirt"),
    _filled(Kind.VOLUME, r"^source$", "extents of disk/logical volumes, measured by libvirt"),
    _filled(Kind.VOLUME, r"^target/path$", "the pool's target path plus the volume name"),
    _filled(Kind.VOLUME, r"^target/(permissions|timestamps)$", "read from the file"),
    _filled(
        Kind.VOLUME,
        r"^backingStore/(?!path$|format$)[^/]+$",
        "details of the backing file, read from it",
    ),
    *QEMU_DEFAULTS,
)


def is_filled(kind: Kind, path: str, value: str, element: etree._Element | None = None) -> bool:
    """Whether ``path`` (``value``; ``element``: the element at the path, for an
    attribute the element owning it) is something libvirt fills in by itself."""
    return any(rule.matches(kind, path, value, element) for rule in FILLED)


def owner(flat: Flat, path: str) -> etree._Element | None:
    """The element at ``path``; for an attribute path, the element owning it."""
    if path.startswith("@"):
        return _root(flat)
    return flat.elements.get(path.rpartition("/@")[0] if "/@" in path else path)


def _root(flat: Flat) -> etree._Element | None:
    first = next(iter(flat.elements.values()), None)
    return None if first is None else first.getroottree().getroot()


def filled_paths(flat: Flat, kind: Kind) -> list[str]:
    """The paths of ``flat`` that libvirt fills in by itself, all judged on the
    document as it is (leaving one out never changes the verdict on another)."""
    return [
        path
        for path, value in flat.values.items()
        if is_filled(kind, path, value, owner(flat, path))
    ]


# --- values libvirt rewrites into an equivalent form ------------------------------

_MACHINE_ALIASES = {"q35": "pc-q35-", "pc": "pc-i440fx-"}


def _same_machine(desired: str, live: str) -> bool:
    prefix = _MACHINE_ALIASES.get(desired)
    return prefix is not None and live.startswith(prefix)


def _same_capacity(desired: str, live: str) -> bool:
    # Formats round a capacity up (qcow2 to 512 bytes); a larger live value
    # within that rounding is the same size.
    try:
        d, v = int(desired), int(live)
    except ValueError:
        return False
    return d <= v < d + 512 and v % 512 == 0


def _checked_cpu(desired: str, live: str) -> bool:
    # A running domain reports check='full' once QEMU has checked its CPU,
    # whatever the definition says.
    return live == "full" and desired in ("none", "partial")


def _auto_port(desired: str, live: str) -> bool:
    # port='-1' (autoport) in a definition; a running domain shows the port it got.
    return desired == "-1" and live.isdigit()


EQUIVALENT: list[tuple[Kind, re.Pattern[str], Callable[[str, str], bool]]] = [
    (Kind.DOMAIN, re.compile(r"^devices/graphics\[[^/]*\]/@(port|tlsPort|websocket)$"), _auto_port),
    (Kind.DOMAIN, re.compile(r"^os/type/@machine$"), _same_machine),
    (Kind.DOMAIN, re.compile(r"^cpu/@check$"), _checked_cpu),
    (Kind.VOLUME, re.compile(r"^capacity$"), _same_capacity),
]


def equivalent(kind: Kind, path: str, desired: str | None, live: str | None) -> bool:
    """Whether a desired and a live value mean the same."""
    if desired == live:
        return True
    if desired is None or live is None:
        return False
    return any(k is kind and rx.match(path) and same(desired, live) for k, rx, same in EQUIVALENT)


# --- keeping IMPLIED values when what implies them changes --------------------------


def keep_implied(path: str, el: etree._Element) -> None:
    """Before the text at ``path`` changes, write out the attributes it implies
    (``IMPLIED``), so they keep their value: ``<vcpu>1</vcpu>`` becoming 8 must
    stay ``current='1'``, not become 8 running vCPUs."""
    for (_, implied), source in IMPLIED.items():
        attr = implied.removeprefix(source + "/@")
        if source == path and attr != implied and el.get(attr) is None and el.text:
            el.set(attr, el.text.strip())


# --- children libvirt derives from an attribute ----------------------------------

# (kind, attribute path, child tag): libvirt writes ``<graphics listen='A'>``
# with a ``<listen type='address' address='A'/>`` child and refuses a definition
# where the two disagree. When the attribute changes, the children are stale:
# they go, and libvirt derives them again from the new value.
DERIVED_CHILDREN: list[tuple[Kind, re.Pattern[str], str]] = [
    (Kind.DOMAIN, re.compile(r"^devices/graphics\[[^/]*\]/@listen$"), "listen"),
]


def drop_derived(path: str, el: etree._Element) -> None:
    """Remove the children of ``el`` derived from the attribute at ``path``."""
    for _, rx, tag in DERIVED_CHILDREN:
        if rx.match(path):
            for child in el.findall(tag):
                el.remove(child)
