"""Sizes with binary units, shared by manifest validation and rendering.

Manifests give sizes as strings with a binary unit (``2GiB``, ``512 MiB``);
bare numbers and decimal units are errors because libvirt (KiB for memory,
bytes for capacity) and Terraform (MiB) read bare numbers differently.
Durations (``120s``, ``5m``) live here too.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)\s*$")
_FACTORS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
SIZE_PATTERN = r"^\s*[0-9]+\s*(B|KiB|MiB|GiB|TiB)\s*$"

# libvirt's own unit names (memory/@unit, capacity/@unit), for canonicalising live XML.
_LIBVIRT_FACTORS = {
    "b": 1,
    "bytes": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 1000,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 1000**2,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 1000**3,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 1000**4,
    "p": 1 << 50,
    "pib": 1 << 50,
    "pb": 1000**5,
    "e": 1 << 60,
    "eib": 1 << 60,
    "eb": 1000**6,
}

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)?\s*$")
DURATION_PATTERN = r"^\s*[0-9]+\s*(ms|s|m|h)?\s*$"


def parse_size(text: str) -> int:
    """``"2GiB"`` -> bytes. Raises ValueError for anything but a binary-unit size."""
    m = _SIZE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"size {text!r} needs a binary unit: B, KiB, MiB, GiB or TiB (e.g. '2GiB')"
        )
    return int(m.group(1)) * _FACTORS[m.group(2)]


def size_kib(text: str) -> int:
    """A manifest size in KiB (libvirt's memory unit), rounded up."""
    return -(-parse_size(text) // 1024)


def libvirt_scaled(value: str, unit: str | None, *, default_unit: str) -> int:
    """A libvirt ``<x unit='...'>N</x>`` value in bytes."""
    factor = _LIBVIRT_FACTORS.get((unit or default_unit).lower())
    if factor is None:
        raise ValueError(f"unknown libvirt unit {unit!r}")
    return int(value.strip()) * factor


def parse_duration(text: str | int) -> float:
    """``"120s"`` / ``"5m"`` / ``30`` (seconds) -> seconds."""
    if isinstance(text, int):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"duration {text!r}: use a number with ms, s, m or h (e.g. '120s')")
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]


def format_size(nbytes: int) -> str:
    """Bytes as a manifest size in the largest exact binary unit (``2GiB``)."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return f"{nbytes}B"
