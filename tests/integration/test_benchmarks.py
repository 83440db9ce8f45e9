"""The benchmark suite still runs: its quickest row, a no-op plan on a test-driver
host of 20 domains (with networks, a pool and volumes) it writes converged.

Not a timing test (nothing here asserts a speed): it keeps ``python -m benchmarks``
from rotting between the runs that fill the README's table. About 10 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_plan_row_runs_and_prints_the_table() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "plan-test", "--sizes", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    # The row names the objects the floor read: 20 domains, 1 network, 1 pool,
    # 2 volumes and virt-reconcile's registry network. The plan found them
    # unchanged (a synthesised host that is not converged makes the run fail).
    assert "no-op plan, test host, N=20 (25 objects)" in r.stdout
    assert "ms CPU/object" in r.stdout
