"""The only module that talks to libvirt: connections, observation, calls, events.

* ``Session.open`` connects (after starting libvirt's default event loop in a
  daemon thread, which keepalive and device-removal events need).
* ``Session.observe`` reads one host in one pass: one ``listAll*`` per kind and
  one XML read per object, into ``observed.HostState``.
* ``Session.run`` carries out one ``plan.Step``; every mutating libvirt call
  is counted by name in ``Session.calls``.
* libvirt errors become ``errors.HostError``/``errors.ActionError`` with a
  message a user can act on; URIs are shown without passwords.
* ``Session.watch`` passes libvirt's change events (domain lifecycle incl.
  redefine, devices, networks, pools, a dropped connection) to a plain Python
  callback as ``HostEvent``, so ``watch`` needs no libvirt import.

Test-only hook: with ``VIRT_RECONCILE_FAULT_AFTER_CALLS=N`` in the environment
the process kills itself with SIGKILL right after its N-th mutating libvirt
call (counted over all hosts of the process). ``tests/e2e/test_crash.py`` uses
it to crash an ``apply`` between any two libvirt calls and check that the next
``apply`` converges. Never set it outside tests.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import libvirt
from lxml import etree

from reconciler import errors, ownership, plan
from reconciler.model import Host, Kind
from reconciler.observed import CapsKey, DomainCaps, HostState, Observed
from reconciler.plan import Action, Step

_event_loop_lock = threading.Lock()
# A file-backed test-driver host (test:///PATH.xml) is a fresh in-memory copy per
# connection; keeping one connection per URI makes it one host for the whole
# process, like test:///default, so plan after apply sees what apply did.
_test_hosts: dict[str, libvirt.virConnect] = {}
_test_hosts_lock = threading.Lock()
_event_loop_started = False

FAULT_AFTER_CALLS = "VIRT_RECONCILE_FAULT_AFTER_CALLS"
_mutating_calls = 0
_mutating_calls_lock = threading.Lock()

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


def _reason_names(prefix: str) -> dict[int, str]:
    """libvirt's reason constants (VIR_DOMAIN_PAUSED_IOERROR → "ioerror") by value."""
    return {
        getattr(libvirt, n): n[len(prefix) :].lower()
        for n in dir(libvirt)
        if n.startswith(prefix) and not n.endswith("_LAST")
    }


