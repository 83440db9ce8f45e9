"""virt-reconcile's benchmark suite: one command, one table.

    .venv/bin/python -m benchmarks                 # everything (~8 min on 2 cores)
    .venv/bin/python -m benchmarks --quick         # small N, fewer trials (< 2 min)
    .venv/bin/python -m benchmarks --only plan-test --only help

Every figure is measured next to its floor or reference in the same run, each in
a fresh process (``python -m reconciler …`` as a user runs it; the floor is
``python -m benchmarks.floor``, a minimal libvirt client: connect, ``listAll*``,
one XML read — or one define — per object), and compared with the target of the
performance issue. Rows (``--only``):

  help       ``virt-reconcile --help`` wall time
  plan-test  no-op plan on a file-backed test-driver host (N = 100, 1,000, 5,000):
             wall, CPU, peak RSS; our CPU per object = (plan CPU - floor CPU) / objects
  plan-real  no-op plan on the real libvirtd (N = 100, 1,000), wall against the floor's
  apply      apply from empty (against one define per object), and apply of one
             change among N (exactly one libvirt write; against no-op plan + one define)
  watch      ``watch`` with N managed domains on the real libvirtd: manifest edit →
             defined, drift (another memory size defined behind its back, what
             ``virsh edit`` does) → corrected, p50/p95 over 20 trials each (fewer
             when they take over 150 s); then idle CPU and RSS
  hosts4     4 isolated libvirtds x N/4 domains: one plan of all against the slowest
             host planned alone
  ansible    the same N domain XMLs defined by Ansible's community.libvirt.virt
             (``command: define``), first and no-op run, next to our apply (Ansible is
             installed on first use into a venv of its own under the cache dir)

Objects on the real hosts are named ``vrbench-*`` (``--prefix``), domains defined and
never started, and removed at the end (and at the start: a crashed run's leftovers).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import io
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import fleet as F
from benchmarks.measure import REPO, Median, Proc, median, percentile, run, vr
from benchmarks.measure import floor as floor_cmd

SYSTEM_URI = "qemu:///system"
SECTIONS = ("help", "plan-test", "plan-real", "apply", "watch", "hosts4", "ansible")


@dataclass
class Row:
    name: str
    ours: str
    floor: str
    ratio: str
    target: str
    met: bool | None  # None: no target at this size
    why: str = ""


@dataclass
class Config:
    quick: bool
    only: set[str]
    prefix: str
    uri: str
    repeat: int
    test_sizes: list[int]
    real_sizes: list[int]
    hosts4_n: int
    ansible_n: int
    trials: int
    watch_budget: float  # seconds of trials per kind (edit, drift); at least 3 trials
    idle_s: float
    work: Path
    rows: list[Row] = field(default_factory=list)
    progress: Callable[[str], None] = print

    def wants(self, section: str) -> bool:
        return section in self.only


# --------------------------------------------------------------------------- helpers


def fmt_s(seconds: float) -> str:
    if seconds == float("inf"):
        return "timed out (30 s)"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ours_text(m: Median) -> str:
    return f"{fmt_s(m.wall)} wall · {fmt_s(m.cpu)} CPU · {m.rss_mb:.0f} MB RSS"


def floor_seconds(p: Proc) -> float:
    return float(json.loads(p.stdout.strip().splitlines()[-1])["seconds"])


def floor_objects(p: Proc) -> int:
    return int(json.loads(p.stdout.strip().splitlines()[-1])["objects"])


def apply_json(p: Proc) -> dict:  # type: ignore[type-arg]
    text = p.stdout
    return json.loads(text[text.index("{") :])  # type: ignore[no-any-return]


def apply(folder: Path, *connect: str) -> tuple[Proc, dict]:  # type: ignore[type-arg]
    """``apply -o json``: the run and its report; RuntimeError naming what failed."""
    # Other users of the machine's libvirtd may hold its apply lock for a while.
    p = run(vr("apply", folder, *connect, "-o", "json", "--lock-timeout", 600), check=False)
    try:
        report = apply_json(p)
    except ValueError:
        raise RuntimeError(f"apply exited {p.rc}:\n{p.stderr[-3000:]}") from None
    if "hosts" not in report:
        raise RuntimeError(f"apply of {folder} exited {p.rc}: {report.get('errors')}")
    failed = [
        f"{a['kind']}/{a['name']}: {a.get('error')}"
        for h in report["hosts"]
        for a in h["actions"]
        if a.get("result") == "failed"
    ] + [f"host {h['host']}: {h['error']}" for h in report["hosts"] if h.get("error")]
    if p.rc not in (0, 2) or failed or not report.get("converged"):
        raise RuntimeError(f"apply of {folder} exited {p.rc}: " + "; ".join(failed[:5]))
    return p, report


def write_calls(report: dict) -> dict[str, int]:  # type: ignore[type-arg]
    """Every libvirt call the apply made to change something, summed by name."""
    calls: dict[str, int] = {}
    for host in report["hosts"]:
        for action in host["actions"]:
            for name, count in (action.get("calls") or {}).items():
                calls[name] = calls.get(name, 0) + count
    return calls


def plan_noop(folder: Path, *connect: str) -> Proc:
    p = run(vr("plan", folder, *connect, "--detailed-exitcode"))
    if p.rc != 0:
        raise RuntimeError(
            f"the benchmark host is not converged (plan exit {p.rc}):\n{p.stdout[-3000:]}"
        )
    return p


def interleaved(repeat: int, *fns: Callable[[], Proc]) -> list[Median]:
    """Run each fn ``repeat`` times, alternating (so drift in machine load hits all alike)."""
    runs: list[list[Proc]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            runs[i].append(fn())
    return [median(r) for r in runs]


# --------------------------------------------------------------------------- --help


def section_help(cfg: Config) -> None:
    m = median([run(vr("--help")) for _ in range(3 if cfg.quick else 10)])
    base = median([run([sys.executable, "-c", "pass"]) for _ in range(3 if cfg.quick else 10)])
    cfg.rows.append(
        Row(
            "virt-reconcile --help",
            f"{fmt_s(m.wall)} wall · {m.rss_mb:.0f} MB RSS",
            f"{fmt_s(base.wall)} (python -c pass)",
            f"{m.wall / base.wall:.1f}x",
            "≤ 0.15 s",
            m.wall <= 0.15,
        )
    )


# --------------------------------------------------------------------------- test host


def make_seed(work: Path, prefix: str) -> F.Seed:
    """Apply a two-domain fleet to a fresh test host in this process; read it back."""
    from reconciler import cli, hosts

    seed_fleet = F.Fleet(2, prefix=prefix)
    folder = F.write_manifests(work / "seed", seed_fleet)
    host = work / "seed-host.xml"
    host.write_text("<node>\n</node>\n")
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["apply", str(folder), "-c", f"test://{host}", "-o", "json"])
    if code != 0:
        raise RuntimeError(f"seed apply failed ({code})")
    return F.read_seed(hosts.open_uri(f"test://{host}"), seed_fleet)


def section_plan_test(cfg: Config) -> None:
    seed = make_seed(cfg.work, cfg.prefix)
    walls: dict[int, float] = {}
    for n in cfg.test_sizes:
        fleet = F.Fleet(n, prefix=cfg.prefix)
        folder = F.write_manifests(cfg.work / f"test-{n}", fleet)
        uri = f"test://{F.test_host_xml(cfg.work / f'test-{n}.xml', seed, fleet)}"
        cfg.progress(f"plan-test N={n}")
        plan_noop(folder, "-c", uri)  # warm the parser's disk cache: steady state
        fl, ours = interleaved(
            cfg.repeat,
            lambda uri=uri: run(floor_cmd("read", uri)),
            lambda folder=folder, uri=uri: plan_noop(folder, "-c", uri),
        )
        objects = floor_objects(fl.runs[0])
        per_object_ms = (ours.cpu - fl.cpu) / objects * 1000
        walls[n] = ours.wall
        cfg.rows.append(
            Row(
                f"no-op plan, test host, N={n} ({objects} objects)",
                ours_text(ours) + f" · {per_object_ms:.2f} ms CPU/object",
                f"{fmt_s(fl.wall)} wall · {fmt_s(fl.cpu)} CPU · {fl.rss_mb:.0f} MB",
                f"{ours.wall / fl.wall:.1f}x wall",
                "≤ 0.5 ms CPU/object" if n == 1000 else "—",
                per_object_ms <= 0.5 if n == 1000 else None,
            )
        )
        if n == 5000:
            cfg.rows.append(
                Row(
                    "peak RSS of plan, test host, N=5000",
                    f"{ours.rss_mb:.0f} MB",
                    f"{fl.rss_mb:.0f} MB",
                    f"{ours.rss_mb / fl.rss_mb:.1f}x",
                    "≤ 250 MB",
                    ours.rss_mb <= 250,
                )
            )
            if 1000 in walls:
                growth = walls[5000] / walls[1000]
                cfg.rows.append(
                    Row(
                        "no-op plan, test host, N=5000 / N=1000",
                        f"{fmt_s(walls[5000])} / {fmt_s(walls[1000])}",
                        "5x the objects",
                        f"{growth:.2f}x",
                        "≤ 5.5x",
                        growth <= 5.5,
                    )
                )


# --------------------------------------------------------------------------- real host


def capture(uri: str, fleet: F.Fleet) -> dict:  # type: ignore[type-arg]
    """The XML of every object of ``fleet`` on ``uri`` (for the define floor)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        out: dict[str, list] = {"networks": [], "pools": [], "volumes": [], "domains": []}  # type: ignore[type-arg]
        for j in range(fleet.networks):
            out["networks"].append(conn.networkLookupByName(fleet.network(j)).XMLDesc(0))
        for k in range(fleet.pools):
            pool = conn.storagePoolLookupByName(fleet.pool(k))
            out["pools"].append(pool.XMLDesc(0))
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(fleet.prefix):
                    out["volumes"].append([fleet.pool(k), vol.XMLDesc(0)])
        for i in range(fleet.domains):
            dom = conn.lookupByName(fleet.domain(i))
            out["domains"].append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return out
    finally:
        conn.close()


