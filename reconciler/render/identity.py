"""Stage 3 of the pipeline (render): the device identity table.

A device is matched by what identifies it, never by where it sits: a disk by
its target, an interface by its MAC, a controller by type and index (as
virt-manager's ``Device.compare_device`` does). Devices without an identity in
the table fall back to ``TAG[#N]``, their position among siblings of the same
tag. The overlay merge (``xmlutil.merge_overlay``) and later the comparison of
desired and live XML use these keys. ``KEY_FUNCTIONS`` is a plain table so a
new device kind is one entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from lxml import etree

KeyFunction = Callable[[etree._Element, int], str]


def positional_key(el: etree._Element, position: int) -> str:
    """``TAG[#N]``: N-th sibling with this tag (0-based)."""
    return f"{el.tag}[#{position}]"


def _disk_key(el: etree._Element, position: int) -> str:
    dev = el.find("target")
    if dev is not None and dev.get("dev"):
        return f"disk[target={dev.get('dev')}]"
    return positional_key(el, position)


def _interface_key(el: etree._Element, position: int) -> str:
    mac = el.find("mac")
    address = mac.get("address") if mac is not None else None
    if address:
        return f"interface[mac={address.strip().lower()}]"
    return positional_key(el, position)


def _controller_key(el: etree._Element, position: int) -> str:
    ctype = el.get("type")
    if ctype is None:
        return positional_key(el, position)
    key = f"type={ctype},index={el.get('index', '0')}"
    master = el.find("master")
    if master is not None:
        # USB2 companions (ich9-uhciN) share their master's index; the start
        # port tells them apart.
        key += f",master={master.get('startport', '')}"
    return f"controller[{key}]"


KEY_FUNCTIONS: dict[str, KeyFunction] = {
    "disk": _disk_key,
    "interface": _interface_key,
    "controller": _controller_key,
}


def device_key(el: etree._Element, position: int) -> str:
    """The identity of one device element; ``position`` is its index among same-tag siblings."""
    return KEY_FUNCTIONS.get(str(el.tag), positional_key)(el, position)


def device_keys(devices_el: etree._Element) -> list[tuple[str, etree._Element]]:
    """``(key, element)`` for every child element of ``<devices>``, in document order."""
    seen: dict[str, int] = {}
    keys: list[tuple[str, etree._Element]] = []
    for child in devices_el:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        position = seen.get(child.tag, 0)
        seen[child.tag] = position + 1
        keys.append((device_key(child, position), child))
    return keys


def assign_controller_indexes(root: etree._Element) -> None:
    """Give every ``<controller>`` without ``index`` the one libvirt's parser gives it.

    libvirt first reserves the indexes the document states, then gives each
    controller without one, in document order, the lowest index of its type not
    yet used; a USB2 companion (with ``<master>``) gets its master's. Written
    out, controllers match the host's by ``type+index`` (their identity) instead
    of all colliding on index 0.
    """
    controllers = root.findall("devices/controller")
    used: dict[str, set[int]] = {}
    for el in controllers:
        index = _int(el.get("index"))
        if index is not None:
            used.setdefault(el.get("type", ""), set()).add(index)
    last: dict[str, str] = {}
    for el in controllers:
        ctype = str(el.get("type"))
        if el.get("index") is None and el.get("type") is not None:
            if el.find("master") is not None and ctype in last:
                el.set("index", last[ctype])  # a companion: its master's index
            else:
                el.set("index", str(_lowest_free(used.setdefault(ctype, set()))))
        last[ctype] = el.get("index", "0")


def _lowest_free(taken: set[int]) -> int:
    index = next(i for i in range(len(taken) + 1) if i not in taken)
    taken.add(index)
    return index


def _int(text: str | None) -> int | None:
    try:
        return int(text or "", 0)
    except ValueError:
        return None


def assign_macs(root: etree._Element, domain: str) -> None:
    """Give every ``<interface>`` without a MAC the one derived from its position
    (``nicN``, as a friendly interface without ``name``), so a document without
    MACs defines the same NICs on every apply instead of random ones."""
    for position, el in enumerate(root.findall("devices/interface")):
        mac = el.find("mac")
        if mac is not None and mac.get("address"):
            continue
        if mac is None:
            mac = etree.Element("mac")
            el.insert(0, mac)
        mac.set("address", derive_mac(domain, f"nic{position}"))


def uses_derived_macs(root: etree._Element, derived: set[str]) -> bool:
    """Whether any NIC of ``root`` has one of the ``derived`` MACs (else
    ``adopt_live_macs`` has nothing to do)."""
    return any(_mac_of(el) in derived for el in root.iterfind("devices/interface"))


def adopt_live_macs(root: etree._Element, live: etree._Element, derived: set[str]) -> None:
    """On a domain that exists, NICs whose MAC we derived from their position (the
    manifest names no MAC and no NIC name) take the MACs of the host's NICs that no
    desired NIC claims: the live MAC wins (SPEC, Identity), so adopting a domain
    defined from the same document never swaps its NICs. A NIC pairs with the
    first unclaimed one of the same type and source, else of the same type, in
    document order; one with neither stays new."""
    wanted = root.findall("devices/interface")
    desired_macs = {_mac_of(el) for el in wanted}
    live_nics = live.findall("devices/interface")
    live_macs = {_mac_of(el) for el in live_nics}
    free = [el for el in live_nics if _mac_of(el) and _mac_of(el) not in desired_macs]
    pending = [el for el in wanted if _mac_of(el) in derived and _mac_of(el) not in live_macs]
    for same in (_nic_signature, _nic_type):
        for el in pending[:]:
            match = next((f for f in free if same(f) == same(el)), None)
            mac_el = el.find("mac")
            if match is None or mac_el is None:
                continue
            mac_el.set("address", _mac_of(match))
            free.remove(match)
            pending.remove(el)


def _nic_type(el: etree._Element) -> str:
    return el.get("type", "")


def _nic_signature(el: etree._Element) -> tuple[str, tuple[tuple[str, str], ...]]:
    source = el.find("source")
    attrs = (
        tuple(sorted((str(k), str(v)) for k, v in source.attrib.items()))
        if source is not None
        else ()
    )
    return el.get("type", ""), attrs


def _mac_of(el: etree._Element) -> str:
    mac = el.find("mac")
    return (mac.get("address") or "").strip().lower() if mac is not None else ""


def derive_mac(domain: str, interface: str) -> str:
    """A stable MAC for a NIC without one: ``52:54:00:`` + sha256("DOMAIN/NAME")[:3]."""
    digest = hashlib.sha256(f"{domain}/{interface}".encode()).hexdigest()
    return "52:54:00:" + ":".join(digest[i : i + 2] for i in (0, 2, 4))
