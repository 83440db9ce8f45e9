"""Self-tests of the real-libvirt test bed (no reconciler code involved)."""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from tests.testbed.daemon import IsolatedHost
from tests.testbed.guest import READY_LINE, Guest, guest_domain_xml, wait_for_ready

pytestmark = pytest.mark.e2e

LIVE_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _domain_names(uri: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def test_guest_boots_and_prints_ready_line(
    system_uri: str, guest: Guest, scratch_dir: Path
) -> None:
    log = scratch_dir / "serial.log"
    conn = libvirt.open(system_uri)
    try:
        dom = conn.createXML(guest_domain_xml("vrt-boot", guest, serial_log=log), 0)
        assert dom.isActive()
        waited = wait_for_ready(log, timeout=60, domain=dom)
        assert waited < 60
        assert READY_LINE in log.read_text()
        # The ACPI power button is honoured: a graceful shutdown ends the transient guest.
        dom.shutdown()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "vrt-boot" in {
            d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        }:
            time.sleep(0.1)
        assert "vrt-boot" not in {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def test_disk_hotplug_then_unplug_emits_device_removed(
    system_uri: str, guest: Guest, scratch_dir: Path, libvirt_events: None
) -> None:
    log = scratch_dir / "serial.log"
    disk = scratch_dir / "vrt-hotplug.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    conn = libvirt.open(system_uri)  # opened after the event loop is registered
    removed: queue.Queue[tuple[str, str]] = queue.Queue()

    def on_removed(_c: libvirt.virConnect, dom: libvirt.virDomain, alias: str, _o: None) -> None:
        removed.put((dom.name(), alias))

    cb = conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_removed, None
    )
    try:
        dom = conn.defineXML(guest_domain_xml("vrt-hotplug", guest, serial_log=log))
        dom.create()
        wait_for_ready(log, timeout=60, domain=dom)

        disk_xml = (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{disk}'/><target dev='vdb' bus='virtio'/></disk>"
        )
        dom.attachDeviceFlags(disk_xml, LIVE_CONFIG)
        assert "dev='vdb'" in dom.XMLDesc(0)
        assert "dev='vdb'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        # The guest sees it (pciehp + virtio_blk), reported on its console.  The guest
        # names it vda: libvirt's target dev is only a hint.
        wait_for_ready(log, timeout=30, line="VR-GUEST-DEVICE add block vda")

        t0 = time.monotonic()
        dom.detachDeviceFlags(disk_xml, LIVE_CONFIG)
        name, alias = removed.get(timeout=30)
        took = time.monotonic() - t0
        assert name == "vrt-hotplug"
        assert alias == "virtio-disk1"
        assert "dev='vdb'" not in dom.XMLDesc(0)
        assert "dev='vdb'" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert took < 30
        wait_for_ready(log, timeout=30, line="VR-GUEST-DEVICE remove block vda")
    finally:
        conn.domainEventDeregisterAny(cb)
        conn.close()


def test_isolated_hosts_do_not_see_each_other(
    system_uri: str,
    guest: Guest,
    scratch_dir: Path,
    isolated_hosts: Callable[..., list[IsolatedHost]],
) -> None:
    a, b = isolated_hosts(2)
    assert isinstance(a, IsolatedHost)
    assert a.uri != b.uri and a.pid != b.pid
    conn = libvirt.open(a.uri)
    try:
        log = scratch_dir / "serial.log"
        dom = conn.defineXML(guest_domain_xml("vrt-iso-a", guest, serial_log=log))
        dom.create()  # guests run on isolated hosts too
        wait_for_ready(log, timeout=60, domain=dom)
    finally:
        conn.close()
    assert "vrt-iso-a" in _domain_names(a.uri)
    assert "vrt-iso-a" not in _domain_names(b.uri)
    assert "vrt-iso-a" not in _domain_names(system_uri)
    # A fresh host carries none of the real host's objects.
    assert _domain_names(b.uri) == set()
    conn = libvirt.open(b.uri)
    try:
        assert conn.listAllNetworks(0) == []
        assert conn.listAllStoragePools(0) == []
    finally:
        conn.close()


def test_stopped_isolated_host_refuses_connections(
    isolated_hosts: Callable[..., list[IsolatedHost]],
) -> None:
    (host,) = isolated_hosts(1)
    libvirt.open(host.uri).close()
    host.stop()
    assert not host.alive()
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(host.uri)
