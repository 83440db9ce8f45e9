"""Several `watch --coordination` replicas on a private etcd and 6 isolated libvirtds (issue 15).

The replicas run as separate processes, each with its own flock directory (as if on
its own machine): only the etcd locks keep them apart. Every lock taken and released
and every libvirt write the guard let pass or refused goes to one JSON-lines log
(``VIRT_RECONCILE_LOCK_LOG``); the tests read who wrote on which host, and check that
no two lock holders of one host ever overlapped.

One scenario, in steps that share the daemons (each step starts from the last one's
state): converge, failover after kill -9, a paused replica resumed, etcd down and
back, an apply among the replicas. Leases are 2 s.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from reconciler.coordination import owners
from tests.testbed.daemon import IsolatedHost
from tests.testbed.etcd import Etcd, start_etcd

REPO = Path(__file__).resolve().parents[2]
HEAD = "apiVersion: virt-reconcile/v1\n"
LEASE = 2.0
CONVERGE = 30.0  # seconds a change may take to reach every host (2 cores, shared)
PENDING = r'^virt_reconcile_pending_changes\{[^}]*action="update"[^}]*\} (\S+)'


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    died_at: float | None = None  # wall time of kill -9

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stderr is not None
            for line in iter(self.proc.stderr.readline, ""):
                self.lines.append(line)

        threading.Thread(target=read, daemon=True).start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def port(self) -> int:
        _until(lambda: "metrics on http://" in self.log, 20, f"{self.name}'s metrics endpoint")
        m = re.search(r"metrics on http://[^:]+:(\d+)/", self.log)
        assert m, self.log
        return int(m.group(1))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port()}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port()}/healthz"
        with urllib.request.urlopen(url, timeout=5) as r:
            return dict(json.loads(r.read()))

    def gauge(self, name: str) -> float:
        m = re.search(rf"^virt_reconcile_{name} (\S+)$", self.metrics(), re.M)
        return float(m.group(1)) if m else -1.0

    def state(self) -> str:
        try:
            return Path(f"/proc/{self.proc.pid}/stat").read_text().split(") ")[1][0]
        except OSError:
            return "gone"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _until(check: Callable[[], bool], timeout: float, what: str, log: str = "") -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout:g}s: {what}\n{log[-6000:]}")
        time.sleep(0.1)
    return time.monotonic() - started


@dataclass
class Bed:
    etcd: Etcd
    hosts: list[IsolatedHost]
    folder: Path
    tmp: Path
    lock_log: Path
    replicas: dict[str, Replica] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def write(self, memory_mib: int | None, folder: Path | None = None) -> None:
        """The manifests: the Host documents, and (memory given) one domain per host."""
        folder = folder or self.folder
        folder.mkdir(exist_ok=True)
        docs = [
            f'{HEAD}kind: Host\nmetadata: {{name: {h.name}}}\nspec: {{uri: "{h.uri}"}}\n'
            for h in self.hosts
        ]
        if memory_mib is not None:
            docs += [
                f"{HEAD}kind: Domain\nmetadata: {{name: vrt-rep-{h.name}}}\n"
                f"spec: {{host: {h.name}, type: qemu, memory: {memory_mib}MiB, vcpus: 1}}\n"
                for h in self.hosts
            ]
        tmp = folder / "all.yaml.tmp"
        tmp.write_text("---\n".join(docs))
        tmp.rename(folder / "all.yaml")

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
        locks = self.tmp / f"flock-{name}"  # its own machine, as far as flock goes
        locks.mkdir(exist_ok=True)
        env.update(
            VIRT_RECONCILE_LOCK_DIR=str(locks), VIRT_RECONCILE_LOCK_LOG=str(self.lock_log), **extra
        )
        return env

    def start(self, name: str, **extra: str) -> Replica:
        cmd = [
            sys.executable, "-m", "reconciler", "watch", str(self.folder),
            "--coordination", self.etcd.url, "--replica-id", name, "--lease", f"{LEASE:g}s",
            "--resync", "1h", "--metrics-addr", "127.0.0.1:0", "--log-format", "json",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env(name, **extra), stderr=subprocess.PIPE, text=True
        )
        r = Replica(name=name, proc=proc)
        r.start_reader()
        self.replicas[name] = r
        return r

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.proc.poll() is None]

    def events(self) -> list[dict[str, Any]]:
        if not self.lock_log.exists():
            return []
        return [json.loads(line) for line in self.lock_log.read_text().splitlines() if line]

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}:\n{r.log[-3000:]}" for r in self.replicas.values())

    def memory(self, host: IsolatedHost) -> int | None:
        """The domain's memory in MiB on that host (None: not defined)."""
        conn = libvirt.open(host.uri)
        try:
            dom = conn.lookupByName(f"vrt-rep-{host.name}")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError:
            return None
        finally:
            conn.close()
        return int(etree.fromstring(xml.encode()).findtext("memory") or 0) // 1024

    def converged(self, mib: int, hosts: list[IsolatedHost] | None = None) -> bool:
        return all(self.memory(h) == mib for h in hosts or self.hosts)

    def owners(self) -> dict[str, str]:
        return owners([r.name for r in self.live()], self.names)


