"""watch: triggers, the work queue and backoff (pure apart from a lock).

Sources and libvirt events ``add`` marks; the worker ``get``s debounced
batches; a host that failed waits out its ``Backoff`` before a retry.

A mark may name what changed: a libvirt event its object (``obj``), a folder
source the manifest file (``path``). A batch made only of such marks may be
reconciled as a *scoped* pass (``watch.scope`` decides); any other mark (start,
resync, reload, a reconnect, a retry, an event that names no object) asks for
a full pass of its host, or of every host.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]
ALL = "*"


class Reason(enum.StrEnum):
    """Why a pass runs. ``urgent`` ones may bring new desired state."""

    START = "start"
    FILE = "file"
    GIT = "git"
    RELOAD = "reload"
    EVENT = "event"
    RESYNC = "resync"
    RETRY = "retry"
    RECONNECT = "reconnect"

    @property
    def urgent(self) -> bool:
        return self in (Reason.START, Reason.FILE, Reason.GIT, Reason.RELOAD)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """What one pass covers: every host, or the named ones, and why."""

    all_hosts: bool
    hosts: frozenset[str]
    reasons: frozenset[Reason]
    causes: tuple[str, ...] = ()
    # What the marks named: libvirt objects (kind, name) by host, and manifest files.
    objects: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    files: frozenset[str] = frozenset()
    # Hosts a mark asked a full pass of (``all_full``: every host).
    full_hosts: frozenset[str] = frozenset()
    all_full: bool = True

    @property
    def urgent(self) -> bool:
        return any(r.urgent for r in self.reasons)

    def selects(self, host: str) -> bool:
        return self.all_hosts or host in self.hosts

    def full(self, host: str) -> bool:
        """Whether a mark of this batch needs a full pass of ``host``."""
        return self.all_full or host in self.full_hosts


def due_at(first: float, last: float, *, debounce: float, max_delay: float) -> float:
    """When a batch is due: ``debounce`` after the last mark, at most ``max_delay``
    after the first, so a steady stream of marks cannot postpone a pass forever."""
    return min(last + debounce, first + max_delay)


class WorkQueue:
    """Marks from any thread, batches for the one worker.

    ``add`` marks a host (None: every host) as needing a pass; ``add_after``
    marks one later (a retry after backoff); ``get`` blocks until a batch is
    due and returns it, or None once ``close`` was called.
    """

    def __init__(
        self, *, debounce: float = 0.2, max_delay: float = 1.0, clock: Clock = time.monotonic
    ):
        self.debounce = debounce
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._all = False
        self._hosts: set[str] = set()
        self._reasons: set[Reason] = set()
        self._causes: dict[str, None] = {}
        self._objects: dict[str, set[tuple[str, str]]] = {}
        self._files: set[str] = set()
        self._full: set[str] = set()
        self._all_full = False
        self._first: float | None = None
        self._last = 0.0
        self._later: dict[str, tuple[float, Reason]] = {}
        self._closed = False
        self._in_flight = False

    def add(
        self,
        reason: Reason,
        host: str | None = None,
        cause: str = "",
        *,
        obj: tuple[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        """Mark ``host`` (None: every host); ``obj`` (kind, name) on it, or the
        manifest file ``path``, say what changed (else: a full pass)."""
        with self._cond:
            self._mark(reason, host, cause, obj=obj, path=path)
            self._cond.notify_all()

    def _mark(
        self,
        reason: Reason,
        host: str | None,
        cause: str,
        *,
        obj: tuple[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        now = self._clock()
        if host is None:
            self._all = True
            if path is not None:
                self._files.add(path)
            else:
                self._all_full = True
        else:
            self._hosts.add(host)
            if obj is not None:
                self._objects.setdefault(host, set()).add(obj)
            else:
                self._full.add(host)
        self._reasons.add(reason)
        if len(self._causes) < 8:
            self._causes[cause or reason.value] = None
        if self._first is None:
            self._first = now
        self._last = now

    def add_after(self, host: str | None, delay: float, reason: Reason = Reason.RETRY) -> None:
        host = ALL if host is None else host
        with self._cond:
            due = self._clock() + delay
            current = self._later.get(host)
            if current is None or due < current[0]:
                self._later[host] = (due, reason)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def busy(self) -> bool:
        """True while something is marked or a batch is being worked on."""
        with self._cond:
            return self._first is not None or self._in_flight

    def done(self) -> None:
        """The worker finished the batch ``get`` returned."""
        with self._cond:
            self._in_flight = False

    def _next_due(self) -> float | None:
        """When ``get`` will next have a batch (None: nothing marked); lock held."""
        times = [due for due, _ in self._later.values()]
        if self._first is not None:
            times.append(
                due_at(self._first, self._last, debounce=self.debounce, max_delay=self.max_delay)
            )
        return min(times) if times else None

    def get(self, timeout: float | None = None) -> Batch | None:
        """The next due batch; None when closed or after ``timeout`` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                for host, (when, reason) in list(self._later.items()):
                    if when <= now:
                        del self._later[host]
                        self._mark(reason, None if host == ALL else host, reason.value)
                due = self._next_due()
                if self._first is not None and due is not None and due <= now:
                    return self._take()
                wait = None if due is None else due - now
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                self._cond.wait(wait)
            return None

    def _take(self) -> Batch:
        batch = Batch(
            all_hosts=self._all,
            hosts=frozenset(self._hosts),
            reasons=frozenset(self._reasons),
            causes=tuple(self._causes),
            objects={h: frozenset(o) for h, o in self._objects.items()},
            files=frozenset(self._files),
            full_hosts=frozenset(self._full),
            all_full=self._all_full,
        )
        self._in_flight = True
        self._all = False
        self._all_full = False
        self._objects.clear()
        self._files.clear()
        self._full.clear()
        self._hosts.clear()
        self._reasons.clear()
        self._causes.clear()
        self._first = None
        return batch


@dataclass(kw_only=True)
class Backoff:
    """Exponential backoff per host: ``base``, times ``factor`` per failure, up to ``cap``."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def failed(self, host: str, now: float) -> float:
        """Record a failure; returns how long to wait before the next try."""
        n = self._failures.get(host, 0) + 1
        self._failures[host] = n
        delay = min(self.cap, self.base * self.factor ** (n - 1))
        self._until[host] = now + delay
        return delay

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)
        self._until.pop(host, None)

    def gated(self, host: str, now: float) -> bool:
        """True while ``host`` waits out its backoff."""
        return self._until.get(host, 0.0) > now

    def failures(self, host: str) -> int:
        return self._failures.get(host, 0)

    def reset(self) -> None:
        """New desired state: try every host again now (failure counts stay)."""
        self._until.clear()
