"""A private etcd for tests of ``--coordination``: own port, own data dir, stopped by pid.

``start_etcd(workdir)`` runs Debian's ``etcd`` (package ``etcd-server``, installed by
scripts/install.sh) on free loopback ports with its data under ``workdir``;
``stop()`` ends it (SIGTERM, then SIGKILL) and ``start()`` runs it again on the same
ports and data (a backend outage and its return).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Etcd:
    workdir: Path
    client_port: int
    peer_port: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The tooz backend URL (``--coordination``)."""
        return f"etcd3+http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 20.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = (self.workdir / "etcd.log").open("ab")
        self._proc = subprocess.Popen(
            [
                "etcd",
                "--name=vrt-test",
                f"--data-dir={self.workdir / 'data'}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=vrt-test={peer}",
                "--log-level=error",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self._proc.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd did not answer within {timeout:g}s: {self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, n: int = 3000) -> str:
        path = self.workdir / "etcd.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def start_etcd(workdir: Path) -> Etcd:
    if shutil.which("etcd") is None:
        raise RuntimeError("etcd is not installed: run scripts/install.sh (Debian etcd-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    etcd = Etcd(workdir=workdir, client_port=_free_port(), peer_port=_free_port())
    etcd.start()
    return etcd
