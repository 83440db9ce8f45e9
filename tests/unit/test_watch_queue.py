"""watch's pure decisions: when a batch is due, what it holds, how long a host backs off,
which file events are manifest changes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from watchdog import events

from reconciler.ownership import Record, Registry
from reconciler.watch import Backoff, Reason, Snapshot, WorkQueue, due_at, parse_address
from reconciler.watch.sources import GitError, GitSource, _ManifestEvents


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(debounce=0.25, max_delay=1.0, clock=clock)  # binary fractions: exact


def test_due_after_quiet_debounce_but_never_later_than_max_delay() -> None:
    assert due_at(10.0, 10.0, debounce=0.2, max_delay=1.0) == pytest.approx(10.2)  # quiet
    assert due_at(10.0, 10.5, debounce=0.2, max_delay=1.0) == pytest.approx(10.7)
    # Marks keep coming: the batch is due max_delay after the first one anyway.
    assert due_at(10.0, 10.95, debounce=0.2, max_delay=1.0) == pytest.approx(11.0)


def test_nothing_marked_means_no_batch(queue: WorkQueue) -> None:
    assert queue.get(timeout=0) is None
    assert not queue.busy()


def test_marks_within_debounce_become_one_batch(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add(Reason.EVENT, "kvm-a", "kvm-a: Domain/web-1 defined (updated)")
    clock.now += 0.125
    queue.add(Reason.EVENT, "kvm-b", "kvm-b: Network/lan stopped")
    clock.now += 0.125
    assert queue.get(timeout=0) is None  # 0.125 s since the last mark: not quiet long enough
    clock.now += 0.125
    batch = queue.get(timeout=0)
    assert batch is not None
    assert not batch.all_hosts
    assert batch.hosts == {"kvm-a", "kvm-b"}
    assert batch.reasons == {Reason.EVENT}
    assert batch.causes == ("kvm-a: Domain/web-1 defined (updated)", "kvm-b: Network/lan stopped")
    assert batch.selects("kvm-a") and not batch.selects("kvm-c")
    assert not batch.urgent
    assert queue.busy()  # until the worker says done
    queue.done()
    assert not queue.busy()
    assert queue.get(timeout=0) is None


def test_a_mark_for_every_host_selects_any_host(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add(Reason.FILE, cause="modified web.yaml")
    queue.add(Reason.EVENT, "kvm-a")
    clock.now += 0.25
    batch = queue.get(timeout=0)
    assert batch is not None and batch.all_hosts
    assert batch.selects("anything")
    assert batch.urgent  # a file change may bring new desired state


def test_steady_marks_cannot_postpone_a_pass_past_max_delay(
    queue: WorkQueue, clock: FakeClock
) -> None:
    for _ in range(7):
        queue.add(Reason.EVENT, "kvm-a")
        clock.now += 0.125
        assert queue.get(timeout=0) is None
    queue.add(Reason.EVENT, "kvm-a")
    clock.now += 0.125  # 1.0 s after the first mark
    assert queue.get(timeout=0) is not None


def test_add_after_is_due_only_later_then_debounced(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("kvm-a", 4.0)
    queue.add_after("kvm-a", 8.0)  # the earlier retry wins
    clock.now += 3.75
    assert queue.get(timeout=0) is None
    clock.now += 0.25
    assert queue.get(timeout=0) is None  # moved into the batch, which is now debounced
    clock.now += 0.25
    batch = queue.get(timeout=0)
    assert batch is not None
    assert batch.hosts == {"kvm-a"} and batch.reasons == {Reason.RETRY}
    queue.done()
    clock.now += 10
    assert queue.get(timeout=0) is None


def test_add_after_for_every_host(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after(None, 1.0)
    clock.now += 1.0
    queue.get(timeout=0)
    clock.now += 0.25
    batch = queue.get(timeout=0)
    assert batch is not None and batch.all_hosts


def test_urgent_reasons_are_those_that_may_change_desired_state() -> None:
    assert {r for r in Reason if r.urgent} == {
        Reason.START,
        Reason.FILE,
        Reason.GIT,
        Reason.RELOAD,
    }


def test_get_blocks_until_a_mark_from_another_thread_is_due() -> None:
    queue = WorkQueue(debounce=0.05, max_delay=1.0)
    threading.Timer(0.05, queue.add, args=(Reason.EVENT, "kvm-a")).start()
    started = time.monotonic()
    batch = queue.get(timeout=5)
    elapsed = time.monotonic() - started
    assert batch is not None and batch.hosts == {"kvm-a"}
    assert 0.09 <= elapsed < 1.0


def test_close_wakes_a_blocked_get() -> None:
    queue = WorkQueue()
    threading.Timer(0.05, queue.close).start()
    started = time.monotonic()
    assert queue.get() is None
    assert time.monotonic() - started < 2


def test_backoff_doubles_up_to_the_cap_and_gates_the_host() -> None:
    b = Backoff(base=1.0, factor=2.0, cap=5.0)
    assert [b.failed("kvm-a", 100.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.failures("kvm-a") == 5
    assert b.gated("kvm-a", 104.9)
    assert not b.gated("kvm-a", 105.0)
    assert not b.gated("kvm-b", 100.0)


def test_backoff_success_forgets_and_reset_ungates_but_keeps_counts() -> None:
    b = Backoff(base=1.0)
    b.failed("kvm-a", 0.0)
    b.failed("kvm-a", 0.0)
    b.reset()
    assert not b.gated("kvm-a", 0.0)
    assert b.failed("kvm-a", 0.0) == 4.0  # still the third failure in a row
    b.succeeded("kvm-a")
    assert b.failures("kvm-a") == 0
    assert b.failed("kvm-a", 0.0) == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9177", ("127.0.0.1", 9177)),
        ("[::1]:0", ("::1", 0)),
        (":9177", ("0.0.0.0", 9177)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9177", "localhost:", "host:port", "h:70000"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


# --- which file-system events are manifest changes --------------------------------


def _file_events(
    files: frozenset[str] = frozenset(),
) -> tuple[list[tuple[Reason, str, str | None]], Any]:
    seen: list[tuple[Reason, str, str | None]] = []

    def notify(reason: Reason, cause: str = "", *, path: str | None = None) -> None:
        seen.append((reason, cause, path))

    return seen, _ManifestEvents(notify, set(files))


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (events.FileModifiedEvent("/m/web.yaml"), "/m/web.yaml"),
        (events.FileCreatedEvent("/m/sub/db.yml"), "/m/sub/db.yml"),
        (events.FileDeletedEvent("/m/web.yaml"), "/m/web.yaml"),
        # an editor's atomic save: the manifest file is named, not the swap file
        (events.FileMovedEvent("/m/.web.yaml.swp", "/m/web.yaml"), "/m/web.yaml"),
        (events.FileMovedEvent("/m/web.yaml", "/m/web.yaml.bak"), "/m/web.yaml"),  # went away
        (events.DirDeletedEvent("/m/sub"), None),  # names no file: a full pass
        (events.DirMovedEvent("/m/old", "/m/new"), None),
        # named on the command line
        (events.FileModifiedEvent("/etc/vr/hosts-override.conf"), "/etc/vr/hosts-override.conf"),
    ],
)
def test_manifest_changes_mark_every_host(event: events.FileSystemEvent, path: str | None) -> None:
    seen, handler = _file_events(frozenset({"/etc/vr/hosts-override.conf"}))
    handler.on_any_event(event)
    assert [(reason, p) for reason, _, p in seen] == [(Reason.FILE, path)]
    assert seen[0][1].startswith(event.event_type)


@pytest.mark.parametrize(
    "event",
    [
        events.FileModifiedEvent("/m/.web.yaml.swp"),
        events.FileCreatedEvent("/m/notes.txt"),
        events.FileOpenedEvent("/m/web.yaml"),
        events.FileClosedNoWriteEvent("/m/web.yaml"),
        events.DirModifiedEvent("/m"),  # follows every file change inside; the file event counts
    ],
)
def test_other_file_events_are_ignored(event: events.FileSystemEvent) -> None:
    seen, handler = _file_events()
    handler.on_any_event(event)
    assert seen == []


def test_snapshot_shows_checkout_paths_relative_to_the_repository() -> None:
    snap = Snapshot(paths=("/c/abc/lab",), revision="abc", root="/c/abc")
    assert (
        snap.display("/c/abc/lab/web.yaml:3: spec.memory: bad")
        == "lab/web.yaml:3: spec.memory: bad"
    )
    assert Snapshot(paths=("m",)).display("m/web.yaml:3: x") == "m/web.yaml:3: x"


@pytest.mark.parametrize(
    ("url", "ref"), [("--upload-pack=touch /tmp/x", "main"), ("repo", "-x"), ("", "main")]
)
def test_git_source_refuses_what_git_would_read_as_an_option(
    url: str, ref: str, tmp_path: Path
) -> None:
    with pytest.raises(GitError, match="must not be empty or start with '-'"):
        GitSource(url, ref=ref, cache_dir=tmp_path)


def test_registry_keeps_the_applied_revision() -> None:
    reg = Registry(applied={"revision": "abc123", "source": "https://git.example/lab.git@main"})
    back = Registry.from_xml(reg.to_xml())
    assert back.applied == reg.applied
    assert back.with_pool("lab", Record(managed=True)).applied == reg.applied
    assert "applied" not in Registry().to_xml()  # registries without watch stay as they were