_STATE_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING: _reason_names("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _reason_names("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: _reason_names("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reason_names("VIR_DOMAIN_CRASHED_"),
    libvirt.VIR_DOMAIN_PMSUSPENDED: _reason_names("VIR_DOMAIN_PMSUSPENDED_"),
}

_NET_SECTIONS = {
    "ip-dhcp-host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
    "ip-dhcp-range": libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE,
    "dns-host": libvirt.VIR_NETWORK_SECTION_DNS_HOST,
    "dns-txt": libvirt.VIR_NETWORK_SECTION_DNS_TXT,
    "dns-srv": libvirt.VIR_NETWORK_SECTION_DNS_SRV,
    "portgroup": libvirt.VIR_NETWORK_SECTION_PORTGROUP,
}
_NET_COMMANDS = {
    "modify": libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
    "delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
    "add-last": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
}


# Event names for HostEvent.event: the lifecycle events watch reacts to, by value.
_DOMAIN_EVENTS = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{n.upper()}"): n
    for n in (
        "defined",
        "undefined",
        "started",
        "suspended",
        "resumed",
        "stopped",
        "shutdown",
        "pmsuspended",
        "crashed",
    )
}
_DOMAIN_EVENT_DETAILS = {
    v: _reason_names(f"VIR_DOMAIN_EVENT_{n.upper()}_") for v, n in _DOMAIN_EVENTS.items()
}
_NETWORK_EVENTS = {
    getattr(libvirt, f"VIR_NETWORK_EVENT_{n.upper()}"): n
    for n in ("defined", "undefined", "started", "stopped")
}
_POOL_EVENTS = {
    getattr(libvirt, f"VIR_STORAGE_POOL_EVENT_{n.upper()}"): n
    for n in ("defined", "undefined", "started", "stopped", "created", "deleted")
}
_CLOSE_REASONS = _reason_names("VIR_CONNECT_CLOSE_REASON_")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostEvent:
    """A change on a host reported by libvirt: which object, not what it is now.

    ``kind`` is "Domain", "Network", "StoragePool" or "Connection" (``event``
    "closed": the connection dropped); ``event`` is libvirt's event name with
    its detail, e.g. "defined (updated)", "stopped (destroyed)", "device-removed".
    """

    host: str
    kind: str
    name: str
    event: str


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_quiet, None)


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def redact_uri(uri: str) -> str:
    """A URI safe to print: no password, no key material in the query."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = urllib.parse.urlencode(
        [
            (k, "***" if re.search(r"pass|secret|token|key(?!file)", k, re.I) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:*",
    )
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# What a user can do about a class of libvirt error: (cause, advice).
_UNREACHABLE = (
    "host unreachable",
    "check that libvirtd runs there, the address and port, and the network between",
)
_AUTH = ("authentication failed", "check the user, key file or credentials of the host's URI")
_DENIED = (
    "permission denied",
    "the connecting user may not do this: connect as root or a member of the libvirt group, "
    "or check the host's polkit/ACL rules and file permissions",
)
_CLASH = (
    "name clash",
    "another object of that name exists on the host (created by someone else since the plan "
    "was made, or transient); remove or rename it, or rename the manifest",
)
_SPACE = ("out of space", "free space on the host or in the pool, or ask for a smaller volume")
_POOL_INACTIVE = (
    "storage pool inactive",
    "start the pool (`state: active` in its manifest, or virsh pool-start)",
)
_CAUSES_BY_CODE: dict[int, tuple[str, str]] = {
    libvirt.VIR_ERR_AUTH_FAILED: _AUTH,
    libvirt.VIR_ERR_AUTH_CANCELLED: _AUTH,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE: _AUTH,
    libvirt.VIR_ERR_NO_CONNECT: _UNREACHABLE,
    libvirt.VIR_ERR_OPERATION_DENIED: _DENIED,
    libvirt.VIR_ERR_ACCESS_DENIED: _DENIED,
    libvirt.VIR_ERR_DOM_EXIST: _CLASH,
    libvirt.VIR_ERR_NETWORK_EXIST: _CLASH,
    libvirt.VIR_ERR_XML_ERROR: ("invalid XML", "fix the manifest's spec.xml or fields"),
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED: (
        "configuration not supported by the host",
        "change the manifest to something this host's hypervisor supports",
    ),
    libvirt.VIR_ERR_NO_SUPPORT: ("not supported by this libvirt driver", ""),
    libvirt.VIR_ERR_OPERATION_INVALID: ("operation not valid in this state", ""),
}
_CAUSES_BY_ERRNO: dict[int, tuple[str, str]] = {
    errno.ECONNREFUSED: _UNREACHABLE,
    errno.EHOSTUNREACH: _UNREACHABLE,
    errno.ENETUNREACH: _UNREACHABLE,
    errno.ETIMEDOUT: _UNREACHABLE,
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
    errno.ENOSPC: _SPACE,
    errno.EDQUOT: _SPACE,
}
# Message patterns win over the code: libvirt reports many causes as
# "operation failed" or "system error".
_CAUSES_BY_TEXT: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = (
    (re.compile(r"storage pool '[^']*' is not active"), _POOL_INACTIVE),
    (re.compile(r"already exists with uuid|already exists"), _CLASH),
    (re.compile(r"No space left on device|Disk quota exceeded|not enough space", re.I), _SPACE),
    (re.compile(r"Permission denied|Operation not permitted"), _DENIED),
    (re.compile(r"authentication (failed|unavailable)", re.I), _AUTH),
    (
        re.compile(
            r"Connection refused|No route to host|Network is unreachable|Connection timed out|"
            r"Could not resolve hostname|Name or service not known|"
            r"Failed to connect socket|unable to connect to server|End of file while reading",
        ),
        _UNREACHABLE,
    ),
)


def describe(err: libvirt.libvirtError, *, uri: str | None = None) -> str:
    """A libvirt error as ``cause: libvirt's message (what to do)``.

    With ``uri``, every secret it carries (password, key material in the query)
    is blanked from the message too, in case libvirt echoed it back.
    """
    code = err.get_error_code()
    msg = (err.get_error_message() or str(err)).strip()
    cause = next((c for pattern, c in _CAUSES_BY_TEXT if pattern.search(msg)), None)
    if cause is None and code == libvirt.VIR_ERR_SYSTEM_ERROR and err.err:
        cause = _CAUSES_BY_ERRNO.get(err.err[7] if len(err.err) > 7 else -1)
    cause = cause or _CAUSES_BY_CODE.get(code)
    if uri:
        msg = scrub(msg, uri)
    if cause is None:
        return msg
    label, advice = cause
    text = msg if msg.lower().startswith(label) else f"{label}: {msg}"
    return f"{text} ({advice})" if advice else text


def scrub(text: str, uri: str) -> str:
    """``text`` with the URI and each secret in it replaced by their redacted forms."""
    text = text.replace(uri, redact_uri(uri))
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return text
    secrets = [parts.password or ""] + [
        v
        for k, v in urllib.parse.parse_qsl(parts.query)
        if re.search(r"pass|secret|token|key(?!file)", k, re.I)
    ]
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


class Session:
    """One open connection to one host."""

    def __init__(self, host: Host, conn: libvirt.virConnect) -> None:
        self.host = host
        self.conn = conn
        self.calls: collections.Counter[str] = collections.Counter()
        self.registry = ownership.Registry()
        # Domain capabilities read in this run, by (arch, machine, type); None:
        # the driver has none.
        self._caps: dict[CapsKey, DomainCaps] | None = {}
        self.detach_timeout = 20.0
        self.balloon_timeout = 10.0
        self._removed: dict[tuple[str, str], threading.Event] = {}
        self._events_registered = False
        self._watch_ids: list[tuple[str, int]] = []
        # Test-driver networks restarted by _net_define: their live definition
        # is the new one already.
        self._redefined_live: set[str] = set()

    # --- connecting --------------------------------------------------------------

    @classmethod
    def open(cls, host: Host) -> Session:
        start_event_loop()
        try:
            conn = _open(host.uri)
        except libvirt.libvirtError as e:
            raise errors.HostError(
                host.name, f"cannot connect to {redact_uri(host.uri)}: {describe(e, uri=host.uri)}"
            ) from e
        if conn is None:
            raise errors.HostError(host.name, f"cannot connect to {redact_uri(host.uri)}")
        with contextlib.suppress(libvirt.libvirtError):  # local drivers have no keepalive
            conn.setKeepAlive(5, 3)
        return cls(host, conn)

    def close(self) -> None:
        self.unwatch()
        if self.host.uri.startswith("test://"):
            return  # shared for the process, see _test_hosts
        try:
            if self._events_registered:
                self.conn.domainEventDeregisterAny(self._event_id)
            self.conn.close()
        except libvirt.libvirtError:
            pass

    def alive(self) -> bool:
        """False once the connection dropped (keepalive timeout, daemon restart)."""
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    # --- watching -----------------------------------------------------------------

    def watch(self, callback: Callable[[HostEvent], None]) -> None:
        """Call ``callback`` for every change event on this host, until ``unwatch``.

        It runs in libvirt's event thread: keep it short (mark work, return).
        """
        if self._watch_ids:
            return
        host = self.host.name

        def emit(kind: str, name: str, event: str) -> None:
            try:
                callback(HostEvent(host=host, kind=kind, name=name, event=event))
            except Exception:  # an exception here would stop libvirt's event loop
                _log.exception("event callback failed")

        def lifecycle(_c: Any, dom: libvirt.virDomain, event: int, detail: int, _o: Any) -> None:
            name = _DOMAIN_EVENTS.get(event, str(event))
            why = _DOMAIN_EVENT_DETAILS.get(event, {}).get(detail)
            emit("Domain", dom.name(), f"{name} ({why})" if why else name)

        def device(label: str) -> Callable[..., None]:
            return lambda _c, dom, *_rest: emit("Domain", dom.name(), label)

        def network(_c: Any, net: libvirt.virNetwork, event: int, _d: int, _o: Any) -> None:
            emit("Network", net.name(), _NETWORK_EVENTS.get(event, str(event)))

        def pool(_c: Any, p: libvirt.virStoragePool, event: int, _d: int, _o: Any) -> None:
            emit("StoragePool", p.name(), _POOL_EVENTS.get(event, str(event)))

        def closed(_c: Any, reason: int, _o: Any) -> None:
            emit("Connection", "", f"closed ({_CLOSE_REASONS.get(reason, reason)})")

        dom_events = {
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE: lifecycle,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED: device("device-added"),
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED: device("device-removed"),
            libvirt.VIR_DOMAIN_EVENT_ID_TRAY_CHANGE: device("tray-change"),
            libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE: device("balloon-change"),
            libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE: device("metadata-change"),
        }
        try:
            for event_id, cb in dom_events.items():
                self._watch_ids.append(
                    ("domain", self.conn.domainEventRegisterAny(None, event_id, cb, None))
                )
            self._watch_ids.append(
                (
                    "network",
                    self.conn.networkEventRegisterAny(
                        None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, network, None
                    ),
                )
            )
            self._watch_ids.append(
                (
                    "pool",
                    self.conn.storagePoolEventRegisterAny(
                        None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, pool, None
                    ),
                )
            )
        except libvirt.libvirtError as e:
            self.unwatch()
            raise errors.HostError(host, f"cannot subscribe to events: {describe(e)}") from e
        with contextlib.suppress(libvirt.libvirtError):  # not every driver reports a drop
            self.conn.registerCloseCallback(closed, None)
            self._watch_ids.append(("close", 0))

    def unwatch(self) -> None:
        """Stop the callbacks ``watch`` registered."""
        deregister = {
            "domain": self.conn.domainEventDeregisterAny,
            "network": self.conn.networkEventDeregisterAny,
            "pool": self.conn.storagePoolEventDeregisterAny,
            "close": lambda _id: self.conn.unregisterCloseCallback(),
        }
        for kind, callback_id in self._watch_ids:
            with contextlib.suppress(libvirt.libvirtError):
                deregister[kind](callback_id)
        self._watch_ids.clear()

    # --- observing ----------------------------------------------------------------

    def observe(self, *, capabilities: Iterable[CapsKey] = (), reuse: bool = False) -> HostState:
        """Read every domain, network, pool and volume on the host.

        ``capabilities``: the (arch, machine, type) combinations that domains
        to be placed ask for, read with ``getDomainCapabilities``; with
        ``reuse`` (a later observation in the same run) those read before
        are not read again.
        """
        if not reuse:
            self._caps = {}
        try:
            objects = self._observe()
            caps = self._capabilities(sorted(set(capabilities)))
        except libvirt.libvirtError as e:
            raise errors.HostError(self.host.name, describe(e, uri=self.host.uri)) from e
        return HostState(
            host=self.host,
            objects={o.key: o for o in objects},
            registry=self.registry,
            driver=self._driver(),
            capabilities=caps,
        )

    def _capabilities(self, keys: list[CapsKey]) -> dict[CapsKey, DomainCaps] | None:
        for key in keys:
            if self._caps is None:
                return None  # no domain capabilities (the test driver): define decides
            if key in self._caps:
                continue
            arch, machine, virttype = key
            try:
                xml = self.conn.getDomainCapabilities(
                    None, arch or None, machine or None, virttype or None, 0
                )
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    self._caps = None
                    continue
                if e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC):
                    raise
                self._caps[key] = DomainCaps(error=describe(e, uri=self.host.uri))
                continue
            self._caps[key] = _domain_caps(xml)
        if self._caps is None:
            return None
        return {k: self._caps[k] for k in keys}

    def _driver(self) -> str:
        try:
            return str(self.conn.getType())
        except libvirt.libvirtError:
            return ""

    def _observe(self) -> list[Observed]:
        out: list[Observed] = []
        for dom in self.conn.listAllDomains(0):
            out.append(self._observe_domain(dom))
        self.registry = ownership.Registry()
        for net in self.conn.listAllNetworks(0):
            name = net.name()
            if name == ownership.REGISTRY_NETWORK:
                self.registry = ownership.Registry.from_xml(_net_xml(net, inactive=True))
                continue
            active = bool(net.isActive())
            xml = _net_xml(net, inactive=True)
            out.append(
                Observed(
                    kind=Kind.NETWORK,
                    name=name,
                    uuid=net.UUIDString(),
                    xml=xml,
                    live_xml=_net_xml(net, inactive=False) if active else None,
                    state="active" if active else "inactive",
                    autostart=bool(net.autostart()),
                    persistent=bool(net.isPersistent()),
                    record=_record_of(xml),
                )
            )
        for pool in self.conn.listAllStoragePools(0):
            active = bool(pool.isActive())
            name = pool.name()
            out.append(
                Observed(
                    kind=Kind.STORAGE_POOL,
                    name=name,
                    uuid=pool.UUIDString(),
                    xml=_inactive_xml(pool, libvirt.VIR_STORAGE_XML_INACTIVE),
                    state="active" if active else "inactive",
                    autostart=bool(pool.autostart()),
                    persistent=bool(pool.isPersistent()),
                    record=self.registry.pools.get(name),
                )
            )
            if not active:
                continue
            for vol in pool.listAllVolumes(0):
                vname = vol.name()
                out.append(
                    Observed(
                        kind=Kind.VOLUME,
                        name=vname,
                        pool=name,
                        xml=vol.XMLDesc(0),
                        state="active",
                        record=self.registry.volumes.get(f"{name}/{vname}"),
                    )
                )
        return out

    def _observe_domain(self, dom: libvirt.virDomain) -> Observed:
        state, reason = dom.state()
        sname = _DOMAIN_STATES.get(state, "nostate")
        persistent = bool(dom.isPersistent())
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        live = dom.XMLDesc(0) if sname in ("running", "paused", "pmsuspended") else None
        autostart = bool(dom.autostart()) if persistent else False
        return Observed(
            kind=Kind.DOMAIN,
            name=dom.name(),
            uuid=dom.UUIDString(),
            xml=xml,
            live_xml=live,
            state=sname,
            state_reason=_STATE_REASONS.get(state, {}).get(reason, str(reason)),
            autostart=autostart,
            persistent=persistent,
            record=_record_of(xml),
        )

    # --- doing ---------------------------------------------------------------------

    def _call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        result = fn(*args)
        self.calls[name] += 1
        _fault_point()
        return result

    def run(self, step: Step, action: Action) -> None:
        """Carry out one step of an action; raises ActionError on failure."""
        method = getattr(self, f"_{step.call}")
        try:
            method(action, **step.params)
        except libvirt.libvirtError as e:
            raise errors.ActionError(
                action.ref, self.host.name, f"{step.call}: {describe(e, uri=self.host.uri)}"
            ) from e

    # domains
    def _dom(self, action: Action) -> libvirt.virDomain:
        return self.conn.lookupByName(action.name)

    def _dom_define(self, action: Action, xml: str) -> None:
        self._call(
            "defineXMLFlags", self.conn.defineXMLFlags, xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE
        )

    def discard_domain(self, name: str) -> None:
        """Roll back a domain this run defined here: stop it, undefine it, leave nothing."""
        try:
            dom = self.conn.lookupByName(name)
            if dom.isActive():
                self._call("destroy", dom.destroy)
            self._dom_undefine(Action(kind=Kind.DOMAIN, name=name, type=plan.ActionType.DELETE))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise errors.ActionError(
                f"Domain/{name}", self.host.name, f"rollback: {describe(e, uri=self.host.uri)}"
            ) from e

    def record_placement(self, name: str, record: ownership.Record | None) -> None:
        """Keep (or drop) the placement record of a domain that lives on another host."""
        if self.registry.domains.get(name) == record:
            return
        self.registry = self.registry.with_domain(name, record)
        self._save_registry(f"the placement of Domain/{name}")

    def _dom_set_record(self, action: Action, xml: str) -> None:
        el = etree.fromstring(xml)
        inner = f"<owner>{_escape(el.text or '')}</owner>"
        self._call(
            "setMetadata",
            self._dom(action).setMetadata,
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            inner,
            ownership.PREFIX,
            ownership.NAMESPACE,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )

    def _dom_start(self, action: Action, paused: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        dom = self._dom(action)
        try:
            self._call("createWithFlags", dom.createWithFlags, flags)
        except libvirt.libvirtError as e:
            # libvirt 9.0's test driver knows no START_PAUSED: start, then pause.
            if not paused or e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
            self._call("createWithFlags", dom.createWithFlags, 0)
            self._call("suspend", dom.suspend)

    def _dom_suspend(self, action: Action) -> None:
        self._call("suspend", self._dom(action).suspend)

    def _dom_resume(self, action: Action) -> None:
        self._call("resume", self._dom(action).resume)

    def _dom_destroy(self, action: Action) -> None:
        self._call("destroy", self._dom(action).destroy)

    def _dom_shutdown(self, action: Action, timeout: float) -> None:
        dom = self._dom(action)
        if dom.isActive():
            with contextlib.suppress(libvirt.libvirtError):  # no ACPI: destroy below
                self._call("shutdown", dom.shutdown)
            deadline = time.monotonic() + timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if dom.isActive():
                self._call("destroy", dom.destroy)

    def _dom_restart(self, action: Action, timeout: float) -> None:
        self._dom_shutdown(action, timeout)
        self._call("createWithFlags", self._dom(action).createWithFlags, 0)

    def _dom_undefine(self, action: Action) -> None:
        dom = self._dom(action)
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
        try:
            self._call("undefineFlags", dom.undefineFlags, flags)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            self._call("undefineFlags", dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)

    def _dom_autostart(self, action: Action, on: bool) -> None:
        self._call("setAutostart", self._dom(action).setAutostart, int(on))

    @staticmethod
    def _affect(live: bool, config: bool) -> int:
        return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
            libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0
        )

    def _dom_attach(self, action: Action, xml: str, live: bool, config: bool) -> None:
        self._call(
            "attachDeviceFlags",
            self._dom(action).attachDeviceFlags,
            xml,
            self._affect(live, config),
        )

    def _dom_update_device(self, action: Action, xml: str, live: bool, config: bool) -> None:
        self._call(
            "updateDeviceFlags",
            self._dom(action).updateDeviceFlags,
            xml,
            self._affect(live, config),
        )

    def _dom_detach(
        self, action: Action, xml: str, alias: str | None, live: bool, config: bool
    ) -> None:
        dom = self._dom(action)
        waiter = None
        if live and alias:
            self._register_events()
            waiter = threading.Event()
            self._removed[(dom.UUIDString(), alias)] = waiter
        try:
            self._call("detachDeviceFlags", dom.detachDeviceFlags, xml, self._affect(live, config))
            if waiter is not None and alias is not None:
                # libvirt may report success for a device the guest keeps:
                # wait for DEVICE_REMOVED (or _FAILED), then look.
                waiter.wait(self.detach_timeout)
                if f"<alias name='{alias}'/>" in dom.XMLDesc(0):
                    raise errors.ActionError(
                        action.ref,
                        self.host.name,
                        f"the guest did not release device {alias} within "
                        f"{self.detach_timeout:.0f}s; it is still attached (live drift)",
                    )
        finally:
            if alias:
                self._removed.pop((dom.UUIDString(), alias), None)

    def _register_events(self) -> None:
        if self._events_registered:
            return

        def removed(_conn: Any, dom: libvirt.virDomain, alias: str, _opaque: Any) -> None:
            ev = self._removed.get((dom.UUIDString(), alias))
            if ev is not None:
                ev.set()

        def failed(_conn: Any, dom: libvirt.virDomain, alias: str, _opaque: Any) -> None:
            removed(_conn, dom, alias, _opaque)

        self._event_id = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, removed, None
        )
        self._event_id2 = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED, failed, None
        )
        self._events_registered = True

    def _dom_set_memory(self, action: Action, kib: int, live: bool, config: bool) -> None:
        dom = self._dom(action)
        _state, max_kib, before_kib, *_ = dom.info() if live else (0, 0, 0)
        try:
            self._call("setMemoryFlags", dom.setMemoryFlags, kib, self._affect(live, config))
        except libvirt.libvirtError as e:
            # Some drivers (the test driver) refuse LIVE|CONFIG together.
            if not (live and config) or e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
            self._call("setMemoryFlags", dom.setMemoryFlags, kib, self._affect(True, False))
            self._call("setMemoryFlags", dom.setMemoryFlags, kib, self._affect(False, True))
        if live and before_kib != max_kib:
            # The guest's balloon driver moves within a second or so and libvirt
            # reports it a little later; wait (bounded), so the plan that checks
            # convergence sees the new value. A balloon that never moved means no
            # driver: nothing to wait for (the planner ignores it too).
            deadline = time.monotonic() + self.balloon_timeout
            while dom.info()[2] != kib and time.monotonic() < deadline:
                time.sleep(0.1)

    def _dom_set_vcpus(self, action: Action, count: int, live: bool, config: bool) -> None:
        dom = self._dom(action)
        try:
            self._call("setVcpusFlags", dom.setVcpusFlags, count, self._affect(live, config))
        except libvirt.libvirtError:
            fewer = live and count < dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if not (fewer and config):
                raise
            # The guest did not release a vCPU (libvirt gives up after a few
            # seconds): persist the count; the running domain keeps its vCPUs
            # until restarted, and the next plan shows pending-restart.
            self._call("setVcpusFlags", dom.setVcpusFlags, count, self._affect(False, True))

    # networks
    def _net(self, action: Action) -> libvirt.virNetwork:
        return self.conn.networkLookupByName(action.name)

    def _net_define(self, action: Action, xml: str) -> None:
        running = self._test_driver_active_network(action.name)
        if running is not None:
            # libvirt 9.0's test driver drops a new definition of an active
            # network (and has no INACTIVE XML to show it): define it while
            # stopped. Its networks have no bridge, so nothing is disrupted.
            running.destroy()
        try:
            self._call(
                "networkDefineXMLFlags",
                self.conn.networkDefineXMLFlags,
                xml,
                libvirt.VIR_NETWORK_DEFINE_VALIDATE,
            )
        finally:
            if running is not None:
                running.create()
                self._redefined_live.add(action.name)

    def _test_driver_active_network(self, name: str) -> libvirt.virNetwork | None:
        if self._driver().lower() != "test":
            return None
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            return None
        return net if net.isActive() else None

    def _net_start(self, action: Action) -> None:
        self._call("networkCreate", self._net(action).create)

    def _net_stop(self, action: Action) -> None:
        self._call("networkDestroy", self._net(action).destroy)

    def _net_undefine(self, action: Action) -> None:
        self._call("networkUndefine", self._net(action).undefine)

    def _net_autostart(self, action: Action, on: bool) -> None:
        self._call("networkSetAutostart", self._net(action).setAutostart, int(on))

    def _net_update(
        self,
        action: Action,
        command: str,
        section: str,
        parent_index: int,
        xml: str,
        live: bool,
        config: bool,
    ) -> None:
        if action.name in self._redefined_live:
            live = False  # the test driver's restart in _net_define applied it live
            if not config:
                return
        flags = (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE if live else 0) | (
            libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG if config else 0
        )
        self._call(
            "networkUpdate",
            self._net(action).update,
            _NET_COMMANDS[command],
            _NET_SECTIONS[section],
            parent_index,
            xml,
            flags,
        )

    # pools and volumes
    def _pool(self, name: str) -> libvirt.virStoragePool:
        return self.conn.storagePoolLookupByName(name)

    def _pool_define(self, action: Action, xml: str) -> None:
        self._call(
            "storagePoolDefineXML",
            self.conn.storagePoolDefineXML,
            xml,
            libvirt.VIR_STORAGE_POOL_DEFINE_VALIDATE,
        )

    def _pool_build(self, action: Action) -> None:
        pool = self._pool(action.name)
        kind = etree.fromstring(pool.XMLDesc(0).encode()).get("type")
        if kind == "dir":
            self._call("storagePoolBuild", pool.build, 0)  # mkdir only
            return
        try:
            # Never overwrite: building a disk or logical pool formats the device.
            self._call("storagePoolBuild", pool.build, libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise

    def _pool_start(self, action: Action) -> None:
        self._call("storagePoolCreate", self._pool(action.name).create, 0)

    def _pool_stop(self, action: Action) -> None:
        self._call("storagePoolDestroy", self._pool(action.name).destroy)

    def _pool_undefine(self, action: Action) -> None:
        self._call("storagePoolUndefine", self._pool(action.name).undefine)

    def _pool_autostart(self, action: Action, on: bool) -> None:
        self._call("storagePoolSetAutostart", self._pool(action.name).setAutostart, int(on))

    def _vol_create(self, action: Action, pool: str, xml: str) -> None:
        p = self._pool(pool)
        try:
            self._call(
                "storageVolCreateXML", p.createXML, xml, libvirt.VIR_STORAGE_VOL_CREATE_VALIDATE
            )
        except libvirt.libvirtError as e:
            # libvirt 9.0's test driver knows no VALIDATE flag for volumes.
            if e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or "unsupported flags" not in str(
                e
            ):
                raise
            self._call("storageVolCreateXML", p.createXML, xml, 0)

    def _vol_resize(self, action: Action, pool: str, capacity: int, domain: str | None) -> None:
        vol = self._pool(pool).storageVolLookupByName(action.name)
        if domain is None:
            self._call("storageVolResize", vol.resize, capacity, 0)
            return
        # The running domain's qemu holds the image: grow it through the domain,
        # so the guest sees the new size too.
        self._call(
            "blockResize",
            self.conn.lookupByName(domain).blockResize,
            vol.path(),
            capacity,
            libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES,
        )

    def _vol_delete(self, action: Action, pool: str) -> None:
        vol = self._pool(pool).storageVolLookupByName(action.name)
        # The plan checked the users of the volume; look again right before
        # deleting, since any process may have defined a domain since then.
        refs = {f"{pool}/{action.name}", f"path:{vol.path()}"}
        for dom in self.conn.listAllDomains(0):
            xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
            if dom.isActive():
                xmls.append(dom.XMLDesc(0))
            if any(refs & plan.disk_refs(x) for x in xmls):
                raise errors.ActionError(
                    action.ref, self.host.name, f"not deleted: domain {dom.name()} uses it"
                )
        self._call("storageVolDelete", vol.delete, 0)

    def _registry_set(
        self, action: Action, kind: str, key: str, record: dict[str, Any] | None
    ) -> None:
        rec = ownership.Record.from_json(record) if record is not None else None
        if kind == "pool":
            self.registry = self.registry.with_pool(key, rec)
        else:
            self.registry = self.registry.with_volume(key, rec)
        self._write_registry()

    def record_applied(self, applied: dict[str, str]) -> None:
        """Remember on the host what ``watch`` applied (the git revision), for ``status``."""
        self.registry = dataclasses.replace(self.registry, applied=applied)
        self._save_registry("the revision")

    def _save_registry(self, what: str) -> None:
        try:
            self._write_registry()
        except libvirt.libvirtError as e:
            raise errors.HostError(self.host.name, f"cannot record {what}: {describe(e)}") from e

    def _write_registry(self) -> None:
        net = self._call(
            "networkDefineXMLFlags",
            self.conn.networkDefineXMLFlags,
            self.registry.to_xml(),
            libvirt.VIR_NETWORK_DEFINE_VALIDATE,
        )
        if not self.registry.uuid:
            self.registry = dataclasses.replace(self.registry, uuid=net.UUIDString(), exists=True)


def _fault_point() -> None:
    """The test-only crash hook (see the module docstring): SIGKILL after call N."""
    global _mutating_calls
    limit = os.environ.get(FAULT_AFTER_CALLS)
    if not limit:
        return
    with _mutating_calls_lock:
        _mutating_calls += 1
        if _mutating_calls >= int(limit):
            os.kill(os.getpid(), signal.SIGKILL)


def _open(uri: str) -> libvirt.virConnect:
    if not uri.startswith("test://"):
        return libvirt.open(uri)
    with _test_hosts_lock:
        if uri not in _test_hosts:
            _test_hosts[uri] = libvirt.open(uri)
        return _test_hosts[uri]


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


def _record_of(xml: str) -> ownership.Record | None:
    try:
        return ownership.read_record(etree.fromstring(xml.encode()))
    except etree.XMLSyntaxError:
        return None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- libvirt's own parser as the normaliser of desired XML --------------------------
#
# A document libvirt did not write (virt-install's, another tool's, a person's)
# says many things in another form than libvirt will store them: hex numbers,
# upper-case UUIDs, ``port='-1'``, a ``<source mode='bind'/>`` without a path,
# controllers without an index. Rather than one hand-written rule per form, the
# planner compares what libvirt's parser makes of the document: it is defined on
# a private in-memory test-driver host (no daemon, a few milliseconds) and read
# back (``canonical.flatten_desired`` keeps only what the document itself says).
# The private host is a file-backed ``test:///`` URI of its own, never
# ``test:///default``, which the process may be reconciling.

_NORMALISE_POOL = "virt-reconcile-normalise"
_NORMALISE_HOST = f"""<node>
  <pool type='dir'>
    <name>{_NORMALISE_POOL}</name>
    <target><path>/{_NORMALISE_POOL}</path></target>
  </pool>
