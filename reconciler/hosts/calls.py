"""Carrying out plan steps: every mutating libvirt call, counted by name.

``Calls.run`` dispatches a ``steps.Step`` on its type; the operations libvirt
offers for every kind go through ``api.API``, the rest are one method each.

Test-only hook: with ``VIRT_RECONCILE_FAULT_AFTER_CALLS=N`` in the environment
the process kills itself with SIGKILL right after its N-th mutating libvirt
call (counted over all hosts of the process). ``tests/e2e/test_crash.py`` uses
it to crash an ``apply`` between any two libvirt calls and check that the next
``apply`` converges. ``VIRT_RECONCILE_STOP_BEFORE_WRITE=HOST`` (with a write guard
only) stops the process right before its first write on HOST. Never set them
outside tests.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, assert_never

import libvirt
from lxml import etree

from reconciler import errors, images, ownership, plan, values
from reconciler.hosts import connection
from reconciler.hosts.api import API, Op, undefine_flags
from reconciler.hosts.events import DeviceRemovals
from reconciler.hosts.registry import RegistryStore
from reconciler.model import Host, Kind
from reconciler.plan import Action
from reconciler.steps import (
    AttachDevice,
    BuildPool,
    CloneVolume,
    CreateVolume,
    Define,
    Defined,
    DefineSecret,
    DeleteVolume,
    DetachDevice,
    NetCommand,
    NetSection,
    NetUpdate,
    RegistrySet,
    ResizeVolume,
    RestartDomain,
    ResumeDomain,
    SetAutostart,
    SetDomainRecord,
    SetDomainText,
    SetMemory,
    SetSecretValue,
    SetVcpus,
    ShutdownDomain,
    Start,
    Step,
    Stop,
    SuspendDomain,
    Undefine,
    UndefineSecret,
    UpdateDevice,
    UploadVolume,
)

# What a long transfer reports as it goes: (what, bytes done, bytes in all; 0: unknown).
Progress = Callable[[str, int, int], None]

FAULT_AFTER_CALLS = "VIRT_RECONCILE_FAULT_AFTER_CALLS"
STOP_BEFORE_WRITE = "VIRT_RECONCILE_STOP_BEFORE_WRITE"
_paused = False
# Progress of a long wait: (what is awaited, at most how many seconds) -> a context
# around the wait (``cli`` shows a spinner on a terminal, a line otherwise).
Waiting = Callable[[str, float], contextlib.AbstractContextManager[None]]


# Before each mutating call: (call name) -> None, or raises a ReconcileError to refuse it.
Guard = Callable[[str], None]


def no_progress(_what: str, _timeout: float) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


_mutating_calls = 0
_mutating_calls_lock = threading.Lock()

_NET_SECTIONS = {
    NetSection.IP_DHCP_HOST: libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
    NetSection.IP_DHCP_RANGE: libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE,
    NetSection.DNS_HOST: libvirt.VIR_NETWORK_SECTION_DNS_HOST,
    NetSection.DNS_TXT: libvirt.VIR_NETWORK_SECTION_DNS_TXT,
    NetSection.DNS_SRV: libvirt.VIR_NETWORK_SECTION_DNS_SRV,
    NetSection.PORTGROUP: libvirt.VIR_NETWORK_SECTION_PORTGROUP,
}
_NET_COMMANDS = {
    NetCommand.MODIFY: libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
    NetCommand.DELETE: libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
    NetCommand.ADD_LAST: libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
}


class Calls:
    """The mutating side of one connection: steps and the registry, with call counts."""

    def __init__(self, host: Host, conn: libvirt.virConnect) -> None:
        self.host = host
        self.conn = conn
        self.counts: collections.Counter[str] = collections.Counter()
        self.registry = RegistryStore(conn, self.call)
        self.detach_timeout = 20.0
        self.balloon_timeout = 10.0
        self.waiting: Waiting = no_progress
        self.removals = DeviceRemovals(conn)
        # Test-driver networks restarted by a define: their live definition
        # is the new one already.
        self._redefined_live: set[str] = set()
        # Called as uploads and downloads go (the CLI shows it on a terminal).
        self.progress: Progress | None = None
        # Called with the call's name before every mutating call; raises to refuse it
        # (``watch --coordination``: this process may no longer write on the host).
        self.guard: Guard | None = None

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Make one mutating libvirt call, counted as ``name`` (after ``guard`` let it)."""
        if self.guard is not None:
            _pause_point(self.host.name)
            self.guard(name)
        result = fn(*args)
        self.counts[name] += 1
        _fault_point()
        return result

    def _op(self, op: Op, *args: Any) -> Any:
        return self.call(op.name, op.fn, *args)

    def run(self, step: Step, action: Action) -> None:
        """Carry out one step of ``action`` (libvirt errors pass through)."""
        match step:
            case Define(kind=Kind.NETWORK, xml=xml):
                self._net_define(action.name, xml)
            case Define(kind=kind, xml=xml):
                self._op(API[kind].define, self.conn, xml)
            case Start(kind=Kind.DOMAIN, paused=True):
                self._dom_start_paused(action.name)
            case Start(kind=kind):
                self._op(API[kind].start, self._lookup(kind, action.name))
            case Stop(kind=kind):
                self._op(API[kind].stop, self._lookup(kind, action.name))
            case Undefine(kind=Kind.DOMAIN, keep_state=keep_state):
                self._dom_undefine(action.name, keep_state)
            case Undefine(kind=kind):
                self._op(API[kind].undefine, self._lookup(kind, action.name))
            case SetAutostart(kind=kind, on=on):
                self._op(API[kind].autostart, self._lookup(kind, action.name), on)
            case SetDomainRecord(xml=xml):
                self._dom_set_record(action, xml)
            case SuspendDomain():
                self.call("suspend", self._dom(action).suspend)
            case ResumeDomain():
                self.call("resume", self._dom(action).resume)
            case ShutdownDomain(timeout=timeout):
                self._dom_shutdown(action, timeout)
            case RestartDomain(timeout=timeout):
                self._dom_shutdown(action, timeout)
                self.call("createWithFlags", self._dom(action).createWithFlags, 0)
            case AttachDevice(xml=xml, live=live, config=config):
                dom = self._dom(action)
                self.call("attachDeviceFlags", dom.attachDeviceFlags, xml, _affect(live, config))
            case UpdateDevice(xml=xml, live=live, config=config):
                dom = self._dom(action)
                self.call("updateDeviceFlags", dom.updateDeviceFlags, xml, _affect(live, config))
            case DetachDevice(xml=xml, alias=alias, live=live, config=config):
                self._dom_detach(action, xml, alias, live, config)
            case SetMemory(kib=kib, live=live, config=config):
                self._dom_set_memory(action, kib, live, config)
            case SetVcpus(count=count, live=live, config=config):
                self._dom_set_vcpus(action, count, live, config)
            case SetDomainText(which=which, text=text, live=live, config=config):
                dom = self._dom(action)
                # A running domain takes it live; a stopped one only in its config.
                live = live and bool(dom.isActive())
                which_type = (
                    libvirt.VIR_DOMAIN_METADATA_TITLE
                    if which == "title"
                    else libvirt.VIR_DOMAIN_METADATA_DESCRIPTION
                )
                self.call(
                    "setMetadata",
                    dom.setMetadata,
                    which_type,
                    text,
                    None,
                    None,
                    _affect(live, config),
                )
            case NetUpdate():
                self._net_update(action, step)
            case BuildPool():
                self._pool_build(action)
            case CreateVolume(pool=pool, xml=xml, backing=backing):
                self._vol_create(pool, self._with_backing(xml, backing))
            case UploadVolume():
                self._vol_upload(action, step)
            case CloneVolume():
                self._vol_clone(action, step)
            case ResizeVolume(pool=pool, capacity=capacity, domain=domain):
                self._vol_resize(action, pool, capacity, domain)
            case DeleteVolume(pool=pool):
                self._vol_delete(action, pool)
            case DefineSecret(xml=xml):
                self.call("secretDefineXML", self.conn.secretDefineXML, xml, 0)
            case SetSecretValue():
                self._secret_set_value(action, step)
            case UndefineSecret(uuid=uuid):
                self.call("secretUndefine", self.conn.secretLookupByUUIDString(uuid).undefine)
            case RegistrySet(kind=kind, key=key, record=record):
                self.registry.set_record(kind, key, record)
            case _:
                assert_never(step)

    def _lookup(self, kind: Defined, name: str) -> Any:
        return API[kind].lookup(self.conn, name)

    # domains
    def _dom(self, action: Action) -> libvirt.virDomain:
        return self.conn.lookupByName(action.name)

    def discard_domain(self, name: str) -> None:
        """Stop and undefine a domain this run created on a host that could not start
        it (libvirt errors pass through)."""
        dom = self.conn.lookupByName(name)
        if dom.isActive():
            self._op(API[Kind.DOMAIN].stop, dom)
        self._dom_undefine(name, keep_state=False)  # made by this run: nothing to keep

    def _dom_set_record(self, action: Action, xml: str) -> None:
        el = etree.fromstring(xml)
        inner = f"<owner>{_escape(el.text or '')}</owner>"
        self.call(
            "setMetadata",
            self._dom(action).setMetadata,
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            inner,
            ownership.PREFIX,
            ownership.NAMESPACE,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )

    def _dom_start_paused(self, name: str) -> None:
        dom = self.conn.lookupByName(name)
        try:
            self.call("createWithFlags", dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as e:
            # libvirt 9.0's test driver knows no START_PAUSED: start, then pause.
            if e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
            self.call("createWithFlags", dom.createWithFlags, 0)
            self.call("suspend", dom.suspend)

    def _dom_shutdown(self, action: Action, timeout: float) -> None:
        dom = self._dom(action)
        if dom.isActive():
            with contextlib.suppress(libvirt.libvirtError):  # no ACPI: destroy below
                self.call("shutdown", dom.shutdown)
            deadline = time.monotonic() + timeout
            if dom.isActive():
                what = f"{action.ref}: the guest shuts down (destroyed after {timeout:g}s)"
                with self.waiting(what, timeout):
                    while dom.isActive() and time.monotonic() < deadline:
                        time.sleep(0.2)
            if dom.isActive():
                self.call("destroy", dom.destroy)

    def _dom_undefine(self, name: str, keep_state: bool) -> None:
        dom = self.conn.lookupByName(name)
        *fuller, last = undefine_flags(keep_state)
        for flags in fuller:
            try:
                self._op(API[Kind.DOMAIN].undefine, dom, flags)
                return
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                ):
                    raise
        self._op(API[Kind.DOMAIN].undefine, dom, last)

    def _dom_detach(
        self, action: Action, xml: str, alias: str | None, live: bool, config: bool
    ) -> None:
        dom = self._dom(action)
        waiter = self.removals.expect(dom, alias) if live and alias else None
        try:
            self.call("detachDeviceFlags", dom.detachDeviceFlags, xml, _affect(live, config))
            if waiter is not None and alias is not None:
                # libvirt may report success for a device the guest keeps:
                # wait for DEVICE_REMOVED (or _FAILED), then look.
                if not waiter.is_set():
                    what = f"{action.ref}: the guest releases device {alias}"
                    with self.waiting(what, self.detach_timeout):
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
                self.removals.forget(dom, alias)

    def _dom_set_memory(self, action: Action, kib: int, live: bool, config: bool) -> None:
        dom = self._dom(action)
        _state, max_kib, before_kib, *_ = dom.info() if live else (0, 0, 0)
        try:
            self.call("setMemoryFlags", dom.setMemoryFlags, kib, _affect(live, config))
        except libvirt.libvirtError as e:
            # Some drivers (the test driver) refuse LIVE|CONFIG together.
            if not (live and config) or e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
            self.call("setMemoryFlags", dom.setMemoryFlags, kib, _affect(True, False))
            self.call("setMemoryFlags", dom.setMemoryFlags, kib, _affect(False, True))
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
            self.call("setVcpusFlags", dom.setVcpusFlags, count, _affect(live, config))
        except libvirt.libvirtError:
            fewer = live and count < dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if not (fewer and config):
                raise
            # The guest did not release a vCPU (libvirt gives up after a few
            # seconds): persist the count; the running domain keeps its vCPUs
            # until restarted, and the next plan shows pending-restart.
            self.call("setVcpusFlags", dom.setVcpusFlags, count, _affect(False, True))

    # networks
    def _net_define(self, name: str, xml: str) -> None:
        running = self._test_driver_active_network(name)
        if running is not None:
            # libvirt 9.0's test driver drops a new definition of an active
            # network (and has no INACTIVE XML to show it): define it while
            # stopped. Its networks have no bridge, so nothing is disrupted.
            running.destroy()
        try:
            self._op(API[Kind.NETWORK].define, self.conn, xml)
        finally:
            if running is not None:
                running.create()
                self._redefined_live.add(name)

    def _test_driver_active_network(self, name: str) -> libvirt.virNetwork | None:
        if connection.driver(self.conn).lower() != "test":
            return None
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            return None
        return net if net.isActive() else None

    def _net_update(self, action: Action, step: NetUpdate) -> None:
        live, config = step.live, step.config
        if action.name in self._redefined_live:
            live = False  # the test driver's restart in _net_define applied it live
            if not config:
                return
        flags = (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE if live else 0) | (
            libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG if config else 0
        )
        self.call(
            "networkUpdate",
            self.conn.networkLookupByName(action.name).update,
            _NET_COMMANDS[step.command],
            _NET_SECTIONS[step.section],
            step.parent_index,
            step.xml,
            flags,
        )

    # pools and volumes
    def _pool(self, name: str) -> libvirt.virStoragePool:
        return self.conn.storagePoolLookupByName(name)

    def _pool_build(self, action: Action) -> None:
        pool = self._pool(action.name)
        kind = etree.fromstring(pool.XMLDesc(0).encode()).get("type")
        if kind == "dir":
            self.call("storagePoolBuild", pool.build, 0)  # mkdir only
            return
        try:
            # Never overwrite: building a disk or logical pool formats the device.
            self.call("storagePoolBuild", pool.build, libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise

    def _with_backing(self, xml: str, backing: tuple[str, str] | None) -> str:
        """``xml`` with the backing volume's file (and format) as its ``<backingStore>``."""
        if backing is None:
            return xml
        base = self._pool(backing[0]).storageVolLookupByName(backing[1])
        doc = etree.fromstring(xml.encode())
        backing_el = doc.find("backingStore")
        if backing_el is None:
            backing_el = etree.SubElement(doc, "backingStore")
        for el in backing_el.findall("path"):
            backing_el.remove(el)
        path = etree.Element("path")
        path.text = base.path()
        backing_el.insert(0, path)
        if backing_el.find("format") is None:
            fmt = etree.fromstring(base.XMLDesc(0).encode()).find("target/format")
            if fmt is not None:
                etree.SubElement(backing_el, "format", type=fmt.get("type") or "raw")
        return etree.tostring(doc, encoding="unicode")

    def _vol_create(self, pool: str, xml: str) -> None:
        p = self._pool(pool)
        try:
            self.call(
                "storageVolCreateXML", p.createXML, xml, libvirt.VIR_STORAGE_VOL_CREATE_VALIDATE
            )
        except libvirt.libvirtError as e:
            # libvirt 9.0's test driver knows no VALIDATE flag for volumes.
            if e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or "unsupported flags" not in str(
                e
            ):
                raise
            self.call("storageVolCreateXML", p.createXML, xml, 0)

    def _report(self, what: str) -> images.Progress | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(what, done, total)

    def _vol_upload(self, action: Action, step: UploadVolume) -> None:
        if step.data is not None:
            # An image made in memory (a cloud-init seed) goes up from a temporary file.
            with tempfile.NamedTemporaryFile(prefix="virt-reconcile-", suffix=".img") as tmp:
                tmp.write(step.data)
                tmp.flush()
                self._vol_upload(action, dataclasses.replace(step, data=None, file=tmp.name))
            return
        ref = action.ref
        try:
            if step.url is not None:
                local = images.fetch(step.url, step.sha256, self._report(f"{ref}: download"))
            else:
                local = str(step.file)
                images.verify(local, step.sha256)
            info = images.inspect(local)
        except images.ImageError as e:
            raise errors.ActionError(ref, self.host.name, f"vol_upload: {e}") from e
        doc = etree.fromstring(step.xml.encode())
        fmt_el = doc.find("target/format")
        fmt = fmt_el.get("type") if fmt_el is not None else None
        if fmt is not None and fmt != info.format:
            raise errors.ActionError(
                ref,
                self.host.name,
                f"vol_upload: the image is {info.format}, the volume's format is {fmt}",
            )
        capacity_el = doc.find("capacity")
        capacity = int(capacity_el.text or 0) if capacity_el is not None else info.virtual_size
        if capacity < info.virtual_size:
            raise errors.ActionError(
                ref,
                self.host.name,
                f"vol_upload: capacity {capacity} bytes is less than the image's virtual "
                f"size {info.virtual_size} bytes",
            )
        # The volume starts empty and raw, so the upload writes the whole file and
        # nothing of a formatted empty image is left behind; libvirt reads the
        # image's format and size back when the pool is refreshed.
        for el in doc.findall("capacity") + doc.findall("allocation"):
            doc.remove(el)
        etree.SubElement(doc, "capacity", unit="bytes").text = "0"
        if fmt_el is not None:
            fmt_el.set("type", "raw")
        pool = self._pool(step.pool)
        vol = self.call(
            "storageVolCreateXML", pool.createXML, etree.tostring(doc, encoding="unicode"), 0
        )
        try:
            try:
                self._send(vol, local, info.file_size, f"{ref}: upload")
            except OSError as e:
                raise errors.ActionError(
                    ref, self.host.name, f"vol_upload: cannot read {local}: {e.strerror}"
                ) from e
            self.call("storagePoolRefresh", pool.refresh, 0)
            vol = pool.storageVolLookupByName(action.name)
            if capacity > info.virtual_size:
                self.call("storageVolResize", vol.resize, capacity, 0)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                self.call("storageVolDelete", vol.delete, 0)
            raise

    def _send(self, vol: libvirt.virStorageVol, path: str, size: int, what: str) -> None:
        """Stream a local file into a volume (works on a remote host too)."""
        stream = self.conn.newStream(0)
        self.call("storageVolUpload", vol.upload, stream, 0, size, 0)
        report = self._report(what)
        done = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(images.CHUNK):
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(bytes(view))
                        if sent < 0:
                            raise errors.HostError(self.host.name, f"{what}: the stream refused")
                        view = view[sent:]
                    done += len(chunk)
                    if report is not None:
                        report(done, size)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def _vol_clone(self, action: Action, step: CloneVolume) -> None:
        original = self._pool(step.from_pool).storageVolLookupByName(step.from_name)
        doc = etree.fromstring(step.xml.encode())
        if doc.find("capacity") is None:
            etree.SubElement(doc, "capacity", unit="bytes").text = str(original.info()[1])
        self.call(
            "storageVolCreateXMLFrom",
            self._pool(step.pool).createXMLFrom,
            etree.tostring(doc, encoding="unicode"),
            original,
            0,
        )

    # secrets
    def _secret_set_value(self, action: Action, step: SetSecretValue) -> None:
        try:
            value = values.read(step.value)
        except values.UnreadableValue as e:
            raise errors.ActionError(action.ref, self.host.name, f"{step.label}: {e}") from None
        secret = self.conn.secretLookupByUUIDString(step.uuid)
        self.call("secretSetValue", secret.setValue, value, 0)
        digest = values.digest(self.registry.secret_key(), value)
        del value
        self.registry.set_record(
            Kind.SECRET, action.name, dataclasses.replace(step.record, digest=digest)
        )

    def _vol_resize(self, action: Action, pool: str, capacity: int, domain: str | None) -> None:
        vol = self._pool(pool).storageVolLookupByName(action.name)
        if domain is None:
            self.call("storageVolResize", vol.resize, capacity, 0)
            return
        # The running domain's qemu holds the image: grow it through the domain,
        # so the guest sees the new size too.
        self.call(
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
        for other_pool in self.conn.listAllStoragePools(
            libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE
        ):
            for other in other_pool.listAllVolumes(0):
                backing = etree.fromstring(other.XMLDesc(0).encode()).findtext("backingStore/path")
                if backing == vol.path():
                    raise errors.ActionError(
                        action.ref,
                        self.host.name,
                        f"not deleted: it is the backing file of volume "
                        f"{other_pool.name()}/{other.name()}",
                    )
        for dom in self.conn.listAllDomains(0):
            xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
            if dom.isActive():
                xmls.append(dom.XMLDesc(0))
            if any(refs & plan.disk_refs(x) for x in xmls):
                raise errors.ActionError(
                    action.ref, self.host.name, f"not deleted: domain {dom.name()} uses it"
                )
        self.call("storageVolDelete", vol.delete, 0)


def _affect(live: bool, config: bool) -> int:
    return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0
    )


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


def _pause_point(host: str) -> None:
    """Test-only: ``VIRT_RECONCILE_STOP_BEFORE_WRITE=HOST`` stops the process
    (SIGSTOP) once, right before its first guarded write on HOST, so a test can
    resume it after its coordination lease ran out (tests/e2e/test_replicas.py)."""
    global _paused
    if _paused or os.environ.get(STOP_BEFORE_WRITE) != host:
        return
    _paused = True
    os.kill(os.getpid(), signal.SIGSTOP)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
