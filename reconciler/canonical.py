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
*rewrites*. Each kind declares its rules once, in its home beside its friendly
fields (``COMPARE``, a ``render.rules.Rules``, in ``render/<kind>.py``; the
domain's in ``render/domain_rules.py``), and this module applies them through
``render.RULES``, keeping only the kind-agnostic walk; the tables below,
keyed by kind, are views of them. Each rule has a unit test
(``tests/unit/test_canonical.py``, ``tests/unit/test_export.py``):

* ``identity``/``children`` (``IDENTITY``): repeated elements keyed by identity;
* ``scaled`` and ``_normalise_attr``: units and MAC case;
* ``implied`` (``IMPLIED``): attributes libvirt leaves out when they equal another
  value (``<vcpu current='2'>2</vcpu>`` reads back as ``<vcpu>2</vcpu>``);
* ``derived``: what a document means, stated the same for desired, inactive and
  live XML (a pflash loader is ``firmware='efi'``; an empty drive has no format);
* ``generated`` and ``kept_by_hosts`` (``GENERATED``, ``KEPT_BY_HOSTS``): what a
  document may state that libvirt generates, and what only the test driver drops;
* ``equivalent`` (``EQUIVALENT``): a desired value and the value libvirt shows for
  it (``q35`` is ``pc-q35-7.2``, ``port='-1'`` is the port a running domain got, ...);
* ``filled`` (``FILLED``): what libvirt fills in by itself, which ``export`` leaves
  out; ``QEMU_DEFAULTS`` (part of the domain's): the defaults the QEMU driver adds;
* ``keep_implied`` and ``derived_children`` (``DERIVED_CHILDREN``): what a redefine
  (``diff.apply_changes``) must write out or drop so libvirt reads it as meant.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from lxml import etree

from reconciler import cache, ownership, render, units
from reconciler.model import Kind
from reconciler.render import domain_rules
from reconciler.render.rules import Filled, Rules

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


# --- the rules, declared per kind (``render.RULES``: ``COMPARE`` beside each kind's
# ``FIELDS``); the tables below are views of them, keyed by kind ------------------

_NO_RULES = Rules()


def rules(kind: Kind) -> Rules:
    """The comparison rules of ``kind`` (none for a kind without XML)."""
    return render.RULES.get(kind, _NO_RULES)


# Identity of repeated, non-device elements (devices: ``render.identity``).
IDENTITY: dict[tuple[Kind, str], Callable[[etree._Element], str | None]] = {
    (k, tag): key for k, r in render.RULES.items() for tag, key in r.identity.items()
}

# Elements whose text is a scaled size: canonical unit and default unit.
_SCALED: dict[tuple[Kind, str], tuple[int, str]] = {
    (k, tag): rule for k, r in render.RULES.items() for tag, rule in r.scaled.items()
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
    keyed = rules(kind).children.get(parent_path)
    if keyed is not None:
        yield from keyed(parent)
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
    scaled = rules(kind).scaled

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
    for rule in rules(kind).derived:
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
GENERATED: tuple[tuple[Kind, re.Pattern[str], Callable[[Fields, str], bool], str], ...] = tuple(
    (k, rx, test, why) for k, r in render.RULES.items() for rx, test, why in r.generated
)

# What the test driver's parser drops that a real host's driver keeps: compared
# as the document writes it. (kind, path, why).
KEPT_BY_HOSTS: tuple[tuple[Kind, re.Pattern[str], str], ...] = tuple(
    (k, rx, why) for k, r in render.RULES.items() for rx, why in r.kept_by_hosts
)

# Attributes libvirt leaves out when they equal another value: (kind, path) -> the
# path whose value they then have. ``<vcpu current='2'>2</vcpu>`` reads back as
# ``<vcpu>2</vcpu>``; both flatten to the same fields.
IMPLIED: dict[tuple[Kind, str], str] = {
    (k, path): source for k, r in render.RULES.items() for path, source in r.implied.items()
}


def implied_by(kind: Kind, path: str) -> str | None:
    """The path whose value ``path`` takes when the document does not state it."""
    return IMPLIED.get((kind, path))


# --- values libvirt fills in by itself -------------------------------------------
#
# A manifest that does not set these gets them from libvirt; a manifest that
# does set them is compared on them like on anything else (``diff`` compares
# only the paths the manifest determines). ``export`` leaves them out, so an
# exported manifest says what the user chose, not what libvirt derived, and
# the same manifest applies to another host. One rule per value, with why
# (``Rules.filled`` of each kind; the domain's in ``render.domain_rules``).

QEMU_DEFAULTS: tuple[Filled, ...] = domain_rules.QEMU_DEFAULTS
FILLED: tuple[Filled, ...] = tuple(f for r in render.RULES.values() for f in r.filled)


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

EQUIVALENT: list[tuple[Kind, re.Pattern[str], Callable[[str, str], bool]]] = [
    (k, rx, same) for k, r in render.RULES.items() for rx, same in r.equivalent
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
    (k, rx, tag) for k, r in render.RULES.items() for rx, tag in r.derived_children
]


def drop_derived(path: str, el: etree._Element) -> None:
    """Remove the children of ``el`` derived from the attribute at ``path``."""
    for _, rx, tag in DERIVED_CHILDREN:
        if rx.match(path):
            for child in el.findall(tag):
                el.remove(child)
