"""Stage 5/6 of the pipeline (diff -> plan): changes named in the manifest's language.

The planner compares flattened XML paths (``canonical``); a person reads the
manifest. Each kind's field table (``render.<kind>.FIELDS``, every field
declared once with ``render.bind``) says which friendly field each XML path
belongs to and in which unit the manifest writes its value; ``FIELDS`` here is
that table compiled for matching flattened paths, so a plan says
``memory: 1GiB → 2GiB`` and ``disks[vdb].format: qcow2 → raw`` instead of
``memory: 1048576 → 2097152`` and ``devices/disk[target=vdb]/driver/@type``.

A change gets a field only when the manifest itself sets that field (a value
from ``spec.xml``, an overlay or a complete document, keeps its XML path and no
field: SPEC §4 "field": null for overlay-only changes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import render, units
from reconciler.model import Kind
from reconciler.render import bind
from reconciler.render.bind import Live, Unit

__all__ = [
    "FIELDS", "SETTINGS", "Described", "Field", "Live", "Unit", "declared", "describe",
    "field_at", "show",
]  # fmt: skip


Spec = Mapping[str, Any]
# The manifest's own key for a repeated element (object name, spec, the identity).
ItemKey = Callable[[str, Spec, str], str | None]


@dataclass(frozen=True, kw_only=True)
class Field:
    """One friendly field as the plan names it: its manifest path
    (``disks[{key}].format``), the flattened XML path(s) it renders to (a regex;
    the group ``key`` names the item), its unit, how a running object takes it."""

    name: str
    path: re.Pattern[str]
    unit: Unit = Unit.PLAIN
    # For fields inside a list: how to find the item.
    item: ItemKey | None = None
    # Whether the manifest sets this field (default: the top-level key is present).
    given: Callable[[Spec], bool] | None = None
    live: Live = Live.NEXT_START


def _has(*path: str) -> Callable[[Spec], bool]:
    def given(spec: Spec) -> bool:
        node: Any = spec
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return False
            node = node[key]
        return True

    return given


def _given(given: bind.Given) -> Callable[[Spec], bool]:
    return given if callable(given) else _has(*given)


_ELEMENT = r"(\[[^/]*\])?"  # an element's identity in a flattened path (``[#1]``, ``[start=…]``)


def _derived(prop: bind.Prop) -> str:
    """The flattened path regex of a declared property: every element may carry
    its identity; a property of an element also names the element (added whole)."""
    if prop.flat is not None:
        return prop.flat
    steps = prop.at.split("/")
    attr = steps.pop() if steps[-1].startswith("@") else None
    elements = "/".join(re.escape(re.sub(r"\[.*\]$", "", s)) + _ELEMENT for s in steps)
    if attr is None:
        return elements
    return f"{elements}(/{re.escape(attr)})?" if elements else re.escape(attr)


def _compile(kind: Kind) -> tuple[Field, ...]:
    out: list[Field] = []
    table = render.RENDERERS[kind][1]

    def add(decl: bind.Prop | bind.Custom, items: bind.Items | None) -> None:
        prefix = f"{items.key}[{{key}}]." if items and items.item_name else ""
        head = f"^{items.flat}/" if items else "^"
        item = items.item_name if items else None
        if isinstance(decl, bind.Custom):
            for name, flat, given, *live in decl.words:
                out.append(
                    Field(
                        name=prefix + name, path=re.compile(f"{head}{flat}$"), unit=decl.unit,
                        item=item, given=None if items else _given(given),
                        live=live[0] if live else decl.live,
                    )
                )  # fmt: skip
            return
        out.append(
            Field(
                name=prefix + decl.key, path=re.compile(f"{head}{_derived(decl)}$"),
                unit=decl.conv.unit, item=item,
                given=None if items else _has(*decl.key.split(".")), live=decl.live,
            )
        )  # fmt: skip

    for decl in table.fields:
        if isinstance(decl, bind.Items):
            whole = f"^{decl.flat}" + ("(/.*)?$" if decl.whole else "$")
            name = f"{decl.key}[{{key}}]" if decl.item_name else decl.key
            given = None if decl.item_name else _has(*decl.key.split("."))
            out.append(
                Field(name=name, path=re.compile(whole), item=decl.item_name, given=given,
                      live=decl.live)
            )  # fmt: skip
            if not decl.whole:
                for sub in decl.fields:
                    if not isinstance(sub, bind.Items):
                        add(sub, decl)
        else:
            add(decl, None)
    return tuple(out)


class _Compiled(Mapping[Kind, tuple[Field, ...]]):
    """Each kind's fields, compiled on first use: a run without changes needs none
    (compiling every pattern costs tens of milliseconds at start-up)."""

    def __init__(self) -> None:
        self._done: dict[Kind, tuple[Field, ...]] = {}

    def __getitem__(self, kind: Kind) -> tuple[Field, ...]:
        if kind not in render.RENDERERS:
            raise KeyError(kind)
        found = self._done.get(kind)
        if found is None:  # two threads may both compile: the same, one kept
            found = self._done.setdefault(kind, _compile(kind))
        return found

    def __iter__(self) -> Iterator[Kind]:
        return iter(render.RENDERERS)

    def __len__(self) -> int:
        return len(render.RENDERERS)


FIELDS: Mapping[Kind, tuple[Field, ...]] = _Compiled()


# Friendly fields that are not libvirt XML (where the object lives, how it is
# managed), and leaves whose XML belongs to a field above (``disks[].source.file``
# is part of ``disks[].source``, a disk's ``target`` is its identity): declared
# here so that schema, this table and docs/manifests.md are checked against each
# other (tests/unit/test_fields.py).
SETTINGS: Mapping[Kind, frozenset[str]] = {
    Kind.DOMAIN: frozenset(
        {
            "host", "placement", "state", "autostart", "updateStrategy", "ignoreDifferences",
            "xml", "disks[].target", "interfaces[].name", "kernel", "cpu",
            "cloudInit", "keepState",
        }
    ),
    Kind.NETWORK: frozenset({"host", "state", "autostart", "xml", "ip", "dns"}),
    Kind.STORAGE_POOL: frozenset({"host", "state", "autostart", "xml", "source"}),
    Kind.VOLUME: frozenset({"host", "pool", "prune", "xml", "backingStore", "source"}),
    Kind.SECRET: frozenset({"host", "value"}),
}  # fmt: skip


def declared(kind: Kind) -> frozenset[str]:
    """Every field name of ``kind`` this module knows, list items as ``[]``."""
    table = render.RENDERERS[kind][1] if kind in render.RENDERERS else None
    names = {name for name, _decl, _items in table.walk()} if table else set()
    # A group is declared with its fields (``cpu`` with ``cpu.mode``).
    groups = {n.rsplit(".", k)[0] for n in names for k in range(1, n.count(".") + 1)}
    return frozenset(names | groups) | SETTINGS.get(kind, frozenset())


def field_at(kind: Kind, path: str) -> Field | None:
    """The declared field a flattened XML path belongs to (None: only ``spec.xml`` has it)."""
    return next((f for f in FIELDS.get(kind, ()) if f.path.match(path)), None)


@dataclass(frozen=True, kw_only=True)
class Described:
    """A change in the manifest's language: its field (None: only ``spec.xml`` says
    it) and its old and new values in the manifest's units."""

    field: str | None
    old: str | None
    new: str | None


def describe(
    kind: Kind, name: str, spec: Spec, path: str, old: str | None, new: str | None
) -> Described:
    """The manifest field of one changed XML ``path`` and its values in manifest units."""
    matched: Field | None = None
    for f in FIELDS.get(kind, ()):
        m = f.path.match(path)
        if m is None:
            continue
        matched = matched or f
        if f.item is not None:
            key = f.item(name, spec, m.group("key"))
            if key is not None:
                return _described(f, f.name.format(key=key), old, new)
            continue
        top = f.name.split(".", 1)[0]
        if f.given(spec) if f.given is not None else top in spec:
            return _described(f, f.name, old, new)
    if matched is not None:
        return _described(matched, None, old, new)
    return Described(field=None, old=old, new=new)


def _described(f: Field, name: str | None, old: str | None, new: str | None) -> Described:
    return Described(field=name, old=show(f.unit, old), new=show(f.unit, new))


def show(unit: Unit, value: str | None) -> str | None:
    """A flattened value as the manifest writes it."""
    if value is None or unit is Unit.PLAIN or not value.isdigit():
        return value
    factor = 1024 if unit is Unit.KIB else 1
    return units.format_size(int(value) * factor)
