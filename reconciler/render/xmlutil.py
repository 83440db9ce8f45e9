"""Stage 3 of the pipeline (render): safe XML parsing, output and the overlay merge.

Every XML string that comes from a user (``spec.xml``) goes through
``parse_xml``: no DTDs, no entities, no network, bounded size. ``to_string``
is the one serialisation, so rendered XML is byte-for-byte deterministic.
``merge_overlay`` implements SPEC §1's overlay rule: elements matched by tag
path, devices by identity (``identity.py``), attributes overwrite.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Mapping, Sequence

from lxml import etree

from reconciler.render import identity

MAX_XML_BYTES = 1 << 20

_DECLARATION = re.compile(r"<!(DOCTYPE|ENTITY)\b")


class XMLInputError(ValueError):
    """User-supplied XML that we refuse: malformed, too big, or with a DTD/entities.

    ``line`` is the line inside the XML text (1-based) when known.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(message)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_blank_text=True,
        remove_comments=True,
        remove_pis=True,
        encoding="utf-8",
    )


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def parse_xml(text: str, *, what: str = "xml", max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse user-supplied XML safely; raise ``XMLInputError`` for anything we refuse."""
    if not isinstance(text, str):
        raise XMLInputError(f"{what}: expected a string of XML, got {type(text).__name__}")
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise XMLInputError(f"{what}: {len(data)} bytes is more than the limit of {max_bytes}")
    # Refuse DTDs before parsing: with no DTD there is nothing to expand (billion
    # laughs) and nothing external to fetch (XXE), whatever the parser would do.
    m = _DECLARATION.search(text)
    if m:
        line = _line_of(text, m.start())
        raise XMLInputError(
            f"{what}: line {line}: <!{m.group(1)}> declarations are not allowed", line=line
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        lineno: int | None = e.lineno or None
        where = f"line {lineno}: " if lineno else ""
        raise XMLInputError(f"{what}: {where}{e.msg}", line=lineno) from None
    if root is None:
        raise XMLInputError(f"{what}: no XML element found")
    tree = root.getroottree()
    # Belt and braces: the text scan above should have caught these already.
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise XMLInputError(f"{what}: DOCTYPE declarations are not allowed")
    for node in root.iter(etree.Entity):  # (filtered by lxml, not a Python loop)
        at = node.sourceline if isinstance(node.sourceline, int) else None
        raise XMLInputError(f"{what}: line {at}: entity references are not allowed", line=at)
    return root


def to_string(el: etree._Element) -> str:
    """Pretty, deterministic unicode XML (two-space indent, trailing newline)."""
    el = copy.deepcopy(el)
    etree.indent(el, space="  ")
    el.tail = None
    return etree.tostring(el, encoding="unicode", pretty_print=True)


# Where an element the base lacks goes: libvirt's own element order per parent
# (tag path from the root). Tags not listed go after their last same-tag
# sibling, or at the end.
CHILD_ORDER: Mapping[str, Sequence[str]] = {
    path: tuple(tags.split())
    for path, tags in {
        "domain": """name uuid genid title description metadata maxMemory memory currentMemory
            blkiotune memtune memoryBacking vcpu vcpus iothreads iothreadids defaultiothread
            cputune numatune resource sysinfo bootloader bootloader_args os idmap features cpu
            clock on_poweroff on_reboot on_crash on_lockfailure pm perf devices seclabel keywrap
            launchSecurity""",
        "domain/os": """type firmware init initarg initenv initdir inituser initgroup loader
            nvram kernel initrd cmdline dtb acpi boot bootmenu smbios bios""",
        "domain/devices": """emulator disk controller lease filesystem interface smartcard
            serial parallel console channel input tpm graphics sound audio video hostdev
            redirdev redirfilter hub watchdog memballoon rng panic shmem memory iommu vsock
            crypto""",
        "network": """name uuid title description metadata forward bridge mtu mac domain dns
            vlan bandwidth ip route virtualport portgroup""",
        "network/ip": "tftp dhcp",
        "network/ip/dhcp": "range host bootp",
        "pool": "name uuid capacity allocation available features source target",
        "pool/source": """device dir host adapter name initiator auth vendor product format
            protocol""",
        "volume": "name key source capacity allocation physical target backingStore",
    }.items()
}


def _source_line(el: etree._Element) -> int | None:
    line = el.sourceline
    return line if isinstance(line, int) else None


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _keyed(parent: etree._Element, *, devices: bool) -> list[tuple[str, etree._Element]]:
    if devices:
        return identity.device_keys(parent)
    seen: dict[str, int] = {}
    out: list[tuple[str, etree._Element]] = []
    for child in _children(parent):
        n = seen.get(str(child.tag), 0)
        seen[str(child.tag)] = n + 1
        out.append((identity.positional_key(child, n), child))
    return out


def insert_child(parent: etree._Element, child: etree._Element, path: str) -> None:
    """Insert ``child`` where libvirt would put it (``CHILD_ORDER[path]``), else at the end."""
    existing = _children(parent)
    order = CHILD_ORDER.get(path, ())
    tag = str(child.tag)
    if tag in order:
        rank = order.index(tag)
        for sibling in existing:
            stag = str(sibling.tag)
            if stag in order and order.index(stag) > rank:
                sibling.addprevious(child)
                return
    same = [s for s in existing if s.tag == child.tag]
    if same:
        same[-1].addnext(child)
    else:
        parent.append(child)


def merge_overlay(
    base: etree._Element, overlay: etree._Element, *, replace: Collection[str] = ()
) -> None:
    """Merge ``overlay`` into ``base`` in place (SPEC §1 overlay merge).

    Elements are matched by tag path (the N-th ``<boot>`` of the overlay with the
    N-th ``<boot>`` of the base); children of ``<devices>`` by identity
    (``identity.device_key``), and an overlay device with no identity of its own
    (an interface without a MAC) by its position among devices of its tag.
    Attributes overwrite; text overwrites when the overlay's is not blank;
    unmatched overlay elements are deep-copied into base where libvirt orders
    them. ``replace`` names tag paths (``"domain/vcpu"``) whose matched base
    element is swapped for the overlay's instead of merged.
    """
    if base.tag != overlay.tag:
        raise XMLInputError(f"cannot merge <{overlay.tag}> into <{base.tag}>")
    _merge(base, overlay, str(base.tag), frozenset(replace))


def _merge(
    base: etree._Element, overlay: etree._Element, path: str, replace: frozenset[str]
) -> None:
    for name, value in overlay.attrib.items():
        base.set(name, value)
    if overlay.text is not None and overlay.text.strip():
        base.text = overlay.text
    devices = base.tag == "devices"
    index: dict[str, etree._Element] = {}
    for key, el in _keyed(base, devices=devices):
        index.setdefault(key, el)
    positions: dict[str, etree._Element] = {}
    if devices:
        for key, el in _keyed(base, devices=False):
            positions.setdefault(key, el)
    seen: dict[str, int] = {}
    for key, child in _keyed(overlay, devices=devices):
        n = seen.get(str(child.tag), 0)
        seen[str(child.tag)] = n + 1
        target = index.get(key)
        if target is None and devices and key == identity.positional_key(child, n):
            target = positions.get(key)
        child_path = f"{path}/{child.tag}"
        if target is None:
            insert_child(base, copy.deepcopy(child), path)
        elif child_path in replace:
            target.addnext(copy.deepcopy(child))
            base.remove(target)
        else:
            _merge(target, child, child_path, replace)


# --- helpers shared by the per-kind renderers ---------------------------------

AttrValue = str | int | bool


def xml_value(value: AttrValue) -> str:
    """A manifest scalar as libvirt writes it: booleans as yes/no, numbers in decimal."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def sub(
    parent: etree._Element, tag: str, text: AttrValue | None = None, **attrs: AttrValue | None
) -> etree._Element:
    """Append ``<tag attr=...>text</tag>`` to ``parent``; ``None`` attributes are left out."""
    el = etree.SubElement(parent, tag)
    for name, value in attrs.items():
        if value is not None:
            el.set(name, xml_value(value))
    if text is not None:
        el.text = xml_value(text)
    return el