</node>
"""
_normaliser: libvirt.virConnect | None = None
_normaliser_lock = threading.Lock()
_normalised: dict[tuple[Kind, str], str | None] = {}
_NORMALISED_CACHE = 20000


def normalise(kind: Kind, xml: str) -> str | None:
    """``xml`` as libvirt's parser stores it (inactive, secure), or None when the
    test driver refuses it (then the planner compares the document as written)."""
    key = (kind, xml)
    with _normaliser_lock:
        if key in _normalised:
            return _normalised[key]
        try:
            result: str | None = _round_trip(_normaliser_conn(), kind, xml)
        except libvirt.libvirtError as e:
            _log.debug("libvirt's parser refused the desired %s: %s", kind.value, e)
            result = None
        if len(_normalised) >= _NORMALISED_CACHE:
            _normalised.clear()
        _normalised[key] = result
        return result


def _normaliser_conn() -> libvirt.virConnect:
    global _normaliser
    if _normaliser is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="virt-reconcile-") as folder:
            path = os.path.join(folder, "normalise.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(_NORMALISE_HOST)
            # The test driver reads the file once, at connect.
            _normaliser = libvirt.open(f"test://{path}")
    return _normaliser


def _round_trip(conn: libvirt.virConnect, kind: Kind, xml: str) -> str | None:
    if kind is Kind.DOMAIN:
        dom = conn.defineXMLFlags(xml, 0)
        try:
            return str(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
            )
        finally:
            dom.undefine()
    if kind is Kind.NETWORK:
        net = conn.networkDefineXML(xml)
        try:
            return str(net.XMLDesc(0))
        finally:
            net.undefine()
    if kind is Kind.STORAGE_POOL:
        pool = conn.storagePoolDefineXML(xml, 0)
        try:
            return str(pool.XMLDesc(0))
        finally:
            pool.undefine()
    if kind is Kind.VOLUME:
        vol = conn.storagePoolLookupByName(_NORMALISE_POOL).createXML(xml, 0)
        try:
            return str(vol.XMLDesc(0))
        finally:
            vol.delete(0)
    return None
