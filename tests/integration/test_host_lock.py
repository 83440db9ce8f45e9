"""Per-host locks (issue #6): a second apply on this machine waits or refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import libvirt
import pytest

from reconciler import lock
from reconciler.model import Host
from tests.integration.conftest import EXAMPLES, REPO, Run, host_snapshot
from tests.testbed.lockholder import hold_lock

Conn = Callable[[str], libvirt.virConnect]


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "locks"
    monkeypatch.setenv(lock.LOCK_DIR_ENV, str(d))
    return d


@pytest.fixture
def holder(lock_dir: Path, host_uri: str) -> Iterator[subprocess.Popen[str]]:
    """Another process on this machine that holds the lock of ``host_uri``."""
    with hold_lock(host_uri, env={lock.LOCK_DIR_ENV: str(lock_dir)}) as proc:
        yield proc


def test_apply_refuses_while_another_process_holds_the_host(
    holder: subprocess.Popen[str], host_uri: str, run: Run, conn: Conn
) -> None:
    before = host_snapshot(conn(host_uri))
    code, out, err = run("apply", EXAMPLES, "-c", host_uri)
    assert code == 1, out + err
    assert f"host default ({host_uri}) is locked by another virt-reconcile run" in err
    assert f"pid {holder.pid}, apply (test holder)" in err
    assert "--lock-timeout" in err and "Traceback" not in err
    assert host_snapshot(conn(host_uri)) == before


def test_plan_and_dry_run_take_no_lock(
    holder: subprocess.Popen[str], host_uri: str, run: Run
) -> None:
    assert run("plan", EXAMPLES, "-c", host_uri)[0] == 0
    assert run("apply", EXAMPLES, "-c", host_uri, "--dry-run")[0] == 0


def test_lock_timeout_waits_for_the_holder(
    holder: subprocess.Popen[str], host_uri: str, run: Run
) -> None:
    assert holder.stdin is not None
    # Release the lock from a timer, while apply is already waiting for it.
    threading.Timer(0.5, holder.stdin.close).start()
    code, out, err = run("apply", EXAMPLES, "-c", host_uri, "--lock-timeout", "30s")
    assert code == 0, out + err
    assert f"waiting up to 30s for host default: locked by pid {holder.pid}" in err
    assert "Converged" in out


def test_lock_timeout_expires_with_the_message(
    holder: subprocess.Popen[str], host_uri: str, run: Run
) -> None:
    code, _out, err = run("apply", EXAMPLES, "-c", host_uri, "--lock-timeout", "0.3")
    assert code == 1
    assert "waited 0.3s; nothing was changed" in err


def test_a_killed_holder_leaves_no_lock(
    holder: subprocess.Popen[str], host_uri: str, run: Run
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    code, out, err = run("apply", EXAMPLES, "-c", host_uri)
    assert code == 0, out + err


def test_other_hosts_are_not_blocked(
    holder: subprocess.Popen[str], tmp_path: Path, run: Run
) -> None:
    other = tmp_path / "other.xml"
    other.write_bytes((REPO / "tests/data/testdriver/empty.xml").read_bytes())
    assert run("apply", EXAMPLES, "-c", f"test://{other}")[0] == 0


def test_lock_key_ignores_passwords_and_hold_orders_hosts(lock_dir: Path) -> None:
    a = lock.lock_path("qemu+tcp://root:secret@kvm-a/system", lock_dir)
    assert a == lock.lock_path("qemu+tcp://root:other@kvm-a/system", lock_dir)
    assert a != lock.lock_path("qemu+tcp://root@kvm-b/system", lock_dir)
    hosts = [Host(name=n, uri=f"qemu+tcp://{n}/system") for n in ("b", "a", "c")]
    with lock.hold(hosts, directory=lock_dir):
        files = sorted(lock_dir.iterdir())
        assert len(files) == 3
        assert all(str(os.getpid()) in f.read_text() for f in files)
        assert "secret" not in "".join(f.read_text() for f in files)
    # Released: taking them again succeeds at once.
    with lock.hold(hosts, directory=lock_dir):
        pass


def test_lock_dir_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lock.lock_dir({lock.LOCK_DIR_ENV: "/x"}) == Path("/x")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lock.lock_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000/virt-reconcile"
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert lock.lock_dir({}) == Path("/run/virt-reconcile")


def test_apply_reads_the_host_only_once_it_holds_the_lock(
    lock_dir: Path, host_uri: str, examples: Path, run: Run, conn: Conn
) -> None:
    """apply -c reads the host while the manifests load, but under the lock: what
    the holder changed before letting go is what the apply plans against."""
    assert run("apply", examples, "-c", host_uri)[0] == 0
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("memory: 512MiB", "memory: 1GiB"))

    def holder_changes_then_releases(stdin: IO[str]) -> None:
        c = conn(host_uri)
        xml = c.lookupByName("vr-db-1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        c.defineXML(xml.replace("524288", "1048576"))  # what the manifest now says
        stdin.close()

    with hold_lock(host_uri, env={lock.LOCK_DIR_ENV: str(lock_dir)}) as proc:
        assert proc.stdin is not None
        threading.Timer(0.5, holder_changes_then_releases, (proc.stdin,)).start()
        code, out, err = run(
            "apply", examples, "-c", host_uri, "--lock-timeout", "30s", "-o", "json"
        )
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["converged"] is True
    assert [a for h in doc["hosts"] for a in h["actions"] if a.get("calls")] == []


def test_a_bad_manifest_is_reported_while_the_host_is_locked(
    holder: subprocess.Popen[str], host_uri: str, tmp_path: Path, run: Run
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata:\n  name: x\nspec: 3\n")
    code, out, err = run("apply", bad, "-c", host_uri)
    assert code == 1, out + err
    assert "bad.yaml" in err and "locked" not in err
