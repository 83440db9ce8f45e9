"""watch on file-backed test-driver hosts: folder and git sources, drift, metrics, signals.

The watcher runs in threads of this process, so it shares the process-wide
test-driver connection (``conn``) with the test: what the watcher does is on
the host the test reads, and a change the test makes is a change behind the
watcher's back (libvirt sends it the same events as any client's).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from reconciler import cli, lock, watch
from reconciler.model import Host
from tests.integration.conftest import REPO, host_snapshot

DOMAIN = """\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: vrt-w1}}
spec:
  type: test
  memory: {memory}
  vcpus: 1
  state: running
"""
NETWORK = """\
apiVersion: virt-reconcile/v1
kind: Network
metadata: {name: vrt-wnet}
spec:
  forward: nat
  bridge: vrtw0
  ip: {address: 10.88.0.1, prefix: 24}
  state: active
"""


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    pytest.fail(f"not within {timeout}s: {what}")


def memory_kib(c: libvirt.virConnect, name: str = "vrt-w1") -> int:
    """``<memory>`` of the persistent definition (a running domain keeps its old value)."""
    xml = c.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return int(etree.fromstring(xml.encode()).findtext("memory") or 0)


def domain_exists(c: libvirt.virConnect, name: str = "vrt-w1") -> bool:
    return name in {d.name() for d in c.listAllDomains()}


Start = Callable[..., watch.Watcher]


@pytest.fixture
def start_watch() -> Iterator[Start]:
    """Start watchers (metrics on a free port, a long resync); all stopped afterwards."""
    started: list[watch.Watcher] = []

    def start(lock: watch.LockHook = watch.no_lock, **options: object) -> watch.Watcher:
        config = watch.Config(
            **{"metrics_addr": "127.0.0.1:0", "resync": 3600.0, "backoff_base": 0.2, **options}  # type: ignore[arg-type]
        )
        w = watch.Watcher(config, lock=lock)
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
        assert w.wait(30), "the watcher did not stop"


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "domain.yaml").write_text(DOMAIN.format(memory="64MiB"))
    (d / "network.yaml").write_text(NETWORK)
    return d


WatchFolder = Callable[..., tuple[watch.Watcher, libvirt.virConnect]]


@pytest.fixture
def watch_folder(
    manifests: Path, host_uri: str, conn: Callable[[str], libvirt.virConnect], start_watch: Start
) -> WatchFolder:
    """Watch ``manifests`` for this test's host; returns once the first passes are done."""

    def start(**options: object) -> tuple[watch.Watcher, libvirt.virConnect]:
        c = conn(host_uri)
        w = start_watch(paths=(str(manifests),), connect=host_uri, **options)
        wait_for(lambda: domain_exists(c), 5, "the first pass creates the domain")
        assert w.wait_idle(5)
        return w, c

    return start


