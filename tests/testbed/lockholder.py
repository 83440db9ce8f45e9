"""Another process on this machine that holds virt-reconcile's lock of one host."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys
from reconciler import lock
from reconciler.model import Host
with lock.hold([Host(name="other", uri=sys.argv[1])], command="apply (test holder)"):
    print("locked", flush=True)
    sys.stdin.readline()  # hold until stdin is closed
"""


@contextlib.contextmanager
def hold_lock(uri: str, env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A process holding the lock of ``uri`` until its stdin is closed (or it is killed)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, uri],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
