"""What ``hosts`` read from a host: plain data for the planner (no libvirt here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.model import Host, Kind
from reconciler.ownership import Record, Registry

ObjectKey = tuple[Kind, str]
# What a domain asks the hypervisor for: (arch, machine, domain type); "" = the default.
CapsKey = tuple[str, str, str]


def object_key(kind: Kind, name: str, pool: str | None = None) -> ObjectKey:
    """Objects are unique per (kind, name) on a host; volumes per (pool, name)."""
    return (kind, f"{pool}/{name}" if kind is Kind.VOLUME else name)


@dataclass(frozen=True, kw_only=True)
class Observed:
    """One existing libvirt object on one host."""

    kind: Kind
    name: str
    xml: str
    pool: str | None = None
    uuid: str = ""
    live_xml: str | None = None
    state: str = "shutoff"
    state_reason: str = ""
    autostart: bool = False
    persistent: bool = True
    record: Record | None = None
    users: tuple[str, ...] = ()
    # A secret: the keyed digest of its value on the host ("": it has none;
    # None: not read, as libvirt never gives a private secret's value back).
    value_digest: str | None = None

    @property
    def key(self) -> ObjectKey:
        return object_key(self.kind, self.name, self.pool)

    @property
    def managed(self) -> bool:
        return self.record is not None and self.record.managed

    @property
    def active(self) -> bool:
        return self.state in ("running", "paused", "active", "blocked", "pmsuspended")


@dataclass(frozen=True, kw_only=True)
class DomainCaps:
    """What ``getDomainCapabilities`` said for one (arch, machine, type) on a host.

    ``error`` is set when the host refused the combination (no emulator for the
    arch, an unknown machine, a domain type it cannot run): the host cannot run
    such a domain. ``firmware`` lists the firmware kinds it can auto-select
    (``<os firmware='efi'>`` needs "efi" there: libvirt picks from firmware
    descriptors); ``loaders`` the loader types a domain may name itself.
    """

    arch: str = ""
    machine: str = ""
    type: str = ""
    error: str | None = None
    firmware: frozenset[str] = frozenset()
    loaders: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class HostState:
    """Everything read from one host in one pass (one listAll* per kind)."""

    host: Host
    reachable: bool = True
    error: str | None = None
    objects: Mapping[ObjectKey, Observed] = field(default_factory=dict)
    registry: Registry = field(default_factory=Registry)
    driver: str = ""
    # Domain capabilities by what was asked; None: the driver has none (test driver).
    capabilities: Mapping[CapsKey, DomainCaps] | None = None
    # The version of the libvirt library whose parser normalises desired XML for
    # this host's plan (``hosts.normalise``): part of the key of cached verdicts.
    parser: str = ""
