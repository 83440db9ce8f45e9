"""Stage 5 of the pipeline: what differs between desired and live fields (pure).

The comparison is three-way (like kubectl's last-applied annotation): every
path the manifest sets is compared; a path we applied last time that the
manifest no longer sets is removed; anything else on the host is libvirt's or
someone else's and is left alone. Disks and interfaces are an exception: the
manifest owns the whole set of them, so a device attached behind our back is
drift too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from reconciler import canonical
from reconciler.model import Kind

_OWNED_SETS = re.compile(r"^devices/(disk|interface)\[[^/]*\]$")


@dataclass(frozen=True, kw_only=True)
class FieldChange:
    """One differing path. ``old``/``new`` None: absent on that side."""

    path: str
    old: str | None
    new: str | None

    @property
    def is_element(self) -> bool:
        return "/@" not in self.path and not self.path.startswith("@")

    @property
    def added(self) -> bool:
        return self.old is None

    @property
    def removed(self) -> bool:
        return self.new is None


def diff_fields(
    kind: Kind,
    desired: canonical.Flat,
    live: canonical.Flat,
    applied: Iterable[str] = (),
) -> list[FieldChange]:
    """Field-level changes that turn ``live`` into ``desired`` (collapsed per element)."""
    changes: list[FieldChange] = []
    for path, new in desired.values.items():
        old = live.values.get(path)
        if not canonical.equivalent(kind, path, new, old):
            changes.append(FieldChange(path=path, old=old, new=new))
    stale = set(applied) - desired.values.keys()
    if kind is Kind.DOMAIN:
        stale |= {p for p in live.values if _OWNED_SETS.match(p)} - desired.values.keys()
    kept: list[str] = []
    for path in sorted(stale):  # an element sorts before the paths inside it
        if path not in live.values or any(path.startswith(k + "/") for k in kept):
            continue
        old = live.values[path]
        if canonical.is_filled(kind, path, old, canonical.owner(live, path)):
            # libvirt would put exactly this back by itself (a default the manifest
            # used to spell out): removing the field from the manifest changes nothing.
            kept.append(path)
            continue
        changes.append(FieldChange(path=path, old=old, new=None))
    return collapse(changes)


def collapse(changes: list[FieldChange]) -> list[FieldChange]:
    """Drop changes inside an element that is itself added or removed."""
    whole = sorted(c.path for c in changes if c.is_element and (c.added or c.removed))
    kept = []
    for change in changes:
        if any(change.path.startswith(p + "/") for p in whole if p != change.path):
            continue
        kept.append(change)
    return sorted(kept, key=lambda c: c.path)


def element_xml(el: etree._Element) -> str:
    """A compact one-line form of an element, for showing added/removed elements."""
    copy = etree.fromstring(etree.tostring(el))
    for node in copy.iter():
        if node.tail is not None:
            node.tail = None
        if node.text is not None and not node.text.strip():
            node.text = None
    return etree.tostring(copy, encoding="unicode", with_tail=False)


def apply_changes(
    target: canonical.Flat,
    desired: canonical.Flat,
    changes: Iterable[FieldChange],
) -> None:
    """Apply changes onto ``target``'s tree in place (it keeps everything else).

    This is how a redefine keeps the live UUID, MACs, addresses and whatever
    libvirt filled in: we start from the live document and change only the
    differing paths.
    """
    changes = list(changes)
    root = _root_of(target)
    for change in sorted(changes, key=lambda c: c.path.count("/")):
        path = change.path
        if change.is_element:
            parent_path = canonical.split_path(path)[0]
            if change.removed:
                el = target.elements.get(path)
                if el is not None and el.getparent() is not None:
                    el.getparent().remove(el)  # type: ignore[union-attr]
                continue
            if change.added or path not in target.elements:
                parent = target.elements.get(parent_path) if parent_path else root
                if parent is None:
                    parent = _ensure_path(root, target, desired, parent_path)
                template = desired.elements.get(path)
                if template is None:  # an implied value (canonical.IMPLIED)
                    new_el = etree.Element(re.sub(r"\[.*\]$", "", canonical.split_path(path)[1]))
                    new_el.text = change.new
                else:
                    new_el = etree.fromstring(etree.tostring(template))
                new_el.tail = None
                parent.append(new_el)
                target.elements[path] = new_el
                continue
            el = target.elements[path]
            canonical.keep_implied(path, el)
            el.text = change.new
            # The value is canonical (KiB for memory, bytes for capacities):
            # write it with that unit, whatever unit the manifest used.
            template = desired.elements.get(path)
            if (template is not None and template.get("unit") is not None) or el.get(
                "unit"
            ) is not None:
                el.set("unit", "bytes" if el.tag in ("capacity", "allocation") else "KiB")
            continue
        el_path, _, attr = path.rpartition("/@")
        if path.startswith("@"):
            el, attr = root, path[1:]
        else:
            found = target.elements.get(el_path)
            el = found if found is not None else _ensure_path(root, target, desired, el_path)
        if change.new is None:
            if attr in el.attrib:
                del el.attrib[attr]
        else:
            el.set(attr, change.new)
        canonical.drop_derived(path, el)


def _root_of(flat: canonical.Flat) -> etree._Element:
    for el in flat.elements.values():
        return el.getroottree().getroot()
    raise ValueError("empty document")


def _ensure_path(
    root: etree._Element, target: canonical.Flat, desired: canonical.Flat, path: str
) -> etree._Element:
    """Create the (empty) elements along ``path`` that the target lacks."""
    if not path:
        return root
    existing = target.elements.get(path)
    if existing is not None:
        return existing
    parent_path = canonical.split_path(path)[0]
    parent = _ensure_path(root, target, desired, parent_path)
    template = desired.elements.get(path)
    last = canonical.split_path(path)[1]
    tag = template.tag if template is not None else re.sub(r"\[.*\]$", "", last)
    el = etree.SubElement(parent, tag)
    if template is not None:
        # Identity attributes come along so the element is the one we mean.
        for name, value in template.attrib.items():
            el.set(name, value)
    target.elements[path] = el
    return el
