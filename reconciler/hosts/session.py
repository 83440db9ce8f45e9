"""``Session``: one open connection to one host, the one object the pipeline talks to."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

import libvirt

from reconciler import errors, ownership
from reconciler.hosts import connection, observe
from reconciler.hosts.calls import Calls, Guard, Progress, Waiting
from reconciler.hosts.causes import describe
from reconciler.hosts.events import HostEvent, Watcher
from reconciler.model import Host
from reconciler.observed import CapsKey, HostState, ObjectKey
from reconciler.plan import Action
from reconciler.steps import Step


class Session:
    """One open connection to one host.

    A ``read_only`` session (``plan``, ``status``, ``export``) observes only:
    every mutating entry point refuses before it reaches libvirt.
    """

    def __init__(self, host: Host, conn: libvirt.virConnect, *, read_only: bool = False) -> None:
        self.host = host
        self.conn = conn
        self.read_only = read_only
        self._full: libvirt.virConnect | None = None  # see _capabilities_conn
        self._calls = Calls(host, conn)
        self._caps = observe.Capabilities()
        self._watcher = Watcher(host.name, conn)
        self.observed: HostState | None = None  # the host as last read (``observe``)

    @property
    def calls(self) -> collections.Counter[str]:
        """The mutating libvirt calls made so far, by name."""
        return self._calls.counts

    @property
    def registry(self) -> ownership.Registry:
        """The host's registry as last observed or written."""
        return self._calls.registry.current

    @property
    def waiting(self) -> Waiting:
        """Called around each long wait (a guest shutting down, a device removal)."""
        return self._calls.waiting

    @waiting.setter
    def waiting(self, progress: Waiting) -> None:
        self._calls.waiting = progress

    @property
    def detach_timeout(self) -> float:
        """Seconds a live detach waits for the guest to release the device."""
        return self._calls.detach_timeout

    @detach_timeout.setter
    def detach_timeout(self, seconds: float) -> None:
        self._calls.detach_timeout = seconds

    @property
    def progress(self) -> Progress | None:
        """Called as long transfers (uploads, downloads) go: (what, done, total bytes)."""
        return self._calls.progress

    @progress.setter
    def progress(self, report: Progress | None) -> None:
        self._calls.progress = report

    @property
    def guard(self) -> Guard | None:
        """Called with the call's name before every mutating libvirt call; raises to refuse."""
        return self._calls.guard

    @guard.setter
    def guard(self, check: Guard | None) -> None:
        self._calls.guard = check

    # --- connecting --------------------------------------------------------------

    @classmethod
    def open(cls, host: Host, *, read_only: bool = False) -> Session:
        return cls(host, connection.connect(host, read_only=read_only), read_only=read_only)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise errors.HostError(
                self.host.name, f"{what}: refused, the connection is read-only (a bug)"
            )

    def close(self) -> None:
        self.unwatch()
        self._calls.removals.close()
        if self._full is not None and self._full is not self.conn:
            connection.disconnect(self.host, self._full)
        connection.disconnect(self.host, self.conn)

    def alive(self) -> bool:
        """False once the connection dropped (keepalive timeout, daemon restart)."""
        return connection.alive(self.conn)

    # --- watching -----------------------------------------------------------------

    def watch(self, callback: Callable[[HostEvent], None]) -> None:
        """Call ``callback`` for every change event on this host, until ``unwatch``.

        It runs in libvirt's event thread: keep it short (mark work, return).
        """
        self._watcher.watch(callback)

    def unwatch(self) -> None:
        """Stop the callbacks ``watch`` registered."""
        self._watcher.unwatch()

    # --- observing ----------------------------------------------------------------

    def observe(self, *, capabilities: Iterable[CapsKey] = (), reuse: bool = False) -> HostState:
        """Read every domain, network, pool and volume on the host.

        ``capabilities``: the (arch, machine, type) combinations that domains
        to be placed ask for, read with ``getDomainCapabilities``; with
        ``reuse`` (a later observation in the same run) those read before
        are not read again.
        """
        if not reuse:
            self._caps.clear()
        try:
            # Secret values, like domain capabilities, need a read-write connection.
            objects, registry = observe.objects(self.conn, readable=self._capabilities_conn)
            wanted = sorted(set(capabilities))
            caps_conn = self._capabilities_conn() if wanted else self.conn
            caps = self._caps.read(
                caps_conn, wanted, uri=self.host.uri, read_only=caps_conn is self.conn
            )
        except libvirt.libvirtError as e:
            raise errors.HostError(self.host.name, describe(e, uri=self.host.uri)) from e
        self._calls.registry.current = registry
        self.observed = HostState(
            host=self.host,
            objects={o.key: o for o in objects},
            registry=registry,
            driver=connection.driver(self.conn),
            capabilities=caps,
            parser=str(libvirt.getVersion()),
        )
        return self.observed

    def observe_some(self, keys: Iterable[ObjectKey]) -> HostState:
        """The host as last read (``observed``) with the objects ``keys`` name and
        the registry read again: a scoped ``watch`` pass. The read before it, over
        this connection, was a full ``observe``."""
        if self.observed is None:
            raise errors.HostError(self.host.name, "a scoped read before a full one (a bug)")
        state = self.observe_again(self.observed, keys)
        self.observed = state
        return state

    def observe_again(self, state: HostState, keys: Iterable[ObjectKey]) -> HostState:
        """``state`` with the objects ``keys`` read again, and the registry: what a
        convergence check needs after an apply that changed only those objects.

        A domain or network is read by name, a pool with all its volumes, a
        volume alone (``observe.some``); one gone now is left out. Secrets are
        read only with the whole host (``observe``).
        """
        try:
            fresh = observe.some(self.conn, keys, state)
        except libvirt.libvirtError as e:
            raise errors.HostError(self.host.name, describe(e, uri=self.host.uri)) from e
        self._calls.registry.current = fresh.registry
        return fresh

    def _capabilities_conn(self) -> libvirt.virConnect:
        """libvirt refuses domain capabilities and secret values on a read-only
        connection: a read-only session reads them (placement and secret drift need
        them) over a read-write connection of their own when the account may open
        one, else goes without (define decides; a secret reads as private)."""
        if not self.read_only or self.host.uri.startswith("test://"):
            return self.conn
        if self._full is None:
            try:
                self._full = connection.open_uri(self.host.uri)
            except libvirt.libvirtError:
                self._full = self.conn
        return self._full

    # --- doing ---------------------------------------------------------------------

    def run(self, step: Step, action: Action) -> None:
        """Carry out one step of an action; raises ActionError on failure."""
        self._writable(f"{action.ref}: {step.label}")
        try:
            self._calls.run(step, action)
        except libvirt.libvirtError as e:
            raise errors.ActionError(
                action.ref, self.host.name, f"{step.label}: {describe(e, uri=self.host.uri)}"
            ) from e

    def discard_domain(self, name: str) -> None:
        """Roll back a domain this run defined here: stop it, undefine it, leave nothing."""
        self._writable(f"rollback of Domain/{name}")
        try:
            self._calls.discard_domain(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise errors.ActionError(
                f"Domain/{name}", self.host.name, f"rollback: {describe(e, uri=self.host.uri)}"
            ) from e

    def record_placement(self, name: str, record: ownership.Record | None) -> None:
        """Keep (or drop) the placement record of a domain that lives on another host."""
        self._writable(f"placement record of Domain/{name}")
        try:
            self._calls.registry.set_domain(name, record)
        except libvirt.libvirtError as e:
            raise errors.HostError(
                self.host.name, f"cannot record the placement of Domain/{name}: {describe(e)}"
            ) from e

    def record_applied(self, applied: dict[str, str]) -> None:
        """Remember on the host what ``watch`` applied (the git revision), for ``status``."""
        self._writable("the revision record")
        try:
            self._calls.registry.set_applied(applied)
        except libvirt.libvirtError as e:
            raise errors.HostError(
                self.host.name, f"cannot record the revision: {describe(e)}"
            ) from e