@pytest.fixture(scope="module")
def bed(
    isolated_hosts: Callable[..., list[IsolatedHost]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("replicas")
    etcd = start_etcd(tmp / "etcd")
    hosts = isolated_hosts(6, prefix="vrrep")
    folder = tmp / "m"
    folder.mkdir()
    b = Bed(etcd=etcd, hosts=hosts, folder=folder, tmp=tmp, lock_log=tmp / "locks.jsonl")
    try:
        yield b
    finally:
        for r in b.replicas.values():
            r.stop()
        etcd.stop()
        for h in hosts:
            h.stop()


def _intervals(events: list[dict[str, Any]], ends: dict[int, float]) -> dict[str, list[Any]]:
    """Per host: (start, end, who) of every lock holding; an unreleased one ends when its
    process died (``ends`` by pid) or now."""
    open_: dict[tuple[str, int], dict[str, Any]] = {}
    spans: dict[str, list[Any]] = {}
    for e in events:
        key = (e["host"], e["pid"])
        if e["event"] == "locked":
            open_[key] = e
        elif e["event"] == "released" and key in open_:
            start = open_.pop(key)
            end = e.get("lapsed") or e["t"]  # a lock that lapsed (paused holder) ended then
            spans.setdefault(e["host"], []).append((start["t"], end, e["who"]))
    for (host, pid), start in open_.items():
        spans.setdefault(host, []).append((start["t"], ends.get(pid, time.time()), start["who"]))
    return spans


def _no_overlap(b: Bed) -> None:
    ends = {r.proc.pid: r.died_at for r in b.replicas.values() if r.died_at is not None}
    for host, spans in _intervals(b.events(), ends).items():
        spans.sort()
        for (_, e1, w1), (s2, _, w2) in itertools.pairwise(spans):
            assert s2 >= e1, f"{host}: {w1} held the lock until {e1}, {w2} took it at {s2}"


def _writers(events: list[dict[str, Any]], since: float = 0.0) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        if e["event"] == "write" and e["t"] >= since:
            out.setdefault(e["host"], set()).add(e["who"])
    return out


def test_replicas(bed: Bed) -> None:
    # --- 3 replicas, 6 hosts: every host converges, written by its one owner ---------
    bed.write(None)  # Host documents only: nothing to write while the group forms
    rs = [bed.start(f"r{i}") for i in (1, 2, 3)]

    def settled() -> bool:
        return all(r.health().get("coordination", {}).get("members") == ["r1", "r2", "r3"]
                   for r in rs) and sum(r.gauge("owned_hosts") for r in rs) == 6  # fmt: skip

    _until(settled, 20, "three members, six owned hosts", bed.logs())
    assert all(r.gauge("coordination_up") == 1 for r in rs)
    began = time.time()
    bed.write(64)
    _until(lambda: bed.converged(64), CONVERGE, "every host at 64MiB", bed.logs())
    writers = _writers(bed.events(), began)
    expected = bed.owners()
    assert {h: sorted(w) for h, w in writers.items()} == {h: [o] for h, o in expected.items()}
    passes: dict[str, set[str]] = {}  # each host's passes (lock holdings): its owner's only
    for e in bed.events():
        if e["event"] == "locked" and e["t"] >= began:
            passes.setdefault(e["host"], set()).add(e["who"])
    assert passes == {h: {o} for h, o in expected.items()}
    # status --coordination shows the same owners
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", str(bed.folder), "-o", "json",
         "--coordination", bed.etcd.url],
        cwd=REPO, env=bed.env("status"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {h["host"]: h["owner"] for h in json.loads(out.stdout)["hosts"]} == expected

    # --- kill -9 the owner of >= 2 hosts; change: the survivors converge its hosts ----
    counts = {r: list(expected.values()).count(r) for r in ("r1", "r2", "r3")}
    victim = bed.replicas[max(counts, key=lambda r: counts[r])]
    orphaned = [h for h in bed.hosts if expected[h.name] == victim.name]
    assert len(orphaned) >= 2
    victim.proc.kill()
    victim.died_at = time.time()
    victim.proc.wait()
    bed.write(80)
    _until(lambda: bed.converged(80), CONVERGE, "every host at 80MiB after kill -9", bed.logs())
    taken = [
        e["t"] for e in bed.events()
        if e["event"] == "locked" and e["t"] > victim.died_at
        and e["host"] in {h.name for h in orphaned}
    ]  # fmt: skip
    failover = min(taken) - victim.died_at
    print(f"failover: a survivor locked an orphaned host {failover:.2f}s after kill -9")
    assert failover <= 2 * LEASE + 1.0, f"the survivors took over after {failover:.1f}s"
    assert _writers(bed.events(), victim.died_at).keys() >= {h.name for h in orphaned}
    _no_overlap(bed)

    # --- a replica stopped before a write, past its lease, then resumed --------------
    survivors = [r.name for r in bed.live()]
    name = next(
        n for n in (f"r{i}" for i in range(4, 40))
        if n in owners([*survivors, n], bed.names).values()
    )  # fmt: skip
    target = sorted(h for h, o in owners([*survivors, name], bed.names).items() if o == name)[0]
    paused = bed.start(name, VIRT_RECONCILE_STOP_BEFORE_WRITE=target)
    group = sorted([*survivors, name])
    _until(
        lambda: all(r.health().get("coordination", {}).get("members") == group
                    for r in bed.live()) and paused.gauge("owned_hosts") >= 1,
        20, f"every replica sees {name} in the group", bed.logs(),
    )  # fmt: skip
    bed.write(96)
    _until(lambda: paused.state() == "T", CONVERGE, f"{name} stopped before a write", bed.logs())
    stopped_at = time.time()
    bed.write(112)  # changed while it is stopped: the others converge its hosts
    _until(lambda: bed.converged(112), CONVERGE, "every host at 112MiB", bed.logs())
    assert time.time() - stopped_at > LEASE
    os.kill(paused.proc.pid, signal.SIGCONT)
    resumed_at = time.time()
    _until(
        lambda: any(e["event"] == "refused" and e["who"] == name for e in bed.events()),
        10, f"{name}'s stale write refused", bed.logs(),
    )  # fmt: skip
    time.sleep(LEASE)  # it rejoins, passes its hosts again: nothing left to change
    assert bed.converged(112), "the resumed replica wrote what it had read before its pause"
    stale = [
        e for e in bed.events()
        if e["who"] == name and e["event"] == "write" and stopped_at < e["t"]
        and not any(x["who"] == name and x["event"] == "locked" and resumed_at < x["t"] <= e["t"]
                    for x in bed.events())
    ]  # fmt: skip
    assert stale == []
    _no_overlap(bed)

    # --- etcd stops: nothing changes, drift stays reported; back: convergence --------
    live_now = bed.live()
    bed.etcd.stop()
    try:
        _until(
            lambda: all(r.gauge("coordination_up") == 0 for r in live_now),
            3 * LEASE, "every replica sees the backend down", bed.logs(),
        )  # fmt: skip
        health = live_now[0].health()["coordination"]
        assert health["up"] is False and "unreachable" in health["reason"]
        down_at = time.time()
        bed.write(128)

        def reported() -> bool:
            pending = sum(
                float(v) for r in live_now
                for v in re.findall(PENDING, r.metrics(), re.M)
            )  # fmt: skip
            return pending >= 1

        _until(reported, 15, "drift reported while the backend is down", bed.logs())
        assert bed.converged(112), "a replica changed a host while the backend was down"
        assert _writers(bed.events(), down_at) == {}
    finally:
        bed.etcd.start()
    _until(lambda: bed.converged(128), CONVERGE, "convergence after etcd is back", bed.logs())

    # --- apply --coordination among the replicas: serialized on each host ------------
    # The apply brings other manifests (144MiB): the replicas revert that as drift
    # (their manifests say 128MiB), each host only once the apply released it.
    began = time.time()
    bed.write(144, bed.tmp / "apply-m")
    apply = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", str(bed.tmp / "apply-m"), "--yes",
         "--coordination", bed.etcd.url, "--lock-timeout", "30"],
        cwd=REPO, env=bed.env("apply"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    _until(lambda: bed.converged(128), CONVERGE, "drift reverted to 128MiB", bed.logs())
    writers = _writers(bed.events(), began)
    for h in bed.names:  # both wrote on every host ...
        assert any(w.startswith("apply-") for w in writers[h]), writers
        assert any(w.startswith("r") for w in writers[h]), writers
    _no_overlap(bed)  # ... one after the other
