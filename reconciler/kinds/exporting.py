"""Helpers the kinds' exporters share: libvirt XML values read back as friendly fields (pure)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from lxml import etree

from reconciler import units
from reconciler.observed import Observed

Spec = dict[str, Any]

TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")
BRIDGE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
NAME = re.compile(r"^(?![\s\S]*[\x00-\x1f\x7f/])(?!\.\.?$)[\s\S]{1,200}$")
IP = re.compile(r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)$")


def size(nbytes: int) -> str:
    """Bytes as a manifest size in the largest exact binary unit (``2GiB``)."""
    return units.format_size(nbytes)


def scaled(el: etree._Element | None, default_unit: str) -> int | None:
    if el is None or not (el.text or "").strip():
        return None
    try:
        return units.libvirt_scaled(el.text or "", el.get("unit"), default_unit=default_unit)
    except ValueError:
        return None


def token(value: str | None) -> bool:
    return TOKEN.match(value or "") is not None


def absolute(value: str | None) -> bool:
    return bool(value) and str(value).startswith("/")


def to_int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def typed(root: etree._Element, types: Collection[str]) -> Spec:
    """A spec starting with the root's ``type``, when the schema knows it."""
    return {"type": root.get("type")} if root.get("type") in types else {}


def active_state(obs: Observed) -> Spec:
    """``state`` (active/inactive) and ``autostart`` of a network or pool."""
    return {"state": "active" if obs.state == "active" else "inactive", "autostart": obs.autostart}
