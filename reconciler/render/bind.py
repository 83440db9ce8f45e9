"""Stage 3 of the pipeline (render) and its reverse (export): one declaration per field.

virt-manager's ``virtinst`` declares each XML property once
(``XMLProperty("./driver/@cache")``) and both builds and parses XML with it.
This module is that idea for manifests: each kind's module (``render/<kind>.py``)
holds one ``Table`` of declarations, and

* ``render`` walks the table to build the friendly XML of a spec,
* ``export`` walks the same table to read the friendly fields back from XML,
* ``reconciler.fields`` reads it for the plan's wording (field name, unit),
* ``kinds/<kind>.py`` reads each field's ``live`` capability,
* ``tests/unit/test_fields.py`` checks it against the schema and the docs.

A declaration says where the value lives in the XML (``at``: element path, an
attribute as ``@name``, a child selected by an attribute as
``feature[@name=secure-boot]``), how it converts (``Conv``), its default, how a
running object takes a change (``Live``) and, for lists, which element each item
is and what identifies it. The values an export reads are checked against the
kind's JSON Schema (``reconciler/schemas/<Kind>.json``): an enum or a pattern is
declared there once, never copied here. Fields that no declaration can say (a
disk's source union, vCPUs with a maximum) are ``Custom``, with their own two
directions side by side.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lxml import etree

from reconciler import units
from reconciler.render.xmlutil import xml_value

Spec = dict[str, Any]


class Unit(enum.StrEnum):
    """How a field's XML value is written in a manifest (for the plan's wording)."""

    PLAIN = "plain"  # as libvirt writes it
    KIB = "KiB"  # a size in KiB (memory) -> "2GiB"
    BYTES = "bytes"  # a size in bytes (capacity) -> "10GiB"


class Live(enum.StrEnum):
    """How a running object takes a change to a field."""

    NEXT_START = "next start"  # redefine; the running object keeps the old value
    MEMORY = "setMemory"  # the balloon, up to the running maximum
    VCPUS = "setVcpus"  # the vCPU count, up to the running maximum
    METADATA = "setMetadata"  # title, description
    DEVICE = "attachDevice/detachDevice"  # a whole device added or removed
    UPDATE = "updateDeviceFlags"  # a part of a device changed in place


# --- converters ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Conv:
    """Between a manifest value and its XML text; ``read`` raises ValueError for a
    value the manifest cannot say."""

    name: str
    write: Callable[[Any], str | None]
    read: Callable[[str, etree._Element], Any]
    unit: Unit = Unit.PLAIN
    # Attributes the element gets beside the value (``unit='KiB'``).
    attrs: Mapping[str, str] = field(default_factory=dict)


def _text(value: str, _el: etree._Element) -> str:
    return value


def _int(value: str, _el: etree._Element) -> int:
    return int(value.strip())


def _yes_no(value: str, _el: etree._Element) -> bool:
    return {"yes": True, "no": False}[value]


def _on_off(value: str, _el: etree._Element) -> bool:
    return {"on": True, "off": False}[value]


def _scaled(default_unit: str) -> Callable[[str, etree._Element], str]:
    def read(value: str, el: etree._Element) -> str:
        return units.format_size(
            units.libvirt_scaled(value, el.get("unit"), default_unit=default_unit)
        )

    return read


TEXT = Conv(name="text", write=str, read=_text)
INT = Conv(name="int", write=str, read=_int)
YES_NO = Conv(name="yes/no", write=xml_value, read=_yes_no)
ON_OFF = Conv(name="on/off", write=lambda v: "on" if v else "off", read=_on_off)
MAC = Conv(name="MAC", write=lambda v: str(v).lower(), read=lambda v, _el: v.lower())
KIB = Conv(
    name="size (KiB)",
    write=lambda v: str(units.size_kib(v)),
    read=_scaled("KiB"),
    unit=Unit.KIB,
    attrs={"unit": "KiB"},
)
BYTES = Conv(
    name="size (bytes)",
    write=lambda v: str(units.parse_size(v)),
    read=_scaled("bytes"),
    unit=Unit.BYTES,
    attrs={"unit": "bytes"},
)
# The element's presence: ``<readonly/>`` is ``readonly: true``.
FLAG = Conv(name="flag", write=lambda v: "", read=lambda _v, _el: True)


# --- declarations ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Prop:
    """One friendly field: manifest ``key`` (dotted inside its object) <-> XML ``at``."""

    key: str
    at: str
    conv: Conv = TEXT
    # Rendered when the manifest does not say (and there is no complete document).
    default: Any = None
    # Export leaves the field out when it has the default value.
    implied: bool = False
    # A list of scalars: one element per value (``<boot dev=.../>``).
    repeated: bool = False
    live: Live = Live.NEXT_START
    # The flattened XML path(s) of the field for the plan's wording (a regex,
    # relative to its item); None: derived from ``at``.
    flat: str | None = None
    # False: written by its item's ``render_item`` (a NIC's derived MAC), read here.
    rendered: bool = True


class Unsayable(Exception):
    """Raised by a custom export: the XML says something the manifest cannot (the
    item stays in the overlay; a top-level field is left out)."""


# Whether the plan names a field for a manifest: the dotted keys the manifest
# must set (all of them), or a test of the spec.
Given = tuple[str, ...] | Callable[[Mapping[str, Any]], bool]
# A custom field's wording: (field name, flattened XML path regex, given[, live]);
# without a live of its own, the field's.
Word = tuple[str, str, Given] | tuple[str, str, Given, Live]


@dataclass(frozen=True, kw_only=True)
class Custom:
    """A field that needs its own code, declared here so render, export, the plan's
    wording and the docs still find it.

    ``render(parent, value, ctx)`` and ``export(parent, ctx) -> value or None``
    (may raise ``Unsayable``); with ``whole``, both take and give the whole spec
    (``{"vcpus": 2, "maxVcpus": 8}``) instead of the value of ``key``. ``key``
    None: not a manifest field, only XML the friendly fields imply (SPICE's
    ``autoport``). ``words``: (field name, flattened XML path regex, given) for
    the plan's wording; ``also``: the other manifest keys it covers.
    """

    key: str | None
    render: Callable[[etree._Element, Any, Context], None]
    export: Callable[[etree._Element, Context], Any]
    whole: bool = False
    also: tuple[str, ...] = ()
    words: tuple[Word, ...] = ()
    live: Live = Live.NEXT_START
    unit: Unit = Unit.PLAIN


class Rule(enum.StrEnum):
    """Which items of a list export friendly when some cannot."""

    # The leading items that fit; the first that does not and all after it stay
    # in the overlay, which appends them after the friendly ones (order kept).
    LEADING = "leading"
    # All items or none.
    ALL = "all"


@dataclass(frozen=True, kw_only=True)
class Items:
    """A list of objects: one ``at`` element per item, its fields inside it."""

    key: str
    at: str
    fields: tuple[Prop | Custom, ...]
    # The flattened path regex of one item; its group ``key`` is the item's identity.
    flat: str
    # The manifest's name of the item from (object name, spec, the identity);
    # None: the plan names the list (``ip.dhcp.hosts``), not an item.
    item_name: ItemName | None
    rule: Rule = Rule.LEADING
    # Whole items added or removed on a running object.
    live: Live = Live.NEXT_START
    # Runs before the fields: attributes and children that come first (the
    # disk's type, a NIC's MAC and source), and the item's own check on export
    # (``export_item`` returns False: the item cannot be said friendly).
    render_item: Callable[[etree._Element, Mapping[str, Any], int, Context], None] | None = None
    export_item: Callable[[etree._Element, Spec, Context], bool] | None = None
    # A field that identifies the item: two items with the same value end the list.
    unique: str | None = None
    # The plan names only the item (``consoles[0]``), not its fields.
    whole: bool = False


ItemName = Callable[[str, Mapping[str, Any], str], str | None]


Decl = Prop | Custom | Items


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a walk knows besides the values: the object's name, whether defaults
    apply (no complete document), MACs several domains share (export)."""

    name: str
    defaults: bool = True
    shared_macs: Collection[str] = ()


