"""Run a command in a fresh process and measure it: wall time, CPU time, peak RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TIME = "/usr/bin/time"  # GNU time (Debian package "time", from scripts/install.sh)


@dataclass(frozen=True)
class Proc:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process and its children
    rss_mb: float  # peak resident set size, MB (ru_maxrss)
    rc: int
    stdout: str
    stderr: str


def env() -> dict[str, str]:
    """The environment of a measured run: no inherited default URI."""
    e = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    e["PYTHONPATH"] = str(REPO)
    return e


def run(cmd: Sequence[str], timeout: float = 1800, check: bool = True) -> Proc:
    """Run ``cmd``; its peak RSS comes from GNU time (``ru_maxrss`` of a child we
    start ourselves would count this big process, which the child starts as a copy of)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [TIME, "-q", "-f", "%M", "-o", rss.name, *cmd],
            stdout=out,
            stderr=err,
            env=env(),
            cwd=REPO,
        )
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        r = Proc(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            rss_mb=int(rss.read().split()[-1]) * 1024 / 1e6,
            rc=p.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )
    if check and r.rc not in (0, 2):
        raise RuntimeError(f"{' '.join(cmd)} exited {r.rc}:\n{r.stderr[-3000:]}{r.stdout[-2000:]}")
    return r


def vr(*args: object) -> list[str]:
    """The virt-reconcile command line (as installed: ``python -m reconciler``)."""
    return [PY, "-m", "reconciler", *map(str, args)]


def floor(*args: object) -> list[str]:
    return [PY, "-m", "benchmarks.floor", *map(str, args)]


@dataclass(frozen=True)
class Median:
    wall: float
    cpu: float
    rss_mb: float  # the highest of the runs
    runs: tuple[Proc, ...]


def median(procs: Sequence[Proc]) -> Median:
    return Median(
        wall=statistics.median(p.wall for p in procs),
        cpu=statistics.median(p.cpu for p in procs),
        rss_mb=max(p.rss_mb for p in procs),
        runs=tuple(procs),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]
