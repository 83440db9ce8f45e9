"""Sizes with binary units, shared by manifest validation and rendering.

Manifests give sizes as strings with a binary unit (``2GiB``, ``512 MiB``);
bare numbers and decimal units are errors because libvirt (KiB for memory,
bytes for capacity) and Terraform (MiB) read bare numbers differently.
Durations (``120s``, ``1m30s``, ``500ms``) live here too: one parser for
manifests and command-line options alike.
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

# A bare number of seconds, or one or more NUMBER+UNIT parts (``1h30m``, ``1m30s``,
# ``1.5s``, ``500ms``), as Go's time.ParseDuration reads them (hours at most).
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^\s*([0-9]+|([0-9]+(\.[0-9]+)?\s*(ms|s|m|h)\s*)+)\s*$"
_DURATION = re.compile(DURATION_PATTERN)


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
    """``"120s"`` / ``"1m30s"`` / ``"500ms"`` / ``30`` (seconds) -> seconds."""
    if isinstance(text, int):
        return float(text)
    if not _DURATION.match(text):
        raise ValueError(
            f"duration {text!r}: use a number of seconds or numbers with ms, s, m or h "
            "(e.g. '120s', '1m30s')"
        )
    if text.strip().isdigit():
        return float(text)
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def size_hint(text: str) -> str | None:
    """What a size with libvirt's or a decimal unit means in binary units, as advice.

    ``"2G"`` -> ``"did you mean 2GiB?"``; ``"2 GB"`` -> ``"decimal units are
    refused: 2GB is 1.86GiB; did you mean 2GiB?"``. None when there is no
    sensible reading (no number, an unknown unit).
    """
    m = _LOOSE_SIZE.match(text) if isinstance(text, str) else None
    if not m:
        return None
    number, unit = m.group(1), m.group(2)
    lower = unit.lower()
    if lower not in _LIBVIRT_FACTORS or lower in ("b", "bytes"):
        return None
    rank = _RANKS.index(lower[0])
    binary = _BINARY_NAMES[min(rank, len(_BINARY_NAMES) - 1)]
    if lower.endswith("b") and not lower.endswith("ib"):
        exact = float(number) * 1000 ** (rank + 1) / (1 << (10 * (rank + 1)))
        return (
            f"decimal units are refused: {number}{unit.upper()} is {exact:.3g}{binary}; "
            f"did you mean {_binary(number, rank)}?"
        )
    return f"did you mean {_binary(number, rank)}?"


_LOOSE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
_RANKS = "kmgtpe"
_BINARY_NAMES = ("KiB", "MiB", "GiB", "TiB")


def _binary(number: str, rank: int) -> str:
    """``number`` units of 1024**(rank+1) bytes in the largest binary unit that is whole."""
    total = float(number) * (1 << (10 * (rank + 1)))
    for i in range(len(_BINARY_NAMES) - 1, -1, -1):
        step = 1 << (10 * (i + 1))
        if total >= step and total % step == 0:
            return f"{int(total // step)}{_BINARY_NAMES[i]}"
    return f"{int(total)}B"


def format_size(nbytes: int) -> str:
    """Bytes as a manifest size in the largest exact binary unit (``2GiB``)."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return f"{nbytes}B"