def http(w: watch.Watcher, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.metrics_port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_folder_change_is_applied_within_a_second(
    manifests: Path, watch_folder: WatchFolder
) -> None:
    _w, c = watch_folder()
    assert memory_kib(c) == 64 * 1024
    assert c.lookupByName("vrt-w1").isActive()
    assert c.networkLookupByName("vrt-wnet").isActive()

    (manifests / "domain.yaml").write_text(DOMAIN.format(memory="96MiB"))
    took = wait_for(lambda: memory_kib(c) == 96 * 1024, 5, "the edited memory is applied")
    assert took < 1.0, f"applied after {took:.2f}s"


def test_bad_manifest_changes_nothing_and_the_daemon_keeps_going(
    manifests: Path, watch_folder: WatchFolder
) -> None:
    w, c = watch_folder(prune=True)
    before = host_snapshot(c)

    # A typo in one file and a new, valid domain in another: nothing is applied.
    (manifests / "domain.yaml").write_text(
        DOMAIN.format(memory="96MiB").replace("vcpus: 1", "vcpu: 1")
    )
    (manifests / "other.yaml").write_text(DOMAIN.format(memory="64MiB").replace("vrt-w1", "vrt-w2"))
    wait_for(lambda: not w.health()["manifestsValid"], 5, "the bad manifest is noticed")
    assert w.wait_idle(5)
    assert host_snapshot(c) == before
    assert w.health()["status"] == "ok"

    # Drift is still reverted, to the last good manifests.
    c.lookupByName("vrt-w1").destroy()
    wait_for(lambda: c.lookupByName("vrt-w1").isActive(), 5, "the stopped domain is started")
    assert memory_kib(c) == 64 * 1024
    assert not domain_exists(c, "vrt-w2")

    # Fixed: both changes apply.
    (manifests / "domain.yaml").write_text(DOMAIN.format(memory="96MiB"))
    wait_for(lambda: domain_exists(c, "vrt-w2"), 5, "the fixed manifests are applied")
    wait_for(lambda: memory_kib(c) == 96 * 1024, 5, "the fixed memory is applied")
    assert w.health()["manifestsValid"]


def test_drift_events_revert_redefine_undefine_and_network_stop(
    watch_folder: WatchFolder,
) -> None:
    w, c = watch_folder()

    # Redefined behind our back, as `virsh edit` does.
    el = etree.fromstring(
        c.lookupByName("vrt-w1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()
    )
    el.find("memory").text = str(128 * 1024)  # type: ignore[union-attr]
    c.defineXML(etree.tostring(el).decode())
    assert memory_kib(c) == 128 * 1024
    wait_for(lambda: memory_kib(c) == 64 * 1024, 5, "the redefined memory is reverted")

    c.networkLookupByName("vrt-wnet").destroy()
    wait_for(lambda: c.networkLookupByName("vrt-wnet").isActive(), 5, "the network restarts")

    dom = c.lookupByName("vrt-w1")
    dom.destroy()
    dom.undefine()
    wait_for(lambda: domain_exists(c), 5, "the undefined domain is defined again")
    wait_for(lambda: c.lookupByName("vrt-w1").isActive(), 5, "and started")

    assert w.wait_idle(5)
    status, text = http(w, "/metrics")
    assert status == 200
    drift = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('virt_reconcile_drift_corrections_total{host="default"')
    )
    assert drift >= 3
    assert 'virt_reconcile_triggers_total{reason="event"}' in text


def test_metrics_and_healthz(
    watch_folder: WatchFolder,
) -> None:
    w, _c = watch_folder()
    status, text = http(w, "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert 'virt_reconcile_objects{host="default",sync="Synced"} 2.0' in lines
    assert 'virt_reconcile_objects{host="default",sync="Failed"} 0.0' in lines
    assert 'virt_reconcile_host_up{host="default"} 1.0' in lines
    assert 'virt_reconcile_changes_total{action="create",host="default"} 2.0' in lines
    assert any(
        line.startswith('virt_reconcile_reconcile_runs_total{host="default",result="ok"}')
        for line in lines
    )
    assert any(
        line.startswith("virt_reconcile_reconcile_duration_seconds_count ") for line in lines
    )
    assert any(
        line.startswith('virt_reconcile_last_success_timestamp_seconds{host="default"} ')
        and float(line.split()[-1]) > time.time() - 60
        for line in lines
    )
    assert "virt_reconcile_manifests_valid 1.0" in lines

    status, body = http(w, "/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok" and health["hosts"] == {"default": "ok"}
    assert health["passes"] >= 1

    passes = w.passes
    status, _ = http(w, "/-/reload", method="POST")
    assert status == 202
    wait_for(lambda: w.passes > passes, 5, "the reload runs a pass")


def test_unreachable_host_backs_off_and_recovers(
    manifests: Path, tmp_path: Path, conn: Callable[[str], libvirt.virConnect], start_watch: Start
) -> None:
    missing = tmp_path / "later.xml"
    uri = f"test://{missing}"
    w = start_watch(paths=(str(manifests),), connect=uri, backoff_base=0.1, backoff_cap=0.4)
    wait_for(lambda: w.last_outcomes.get("default") is not None, 5, "a first pass")
    assert w.last_outcomes["default"].result == "unreachable"
    assert w.health()["status"] == "ok"
    wait_for(lambda: w.backoff.failures("default") >= 3, 5, "retries with backoff")
    # The host appears: the next retry connects and applies.
    missing.write_text((REPO / "tests" / "data" / "testdriver" / "empty.xml").read_text())
    wait_for(lambda: w.last_outcomes["default"].result == "ok", 5, "the host is reconciled")
    assert domain_exists(conn(uri))


def runs(w: watch.Watcher, host: str) -> float:
    _, text = http(w, "/metrics")
    prefix = f'virt_reconcile_reconcile_runs_total{{host="{host}",'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_an_event_reconciles_only_its_host(
    tmp_path: Path, conn: Callable[[str], libvirt.virConnect], start_watch: Start
) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    docs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.xml"
        path.write_text((REPO / "tests" / "data" / "testdriver" / "empty.xml").read_text())
        docs.append(
            f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: {name}}}\n"
            f"spec: {{uri: 'test://{path}'}}\n---\n"
            + DOMAIN.format(memory="64MiB").replace("spec:\n", f"spec:\n  host: {name}\n")
        )
    (folder / "hosts.yaml").write_text("---\n".join(docs))
    a, b = conn(f"test://{tmp_path / 'a.xml'}"), conn(f"test://{tmp_path / 'b.xml'}")
    w = start_watch(paths=(str(folder),))
    wait_for(lambda: domain_exists(a) and domain_exists(b), 5, "both hosts are reconciled")
    assert w.wait_idle(5)
    before_a, before_b = runs(w, "a"), runs(w, "b")

    a.lookupByName("vrt-w1").destroy()
    wait_for(lambda: a.lookupByName("vrt-w1").isActive(), 5, "host a's domain is started again")
    assert w.wait_idle(5)
    assert runs(w, "a") > before_a
    assert runs(w, "b") == before_b


def test_each_pass_holds_the_apply_lock_and_a_held_lock_is_retried(
    manifests: Path,
    host_uri: str,
    tmp_path: Path,
    conn: Callable[[str], libvirt.virConnect],
    start_watch: Start,
) -> None:
    c = conn(host_uri)
    locks = tmp_path / "locks"
    taken: list[tuple[str, ...]] = []

    @contextlib.contextmanager
    def hold(hosts: Sequence[Host]) -> Iterator[None]:
        taken.append(tuple(h.name for h in hosts))
        with lock.hold(hosts, command="watch", directory=locks):
            yield

    # An apply holds the host: the watcher's passes fail and back off.
    with lock.hold([Host(name="default", uri=host_uri)], command="apply", directory=locks):
        w = start_watch(lock=hold, paths=(str(manifests),), connect=host_uri)
        wait_for(lambda: w.backoff.failures("default") >= 2, 5, "passes refused by the lock")
        assert not domain_exists(c)
        assert "locked" in " ".join(w.last_outcomes["default"].errors)
    # Released: the next retry applies.
    wait_for(lambda: domain_exists(c), 5, "the retry after the lock is released applies")
    assert w.wait_idle(5)
    assert w.backoff.failures("default") == 0
    assert set(taken) == {("default",)}


def test_emptied_folder_with_prune_trips_the_prune_guard(
    manifests: Path, watch_folder: WatchFolder
) -> None:
    w, c = watch_folder(prune=True)
    before = host_snapshot(c)
    for f in manifests.iterdir():
        f.unlink()
    wait_for(lambda: w.last_outcomes["default"].result == "failed", 5, "the prune guard refuses")
    assert "prune guard" in " ".join(w.last_outcomes["default"].errors)
    assert host_snapshot(c) == before
    assert w.health()["status"] == "ok"


# --- git source ----------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A bare origin and a work clone with the manifests under lab/, pushed to main."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    (work / "lab").mkdir()
    (work / "lab" / "domain.yaml").write_text(DOMAIN.format(memory="64MiB"))
    (work / "README.md").write_text("not a manifest\n")
    git(work, "checkout", "--quiet", "-b", "main")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "lab")
    git(work, "push", "--quiet", "origin", "main")
    return origin, work