def require(present: bool, field: str, need: str, document: str) -> None:
    """Refuse a rendered object that lacks what libvirt needs: neither the friendly
    ``field`` nor ``spec.xml`` gave it (``spec.FIELD: message`` names the field)."""
    if not present:
        raise ValueError(
            f"{field}: {need}: set {field} or give a complete {document} document in spec.xml"
        )


def is_full_document(overlay: etree._Element) -> bool:
    """A ``spec.xml`` with a ``<name>`` child is a complete document, not an overlay."""
    return overlay.find("name") is not None


def combine(
    name: str,
    xml: str | None,
    root_tag: str,
    render_friendly: Callable[[bool], etree._Element],
    *,
    replace: Collection[str] = (),
    remove: Collection[str] = (),
) -> etree._Element:
    """Join the friendly-field rendering with ``spec.xml`` (SPEC §1).

    * no ``xml``: the friendly rendering, with defaults;
    * an overlay (no ``<name>``): merged over the friendly rendering with defaults;
    * a complete document (has ``<name>``): the friendly fields that are *given*
      (``render_friendly(False)``: no defaults) are merged over it, with the tag
      paths in ``replace`` swapped whole and the root children in ``remove`` dropped
      first, so friendly fields override the document.

    ``<name>`` is always ``name`` (metadata.name).
    """
    if xml is None:
        root = render_friendly(True)
    else:
        given = parse_xml(xml, what="spec.xml")
        if given.tag != root_tag:
            raise XMLInputError(
                f"spec.xml: the root element must be <{root_tag}>, not <{given.tag}>",
                line=_source_line(given),
            )
        if is_full_document(given):
            doc_name = (given.findtext("name") or "").strip()
            if doc_name != name:
                raise XMLInputError(
                    f"spec.xml: the document's <name> is {doc_name!r} but metadata.name is "
                    f"{name!r}; they must be equal",
                    line=_source_line(given.find("name")),  # type: ignore[arg-type]
                )
            root = given
            for child in _children(root):
                if child.tag in remove:
                    root.remove(child)
            merge_overlay(root, render_friendly(False), replace=replace)
        else:
            root = render_friendly(True)
            merge_overlay(root, given)
    name_el = root.find("name")
    if name_el is None:
        name_el = etree.Element("name")
        insert_child(root, name_el, root_tag)
    name_el.text = name
    return root
