"""libvirt's API is regular: one table of the per-kind operations.

Domains, networks and storage pools are listed, looked up, defined, started,
stopped, undefined and autostarted the same way, by differently named calls.
``API`` holds them per kind; each mutating operation carries the name it is
counted under (``Session.calls``, the ``calls`` of the JSON output).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from reconciler.model import Kind
from reconciler.steps import Defined

# Undefine a domain with the metadata libvirt keeps beside it (a managed save
# image, snapshot and checkpoint metadata); its UEFI variables (NVRAM) and vTPM
# state are kept or removed as the domain's keepState says: without one of the
# two NVRAM flags, libvirt refuses to undefine a domain that has NVRAM.
UNDEFINE_DOMAIN_ALL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)
UNDEFINE_KEEP_STATE = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
UNDEFINE_REMOVE_STATE = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM


def undefine_flags(keep_state: bool) -> tuple[int, ...]:
    """The flags to undefine a domain with, the fullest first: a driver that
    refuses a flag (the test driver knows no TPM flags) gets the next."""
    nvram = UNDEFINE_KEEP_STATE if keep_state else UNDEFINE_REMOVE_STATE
    no_tpm = (
        libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if keep_state else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    return (
        UNDEFINE_DOMAIN_ALL | nvram,
        UNDEFINE_DOMAIN_ALL | no_tpm,
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | no_tpm,
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    )


@dataclass(frozen=True)
class Op:
    """One mutating libvirt call: the name it is counted under, and how to make it."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class KindApi:
    list_all: Callable[[libvirt.virConnect], list[Any]]
    lookup: Callable[[libvirt.virConnect, str], Any]
    define: Op  # (conn, xml)
    start: Op  # (object)
    stop: Op  # (object): at once, no guest shutdown
    undefine: Op  # (object)
    autostart: Op  # (object, on)


API: dict[Defined, KindApi] = {
    Kind.DOMAIN: KindApi(
        list_all=lambda c: c.listAllDomains(0),
        lookup=lambda c, name: c.lookupByName(name),
        define=Op(
            "defineXMLFlags",
            lambda c, xml: c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE),
        ),
        start=Op("createWithFlags", lambda d: d.createWithFlags(0)),
        stop=Op("destroy", lambda d: d.destroy()),
        undefine=Op("undefineFlags", lambda d, flags: d.undefineFlags(flags)),
        autostart=Op("setAutostart", lambda d, on: d.setAutostart(int(on))),
    ),
    Kind.NETWORK: KindApi(
        list_all=lambda c: c.listAllNetworks(0),
        lookup=lambda c, name: c.networkLookupByName(name),
        define=Op(
            "networkDefineXMLFlags",
            lambda c, xml: c.networkDefineXMLFlags(xml, libvirt.VIR_NETWORK_DEFINE_VALIDATE),
        ),
        start=Op("networkCreate", lambda n: n.create()),
        stop=Op("networkDestroy", lambda n: n.destroy()),
        undefine=Op("networkUndefine", lambda n: n.undefine()),
        autostart=Op("networkSetAutostart", lambda n, on: n.setAutostart(int(on))),
    ),
    Kind.STORAGE_POOL: KindApi(
        list_all=lambda c: c.listAllStoragePools(0),
        lookup=lambda c, name: c.storagePoolLookupByName(name),
        define=Op(
            "storagePoolDefineXML",
            lambda c, xml: c.storagePoolDefineXML(xml, libvirt.VIR_STORAGE_POOL_DEFINE_VALIDATE),
        ),
        start=Op("storagePoolCreate", lambda p: p.create(0)),
        stop=Op("storagePoolDestroy", lambda p: p.destroy()),
        undefine=Op("storagePoolUndefine", lambda p: p.undefine()),
        autostart=Op("storagePoolSetAutostart", lambda p, on: p.setAutostart(int(on))),
    ),
}