def push(work: Path, memory: str, message: str) -> str:
    (work / "lab" / "domain.yaml").write_text(DOMAIN.format(memory=memory))
    git(work, "commit", "--quiet", "-am", message)
    git(work, "push", "--quiet", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def test_git_source_applies_pushed_revisions_on_reload_and_survives_a_failed_fetch(
    repo: tuple[Path, Path],
    tmp_path: Path,
    host_uri: str,
    conn: Callable[[str], libvirt.virConnect],
    start_watch: Start,
    capsys: pytest.CaptureFixture[str],
) -> None:
    origin, work = repo
    c = conn(host_uri)
    first = git(work, "rev-parse", "HEAD")
    w = start_watch(
        paths=("lab",),
        git_url=str(origin),
        git_ref="main",
        interval=3600.0,  # only the start and reloads poll
        cache_dir=tmp_path / "cache",
        connect=host_uri,
        prune=True,
    )
    wait_for(lambda: domain_exists(c), 10, "the first revision is applied")
    assert w.wait_idle(5)
    assert w.health()["revision"] == first
    _, text = http(w, "/metrics")
    assert f'virt_reconcile_applied_revision_info{{revision="{first}",' in text

    second = push(work, "96MiB", "more memory")
    time.sleep(0.5)
    assert memory_kib(c) == 64 * 1024  # not polled yet
    w.reload()  # what SIGHUP does
    wait_for(lambda: memory_kib(c) == 96 * 1024, 5, "the pushed revision is applied")
    wait_for(lambda: w.health()["revision"] == second, 5, "the revision is remembered")

    # `status` shows the revision applied to the host (recorded on the host itself).
    def status_revision() -> object:
        assert cli.main(["status", str(work / "lab"), "-c", host_uri, "-o", "json"]) == 0
        return json.loads(capsys.readouterr().out)["hosts"][0]["revision"]

    wait_for(lambda: status_revision() == second, 5, "status shows the applied revision")

    # A bad revision: nothing changes, the good one stays applied.
    (work / "lab" / "domain.yaml").write_text(
        DOMAIN.format(memory="128MiB").replace("type: test", "tpye: test")
    )
    git(work, "commit", "--quiet", "-am", "typo")
    git(work, "push", "--quiet", "origin", "main")
    passes = w.passes
    w.reload()
    wait_for(lambda: w.passes > passes and not w.health()["manifestsValid"], 5, "bad revision seen")
    assert memory_kib(c) == 96 * 1024
    assert w.health()["revision"] == second

    # The origin disappears: the fetch fails, the last good checkout stays (no prune).
    origin.rename(tmp_path / "gone.git")
    w.reload()
    source = w.source
    assert isinstance(source, watch.GitSource)
    wait_for(lambda: source.last_error is not None, 10, "the failed fetch is noticed")
    assert w.wait_idle(5)
    assert domain_exists(c) and memory_kib(c) == 96 * 1024
    assert w.health()["revision"] == second


# --- the command line ---------------------------------------------------------------


def test_cli_watch_sighup_then_sigterm_exits_0(manifests: Path, tmp_path: Path) -> None:
    host = tmp_path / "host.xml"
    host.write_text((REPO / "tests" / "data" / "testdriver" / "empty.xml").read_text())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "watch",
            str(manifests),
            "-c",
            f"test://{host}",
            "--metrics-addr",
            "127.0.0.1:0",
            "--resync",
            "1h",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any(" pass 1 " in line for line in lines), 20, "the first pass")
        proc.send_signal(signal.SIGHUP)

        def passes_after_reload() -> list[str]:
            at = next((i for i, line in enumerate(lines) if "reload requested" in line), None)
            return [] if at is None else [line for line in lines[at:] if " pass " in line]

        wait_for(lambda: bool(passes_after_reload()), 10, "a pass for the reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        proc.stderr.close()  # type: ignore[union-attr]
    text = "".join(lines)
    assert "Traceback" not in text
    assert "+ create Domain/vrt-w1" in text
    assert "stopped after" in text


def test_cli_watch_needs_paths_or_git(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["watch", "-c", "test:///default"]) == 1
    assert "needs manifest PATHs or --git URL" in capsys.readouterr().err


def test_plan_time_problems_are_logged_one_per_line(
    tmp_path: Path, host_uri: str, start_watch: Start
) -> None:
    folder = tmp_path / "lonely"
    folder.mkdir()
    (folder / "lonely.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: vrt-lonely}\n"
        "spec:\n  type: test\n  memory: 64MiB\n"
        "  interfaces:\n    - {network: vrt-nonet-a}\n    - {network: vrt-nonet-b}\n"
    )
    w = start_watch(paths=(str(folder),), connect=host_uri)
    wait_for(lambda: "default" in w.last_outcomes, 5, "a first pass")
    outcome = w.last_outcomes["default"]
    assert outcome.result == "failed"
    assert [e.split(": ", 1)[0] for e in outcome.errors] == ["Domain/vrt-lonely"] * 2
    assert "'vrt-nonet-a'" in outcome.errors[0] and "'vrt-nonet-b'" in outcome.errors[1]
    assert all("\n" not in e for e in outcome.errors)


# --- scoped passes ------------------------------------------------------------------


def _passes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for r in caplog.records if (m := r.getMessage()).startswith("pass ")]


