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
*rewrites*; each such rule lives here, in ``NORMALISERS`` and ``EQUIVALENT``,
with a test in ``tests/unit/test_canonical.py``.
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
    fill_implied(values, kind)
    return Flat(values=values, elements=elements)


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


EQUIVALENT: list[tuple[Kind, re.Pattern[str], Callable[[str, str], bool]]] = [
    (Kind.DOMAIN, re.compile(r"^os/type/@machine$"), _same_machine),
    (Kind.VOLUME, re.compile(r"^capacity$"), _same_capacity),
]


def equivalent(kind: Kind, path: str, desired: str | None, live: str | None) -> bool:
    """Whether a desired and a live value mean the same."""
    if desired == live:
        return True
    if desired is None or live is None:
        return False
    return any(k is kind and rx.match(path) and same(desired, live) for k, rx, same in EQUIVALENT)


# --- values libvirt leaves out when they equal another field ----------------------

# (kind, path, source): an absent ``path`` has the value of ``source``, as for
# libvirt, which writes ``<vcpu current='2'>2</vcpu>`` as ``<vcpu>2</vcpu>``.
# Both sides are filled in, so the two spellings compare equal and the
# running vCPU count is always a value to compare.
IMPLIED: list[tuple[Kind, str, str]] = [
    (Kind.DOMAIN, "vcpu/@current", "vcpu"),
]


def fill_implied(values: Fields, kind: Kind) -> None:
    """Add the ``IMPLIED`` values a document leaves out (in place)."""
    for k, path, source in IMPLIED:
        if k is kind and path not in values and source in values:
            values[path] = values[source]


def keep_implied(path: str, el: etree._Element) -> None:
    """Before the text at ``path`` changes, write out the attributes it implies,
    so they keep their value (``<vcpu>1</vcpu>`` -> 8 must stay current='1')."""
    for _, implied, source in IMPLIED:
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