def section_real(cfg: Config) -> None:
    uri = cfg.uri
    sizes = cfg.real_sizes if cfg.wants("plan-real") else cfg.real_sizes[-1:]
    for n in sizes:
        largest = n == cfg.real_sizes[-1]
        fleet = F.Fleet(n, prefix=cfg.prefix)
        F.cleanup(uri, cfg.prefix)
        folder = F.write_manifests(cfg.work / f"real-{n}", fleet)
        cfg.progress(f"real host N={n}: apply from empty")
        first, _ = apply(folder, "-c", uri)
        try:
            noop_plan = None
            if cfg.wants("plan-real") or (largest and cfg.wants("apply")):
                cfg.progress(f"real host N={n}: no-op plans")
                fl, noop_plan = interleaved(
                    cfg.repeat,
                    lambda: run(floor_cmd("read", uri)),
                    lambda folder=folder: plan_noop(folder, "-c", uri),
                )
                if cfg.wants("plan-real"):
                    ratio = noop_plan.wall / fl.wall
                    cfg.rows.append(
                        Row(
                            f"no-op plan, {uri}, N={n} "
                            f"({floor_objects(fl.runs[0])} objects on host)",
                            ours_text(noop_plan),
                            f"{fmt_s(fl.wall)} wall (reads {fmt_s(floor_seconds(fl.runs[0]))})",
                            f"{ratio:.1f}x wall",
                            "≤ 1.25x floor" if n == 1000 else "—",
                            ratio <= 1.25 if n == 1000 else None,
                        )
                    )
            if largest and cfg.wants("apply"):
                assert noop_plan is not None
                apply_one(cfg, fleet, folder, noop_plan)
            if largest and cfg.wants("watch"):
                section_watch(cfg, fleet, folder)
            if largest and cfg.wants("apply"):
                objects = capture(uri, fleet)
                F.cleanup(uri, cfg.prefix)
                cfg.progress(f"real host N={n}: floor of apply from empty")
                dump = cfg.work / f"real-{n}-objects.json"
                dump.write_text(json.dumps(objects))
                fl_define = run(floor_cmd("define", uri, dump))
                ratio = first.wall / fl_define.wall
                cfg.rows.append(
                    Row(
                        f"apply from empty, {uri}, N={n} ({fleet.objects} objects)",
                        f"{fmt_s(first.wall)} wall · {fmt_s(first.cpu)} CPU · "
                        f"{first.rss_mb:.0f} MB RSS",
                        f"{fmt_s(fl_define.wall)} (one define per object)",
                        f"{ratio:.1f}x",
                        "—",
                        None,
                    )
                )
        finally:
            F.cleanup(uri, cfg.prefix)