def _pass_objects(w: watch.Watcher, scope: str) -> float:
    _, text = http(w, "/metrics")
    prefix = f'virt_reconcile_pass_objects_sum{{scope="{scope}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def fleet(manifests: Path) -> Path:
    """The network and 12 domains, one file each (vrt-w1 is the fixture's, running)."""
    for i in range(2, 14):
        doc = DOMAIN.format(memory="64MiB").replace("vrt-w1", f"vrt-w{i}")
        doc = doc.replace("state: running\n", "interfaces: [{network: vrt-wnet}]\n")
        (manifests / f"domain-{i}.yaml").write_text(doc)
    return manifests


@pytest.fixture
def watch_fleet(watch_folder: WatchFolder, caplog: pytest.LogCaptureFixture) -> WatchFolder:
    """Watch the fleet; returns once it is defined, with the log captured from then on."""

    def start(**options: object) -> tuple[watch.Watcher, libvirt.virConnect]:
        caplog.set_level("INFO", logger="reconciler")
        w, c = watch_folder(**options)
        wait_for(lambda: domain_exists(c, "vrt-w13"), 5, "the fleet is defined")
        assert w.wait_idle(5)
        caplog.clear()
        return w, c

    return start


def test_one_edited_manifest_among_many_is_a_scoped_pass(
    fleet: Path, watch_fleet: WatchFolder, caplog: pytest.LogCaptureFixture
) -> None:
    w, c = watch_fleet()
    full = _pass_objects(w, "full")
    assert full >= 14  # the first pass planned every object

    text = (fleet / "domain-7.yaml").read_text().replace("64MiB", "96MiB")
    (fleet / "domain-7.yaml").write_text(text)
    took = wait_for(lambda: memory_kib(c, "vrt-w7") == 96 * 1024, 5, "the edit is applied")
    assert took < 1.0, f"applied after {took:.2f}s"
    assert w.wait_idle(5)
    passes = _passes(caplog)
    assert any("default ok, 1 change(s)" in p and "(scoped: 1 object)" in p for p in passes)
    # Its own DEFINED event follows: one more scoped pass, of that domain only.
    assert all("(scoped: 1 object)" in p for p in passes), passes
    assert _pass_objects(w, "full") == full
    assert [memory_kib(c, f"vrt-w{i}") for i in (1, 6, 8)] == [64 * 1024] * 3


