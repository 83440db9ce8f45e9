"""Connecting to a host: libvirt's event loop, one connection per URI for test hosts."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import libvirt

from reconciler import errors
from reconciler.hosts.causes import describe
from reconciler.model import Host
from reconciler.uris import redact_uri

_event_loop_lock = threading.Lock()
_event_loop_started = False
# A file-backed test-driver host (test:///PATH.xml) is a fresh in-memory copy per
# connection; keeping one connection per URI makes it one host for the whole
# process, like test:///default, so plan after apply sees what apply did. A
# read-only session reuses the read-write connection when there is one (its
# ``Session`` makes no mutating call), else gets a read-only one of its own.
_test_hosts: dict[str, libvirt.virConnect] = {}
_test_hosts_ro: dict[str, libvirt.virConnect] = {}
_test_hosts_lock = threading.Lock()


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


def connect(host: Host, *, read_only: bool = False) -> libvirt.virConnect:
    """An open connection to ``host`` (after starting the event loop); HostError if not.

    ``read_only``: ``libvirt.openReadOnly`` (libvirt refuses every change; a
    read-only account, the daemon's read-only socket, suffices).
    """
    start_event_loop()
    try:
        conn = open_uri(host.uri, read_only=read_only)
    except libvirt.libvirtError as e:
        raise errors.HostError(
            host.name, f"cannot connect to {redact_uri(host.uri)}: {describe(e, uri=host.uri)}"
        ) from e
    if conn is None:
        raise errors.HostError(host.name, f"cannot connect to {redact_uri(host.uri)}")
    with contextlib.suppress(libvirt.libvirtError):  # local drivers have no keepalive
        conn.setKeepAlive(5, 3)
    return conn


def disconnect(host: Host, conn: libvirt.virConnect) -> None:
    if host.uri.startswith("test://"):
        return  # shared for the process, see _test_hosts
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def alive(conn: libvirt.virConnect) -> bool:
    """False once the connection dropped (keepalive timeout, daemon restart)."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def driver(conn: libvirt.virConnect) -> str:
    """The hypervisor driver's name ("QEMU", "Test"), "" if unknown."""
    try:
        return str(conn.getType())
    except libvirt.libvirtError:
        return ""


def open_uri(uri: str, *, read_only: bool = False) -> libvirt.virConnect:
    if not uri.startswith("test://"):
        return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    with _test_hosts_lock:
        if uri in _test_hosts:
            return _test_hosts[uri]
        if read_only:
            # Nothing changed the host in this process yet: a read-only copy is the same.
            if uri not in _test_hosts_ro:
                _test_hosts_ro[uri] = libvirt.openReadOnly(uri)
            return _test_hosts_ro[uri]
        _test_hosts[uri] = libvirt.open(uri)
        return _test_hosts[uri]