@dataclass(frozen=True, kw_only=True)
class Table:
    """The friendly fields of one kind, in output order."""

    kind: str  # the schema's name: Domain, Network, ...
    root: str
    fields: tuple[Decl, ...]
    # Elements made with fixed content when a field first needs them:
    # path -> (text, attributes), e.g. ``os/type`` -> ("hvm", {}).
    made: Mapping[str, tuple[str | None, Mapping[str, str]]] = field(default_factory=dict)
    # Children made with an element, path -> child paths (a ``<tpm>`` always
    # has its ``<backend>``).
    always: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Root children to write before the fields (name first).
    name_first: bool = True
    # Rules between fields that export keeps (boot or kernel, not both): takes
    # the exported spec and the XML, leaves out what cannot stand together.
    agree: Callable[[Spec, etree._Element], None] | None = None

    def walk(self) -> Iterable[tuple[str, Decl, Items | None]]:
        """Every declaration with its manifest path (list items as ``key[]``)."""
        for decl in self.fields:
            for key in keys(decl):
                yield key, decl, None
            if isinstance(decl, Items):
                for sub in decl.fields:
                    for key in keys(sub):
                        yield f"{decl.key}[].{key}", sub, decl


def keys(decl: Decl) -> tuple[str, ...]:
    """The manifest keys a declaration covers."""
    if isinstance(decl, Custom):
        return ((decl.key,) if decl.key else ()) + decl.also
    return (decl.key,)