def test_drift_on_one_domain_is_corrected_by_a_scoped_pass(
    fleet: Path, watch_fleet: WatchFolder, caplog: pytest.LogCaptureFixture
) -> None:
    w, c = watch_fleet()

    el = etree.fromstring(
        c.lookupByName("vrt-w9").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()
    )
    el.find("memory").text = str(128 * 1024)  # type: ignore[union-attr]
    c.defineXML(etree.tostring(el).decode())
    wait_for(lambda: memory_kib(c, "vrt-w9") == 64 * 1024, 5, "the drift is reverted")
    assert w.wait_idle(5)
    fixed = [p for p in _passes(caplog) if "1 change(s)" in p]
    assert len(fixed) == 1
    assert "Domain/vrt-w9 defined (updated)" in fixed[0]
    assert "(scoped: 1 object)" in fixed[0]
    assert any("~ update Domain/vrt-w9: memory [drift]" in r.getMessage() for r in caplog.records)


def test_a_removed_manifest_and_resync_are_full_passes(
    fleet: Path, watch_fleet: WatchFolder, caplog: pytest.LogCaptureFixture
) -> None:
    w, c = watch_fleet(prune=True)

    (fleet / "domain-13.yaml").unlink()  # pruning needs every object in view
    wait_for(lambda: not domain_exists(c, "vrt-w13"), 5, "the domain is pruned")
    assert w.wait_idle(5)
    pruned = [p for p in _passes(caplog) if "1 change(s)" in p]
    assert len(pruned) == 1 and "scoped" not in pruned[0], pruned

    caplog.clear()
    w.reload()  # SIGHUP: every object again
    wait_for(lambda: bool(_passes(caplog)), 5, "the reload's pass")
    assert w.wait_idle(5)
    assert "scoped" not in _passes(caplog)[0]


