"""Several ``watch`` replicas on one coordination backend (tooz): members, shards, host locks.

``watch --coordination URL`` runs one ``Coordinator``: a tooz client of the backend
(``etcd3+http://HOST:2379``; any tooz driver with locks and groups) that

* joins the group ``virt-reconcile`` as ``--replica-id`` and heartbeats every
  lease/3 (the member's key lives on a lease of ``--lease`` seconds: a replica that
  stops heartbeating drops out of the group within one lease);
* assigns the hosts of the manifests over the live members with tooz's consistent
  hash ring (``tooz.hashring``, what tooz's ``Partitioner`` uses): each host has one
  owner, and a member joining or leaving moves ~1/n of the hosts. The candidate
  hosts of a placed domain go to one owner together (``shards``), so the replica
  that places it sees every candidate;
* holds a host's tooz lock (``/virt-reconcile/host/NAME``, on its own lease) from
  reading the host to the convergence check of a pass;
* ``check(host)``, the write guard, runs before every mutating libvirt call: it
  refuses unless the backend answered within the lease (measured from the start of
  the last good heartbeat), this replica still owns the host, and it holds the
  host's lock taken since it last (re)joined. A replica paused past its lease finds
  its heartbeat too old (and, once it heartbeats again, that it had left the group):
  it writes nothing with what it read before the pause.

``apply --coordination URL`` takes the same host locks (``Coordinator(member=False)``):
it does not join the group or own hosts; ``check`` asks for the lock only.

The backend holds membership and locks only: desired state stays in git, observed
state on the hosts (docs/scaling.md). While the backend cannot be reached nothing is
changed; ``usable`` says so and ``reason`` why.

Test and audit hook: with ``VIRT_RECONCILE_LOCK_LOG=FILE`` every lock taken and
released (``lapsed``: the wall time it had stopped counting, when that was before
the release) and every write the guard let pass or refused is appended to FILE as
one JSON object per line (``tests/e2e/test_replicas.py`` checks that no two lock
holders of a host overlapped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler import errors
from reconciler.defaults import DEFAULT_LEASE

log = logging.getLogger(__name__)

GROUP = b"virt-reconcile"
LOCK_PREFIX = b"/virt-reconcile/host/"
LOCK_LOG_ENV = "VIRT_RECONCILE_LOCK_LOG"
# A lease counts as held for this share of its length after the heartbeat that
# renewed it started (the rest is a margin for the backend's own timing).
VALID_SHARE = 0.8


class CoordinationError(errors.ReconcileError):
    """The coordination backend refused or could not be reached."""


class NotAllowed(CoordinationError):
    """The write guard refused: this process may not write on the host now."""

    def __init__(self, host: str, why: str) -> None:
        self.host = host
        super().__init__(f"host {host}: not written: {why}")


# (gained, lost) hosts; or both empty when only ``usable`` changed.
OnChange = Callable[[frozenset[str], frozenset[str]], None]


def boottime() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME): a machine suspended past
    its lease finds it expired on waking, which ``time.monotonic`` would not."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def default_replica_id() -> str:
    return socket.gethostname()


@dataclass(frozen=True, kw_only=True)
class View:
    """What a replica knows of the group (status page, /healthz, metrics)."""

    replica: str
    usable: bool
    reason: str  # why nothing is changed, when not usable
    members: tuple[str, ...] = ()
    owners: Mapping[str, str] = field(default_factory=dict)  # host -> member

    @property
    def owned(self) -> tuple[str, ...]:
        return tuple(sorted(h for h, m in self.owners.items() if m == self.replica))

    def as_json(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "up": self.usable,
            "reason": self.reason or None,
            "members": list(self.members),
            "owners": dict(sorted(self.owners.items())),
        }


@dataclass(frozen=True, kw_only=True)
class Held:
    """The hosts a ``hold`` locked, and those another writer holds now."""

    hosts: tuple[str, ...]
    busy: tuple[str, ...] = ()


def require(url: str) -> None:
    """Refuse early, with what to install, when tooz (or the etcd client) is missing."""
    try:
        import tooz.coordination  # noqa: F401

        if url.startswith("etcd3"):
            import etcd3gw  # noqa: F401
    except ImportError as e:
        raise CoordinationError(
            f"--coordination needs the Python packages tooz and etcd3gw ({e.name} is "
            "missing): pip install 'virt-reconcile[coordination]'"
        ) from e


def shards(hosts: Iterable[str], linked: Iterable[Iterable[str]] = ()) -> dict[str, str]:
    """Each host's shard key: its own name, or for hosts ``linked`` together (the
    candidate hosts of a placed domain) the first name of the linked set, so one
    replica places the domain, knowing every candidate."""
    key = {h: h for h in hosts}

    def root(h: str) -> str:
        while key[h] != h:
            h = key[h]
        return h

    for group in linked:
        members = sorted(root(h) for h in group if h in key)
        for h in members[1:]:
            key[h] = members[0]
    return {h: root(h) for h in key}


def owners(
    members: Iterable[str], hosts: Iterable[str], linked: Iterable[Iterable[str]] = ()
) -> dict[str, str]:
    """Each host's owner: its shard key on tooz's consistent hash ring of ``members``."""
    from tooz import hashring

    names = sorted(set(members))
    if not names:
        return {}
    ring = hashring.HashRing(names)
    result: dict[str, str] = {}
    for h, key in shards(hosts, linked).items():
        (node,) = ring.get_nodes(key.encode())
        result[h] = node.decode() if isinstance(node, bytes) else str(node)
    return result


def _lease_seconds(lease: float) -> int:
    """tooz takes whole seconds; etcd grants no lease under 2 s."""
    return max(2, math.ceil(lease))


class Coordinator:
    """One process's part in the group: heartbeats, host ownership, host locks.

    ``member=False`` (``apply``): locks only, no membership, owns no host.
    """

    def __init__(
        self,
        url: str,
        *,
        replica_id: str | None = None,
        lease: float = DEFAULT_LEASE,
        member: bool = True,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = boottime,
    ) -> None:
        require(url)
        self.url = url
        self.replica = replica_id or default_replica_id()
        self.lease = float(_lease_seconds(lease))
        self.member = member
        self.on_change = on_change
        self._clock = clock
        self._state = threading.RLock()
        self._driver: Any = None
        self._joined = False
        self._epoch = 0  # bumped on every (re)join: locks of an older epoch are void
        self._ended: dict[int, float] = {}  # epoch -> wall time its locks stopped counting
        self._valid_until = -math.inf
        self._usable = False
        self._reason = "not connected to the coordination backend yet"
        self._members: tuple[str, ...] = ()
        self._hosts: tuple[str, ...] = ()
        self._linked: tuple[tuple[str, ...], ...] = ()
        self._owners: dict[str, str] = {}
        self._held: dict[str, tuple[Any, int, float]] = {}  # host -> (lock, epoch, since)
        self._unreleased: list[Any] = []  # locks whose release the backend did not answer
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._audit = os.environ.get(LOCK_LOG_ENV)

    # --- life cycle --------------------------------------------------------------

    def start(self) -> None:
        """Heartbeat once now (so the first pass knows its hosts), then every lease/3."""
        self.tick()
        self._thread = threading.Thread(target=self._beat, name="coordination", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Release the locks, leave the group, close the client (best effort)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.lease)
        with self._state:
            driver, self._driver = self._driver, None
            self._usable = False
            self._reason = "stopped"
        for host in list(self._held):
            self._release(driver, host)
        if driver is None:
            return
        with contextlib.suppress(Exception):
            if self.member and self._joined:
                driver.leave_group(GROUP).get()
        with contextlib.suppress(Exception):
            driver.stop()

    def _beat(self) -> None:
        while not self._stopping.wait(self.lease / 3):
            self.tick()

    # --- heartbeat -----------------------------------------------------------------

    def tick(self) -> None:
        """One heartbeat: renew the leases, read the members, recompute the owners."""
        started = self._clock()
        with self._state:
            if started >= self._valid_until:
                # No good heartbeat within the lease (paused, backend away): the
                # leases may have ended, so the locks held so far are void.
                self._void(self._wall(self._valid_until))
        try:
            driver = self._driver or self._connect()
            self._retry_releases(driver)
            driver.heartbeat()
            members: tuple[str, ...] = ()
            if self.member:
                members = self._members_with_me(driver)
        except Exception as e:  # tooz and its HTTP client raise many kinds: all mean "down"
            self._down(_reason(e))
            return
        self._up(started, members)

    def _connect(self) -> Any:
        from tooz import coordination

        seconds = str(int(self.lease))
        driver = coordination.get_coordinator(
            self.url,
            self.replica.encode(),
            lock_timeout=seconds,
            membership_timeout=seconds,
            timeout=str(max(1, int(self.lease) // 2)),
        )
        try:
            driver.start(start_heart=False)
        except BaseException:
            with contextlib.suppress(Exception):
                driver.stop()
            raise
        self._driver = driver
        return driver

    def _void(self, since: float) -> None:
        """(Holding ``_state``.) The locks taken so far stop counting as of ``since``."""
        if self._held:
            self._ended[self._epoch] = since
        self._epoch += 1

    def _wall(self, at: float) -> float:
        """A time of ``clock`` as wall-clock time (for the lock log)."""
        return time.time() - (self._clock() - at) if math.isfinite(at) else time.time()

    def _members_with_me(self, driver: Any) -> tuple[str, ...]:
        from tooz import coordination

        try:
            members = _names(driver.get_members(GROUP).get())
        except coordination.GroupNotCreated:
            members = ()
        with self._state:
            joined = self._joined
        if self.replica in members and joined:
            return members
        if self.replica in members:  # not ours: another process, or our last life's key
            raise CoordinationError(
                f"replica id {self.replica!r} is a live member already (another replica "
                "with the same --replica-id, or this one restarted within its lease)"
            )
        with self._state:
            if self._joined:
                log.warning(
                    "replica %s: dropped out of the group (no heartbeat within %gs); "
                    "rejoining; locks taken before are void",
                    self.replica,
                    self.lease,
                )
            self._joined = False
            # The locks stopped counting when the lease last held did, at the latest.
            self._void(min(time.time(), self._wall(self._valid_until)))
        try:
            driver.join_group(GROUP).get()
        except coordination.GroupNotCreated:
            with contextlib.suppress(coordination.GroupAlreadyExist):
                driver.create_group(GROUP).get()
            driver.join_group(GROUP).get()
        except coordination.MemberAlreadyExist as e:
            raise CoordinationError(
                f"replica id {self.replica!r} is a live member already (another replica "
                "with the same --replica-id?)"
            ) from e
        with self._state:
            self._joined = True
        log.info("replica %s: joined the group at %s", self.replica, _redact(self.url))
        return _names(driver.get_members(GROUP).get())

    def _up(self, started: float, members: tuple[str, ...]) -> None:
        with self._state:
            # A window that lapsed without a failing heartbeat (a slow tick, a pause)
            # also made passes change nothing: tell the watcher it is back.
            was = self._usable and self._clock() < self._valid_until
            self._usable = True
            self._reason = ""
            self._valid_until = started + self.lease * VALID_SHARE
            self._members = members
            gained, lost = self._reassign()
        if not was:
            log.info("coordination backend %s answers: changes allowed", _redact(self.url))
        self._changed(gained, lost, not was)

    def _down(self, reason: str) -> None:
        text = f"coordination backend unreachable: {reason}"
        with self._state:
            was = self._usable or self._reason != text
            self._usable = False
            self._reason = text
        if was:
            log.error("%s; nothing is changed until it answers", self._reason)
        if was and self.on_change is not None:
            self.on_change(frozenset(), frozenset())

    def _reassign(self) -> tuple[frozenset[str], frozenset[str]]:
        before = set(self._owned_locked())
        self._owners = owners(self._members, self._hosts, self._linked) if self.member else {}
        after = set(self._owned_locked())
        return frozenset(after - before), frozenset(before - after)

    def _changed(self, gained: frozenset[str], lost: frozenset[str], revived: bool) -> None:
        if gained or lost:
            log.info(
                "replica %s owns %d host(s)%s%s (members: %s)",
                self.replica,
                len(self.owned()),
                f"; gained {', '.join(sorted(gained))}" if gained else "",
                f"; lost {', '.join(sorted(lost))}" if lost else "",
                ", ".join(self._members),
                extra={"replica": self.replica},
            )
        if (gained or lost or revived) and self.on_change is not None:
            self.on_change(gained, lost)

    # --- ownership -----------------------------------------------------------------

    def set_hosts(self, hosts: Iterable[str], linked: Iterable[Iterable[str]] = ()) -> None:
        """The hosts to share out (the manifests' hosts), and the sets of hosts that go
        to one owner together (a placed domain's candidates); recompute the owners."""
        names = tuple(sorted(set(hosts)))
        groups = tuple(sorted({tuple(sorted(set(g))) for g in linked}))
        with self._state:
            if (names, groups) == (self._hosts, self._linked):
                return
            self._hosts, self._linked = names, groups
            gained, lost = self._reassign()
        self._changed(gained, lost, False)

    def _owned_locked(self) -> list[str]:
        return [h for h, m in self._owners.items() if m == self.replica]

    def owned(self) -> tuple[str, ...]:
        with self._state:
            return tuple(sorted(self._owned_locked()))

    def usable(self) -> bool:
        """True while the backend answered within the lease: changes are allowed."""
        with self._state:
            return self._usable and self._clock() < self._valid_until

    def view(self) -> View:
        with self._state:
            reason = self._reason
            if not reason and self._clock() >= self._valid_until:
                reason = "no heartbeat within the lease"
            return View(
                replica=self.replica,
                usable=not reason,
                reason=reason,
                members=self._members,
                owners=dict(self._owners),
            )

    # --- locks and the write guard -------------------------------------------------

    @contextlib.contextmanager
    def hold(self, hosts: Iterable[str], *, timeout: float = 0.0) -> Iterator[Held]:
        """Lock the hosts (each waits up to ``timeout`` s) for the ``with`` block.

        A member locks only hosts it owns. Hosts another writer holds come back as
        ``busy``; the backend not answering raises ``CoordinationError``.
        """
        got: list[str] = []
        busy: list[str] = []
        owned = set(self.owned())
        try:
            for host in sorted(set(hosts)):
                if self.member and host not in owned:
                    continue
                if self._acquire(host, timeout):
                    got.append(host)
                else:
                    busy.append(host)
            yield Held(hosts=tuple(got), busy=tuple(busy))
        finally:
            for host in got:
                self._release(self._driver, host)

    def _acquire(self, host: str, timeout: float) -> bool:
        driver = self._driver
        if driver is None or not self.usable():
            raise CoordinationError(
                f"host {host}: cannot lock: {self.view().reason or 'not connected'}"
            )
        lock = driver.get_lock(LOCK_PREFIX + host.encode())
        with self._state:
            epoch = self._epoch
        try:
            ok = bool(lock.acquire(blocking=timeout if timeout > 0 else False))
        except Exception as e:
            raise CoordinationError(f"host {host}: cannot lock: {_reason(e)}") from e
        if not ok:
            return False
        with self._state:
            self._held[host] = (lock, epoch, self._clock())
        self._record("locked", host)
        log.debug("host %s: lock taken by %s", host, self.replica)
        return True

    def _release(self, driver: Any, host: str) -> None:
        with self._state:
            lock, epoch, since = self._held.pop(host)
            lapsed = None  # when the lock stopped counting, if before now
            if epoch != self._epoch:
                lapsed = self._ended.get(epoch)
            elif self._clock() >= self._valid_until:
                lapsed = self._wall(self._valid_until)
        self._record("released", host, held=round(self._clock() - since, 3), lapsed=lapsed)
        if driver is not None:
            self._unlock(driver, lock)

    def _unlock(self, driver: Any, lock: Any) -> bool:
        """Release a lock; if the backend does not answer, again at each heartbeat
        (tooz keeps renewing a lock whose release failed, which would hold the host)."""
        try:
            lock.release()
        except Exception:
            with self._state:
                self._unreleased.append(lock)
            return False
        # Released, or not ours any more (the lease ran out): tooz renews it no more.
        getattr(driver, "_acquired_locks", set()).discard(lock)
        return True

    def _retry_releases(self, driver: Any) -> None:
        with self._state:
            pending, self._unreleased = self._unreleased, []
        for i, lock in enumerate(pending):
            if not self._unlock(driver, lock):  # still no answer: the rest next time
                with self._state:
                    self._unreleased.extend(pending[i + 1 :])
                return

    def check(self, host: str, call: str = "") -> None:
        """The write guard: raise ``NotAllowed`` unless this process may write on ``host``."""
        why = self._forbidden(host)
        self._record("refused" if why else "write", host, call=call, why=why or None)
        if why:
            log.warning("host %s: %s refused: %s", host, call or "write", why)
            raise NotAllowed(host, why)

    def _forbidden(self, host: str) -> str:
        with self._state:
            if not self._usable:
                return self._reason
            if self._clock() >= self._valid_until:
                return f"no heartbeat of the coordination backend within the {self.lease:g}s lease"
            if self.member and self._owners.get(host) != self.replica:
                owner = self._owners.get(host)
                return f"owned by replica {owner}" if owner else "owned by no replica"
            held = self._held.get(host)
            if held is None:
                return "its coordination lock is not held"
            if held[1] != self._epoch:
                return "its coordination lock was lost (this replica dropped out of the group)"
            return ""

    def _record(self, event: str, host: str, **fields: Any) -> None:
        if not self._audit:
            return
        doc = {"t": time.time(), "who": self.replica, "pid": os.getpid(), "event": event}
        doc.update(host=host, **{k: v for k, v in fields.items() if v not in (None, "")})
        line = (json.dumps(doc) + "\n").encode()
        fd = os.open(self._audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def current_owners(
    url: str, hosts: Iterable[str], linked: Iterable[Iterable[str]] = ()
) -> dict[str, str]:
    """Each host's owner as the live members of the group on ``url`` share them now."""
    require(url)
    from tooz import coordination

    driver = coordination.get_coordinator(url, f"status-{os.getpid()}".encode(), timeout="5")
    try:
        driver.start(start_heart=False)
        try:
            members = _names(driver.get_members(GROUP).get())
        except coordination.GroupNotCreated:
            members = ()
    except Exception as e:
        raise CoordinationError(f"--coordination {_redact(url)}: {_reason(e)}") from e
    finally:
        with contextlib.suppress(Exception):
            driver.stop()
    return owners(members, hosts, linked)


def _names(members: Iterable[Any]) -> tuple[str, ...]:
    return tuple(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members))


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _redact(url: str) -> str:
    from reconciler.uris import redact_uri

    return redact_uri(url)
