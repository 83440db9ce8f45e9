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
    return f"controller[type={ctype},index={el.get('index', '0')}]"


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


def derive_mac(domain: str, interface: str) -> str:
    """A stable MAC for a NIC without one: ``52:54:00:`` + sha256("DOMAIN/NAME")[:3]."""
    digest = hashlib.sha256(f"{domain}/{interface}".encode()).hexdigest()
    return "52:54:00:" + ":".join(digest[i : i + 2] for i in (0, 2, 4))
