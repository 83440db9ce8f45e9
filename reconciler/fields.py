"""Stage 5/6 of the pipeline (diff -> plan): changes named in the manifest's language.

The planner compares flattened XML paths (``canonical``); a person reads the
manifest. This table declares, per kind, which friendly field each XML path
belongs to and in which unit the manifest writes its value, so a plan says
``memory: 1GiB → 2GiB`` and ``disks[vdb].format: qcow2 → raw`` instead of
``memory: 1048576 → 2097152`` and ``devices/disk[target=vdb]/driver/@type``.

A change gets a field only when the manifest itself sets that field (a value
from ``spec.xml``, an overlay or a complete document, keeps its XML path and no
field: SPEC §4 "field": null for overlay-only changes).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import units
from reconciler.model import Kind
from reconciler.render import identity


class Unit(enum.StrEnum):
    """How a field's XML value is written in a manifest."""

    PLAIN = "plain"  # as libvirt writes it
    KIB = "KiB"  # a size in KiB (memory) -> "2GiB"
    BYTES = "bytes"  # a size in bytes (capacity) -> "10GiB"


Spec = Mapping[str, Any]
# The manifest's own key for a repeated element (object name, spec, the path's groups).
ItemKey = Callable[[str, Spec, Mapping[str, str]], str | None]


@dataclass(frozen=True, kw_only=True)
class Field:
    """One friendly field: its manifest path (``disks[{key}].format``), the
    flattened XML path(s) it renders to (a regex; groups name the item), its unit."""

    name: str
    path: re.Pattern[str]
    unit: Unit = Unit.PLAIN
    # For fields inside a list: the top-level key and how to find the item.
    item: ItemKey | None = None
    # Whether the manifest sets this field (default: the top-level key is present).
    given: Callable[[Spec], bool] | None = None


def _f(
    name: str,
    path: str,
    unit: Unit = Unit.PLAIN,
    item: ItemKey | None = None,
    given: Callable[[Spec], bool] | None = None,
) -> Field:
    return Field(name=name, path=re.compile(path), unit=unit, item=item, given=given)


def _disk(_name: str, spec: Spec, groups: Mapping[str, str]) -> str | None:
    target = groups["key"]
    return target if any(d.get("target") == target for d in spec.get("disks", ())) else None


def _nic(domain: str, spec: Spec, groups: Mapping[str, str]) -> str | None:
    """The manifest's name of the NIC with this MAC (its ``name``, else ``nicN``)."""
    mac = groups["key"].lower()
    for position, nic in enumerate(spec.get("interfaces", ())):
        name = str(nic.get("name", f"nic{position}"))
        if str(nic.get("mac", "")).lower() == mac or identity.derive_mac(domain, name) == mac:
            return name
    return None


def _position(key: str) -> ItemKey:
    def item(_name: str, spec: Spec, groups: Mapping[str, str]) -> str | None:
        n = int(groups["key"] or 0)
        return str(n) if n < len(spec.get(key, ())) else None

    return item


def _has(*path: str) -> Callable[[Spec], bool]:
    def given(spec: Spec) -> bool:
        node: Any = spec
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return False
            node = node[key]
        return True

    return given


_AT = r"^devices/{tag}\[#(?P<key>\d+)\](/.*)?$"
_DISK = r"^devices/disk\[target=(?P<key>[^\]]+)\]"
_NIC = r"^devices/interface\[mac=(?P<key>[^\]]+)\]"
_IP = r"^ip\[[^/]*\]"


def _dhcp(key: str) -> Callable[[Spec], bool]:
    return _has("ip", "dhcp", key)


def _source(key: str) -> Callable[[Spec], bool]:
    return _has("source", key)


def _backing(key: str) -> Callable[[Spec], bool]:
    return _has("backingStore", key)