def set_memory(folder: Path, fleet: F.Fleet, i: int, mib: int) -> None:
    text = F.domain_doc(fleet, i, memory_mib=mib)
    path = F.domain_file(folder, fleet, i)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: watch never reads half a file


def apply_one(cfg: Config, fleet: F.Fleet, folder: Path, noop_plan: Median) -> None:
    import libvirt

    uri = cfg.uri
    cfg.progress(f"real host N={fleet.domains}: apply of one change")
    i = fleet.domains - 1
    set_memory(folder, fleet, i, 320)
    p, report = apply(folder, "-c", uri)
    calls = write_calls(report)
    set_memory(folder, fleet, i, 256)
    apply(folder, "-c", uri)  # back to the converged fleet
    conn = libvirt.open(uri)
    try:
        xml = conn.lookupByName(fleet.domain(i)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    one = cfg.work / "define-one.json"
    one.write_text(json.dumps({"domains": [xml]}))
    define_one = statistics.median(
        floor_seconds(run(floor_cmd("define", uri, one))) for _ in range(cfg.repeat)
    )
    reference = noop_plan.wall + define_one
    writes = sum(calls.values())
    ratio = p.wall / reference
    cfg.rows.append(
        Row(
            f"apply of one change among {fleet.domains}",
            f"{fmt_s(p.wall)} wall · {fmt_s(p.cpu)} CPU · libvirt writes: "
            + (", ".join(f"{k}: {v}" for k, v in sorted(calls.items())) or "none"),
            f"{fmt_s(reference)} (no-op plan {fmt_s(noop_plan.wall)} "
            f"+ one define {fmt_s(define_one)})",
            f"{ratio:.2f}x",
            "≤ 1.25x and exactly 1 write" if fleet.domains == 1000 else "exactly 1 write",
            (ratio <= 1.25 and writes == 1) if fleet.domains == 1000 else writes == 1,
            "" if writes == 1 else f"{writes} libvirt writes for one change",
        )
    )


# --------------------------------------------------------------------------- watch


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def wait_idle(pid: int, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Until the process used (almost) no CPU for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = _cpu_seconds(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _cpu_seconds(pid)
        if now - last > 0.02:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        last = now


class DefinedEvents:
    """libvirt DEFINED events of one host, as (domain name, perf_counter time)."""

    _loop_started = False

    def __init__(self, uri: str) -> None:
        import libvirt

        if not DefinedEvents._loop_started:
            libvirt.virEventRegisterDefaultImpl()

            def loop() -> None:
                while True:
                    libvirt.virEventRunDefaultImpl()

            threading.Thread(target=loop, name="bench-events", daemon=True).start()
            DefinedEvents._loop_started = True
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self.conn = libvirt.open(uri)

        def on_event(_c: object, dom: libvirt.virDomain, event: int, _d: int, _o: object) -> None:
            if event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
                self.events.put((dom.name(), time.perf_counter()))

        self.callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None
        )

    def memory_kib(self, name: str) -> int:
        import libvirt

        xml = self.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        found = re.search(r"<memory unit='KiB'>(\d+)</memory>", xml)
        return int(found.group(1)) if found else -1

    def wait_memory(self, name: str, kib: int, since: float, timeout: float = 30.0) -> float:
        """Seconds from ``since`` to the DEFINED event after which ``name`` has ``kib``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got, at = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if got == name and at >= since and self.memory_kib(name) == kib:
                return at - since
        return float("inf")

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.get_nowait()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.domainEventDeregisterAny(self.callback)
        self.conn.close()


@contextlib.contextmanager
def watching(cfg: Config, folder: Path, *connect: str) -> Iterator[subprocess.Popen[bytes]]:
    from benchmarks.measure import env

    log = cfg.work / "watch.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            vr("watch", folder, *connect, "--no-metrics", "--resync", "1h"),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    try:
        deadline = time.monotonic() + 600
        ok_pass = re.compile(r"INFO +pass \d+ .*: \S+ ok")  # a failed pass (lock held) is not
        while not ok_pass.search(log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"watch did not finish its first pass:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kept = cache_dir() / "last-watch.log"  # for a post-mortem of the watch rows
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, kept)


def section_watch(cfg: Config, fleet: F.Fleet, folder: Path) -> None:
    uri = cfg.uri
    n = fleet.domains
    cfg.progress(
        f"watch N={n}: start, {cfg.trials} edits, {cfg.trials} drifts, idle {cfg.idle_s:.0f} s"
    )
    events = DefinedEvents(uri)
    try:
        with watching(cfg, folder, "-c", uri) as proc:
            wait_idle(proc.pid, quiet=1.0, timeout=300)
            edits: list[float] = []
            budget = time.monotonic() + cfg.watch_budget
            for k in range(cfg.trials):
                if k >= 3 and time.monotonic() > budget:
                    break  # a slow watch: fewer trials, so the run ends in time
                i = (k * n) // cfg.trials
                events.drain()
                t0 = time.perf_counter()
                set_memory(folder, fleet, i, 320)
                edits.append(events.wait_memory(fleet.domain(i), 320 * 1024, t0))
                wait_idle(proc.pid)
            drifts: list[float] = []
            budget = time.monotonic() + cfg.watch_budget
            for k in range(cfg.trials):
                if k >= 3 and time.monotonic() > budget:
                    break
                i = (k * n) // cfg.trials + 1
                name = fleet.domain(i)
                import libvirt

                try:
                    xml = events.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                except libvirt.libvirtError as e:  # someone else removed it: a failed trial
                    cfg.progress(f"watch: drift trial on {name} failed: {e}")
                    drifts.append(float("inf"))
                    continue
                drifted = xml.replace("unit='KiB'>262144<", "unit='KiB'>524288<")
                events.drain()
                t0 = time.perf_counter()
                events.conn.defineXML(drifted)  # what `virsh edit` does
                drifts.append(events.wait_memory(name, 262144, t0))
                wait_idle(proc.pid)
            wait_idle(proc.pid, quiet=2.0)
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(cfg.idle_s)
            idle_cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
            rss = _rss_mb(proc.pid)
    finally:
        events.close()
    for i in range(n):  # the manifests back to the converged fleet (for later rows)
        set_memory(folder, fleet, i, 256)
    at_1000 = n == 1000
    for label, values, p50_target, p95_target in (
        ("manifest edit → defined", edits, 0.5, 1.0),
        ("drift (memory redefined) → corrected", drifts, 0.5, None),
    ):
        p50, p95 = percentile(values, 50), percentile(values, 95)
        target = f"p50 < {p50_target} s" + (f", p95 < {p95_target} s" if p95_target else "")
        ok = p50 < p50_target and (p95_target is None or p95 < p95_target)
        cfg.rows.append(
            Row(
                f"watch, {n} domains: {label}",
                f"p50 {fmt_s(p50)} · p95 {fmt_s(p95)} · max {fmt_s(max(values))} "
                f"({len(values)} trials)",
                "—",
                "—",
                target if at_1000 else f"({target} at N=1000)",
                ok if at_1000 else None,
            )
        )
    cfg.rows.append(
        Row(
            f"watch, {n} domains: idle",
            f"{idle_cpu:.2f}% of a core · {rss:.0f} MB RSS (over {cfg.idle_s:.0f} s)",
            "—",
            "—",
            "≤ 1% CPU, ≤ 150 MB" if at_1000 else "(≤ 1% CPU, ≤ 150 MB at N=1000)",
            (idle_cpu <= 1 and rss <= 150) if at_1000 else None,
        )
    )


# --------------------------------------------------------------------------- 4 hosts


def section_hosts4(cfg: Config) -> None:
    from tests.testbed.daemon import start_isolated_hosts

    per_host = cfg.hosts4_n // 4
    base = Path(tempfile.mkdtemp(prefix="vrbench-hosts-", dir="/var/tmp"))
    cfg.progress(f"hosts4: 4 isolated libvirtds x {per_host} domains")
    started = start_isolated_hosts([(f"vrbench{i}", base / f"h{i}") for i in range(4)])
    try:
        folder = cfg.work / "hosts4"
        uris = {f"bench{i}": h.uri for i, h in enumerate(started)}
        for i in range(4):
            F.write_manifests(
                folder,
                F.Fleet(per_host, prefix=f"{cfg.prefix}h{i}-", host=f"bench{i}"),
                hosts=uris,
            )
        apply(folder)
        runs = interleaved(
            cfg.repeat,
            lambda: plan_noop(folder),
            *[(lambda name=name: plan_noop(folder, "--host", name)) for name in uris],
        )
        together, singles = runs[0], runs[1:]
        slowest = max(singles, key=lambda m: m.wall)
        ratio = together.wall / slowest.wall
        cfg.rows.append(
            Row(
                f"no-op plan, 4 hosts x {per_host} domains",
                ours_text(together),
                f"{fmt_s(slowest.wall)} (slowest host alone)",
                f"{ratio:.2f}x",
                "≤ 1.3x slowest single",
                ratio <= 1.3,
            )
        )
    finally:
        for h in started:
            h.stop()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- Ansible


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "virt-reconcile-bench"


def ansible_venv(cfg: Config) -> Path:
    """A venv of its own with PyPI ``ansible`` (bundles community.libvirt); made once."""
    venv = cache_dir() / "ansible-venv"
    if not (venv / "bin" / "ansible-playbook").exists():
        cfg.progress(f"ansible: installing PyPI ansible into {venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "ansible"],
            check=True,
        )
    return venv


PLAYBOOK = """- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: {python}
  tasks:
    - name: define the domains
      community.libvirt.virt:
        command: define
        uri: {uri}
        xml: "{{{{ lookup('file', item) }}}}"
      loop: {files}
"""


def run_playbook(venv: Path, playbook: Path) -> tuple[Proc, int]:
    """(the run, how many loop items it reported changed)."""
    environment = {
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_HOME": str(cache_dir() / "ansible-home"),
    }
    old = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        p = run([str(venv / "bin" / "ansible-playbook"), str(playbook)], check=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if p.rc != 0:
        raise RuntimeError(f"ansible-playbook exited {p.rc}:\n{p.stdout[-3000:]}{p.stderr[-2000:]}")
    report = json.loads(p.stdout[p.stdout.index("{") :])
    changed = 0
    for play in report["plays"]:
        for task in play["tasks"]:
            for host in task["hosts"].values():
                results = host.get("results") or [host]
                changed += sum(bool(r.get("changed")) for r in results)
    return p, changed


def section_ansible(cfg: Config) -> None:
    uri = cfg.uri
    n = cfg.ansible_n
    venv = ansible_venv(cfg)
    fleet = F.Fleet(n, prefix=f"{cfg.prefix}ans-", infra=False)
    F.cleanup(uri, fleet.prefix)
    folder = F.write_manifests(cfg.work / "ansible-manifests", fleet)
    try:
        cfg.progress(f"ansible N={n}: virt-reconcile apply, no-op apply")
        first, _ = apply(folder, "-c", uri)
        noops = [apply(folder, "-c", uri) for _ in range(cfg.repeat)]
        noop = median([p for p, _ in noops])
        if any(sum(write_calls(report).values()) for _, report in noops):
            raise RuntimeError("virt-reconcile's no-op apply wrote something")
        xmls = capture(uri, fleet)["domains"]
        F.cleanup(uri, fleet.prefix)
        xml_dir = cfg.work / "ansible-xml"
        xml_dir.mkdir()
        files = []
        for i, xml in enumerate(xmls):
            f = xml_dir / f"{fleet.domain(i)}.xml"
            f.write_text(xml)
            files.append(str(f))
        playbook = cfg.work / "ansible.yaml"
        playbook.write_text(
            PLAYBOOK.format(python=sys.executable, uri=uri, files=json.dumps(files))
        )
        cfg.progress(f"ansible N={n}: first run, no-op run")
        a_first, first_changed = run_playbook(venv, playbook)
        a_noop, noop_changed = run_playbook(venv, playbook)
    finally:
        F.cleanup(uri, fleet.prefix)
    cfg.rows.append(
        Row(
            f"first apply, {n} domains, vs Ansible community.libvirt.virt define",
            fmt_s(first.wall),
            f"{fmt_s(a_first.wall)} (Ansible; {first_changed} changed)",
            f"{a_first.wall / first.wall:.0f}x faster",
            "—",
            None,
        )
    )
    ratio = a_noop.wall / noop.wall
    cfg.rows.append(
        Row(
            f"no-op apply, {n} domains, vs Ansible",
            f"{fmt_s(noop.wall)} (0 writes)",
            f"{fmt_s(a_noop.wall)} (Ansible; reports {noop_changed} changed)",
            f"{ratio:.0f}x faster",
            "≥ 300x faster",
            ratio >= 300,
        )
    )


# --------------------------------------------------------------------------- table


def render_table(cfg: Config, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    mode = "quick" if cfg.quick else "full"
    table = Table(
        title=f"virt-reconcile benchmarks ({mode}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"{os.cpu_count()} CPUs, {elapsed:.0f} s)",
        show_lines=True,
    )
    for col in ("row", "virt-reconcile", "floor / reference (same run)", "ratio", "target", "met"):
        table.add_column(col)
    for r in cfg.rows:
        met = {True: "[green]met[/]", False: "[red]missed[/]", None: "—"}[r.met]
        why = f"\n{r.why}" if r.why else ""
        table.add_row(r.name, r.ours, r.floor, r.ratio, r.target, met + why)
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small N, fewer trials (< 2 min)")
    p.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these rows (repeatable)"
    )
    p.add_argument(
        "--prefix", default=F.PREFIX, help="name prefix of every object made (default vrbench-)"
    )
    p.add_argument("--uri", default=SYSTEM_URI, help="the real host (default qemu:///system)")
    p.add_argument("--repeat", type=int, help="runs per median (default 3, quick 1)")
    p.add_argument("--sizes", type=int, nargs="+", help="test-host sizes (default 100 1000 5000)")
    p.add_argument("--real-sizes", type=int, nargs="+", help="real-host sizes (default 100 1000)")
    p.add_argument("--ansible-n", type=int, help="domains of the Ansible rows (default 200)")
    args = p.parse_args(argv)
    if not args.prefix or not re.fullmatch(r"[a-z][a-z0-9-]*-", args.prefix):
        p.error("--prefix must look like NAME- (lower case, ends with '-')")
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="vr-bench-"))
    cfg = Config(
        quick=q,
        only=set(args.only or SECTIONS),
        prefix=args.prefix,
        uri=args.uri,
        repeat=args.repeat or (1 if q else 3),
        test_sizes=args.sizes or ([20, 100] if q else [100, 1000, 5000]),
        real_sizes=sorted(args.real_sizes or ([20] if q else [100, 1000])),
        hosts4_n=40 if q else 1000,
        ansible_n=args.ansible_n or (10 if q else 200),
        trials=5 if q else 20,
        watch_budget=60 if q else 150,
        idle_s=5 if q else 30,
        work=work,
        progress=lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True),
    )
    # As installed (pip compiles a package's bytecode): else a run with
    # PYTHONDONTWRITEBYTECODE set compiles every changed module in every process.
    compileall.compile_dir(str(REPO / "reconciler"), quiet=1)
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    # Stopped (SIGTERM, or SIGINT even when started in the background): clean up and
    # print the rows measured so far.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.monotonic()
    if cfg.uri == SYSTEM_URI and cfg.only - {"help", "plan-test"}:
        from tests.testbed.daemon import ensure_system_libvirtd

        ensure_system_libvirtd()  # started only if not running (stopped at exit if so)
        # Held open for the whole run: a test session that started the shared daemon
        # stops it when it ends unless a client is connected (tests/testbed/daemon.py).
        keeper = libvirt.open(cfg.uri)  # noqa: F841
    try:
        if cfg.wants("help"):
            section_help(cfg)
        if cfg.wants("plan-test"):
            section_plan_test(cfg)
        if cfg.only & {"plan-real", "apply", "watch"}:
            section_real(cfg)
        if cfg.wants("hosts4"):
            section_hosts4(cfg)
        if cfg.wants("ansible"):
            section_ansible(cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        render_table(cfg, time.monotonic() - t0)
    return 0
