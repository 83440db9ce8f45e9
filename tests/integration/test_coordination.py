"""reconciler.coordination against a real etcd (tooz + etcd3gw): members, owners, locks, guard.

One private etcd per module (tests/testbed/etcd.py); leases of 2 s keep it short.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from reconciler import coordination
from reconciler.coordination import Coordinator, NotAllowed
from tests.integration.conftest import EMPTY_HOST, Run, host_snapshot
from tests.testbed.etcd import Etcd, start_etcd

HOSTS = [f"h{i}" for i in range(6)]
Conn = Callable[[str], libvirt.virConnect]
LEASE = 2.0
_names = itertools.count(1)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


@pytest.fixture
def replicas(etcd: Etcd) -> Iterator[Callable[..., Coordinator]]:
    """Factory of started replicas (a fresh group name space per test); all stopped after."""
    made: list[Coordinator] = []

    def make(name: str | None = None, **kw: object) -> Coordinator:
        c = Coordinator(
            etcd.url,
            replica_id=name or f"r{next(_names)}",
            lease=LEASE,
            **kw,  # type: ignore[arg-type]
        )
        c.start()
        if c.member:
            c.set_hosts(HOSTS)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def _until(check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic() - started


def _settled(*cs: Coordinator) -> bool:
    for c in cs:
        c.tick()
    names = {c.replica for c in cs}
    return all(set(c.view().members) >= names for c in cs)


def test_members_share_the_hosts_one_owner_each(
    replicas: Callable[..., Coordinator], etcd: Etcd
) -> None:
    a, b, c = replicas(), replicas(), replicas()
    _until(lambda: _settled(a, b, c), 5)
    views = [x.view() for x in (a, b, c)]
    assert all(v.usable for v in views)
    assert views[0].owners == views[1].owners == views[2].owners  # all agree
    owned = [set(x.owned()) for x in (a, b, c)]
    assert set().union(*owned) == set(HOSTS)
    assert sum(len(o) for o in owned) == len(HOSTS)  # each host exactly once
    # ``status --coordination`` reads the same assignment without joining.
    assert coordination.current_owners(etcd.url, HOSTS) == dict(views[0].owners)


def test_guard_needs_ownership_and_the_lock(replicas: Callable[..., Coordinator]) -> None:
    a, b = replicas(), replicas()
    _until(lambda: _settled(a, b), 5)
    host = a.owned()[0]
    with pytest.raises(NotAllowed, match="lock is not held"):
        a.check(host, "defineXML")
    with pytest.raises(NotAllowed, match=f"owned by replica {a.replica}"):
        b.check(host, "defineXML")
    with a.hold([host]) as held:
        assert held.hosts == (host,)
        a.check(host, "defineXML")  # allowed
        with b.hold([host]) as other:  # a member locks only what it owns
            assert other.hosts == () and other.busy == ()
    with pytest.raises(NotAllowed):
        a.check(host, "defineXML")  # released


def test_an_apply_lock_excludes_the_owner(replicas: Callable[..., Coordinator]) -> None:
    a = replicas()
    _until(lambda: _settled(a), 5)
    host = a.owned()[0]
    apply = replicas("apply-test", member=False)
    with apply.hold([host]) as mine:
        assert mine.hosts == (host,)
        apply.check(host, "defineXML")
        with a.hold([host]) as theirs:
            assert theirs.busy == (host,) and theirs.hosts == ()
    with a.hold([host], timeout=LEASE) as theirs:
        assert theirs.hosts == (host,)


def test_a_paused_replica_writes_nothing_and_loses_its_hosts(
    replicas: Callable[..., Coordinator],
) -> None:
    offset = [0.0]

    def clock() -> float:
        return coordination.boottime() + offset[0]

    a = replicas(clock=clock)
    b = replicas()
    _until(lambda: _settled(a, b), 5)
    mine = set(a.owned())
    assert mine
    host = sorted(mine)[0]
    with a.hold([host]):
        a._stopping.set()  # its heartbeat thread ends: like SIGSTOP, nothing renews its lease
        assert a._thread is not None
        a._thread.join()
        offset[0] = 3 * LEASE  # ... and it wakes up three leases later
        with pytest.raises(NotAllowed, match="no heartbeat"):
            a.check(host, "defineXML")
        # b takes the hosts over once a's key expired: within 2 leases.
        took = _until(lambda: (b.tick(), set(b.owned()) >= mine)[1], 2 * LEASE + 1)
        assert took <= 2 * LEASE + 1
        with b.hold([host], timeout=LEASE) as held:  # a's lock lease runs out too
            assert held.hosts == (host,)
            b.check(host, "defineXML")
        a.tick()  # a heartbeats again: it rejoins, but the lock it took before is void
        with pytest.raises(NotAllowed):
            a.check(host, "defineXML")


def test_a_heartbeat_after_a_lapsed_window_tells_the_watcher(
    replicas: Callable[..., Coordinator],
) -> None:
    """A slow tick lets the window lapse with no failing heartbeat: passes in between
    changed nothing, so the next good heartbeat must wake the watcher (CI saw a
    watcher wait forever here)."""
    offset = [0.0]
    told: list[bool] = []
    me: list[Coordinator] = []

    def clock() -> float:
        return coordination.boottime() + offset[0]

    a = replicas(clock=clock, on_change=lambda g, lost: told.append(bool(me) and me[0].usable()))
    me.append(a)
    _until(lambda: _settled(a), 5)
    a._stopping.set()  # no background heartbeat: the test ticks
    assert a._thread is not None
    a._thread.join()
    a.tick()
    told.clear()
    a.tick()
    assert told == []  # in time: nothing to tell
    offset[0] += LEASE  # the window lapses between two heartbeats
    assert not a.usable()
    a.tick()
    assert told == [True]
    assert a.usable()


def test_backend_down_nothing_allowed_then_back(
    replicas: Callable[..., Coordinator], etcd: Etcd, tmp_path: Path
) -> None:
    changes: list[bool] = []  # usable, at each change the watcher is told of
    me: list[Coordinator] = []
    a = replicas(on_change=lambda g, lost: changes.append(bool(me) and me[0].usable()))
    me.append(a)
    _until(lambda: _settled(a), 5)
    host = a.owned()[0]
    etcd.stop()
    try:
        _until(lambda: not a.usable(), LEASE + 2)
        view = a.view()
        assert not view.usable and view.reason
        with pytest.raises(NotAllowed):
            a.check(host, "defineXML")
        with pytest.raises(coordination.CoordinationError), a.hold([host]):
            pass
        # A new replica that cannot reach the backend owns nothing, allows nothing.
        fresh = Coordinator(etcd.url, replica_id="fresh", lease=LEASE)
        fresh.start()
        try:
            fresh.set_hosts(HOSTS)
            assert fresh.owned() == () and not fresh.usable()
            assert "unreachable" in fresh.view().reason
        finally:
            fresh.stop()
        changes.clear()
    finally:
        etcd.start()
    _until(a.usable, 3 * LEASE)
    # The watcher is told (its callback may run just after usable() turns true):
    # it passes the owned hosts again.
    _until(lambda: True in changes, LEASE)
    with a.hold([host]) as held:
        assert held.hosts == (host,)
        a.check(host, "defineXML")


# --- the command line ------------------------------------------------------------------

DOMAIN = (
    "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: vrt-coord}\n"
    "spec: {type: test, memory: 64MiB, vcpus: 1}\n"
)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "d.yaml").write_text(DOMAIN)
    return folder


def test_apply_takes_the_host_lock_and_writes_under_it(
    etcd: Etcd,
    tmp_path: Path,
    host_uri: str,
    run: Run,
    conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "locks.jsonl"
    monkeypatch.setenv(coordination.LOCK_LOG_ENV, str(log))
    code, _, err = run(
        "apply", _folder(tmp_path), "-c", host_uri, "--yes", "--coordination", etcd.url
    )
    assert code == 0, err
    assert "vrt-coord" in {d.name() for d in conn(host_uri).listAllDomains()}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "locked" and kinds[-1] == "released" and "write" in kinds
    assert {e["who"] for e in events} == {f"apply-{os.getpid()}"}


def test_apply_while_a_replica_holds_the_host_changes_nothing(
    etcd: Etcd, tmp_path: Path, host_uri: str, run: Run, conn: Conn
) -> None:
    before = host_snapshot(conn(host_uri))
    other = Coordinator(etcd.url, replica_id="holder", lease=LEASE, member=False)
    other.start()
    try:
        with other.hold(["default"]) as held:
            assert held.hosts == ("default",)
            code, _, err = run(
                "apply", _folder(tmp_path), "-c", host_uri, "--yes", "--coordination", etcd.url
            )
    finally:
        other.stop()
    assert code == 1
    assert "default" in err and "nothing was changed" in err
    assert host_snapshot(conn(host_uri)) == before


def test_apply_with_the_backend_unreachable_changes_nothing(
    tmp_path: Path, host_uri: str, run: Run, conn: Conn
) -> None:
    before = host_snapshot(conn(host_uri))
    code, _, err = run(
        "apply", _folder(tmp_path), "-c", host_uri, "--yes",
        "--coordination", "etcd3+http://127.0.0.1:9",
    )  # fmt: skip
    assert code == 1
    assert "cannot lock" in err and "unreachable" in err
    assert host_snapshot(conn(host_uri)) == before


def test_status_shows_the_owner(
    replicas: Callable[..., Coordinator], etcd: Etcd, tmp_path: Path, host_uri: str, run: Run
) -> None:
    folder = _folder(tmp_path)
    code, out, _ = run("status", folder, "-c", host_uri, "-o", "json", "--coordination", etcd.url)
    assert code == 0
    [host] = json.loads(out)["hosts"]
    assert host["owner"] is None  # no replica in the group yet
    a = replicas("only")
    _until(lambda: _settled(a), 5)
    code, out, _ = run("status", folder, "-c", host_uri, "--coordination", etcd.url)
    assert code == 0 and "owned by replica only" in out


def test_replica_options_need_coordination(tmp_path: Path, run: Run) -> None:
    folder = _folder(tmp_path)
    code, _, err = run("watch", folder, "-c", "test:///default", "--replica-id", "a")
    assert code == 1 and "--replica-id and --lease need --coordination" in err
    code, _, err = run(
        "watch", folder, "-c", "test:///default", "--coordination", "etcd3+http://127.0.0.1:9",
        "--lease", "1s",
    )  # fmt: skip
    assert code == 1 and "--lease 1s: at least 2s" in err


def test_a_second_replica_with_the_same_id_stays_out(replicas: Callable[..., Coordinator]) -> None:
    a = replicas("twin")
    _until(lambda: _settled(a), 5)
    b = replicas("twin")
    assert not b.usable() and "live member already" in b.view().reason
    assert b.owned() == ()
    with pytest.raises(NotAllowed):
        b.check(a.owned()[0], "defineXML")


# --- the daemon, in this process, on two test-driver hosts ----------------------------


def _hosts_folder(tmp_path: Path, uris: list[str], memory: str) -> Path:
    folder = tmp_path / "w"
    folder.mkdir(exist_ok=True)
    docs = [
        f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: t{i}}}\n"
        f'spec: {{uri: "{u}"}}\n'
        for i, u in enumerate(uris)
    ] + [
        f"apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {{name: vrt-cw{i}}}\n"
        f"spec: {{host: t{i}, type: test, memory: {memory}, vcpus: 1}}\n"
        for i in range(len(uris))
    ]
    tmp = folder / "all.yaml.tmp"
    tmp.write_text("---\n".join(docs))
    tmp.rename(folder / "all.yaml")
    return folder


def _mib(c: libvirt.virConnect, name: str) -> int:
    try:
        return int(c.lookupByName(name).maxMemory()) // 1024
    except libvirt.libvirtError:
        return 0


def test_the_daemon_passes_owned_hosts_under_their_locks(
    etcd: Etcd, tmp_path: Path, conn: Conn
) -> None:
    from reconciler import watch

    uris = []
    for i in range(2):
        path = tmp_path / f"host{i}.xml"
        path.write_bytes((EMPTY_HOST).read_bytes())
        uris.append(f"test://{path}")
    conns = [conn(u) for u in uris]
    folder = _hosts_folder(tmp_path, uris, "64MiB")
    c = Coordinator(etcd.url, replica_id="solo", lease=LEASE)
    w = watch.Watcher(
        watch.Config(paths=(str(folder),), metrics_addr="127.0.0.1:0", resync=3600.0,
                     backoff_base=0.2),
        coordination=c,
    )  # fmt: skip
    w.start()
    try:
        _until(lambda: all(_mib(x, f"vrt-cw{i}") == 64 for i, x in enumerate(conns)), 30)
        metrics = w.metrics.render().decode()
        assert "virt_reconcile_owned_hosts 2.0" in metrics
        assert "virt_reconcile_coordination_up 1.0" in metrics
        assert 'virt_reconcile_host_owner{host="t0",replica="solo"} 1.0' in metrics
        assert "replica: <b>solo</b>" in w.page()

        # An apply holds t1: t0 changes, t1 waits for the lock, then changes.
        other = Coordinator(etcd.url, replica_id="apply-x", lease=LEASE, member=False)
        other.start()
        try:
            # (A pass of the watcher may hold t1 right now: wait for it.)
            with other.hold(["t1"], timeout=10) as mine:
                assert mine.hosts == ("t1",)
                _hosts_folder(tmp_path, uris, "80MiB")
                _until(lambda: _mib(conns[0], "vrt-cw0") == 80, 30)
                time.sleep(0.5)
                assert _mib(conns[1], "vrt-cw1") == 64
        finally:
            other.stop()
        _until(lambda: _mib(conns[1], "vrt-cw1") == 80, 30)

        # The backend goes: nothing is changed, the pending changes are reported.
        etcd.stop()
        try:
            _until(lambda: not w.health()["coordination"]["up"], 3 * LEASE)
            _hosts_folder(tmp_path, uris, "96MiB")
            pending = 'virt_reconcile_pending_changes{action="update",host="t0"} 1.0'
            _until(lambda: pending in w.metrics.render().decode(), 30)
            assert [_mib(x, f"vrt-cw{i}") for i, x in enumerate(conns)] == [80, 80]
            assert "virt_reconcile_coordination_up 0.0" in w.metrics.render().decode()
        finally:
            etcd.start()
        _until(lambda: all(_mib(x, f"vrt-cw{i}") == 96 for i, x in enumerate(conns)), 30)
    finally:
        w.stop()
        assert w.wait(30)


def test_a_release_the_backend_missed_is_retried(
    replicas: Callable[..., Coordinator], etcd: Etcd
) -> None:
    a = replicas("apply-a", member=False)
    with a.hold(["hx"]) as held:
        assert held.hosts == ("hx",)
        etcd.stop()  # the release at the end of the block gets no answer
    etcd.start()
    b = replicas("apply-b", member=False)
    _until(b.usable, 3 * LEASE)
    with b.hold(["hx"], timeout=3 * LEASE) as mine:  # a's heartbeat must not keep it alive
        assert mine.hosts == ("hx",)
