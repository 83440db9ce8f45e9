"""Reading a host in one pass: one ``listAll*`` per kind and one XML read per object."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
from lxml import etree

from reconciler import ownership, values
from reconciler.hosts.api import API
from reconciler.hosts.causes import describe
from reconciler.model import Kind
from reconciler.observed import CapsKey, DomainCaps, Observed
from reconciler.render.secret import secret_uuid

_DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def reason_names(prefix: str) -> dict[int, str]:
    """libvirt's reason constants (VIR_DOMAIN_PAUSED_IOERROR → "ioerror") by value."""
    return {
        getattr(libvirt, n): n[len(prefix) :].lower()
        for n in dir(libvirt)
        if n.startswith(prefix) and not n.endswith("_LAST")
    }


_STATE_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING: reason_names("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: reason_names("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: reason_names("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: reason_names("VIR_DOMAIN_CRASHED_"),
    libvirt.VIR_DOMAIN_PMSUSPENDED: reason_names("VIR_DOMAIN_PMSUSPENDED_"),
}


def objects(
    conn: libvirt.virConnect, *, readable: Callable[[], libvirt.virConnect] | None = None
) -> tuple[list[Observed], ownership.Registry]:
    """Every domain, network, pool and volume on the host, and the host's registry.

    ``readable``: where to read the value of a secret virt-reconcile manages when
    ``conn`` is read-only (libvirt gives no value there); opened only then.
    """
    out: list[Observed] = _observe_domains(conn)
    registry = ownership.Registry()
    for net in API[Kind.NETWORK].list_all(conn):
        name = net.name()
        if name == ownership.REGISTRY_NETWORK:
            registry = ownership.Registry.from_xml(_net_xml(net, inactive=True))
            continue
        observed = unless_gone(functools.partial(observe_network, net, name))
        if observed is not None:
            out.append(observed)
    out += _observe_secrets(conn, registry, readable)
    for pool in API[Kind.STORAGE_POOL].list_all(conn):
        found = unless_gone(functools.partial(observe_pool, pool, registry))
        if found is not None:
            out += found
    return out, registry


def _volume_xml(vol: libvirt.virStorageVol) -> str:
    return str(vol.XMLDesc(0))


def observe_network(net: libvirt.virNetwork, name: str) -> Observed:
    active = bool(net.isActive())
    xml = _net_xml(net, inactive=True)
    return Observed(
        kind=Kind.NETWORK,
        name=name,
        uuid=net.UUIDString(),
        xml=xml,
        live_xml=_net_xml(net, inactive=False) if active else None,
        state="active" if active else "inactive",
        autostart=bool(net.autostart()),
        persistent=bool(net.isPersistent()),
        record=record_of(xml),
    )


def observe_pool(pool: libvirt.virStoragePool, registry: ownership.Registry) -> list[Observed]:
    """A pool and, when it is active, its volumes (a volume deleted meanwhile left out)."""
    active = bool(pool.isActive())
    name = pool.name()
    out = [
        Observed(
            kind=Kind.STORAGE_POOL,
            name=name,
            uuid=pool.UUIDString(),
            xml=_inactive_xml(pool, libvirt.VIR_STORAGE_XML_INACTIVE),
            state="active" if active else "inactive",
            autostart=bool(pool.autostart()),
            persistent=bool(pool.isPersistent()),
            record=registry.pools.get(name),
        )
    ]
    if not active:
        return out
    for vol in pool.listAllVolumes(0):
        vname = vol.name()
        xml = unless_gone(functools.partial(_volume_xml, vol))
        if xml is None:
            continue
        out.append(
            Observed(
                kind=Kind.VOLUME,
                name=vname,
                pool=name,
                xml=xml,
                state="active",
                record=registry.volumes.get(f"{name}/{vname}"),
            )
        )
    return out


def _observe_secrets(
    conn: libvirt.virConnect,
    registry: ownership.Registry,
    readable: Callable[[], libvirt.virConnect] | None = None,
) -> list[Observed]:
    """Secrets, named as their record says (else by description, else by UUID).

    The value is read only to compute its keyed digest, and dropped at once.
    """
    try:
        found = conn.listAllSecrets(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return []  # the test driver has no secrets
        raise
    names = {secret_uuid(n): n for n in registry.secrets}
    out = []
    for sec in found:
        uuid = sec.UUIDString()
        xml = sec.XMLDesc(0)
        root = etree.fromstring(xml.encode())
        name = names.get(uuid) or (root.findtext("description") or "").strip() or uuid
        out.append(
            Observed(
                kind=Kind.SECRET,
                name=name,
                uuid=uuid,
                xml=xml,
                state="active",
                persistent=root.get("ephemeral") != "yes",
                record=registry.secrets.get(name),
                value_digest=_value_digest(
                    sec, registry.secret_key, readable if name in registry.secrets else None
                ),
            )
        )
    return out


def _value_digest(
    sec: libvirt.virSecret, key: str, readable: Callable[[], libvirt.virConnect] | None = None
) -> str | None:
    try:
        value = sec.value(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
            return ""  # defined, no value set
        if e.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED and readable is not None:
            # A read-only connection: read it where we may (see Session).
            other = readable()
            if other is not sec.connect():
                return _value_digest(other.secretLookupByUUIDString(sec.UUIDString()), key)
        return None  # private: libvirt never gives the value back
    if not key:
        return None  # no digest was ever made on this host
    return values.digest(key, bytes(value))


# XML reads in flight at once per host on a daemon's connection (libvirt's RPC
# client multiplexes calls and libvirt-python releases the GIL while waiting);
# the test driver runs in this process under one lock, so there, one.
_XML_READERS = 4


@dataclass(frozen=True)
class _Flags:
    """What the listings with flag filters say of each domain (by UUID): one call
    per fact for the whole host instead of one per domain."""

    states: dict[str, tuple[int, int]]  # (state, reason)
    persistent: frozenset[str]
    autostart: frozenset[str]

    @classmethod
    def read(cls, conn: libvirt.virConnect) -> _Flags | None:
        """None when the driver cannot list them (then: per-domain calls)."""
        try:
            stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            persistent = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
            autostart = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC):
                raise  # the connection failed: so would every other call
            return None  # not supported, not allowed (an ACL), a domain gone meanwhile
        return cls(
            states={
                dom.UUIDString(): (int(s["state.state"]), int(s["state.reason"]))
                for dom, s in stats
                if "state.state" in s and "state.reason" in s
            },
            persistent=frozenset(d.UUIDString() for d in persistent),
            autostart=frozenset(d.UUIDString() for d in autostart),
        )


def _observe_domains(conn: libvirt.virConnect) -> list[Observed]:
    """Every domain: the flags listed once for the host, then the XML of each,
    a few reads at a time on a daemon's connection."""
    flags = _Flags.read(conn)
    domains = API[Kind.DOMAIN].list_all(conn)
    return read_domains(domains, flags, parallel=not str(conn.getURI()).startswith("test:"))


def read_domains(
    domains: list[libvirt.virDomain], flags: _Flags | None = None, *, parallel: bool = True
) -> list[Observed]:
    """The listed domains' state and XML; one undefined meanwhile is left out."""

    def read(dom: libvirt.virDomain) -> Observed | None:
        return unless_gone(lambda: _observe_domain(dom, flags))

    if not parallel or len(domains) < 2:
        found = [read(dom) for dom in domains]
    else:
        with concurrent.futures.ThreadPoolExecutor(_XML_READERS) as pool:
            found = list(pool.map(read, domains))
    return [o for o in found if o is not None]


# An object listed a moment ago that another client removed before we read it:
# it is not on the host any more, which is not an error of the host.
_GONE = frozenset(
    {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
    }
)

_T = TypeVar("_T")


def unless_gone(read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except libvirt.libvirtError as e:
        if e.get_error_code() in _GONE:
            return None
        raise


def _observe_domain(dom: libvirt.virDomain, flags: _Flags | None = None) -> Observed:
    uuid = dom.UUIDString()
    if flags is not None and uuid in flags.states:
        state, reason = flags.states[uuid]
        persistent = uuid in flags.persistent
        autostart = uuid in flags.autostart
    else:  # no listings, or defined after they were read
        state, reason = dom.state()
        persistent = bool(dom.isPersistent())
        autostart = bool(dom.autostart()) if persistent else False
    sname = _DOMAIN_STATES.get(state, "nostate")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    live = dom.XMLDesc(0) if sname in ("running", "paused", "pmsuspended") else None
    return Observed(
        kind=Kind.DOMAIN,
        name=dom.name(),
        uuid=uuid,
        xml=xml,
        live_xml=live,
        state=sname,
        state_reason=_STATE_REASONS.get(state, {}).get(reason, str(reason)),
        autostart=autostart,
        persistent=persistent,
        record=record_of(xml),
    )


class Capabilities:
    """Domain capabilities read in one run, by (arch, machine, type).

    ``None`` once the driver turned out to have none (the test driver): then
    define decides.
    """

    def __init__(self) -> None:
        self._caps: dict[CapsKey, DomainCaps] | None = {}

    def clear(self) -> None:
        self._caps = {}

    def read(
        self, conn: libvirt.virConnect, keys: list[CapsKey], *, uri: str, read_only: bool = False
    ) -> dict[CapsKey, DomainCaps] | None:
        """``read_only``: libvirt refuses domain capabilities on a read-only
        connection; then there are none, as on the test driver (define decides)."""
        for key in keys:
            if self._caps is None:
                return None  # no domain capabilities (the test driver): define decides
            if key in self._caps:
                continue
            arch, machine, virttype = key
            try:
                xml = conn.getDomainCapabilities(
                    None, arch or None, machine or None, virttype or None, 0
                )
            except libvirt.libvirtError as e:
                denied = read_only and e.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
                if e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT or denied:
                    self._caps = None
                    continue
                if e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC):
                    raise
                self._caps[key] = DomainCaps(error=describe(e, uri=uri))
                continue
            self._caps[key] = _domain_caps(xml)
        if self._caps is None:
            return None
        return {k: self._caps[k] for k in keys}


def _net_xml(net: libvirt.virNetwork, *, inactive: bool) -> str:
    return _inactive_xml(net, libvirt.VIR_NETWORK_XML_INACTIVE if inactive else 0)


def _inactive_xml(obj: Any, flag: int) -> str:
    try:
        return str(obj.XMLDesc(flag))
    except libvirt.libvirtError as e:
        # libvirt 9.0's test driver knows no INACTIVE flag for networks and pools.
        if not flag or e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return str(obj.XMLDesc(0))


def _domain_caps(xml: str) -> DomainCaps:
    root = etree.fromstring(xml.encode())
    os_el = root.find("os[@supported='yes']")
    firmware: frozenset[str] = frozenset()
    loaders: frozenset[str] = frozenset()
    if os_el is not None:
        firmware = frozenset(v.text or "" for v in os_el.iterfind("enum[@name='firmware']/value"))
        loaders = frozenset(
            v.text or ""
            for v in os_el.iterfind("loader[@supported='yes']/enum[@name='type']/value")
        )
    return DomainCaps(
        arch=root.findtext("arch") or "",
        machine=root.findtext("machine") or "",
        type=root.findtext("domain") or "",
        firmware=firmware,
        loaders=loaders,
    )


def record_of(xml: str) -> ownership.Record | None:
    try:
        return ownership.read_record(etree.fromstring(xml.encode()))
    except etree.XMLSyntaxError:
        return None


# --- reading some objects again (the convergence check after an apply) ---------------


def registry(conn: libvirt.virConnect) -> ownership.Registry:
    """The host's registry alone (empty when the host has none yet)."""
    try:
        net = conn.networkLookupByName(ownership.REGISTRY_NETWORK)
        return ownership.Registry.from_xml(_net_xml(net, inactive=True))
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return ownership.Registry()
        raise


def named(
    conn: libvirt.virConnect, kind: Kind, name: str, registry: ownership.Registry
) -> list[Observed]:
    """One domain, network or pool (a pool with its volumes) by name; [] when gone."""

    def read() -> list[Observed]:
        if kind is Kind.DOMAIN:
            return read_domains([API[Kind.DOMAIN].lookup(conn, name)], parallel=False)
        if kind is Kind.NETWORK:
            return [observe_network(API[Kind.NETWORK].lookup(conn, name), name)]
        if kind is Kind.STORAGE_POOL:
            return observe_pool(API[Kind.STORAGE_POOL].lookup(conn, name), registry)
        raise ValueError(f"{kind.value} objects are only read with the whole host")

    return unless_gone(read) or []
