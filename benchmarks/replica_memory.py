"""What one `watch --coordination` replica costs: resident memory and pass time per host.

Starts a private etcd and H isolated libvirtds (tests/testbed), writes D domains
(defined, not started) per host, runs one replica that owns every host, and once
every host had its first pass (``/readyz``) reads the replica's RSS
(``/proc/PID/status`` VmRSS) and times a full resync pass (SIGHUP) from its log.
Everything it starts is stopped by pid. Figures for docs/scaling.md:

    .venv/bin/python benchmarks/replica_memory.py --hosts 1 6 --domains 50
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.daemon import start_isolated_hosts  # noqa: E402
from tests.testbed.etcd import start_etcd  # noqa: E402

HEAD = "apiVersion: virt-reconcile/v1\n"


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def measure(n_hosts: int, n_domains: int, work: Path) -> dict[str, float]:
    etcd = start_etcd(work / "etcd")
    hosts = start_isolated_hosts([(f"vrmem{i}", work / f"h{i}") for i in range(n_hosts)])
    proc: subprocess.Popen[str] | None = None
    try:
        folder = work / "m"
        folder.mkdir()
        docs = [f'{HEAD}kind: Host\nmetadata: {{name: {h.name}}}\nspec: {{uri: "{h.uri}"}}\n'
                for h in hosts]  # fmt: skip
        docs += [
            f"{HEAD}kind: Domain\nmetadata: {{name: vrmem-{h.name}-{d}}}\n"
            f"spec: {{host: {h.name}, type: qemu, memory: 64MiB, vcpus: 1}}\n"
            for h in hosts
            for d in range(n_domains)
        ]
        (folder / "all.yaml").write_text("---\n".join(docs))
        env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
        env["VIRT_RECONCILE_LOCK_DIR"] = str(work / "flock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", str(folder), "--coordination", etcd.url,
             "--replica-id", "bench", "--resync", "1h", "--metrics-addr", "127.0.0.1:0",
             "--log-format", "json"],
            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[dict[str, object]] = []

        def read() -> None:
            assert proc is not None and proc.stderr is not None
            for line in iter(proc.stderr.readline, ""):
                lines.append(json.loads(line))

        threading.Thread(target=read, daemon=True).start()
        port = 0
        while not port:
            for doc in list(lines):
                m = re.search(r"metrics on http://[^:]+:(\d+)/", str(doc["message"]))
                port = int(m.group(1)) if m else port
            time.sleep(0.1)
        started = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                    break
            except OSError:
                time.sleep(0.2)
        first = time.monotonic() - started
        time.sleep(2)  # the passes that follow connecting (events subscribed)
        before = len(lines)
        os.kill(proc.pid, signal.SIGHUP)  # a full pass over every host: nothing to change
        while not any("pass" in d and "reload" in str(d["message"]) for d in lines[before:]):
            time.sleep(0.1)
        [resync] = [d for d in lines[before:] if "pass" in d and "reload" in str(d["message"])]
        return {
            "hosts": n_hosts,
            "domains": n_domains * n_hosts,
            "first_passes_s": round(first, 2),
            "resync_pass_s": float(str(resync["seconds"])),
            "rss_mib": round(_rss_mib(proc.pid), 1),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        etcd.stop()
        for h in hosts:
            h.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[1, 6])
    p.add_argument("--domains", type=int, default=50, help="domains per host")
    args = p.parse_args()
    for n in args.hosts:
        with tempfile.TemporaryDirectory(prefix="vrmem-", dir="/var/tmp") as work:
            print(json.dumps(measure(n, args.domains, Path(work))), flush=True)


if __name__ == "__main__":
    main()
