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
* ``keep_implied`` and ``DERIVED_CHILDREN``: what a redefine (``diff.apply_changes``)
  must write out or drop so libvirt reads it as meant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lxml import etree

from reconciler import ownership, units
from reconciler.model import Kind
from reconciler.render import identity

Fields = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Flat:
    """A flattened document: values by path, and the element behind each path."""

    values: Fields
    elements: dict[str, etree._Element]


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


def _normalise_attr(name: str, value: str) -> str:
    if name == "address" and re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", value):
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

    def walk(el: etree._Element, path: str) -> None:
        tag = str(el.tag)
        text, unit_folded = _normalise_text(kind, tag, el)
        values[path] = text if len(el) == 0 or text else ""
        elements[path] = el
        for name, value in sorted((str(k), str(v)) for k, v in el.attrib.items()):
            if unit_folded and name == "unit":
                continue
            if (id(el), name) in skipped_attrs:
                continue
            apath = f"{path}/@{name}"
            if any(h.match(apath) for h in HIDDEN):
                continue
            values[apath] = _normalise_attr(name, value)
        for key, child in _child_keys(kind, path.rsplit("/", 1)[-1] if path else "", el):
            if id(child) in skipped:
                continue
            walk(child, f"{path}/{key}" if path else key)

    # The root itself is implicit: its attributes live at "@attr", children at "tag".
    for name, value in sorted((str(k), str(v)) for k, v in root.attrib.items()):
        if (id(root), name) not in skipped_attrs:
            values[f"@{name}"] = _normalise_attr(name, value)
    for key, child in _child_keys(kind, "", root):
        if id(child) in skipped:
            continue
        walk(child, key)
    for (k, path), source in IMPLIED.items():
        if k is kind and path not in values and source in values:
            values[path] = values[source]
    for rule in _DERIVED.get(kind, ()):
        rule(values, elements)
    return Flat(values=values, elements=elements)


# Attributes libvirt leaves out when they equal another value: (kind, path) -> the
# path whose value they then have. ``<vcpu current='2'>2</vcpu>`` reads back as
# ``<vcpu>2</vcpu>``; both flatten to the same fields.
IMPLIED: dict[tuple[Kind, str], str] = {
    (Kind.DOMAIN, "vcpu/@current"): "vcpu",
}


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
    ``value``, or only for an element whose ``type`` attribute matches ``of_type``."""

    kind: Kind
    path: re.Pattern[str]
    why: str
    value: re.Pattern[str] | None = None
    of_type: re.Pattern[str] | None = None

    def matches(
        self, kind: Kind, path: str, value: str, element: etree._Element | None = None
    ) -> bool:
        if kind is not self.kind or self.path.match(path) is None:
            return False
        if self.value is not None and self.value.fullmatch(value) is None:
            return False
        if self.of_type is not None:
            return (
                element is not None and self.of_type.fullmatch(element.get("type", "")) is not None
            )
        return True


def _filled(
    kind: Kind, path: str, why: str, value: str | None = None, of_type: str | None = None
) -> Filled:
    return Filled(
        kind=kind,
        path=re.compile(path),
        why=why,
        value=None if value is None else re.compile(value),
        of_type=None if of_type is None else re.compile(of_type),
    )


_DEV = r"^devices/[^/]+"
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
)


def is_filled(kind: Kind, path: str, value: str, element: etree._Element | None = None) -> bool:
    """Whether ``path`` (``value``; for an element path, ``element``) is something
    libvirt fills in by itself."""
    return any(rule.matches(kind, path, value, element) for rule in FILLED)


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