FIELDS: Mapping[Kind, tuple[Field, ...]] = {
    Kind.DOMAIN: (
        _f("type", r"^@type$"),
        _f("memory", r"^memory$", Unit.KIB),
        _f("currentMemory", r"^currentMemory$", Unit.KIB),
        _f("vcpus", r"^vcpu/@current$", given=_has("vcpus")),
        _f("maxVcpus", r"^vcpu$", given=_has("maxVcpus")),
        _f("vcpus", r"^vcpu$", given=lambda s: "vcpus" in s and "maxVcpus" not in s),
        _f("arch", r"^os/type/@arch$"),
        _f("machine", r"^os/type/@machine$"),
        _f("firmware", r"^os/@firmware$"),
        _f("secureBoot", r"^os/firmware(/.*)?$"),
        _f("boot", r"^os/boot(\[#\d+\])?(/@dev)?$"),
        _f("kernel.path", r"^os/kernel$", given=_has("kernel")),
        _f("kernel.initrd", r"^os/initrd$", given=_has("kernel", "initrd")),
        _f("kernel.cmdline", r"^os/cmdline$", given=_has("kernel", "cmdline")),
        _f("cpu.mode", r"^cpu/@mode$", given=_has("cpu", "mode")),
        _f("cpu.model", r"^cpu/model$", given=_has("cpu", "model")),
        _f("disks[{key}]", _DISK + r"$", item=_disk),
        _f("disks[{key}].bus", _DISK + r"/target/@bus$", item=_disk),
        _f("disks[{key}].device", _DISK + r"/@device$", item=_disk),
        _f("disks[{key}].format", _DISK + r"/driver(/@type)?$", item=_disk),
        _f("disks[{key}].encryption", _DISK + r"/source/encryption(/.*)?$", item=_disk),
        _f("disks[{key}].source", _DISK + r"/(@type|source(/.*)?)$", item=_disk),
        _f("disks[{key}].readonly", _DISK + r"/readonly$", item=_disk),
        _f("disks[{key}].serial", _DISK + r"/serial$", item=_disk),
        _f("interfaces[{key}]", _NIC + r"$", item=_nic),
        _f("interfaces[{key}].network", _NIC + r"/source/@network$", item=_nic),
        _f("interfaces[{key}].bridge", _NIC + r"/source/@bridge$", item=_nic),
        _f("interfaces[{key}].model", _NIC + r"/model(/@type)?$", item=_nic),
        _f("interfaces[{key}].link", _NIC + r"/link(/@state)?$", item=_nic),
        _f("interfaces[{key}].mac", _NIC + r"/mac(/@address)?$", item=_nic),
        _f("consoles[{key}]", _AT.format(tag="console"), item=_position("consoles")),
        _f("graphics[{key}]", _AT.format(tag="graphics"), item=_position("graphics")),
    ),
    Kind.NETWORK: (
        _f("forward", r"^forward(/@mode)?$"),
        _f("bridge", r"^bridge(/@name)?$"),
        _f("domain", r"^domain(/@name)?$"),
        _f("mtu", r"^mtu(/@size)?$"),
        _f("ip.address", _IP + r"(/@address)?$", given=_has("ip")),
        _f("ip.prefix", _IP + r"/@prefix$", given=_has("ip")),
        _f("ip.dhcp.range", _IP + r"/dhcp/range\[[^/]*\](/@(start|end))?$", given=_dhcp("range")),
        _f("ip.dhcp.hosts", _IP + r"/dhcp/host\[[^/]*\](/.*)?$", given=_dhcp("hosts")),
        _f("dns.hosts", r"^dns/host\[[^/]*\](/.*)?$", given=_has("dns", "hosts")),
    ),
    Kind.STORAGE_POOL: (
        _f("type", r"^@type$"),
        _f("target", r"^target/path$"),
        _f("source.device", r"^source/device(\[[^/]*\])?(/@path)?$", given=_source("device")),
        _f("source.dir", r"^source/dir(/@path)?$", given=_has("source", "dir")),
        _f("source.host", r"^source/host(\[[^/]*\])?(/@name)?$", given=_has("source", "host")),
        _f("source.name", r"^source/name$", given=_has("source", "name")),
        _f("source.format", r"^source/format(/@type)?$", given=_has("source", "format")),
    ),
    Kind.VOLUME: (
        _f("capacity", r"^capacity$", Unit.BYTES),
        _f("allocation", r"^allocation$", Unit.BYTES),
        _f("format", r"^target/format(/@type)?$"),
        _f("backingStore.path", r"^backingStore/path$", given=_has("backingStore")),
        _f("backingStore.format", r"^backingStore/format(/@type)?$", given=_backing("format")),
        _f("encryption", r"^target/encryption(/.*)?$"),
    ),
    Kind.SECRET: (
        _f("private", r"^@private$"),
        _f("ephemeral", r"^@ephemeral$"),
        _f("usage", r"^usage(/.*)?$"),
    ),
}  # fmt: skip


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
    names = {re.sub(r"\[\{key\}\]", "[]", f.name) for f in FIELDS.get(kind, ())}
    return frozenset(names) | SETTINGS.get(kind, frozenset())


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
            key = f.item(name, spec, m.groupdict())
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