def test_a_new_git_revision_is_a_scoped_pass_of_the_objects_it_changes(
    repo: tuple[Path, Path],
    tmp_path: Path,
    host_uri: str,
    conn: Callable[[str], libvirt.virConnect],
    start_watch: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="reconciler")
    origin, work = repo
    c = conn(host_uri)
    w = start_watch(
        paths=("lab",),
        git_url=str(origin),
        git_ref="main",
        interval=0.3,
        cache_dir=tmp_path / "cache",
        connect=host_uri,
    )
    wait_for(lambda: domain_exists(c), 10, "the first revision is applied")
    assert w.wait_idle(5)
    caplog.clear()
    second = push(work, "96MiB", "more memory")
    wait_for(lambda: memory_kib(c) == 96 * 1024, 5, "the pushed revision is applied")
    wait_for(lambda: w.health()["revision"] == second, 5, "the revision is remembered")
    assert w.wait_idle(5)  # the pass has logged its line
    applied = [p for p in _passes(caplog) if "1 change(s)" in p]
    assert len(applied) == 1 and f"git {second[:12]}" in applied[0]
    assert "(scoped: 1 object)" in applied[0]


def test_a_plan_time_problem_in_a_scoped_pass_is_reported_by_a_full_one(
    fleet: Path, watch_fleet: WatchFolder, caplog: pytest.LogCaptureFixture
) -> None:
    w, _c = watch_fleet()

    text = (fleet / "domain-7.yaml").read_text().replace("vrt-wnet", "vrt-nowhere")
    (fleet / "domain-7.yaml").write_text(text)
    wait_for(lambda: bool(_passes(caplog)), 5, "the edit's pass")
    assert w.wait_idle(5)
    messages = [r.getMessage() for r in caplog.records]
    assert "a scoped pass found a plan-time problem; planning every object instead" in messages
    failed = _passes(caplog)[0]
    assert "default failed" in failed and "scoped" not in failed, failed
    assert any("network 'vrt-nowhere' does not exist" in m for m in messages), messages