# --- paths -------------------------------------------------------------------------------

_STEP = re.compile(
    r"^(?P<tag>[A-Za-z_][\w.-]*)(\[@(?P<attr>[\w-]+)(?P<op>!?=)(?P<value>[^\]]+)\])?$"
)


def _steps(at: str) -> tuple[list[tuple[str, tuple[str, str] | None]], str | None]:
    """``a/b[@x=y]/@c`` -> ([("a", None), ("b", ("x", "y"))], "c"); ``[@x!=y]``
    (an element without x='y') is ("x", "!y")."""
    parts = at.split("/")
    attr = parts.pop()[1:] if parts[-1].startswith("@") else None
    steps: list[tuple[str, tuple[str, str] | None]] = []
    for part in parts:
        m = _STEP.match(part)
        if m is None:
            raise ValueError(f"bad field path {at!r}")
        negate = "!" if m["op"] == "!=" else ""
        pred = (m["attr"], negate + m["value"]) if m["attr"] else None
        steps.append((m["tag"], pred))
    return steps, attr


def _matches(el: etree._Element, tag: str, pred: tuple[str, str] | None) -> bool:
    if el.tag != tag or pred is None:
        return el.tag == tag
    if pred[1].startswith("!"):
        return pred[1][1:] not in (el.get(pred[0]), el.get("__pred__" + pred[0]))
    return pred[1] in (el.get(pred[0]), el.get("__pred__" + pred[0]))


def _holder_path(at: str) -> str:
    """The path of the element holding ``at``'s repeated elements (``dns`` of
    ``dns/forwarder/@addr``)."""
    parts = [p for p in at.split("/") if not p.startswith("@")]
    return "/".join(parts[:-1])


def find(parent: etree._Element, at: str) -> etree._Element | None:
    """The element ``at`` names (without its attribute), first match at each step."""
    steps, _ = _steps(at)
    el: etree._Element | None = parent
    for tag, pred in steps:
        if el is None:
            return None
        el = next((c for c in el if _matches(c, tag, pred)), None)
    return el


def _make(
    parent: etree._Element, at: str, table: Table, base: str, *, new: bool = False
) -> etree._Element:
    """The element ``at`` names, made (with ``table.made`` content) where missing;
    ``new``: always a new last element (a list's item)."""
    steps, _ = _steps(at)
    el = parent
    path = base
    for i, (tag, pred) in enumerate(steps):
        path = f"{path}/{tag}" if path else tag
        last = i == len(steps) - 1
        found = None if (new and last) else next((c for c in el if _matches(c, tag, pred)), None)
        if found is None:
            found = etree.SubElement(el, tag)
            text, attrs = table.made.get(path, (None, {}))
            for k, v in attrs.items():
                found.set(k, v)
            if text is not None:
                found.text = text
            if pred is not None and not pred[1].startswith("!"):
                # after the value's own attribute (``enabled`` before ``name``)
                found.attrib.pop(pred[0], "")
                found.set("__pred__" + pred[0], pred[1])
            for child in table.always.get(path, ()):
                _make(found, child, table, path)
        el = found
    return el


def _finish_preds(root: etree._Element) -> None:
    for el in root.iter():
        for name in [n for n in el.attrib if str(n).startswith("__pred__")]:
            value = el.attrib.pop(name)
            el.set(str(name)[len("__pred__") :], value)


