"""Reading a host in one pass: one ``listAll*`` per kind and one XML read per object."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import libvirt
from lxml import etree

from reconciler import ownership, values
from reconciler.hosts.api import API
from reconciler.hosts.causes import describe
from reconciler.model import Kind
from reconciler.observed import CapsKey, DomainCaps, HostState, ObjectKey, Observed
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
            record=registry.record_for(Kind.STORAGE_POOL, name),
        )
    ]
    if not active:
        return out
    for vol in pool.listAllVolumes(0):
        volume = _observe_volume(vol, name, registry)
        if volume is not None:
            out.append(volume)
    return out


def _observe_volume(
    vol: libvirt.virStorageVol, pool: str, registry: ownership.Registry
) -> Observed | None:
    """One volume of an active pool (None: deleted meanwhile)."""
    vname = vol.name()
    xml = unless_gone(functools.partial(_volume_xml, vol))
    if xml is None:
        return None
    return Observed(
        kind=Kind.VOLUME,
        name=vname,
        pool=pool,
        xml=xml,
        state="active",
        record=registry.record_for(Kind.VOLUME, vname, pool),
    )


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
                record=registry.record_for(Kind.SECRET, name),
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
    transient: frozenset[str]  # the rest of ``states`` is persistent (the usual: few are not)
    autostart: frozenset[str]

    @classmethod
    def read(cls, conn: libvirt.virConnect) -> _Flags | None:
        """None when the driver cannot list them (then: per-domain calls)."""
        try:
            stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            transient = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
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
            transient=frozenset(d.UUIDString() for d in transient),
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
        import concurrent.futures  # here: a test host or a single domain needs no threads

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
        persistent = uuid not in flags.transient
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
    return ownership.record_in(xml)


# --- some objects read again (scoped watch passes, apply's convergence check) -------


def some(conn: libvirt.virConnect, keys: Iterable[ObjectKey], base: HostState) -> HostState:
    """``base`` (an earlier full read of the host) with the objects ``keys`` name
    and the registry read again: what a scoped ``watch`` pass sees. A key of an
    object that is gone drops it; a pool is read with its volumes; secrets are not
    read here (a pass that changes one is full)."""
    registry = ownership.Registry()
    found = unless_gone(lambda: API[Kind.NETWORK].lookup(conn, ownership.REGISTRY_NETWORK))
    if found is not None:
        registry = ownership.Registry.from_xml(_net_xml(found, inactive=True))
    objects = dict(base.objects)
    if registry != base.registry:  # pools, volumes and secrets carry their records
        for key, o in objects.items():
            if o.kind in (Kind.STORAGE_POOL, Kind.VOLUME, Kind.SECRET):
                objects[key] = replace(o, record=registry.record_for(o.kind, o.name, o.pool))
    for kind, name in sorted(set(keys), key=lambda k: (k[0].order, k[1])):
        objects.pop((kind, name), None)
        if kind is Kind.STORAGE_POOL:  # read again with its volumes
            for key in [k for k, o in objects.items() if o.kind is Kind.VOLUME and o.pool == name]:
                del objects[key]
        objects.update((o.key, o) for o in _read_one(conn, kind, name, registry))
    return replace(base, objects=objects, registry=registry)


def _read_one(
    conn: libvirt.virConnect, kind: Kind, name: str, registry: ownership.Registry
) -> list[Observed]:
    """One object as a full read reads it (a pool with its volumes); [] when gone."""
    if kind is Kind.VOLUME:
        pool_name, _, vol_name = name.partition("/")
        volume = _read_volume(conn, pool_name, vol_name, registry)
        return [] if volume is None else [volume]
    if kind not in (Kind.DOMAIN, Kind.NETWORK, Kind.STORAGE_POOL):
        raise ValueError(f"{kind.value}/{name}: a scoped read reads no {kind.value}")
    obj = unless_gone(functools.partial(API[kind].lookup, conn, name))
    if obj is None:
        return []
    found: list[Observed] | None
    if kind is Kind.DOMAIN:
        domain = unless_gone(functools.partial(_observe_domain, obj))
        found = None if domain is None else [domain]
    elif kind is Kind.NETWORK:
        network = unless_gone(functools.partial(observe_network, obj, name))
        found = None if network is None else [network]
    else:
        found = unless_gone(functools.partial(observe_pool, obj, registry))
    return found or []


def _read_volume(
    conn: libvirt.virConnect, pool_name: str, name: str, registry: ownership.Registry
) -> Observed | None:
    """One volume, as ``observe_pool`` reads it (none when its pool is inactive)."""
    pool = unless_gone(lambda: API[Kind.STORAGE_POOL].lookup(conn, pool_name))
    if pool is None or not pool.isActive():
        return None
    vol = unless_gone(lambda: pool.storageVolLookupByName(name))
    return None if vol is None else _observe_volume(vol, pool_name, registry)
