"""libvirt's change events, passed to plain Python callbacks.

``Watcher`` passes every change on a host (domain lifecycle incl. redefine,
devices, networks, pools, a dropped connection) to a callback as
``HostEvent``, so ``watch`` needs no libvirt import. ``DeviceRemovals`` lets a
detach wait until the guest really released the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from reconciler import errors
from reconciler.hosts.causes import describe
from reconciler.hosts.observe import reason_names as _reason_names

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


class Watcher:
    """The change-event subscriptions of one connection."""

    def __init__(self, host: str, conn: libvirt.virConnect) -> None:
        self.host = host
        self.conn = conn
        self._watch_ids: list[tuple[str, int]] = []

    def watch(self, callback: Callable[[HostEvent], None]) -> None:
        """Call ``callback`` for every change event on this host, until ``unwatch``.

        It runs in libvirt's event thread: keep it short (mark work, return).
        """
        if self._watch_ids:
            return
        host = self.host

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


class DeviceRemovals:
    """Waits for libvirt's DEVICE_REMOVED (or _REMOVAL_FAILED) event of one device."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        self._removed: dict[tuple[str, str], threading.Event] = {}
        self._event_ids: list[int] = []

    def expect(self, dom: libvirt.virDomain, alias: str) -> threading.Event:
        """An event set once ``dom`` reports device ``alias`` gone (or not removable)."""
        self._register()
        waiter = threading.Event()
        self._removed[(dom.UUIDString(), alias)] = waiter
        return waiter

    def forget(self, dom: libvirt.virDomain, alias: str) -> None:
        self._removed.pop((dom.UUIDString(), alias), None)

    def close(self) -> None:
        for event_id in self._event_ids:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(event_id)
        self._event_ids.clear()

    def _register(self) -> None:
        if self._event_ids:
            return

        def removed(_conn: Any, dom: libvirt.virDomain, alias: str, _opaque: Any) -> None:
            ev = self._removed.get((dom.UUIDString(), alias))
            if ev is not None:
                ev.set()

        for event_id in (
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
        ):
            self._event_ids.append(self.conn.domainEventRegisterAny(None, event_id, removed, None))