def get(spec: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted ``key`` of ``spec``, None when absent."""
    node: Any = spec
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def put(spec: Spec, key: str, value: Any) -> None:
    parts = key.split(".")
    node = spec
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# --- render ------------------------------------------------------------------------------


def render(table: Table, spec: Mapping[str, Any], ctx: Context) -> etree._Element:
    """The friendly XML of ``spec``: every declared field the manifest sets (and the
    defaults, with ``ctx.defaults``), in the table's order."""
    root = etree.Element(table.root)
    if table.name_first:
        etree.SubElement(root, "name").text = ctx.name
    _render_fields(root, table, table.fields, spec, ctx, table.root)
    _finish_preds(root)
    return root


def _render_fields(
    parent: etree._Element,
    table: Table,
    decls: Sequence[Prop | Custom | Items],
    spec: Mapping[str, Any],
    ctx: Context,
    base: str,
) -> None:
    for decl in decls:
        if isinstance(decl, Custom):
            value = spec if decl.whole or decl.key is None else get(spec, decl.key)
            if value is not None:
                decl.render(parent, value, ctx)
            continue
        value = get(spec, decl.key)
        if isinstance(decl, Items):
            for i, item in enumerate(value or ()):
                el = _make(parent, decl.at, table, _rel(base), new=True)
                item_base = f"{base}/{decl.at}"
                if decl.render_item is not None:
                    decl.render_item(el, item, i, ctx)
                _render_fields(el, table, decl.fields, item, ctx, item_base)
            continue
        if value is None and ctx.defaults:
            value = decl.default
        if value is None or not decl.rendered:
            continue
        _render_prop(parent, table, decl, value, base)


def _rel(base: str) -> str:
    return base.split("/", 1)[1] if "/" in base else ""


def _render_prop(parent: etree._Element, table: Table, prop: Prop, value: Any, base: str) -> None:
    _, attr = _steps(prop.at)
    if prop.conv is FLAG:
        if value:
            _make(parent, prop.at, table, _rel(base))
        return
    for v in list(value) if prop.repeated else [value]:
        text = prop.conv.write(v)
        if text is None:  # a value that is no XML (``forward: none``)
            continue
        el = _make(parent, prop.at, table, _rel(base), new=prop.repeated)
        if attr is None:
            el.text = text
            for k, a in prop.conv.attrs.items():
                el.set(k, a)
        else:
            el.set(attr, text)


# --- export ------------------------------------------------------------------------------


def export(table: Table, root: etree._Element, ctx: Context) -> Spec:
    """The friendly fields ``root`` says, each checked against the kind's schema:
    a value the schema refuses is left to the overlay."""
    out: Spec = {}
    for decl in table.fields:
        if isinstance(decl, Items):
            items = _export_items(table, decl, root, ctx)
            if items:
                put(out, decl.key, items)
            continue
        try:
            value = _export_field(table, decl, root, ctx)
        except Unsayable:
            continue
        if isinstance(decl, Custom) and (decl.whole or decl.key is None):
            for key, v in (value or {}).items():
                if valid(table.kind, key, v):
                    put(out, key, v)
        elif value is not None and valid(table.kind, decl.key or "", value):
            put(out, decl.key or "", value)
    # A group (``ip``, ``cpu``) that the schema refuses as a whole (a required
    # part missing) stays in the overlay whole.
    for key in list(out):
        if not valid(table.kind, key, out[key]):
            del out[key]
    if table.agree is not None:
        table.agree(out, root)
    ordered: Spec = _in_schema_order(subschema(table.kind, ""), out)
    return ordered


def _in_schema_order(schema: Mapping[str, Any] | None, value: Any) -> Any:
    """``value`` with its keys in the order the schema lists them (how a person
    writes a manifest: a disk's target first), lists item by item."""
    if schema is None:
        return value
    if isinstance(value, list):
        items = schema.get("items")
        return [_in_schema_order(items if isinstance(items, dict) else None, v) for v in value]
    if not isinstance(value, dict):
        return value
    props = schema.get("properties") or {}
    keys = [k for k in props if k in value] + [k for k in value if k not in props]
    return {k: _in_schema_order(props.get(k), value[k]) for k in keys}


def _export_field(table: Table, decl: Prop | Custom, parent: etree._Element, ctx: Context) -> Any:
    if isinstance(decl, Custom):
        return decl.export(parent, ctx)
    steps, attr = _steps(decl.at)
    if decl.repeated:
        *head, (tag, pred) = steps
        holder = find(parent, _holder_path(decl.at)) if head else parent
        if holder is None:
            return None
        raw = [c.get(attr) if attr else c.text for c in holder if _matches(c, tag, pred)]
        if not raw or any(r is None for r in raw):
            return None
        try:
            return [decl.conv.read(str(r), holder) for r in raw]
        except (ValueError, KeyError):
            return None
    el = find(parent, decl.at)
    if el is None or _lacks_made(table, el):
        return None
    if decl.conv is FLAG:
        return True
    text = el.get(attr) if attr else (el.text or "").strip() or None
    if text is None:
        return None
    try:
        value = decl.conv.read(text, el)
    except (ValueError, KeyError):
        return None
    if decl.implied and value == decl.default:
        return None
    return value


def _export_items(table: Table, decl: Items, root: etree._Element, ctx: Context) -> list[Spec]:
    steps, _ = _steps(decl.at)
    *head, (tag, pred) = steps
    holder = find(root, _holder_path(decl.at)) if head else root
    if holder is None:
        return []
    out: list[Spec] = []
    for el in holder:
        if not _matches(el, tag, pred):
            continue
        item: Spec = {}
        fits = decl.export_item(el, item, ctx) if decl.export_item is not None else True
        for sub in decl.fields:
            if not fits:
                break
            if isinstance(sub, Items):
                continue
            try:
                value = _export_field(table, sub, el, ctx)
            except Unsayable:
                fits = False
                break
            if value is not None and sub.key is not None:
                put(item, sub.key, value)
            elif isinstance(sub, Prop) and value is None and _unread(table, sub, el):
                fits = False  # there, but not something the manifest can say
        fits = fits and valid(table.kind, f"{decl.key}[]", item)
        if fits and decl.unique and any(o.get(decl.unique) == item.get(decl.unique) for o in out):
            fits = False
        if not fits:
            if decl.rule is Rule.ALL:
                return []
            break
        out.append(item)
    return out


def _lacks_made(table: Table, el: etree._Element) -> bool:
    """Whether ``el`` or an element above it lacks an attribute render always
    writes there (``table.made``: a ``<driver>`` without ``name='qemu'``): the
    field cannot be said, as the overlay can change an attribute but not remove one."""
    node: etree._Element | None = el
    while node is not None and node.getparent() is not None:
        path = "/".join(str(a.tag) for a in reversed([node, *node.iterancestors()][:-1]))
        _, attrs = table.made.get(path, (None, {}))
        if any(k not in node.attrib for k in attrs):
            return True
        node = node.getparent()
    return False


def _unread(table: Table, prop: Prop, el: etree._Element) -> bool:
    """Whether the XML has a value for ``prop`` that export could not read (a
    default left out on purpose, or a value under an element render would write
    otherwise, is not that: the overlay keeps it)."""
    found = find(el, prop.at)
    if found is None or _lacks_made(table, found):
        return False
    _, attr = _steps(prop.at)
    raw = found.get(attr) if attr else (found.text or "").strip()
    if not raw:
        return False
    if prop.implied:
        return prop.default is None or raw != prop.conv.write(prop.default)
    return True


# --- the schema --------------------------------------------------------------------------


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    text = resources.files("reconciler").joinpath(f"schemas/{kind}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def subschema(kind: str, key: str) -> dict[str, Any] | None:
    """The schema of one spec field (``disks[].bus``, ``cpu.mode``), None when unknown."""
    node: Any = _schema(kind)["properties"]["spec"]
    for part in re.split(r"\.|(?=\[\])", key) if key else ():
        if part == "[]":
            node = node.get("items") if isinstance(node, dict) else None
        else:
            props = node.get("properties") if isinstance(node, dict) else None
            node = props.get(part) if isinstance(props, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


@functools.cache
def _validator(kind: str, key: str) -> Any:
    sub = subschema(kind, key)
    if sub is None:
        return None
    import jsonschema  # on first use (see manifests._validator)

    whole = _schema(kind)
    cls = jsonschema.validators.validator_for(whole)
    return cls({**sub, "$defs": whole.get("$defs", {})})


def valid(kind: str, key: str, value: Any) -> bool:
    """Whether the schema takes ``value`` for the spec field ``key``."""
    validator = _validator(kind, key)
    return validator is None or bool(validator.is_valid(value))
