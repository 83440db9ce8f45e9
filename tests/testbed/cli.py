"""The real command line in a fresh process, as a user (or a crash test) runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from reconciler import hosts

REPO = Path(__file__).resolve().parents[2]


def vr(
    *args: object, fault_after: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m reconciler ARGS``; ``fault_after=N`` arms the test-only kill hook.

    ``LIBVIRT_DEFAULT_URI`` and an inherited hook setting are dropped so the
    arguments alone decide what runs.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LIBVIRT_DEFAULT_URI", hosts.FAULT_AFTER_CALLS)
    }
    if fault_after is not None:
        env[hosts.FAULT_AFTER_CALLS] = str(fault_after)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
