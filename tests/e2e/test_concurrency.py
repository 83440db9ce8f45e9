"""Two virt-reconcile processes against one real libvirtd (issue #6, per-host lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt

from tests.testbed.lockholder import hold_lock

REPO = Path(__file__).resolve().parents[2]
DOMAINS = [f"vrt-lock-dom{i}" for i in range(4)]
NETWORKS = [f"vrt-lock-net{i}" for i in range(3)]


def _manifests(folder: Path) -> Path:
    docs = [
        "apiVersion: virt-reconcile/v1\nkind: Network\n"
        f"metadata: {{name: {n}}}\nspec: {{forward: none, state: inactive}}\n"
        for n in NETWORKS
    ] + [
        "apiVersion: virt-reconcile/v1\nkind: Domain\n"
        f"metadata: {{name: {d}}}\nspec:\n  type: qemu\n  memory: 64MiB\n  vcpus: 1\n"
        f"  interfaces: [{{network: {NETWORKS[0]}, model: virtio}}]\n"
        for d in DOMAINS
    ]
    folder.mkdir()
    (folder / "all.yaml").write_text("---\n".join(docs))
    return folder


def _apply(folder: Path, uri: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(folder), "-c", uri, *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ours(uri: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        names = {d.name() for d in conn.listAllDomains()}
        names |= {n.name() for n in conn.listAllNetworks()}
    finally:
        conn.close()
    return {n for n in names if n.startswith("vrt-lock-")}


def test_two_concurrent_applies_do_not_interleave(system_uri: str, tmp_path: Path) -> None:
    folder = _manifests(tmp_path / "m")
    procs = [_apply(folder, system_uri, "--lock-timeout", "120", "-o", "json") for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out + err
    docs = [json.loads(out) for out, _ in outputs]
    creates = [
        a["name"]
        for doc in docs
        for a in doc["hosts"][0]["actions"]
        if a["action"] == "create" and a["result"] == "ok"
    ]
    # Each object was created exactly once: the second run planned after the
    # first had finished, so it found everything in place.
    assert sorted(creates) == sorted(DOMAINS + NETWORKS)
    assert all(doc["converged"] for doc in docs)
    assert _ours(system_uri) == set(DOMAINS + NETWORKS)
    plan = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", str(folder), "-c", system_uri,
         "--detailed-exitcode"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_apply_refuses_while_another_process_holds_the_host(
    system_uri: str, tmp_path: Path
) -> None:
    folder = _manifests(tmp_path / "m")
    with hold_lock(system_uri) as holder:
        refused = _apply(folder, system_uri)
        out, err = refused.communicate(timeout=120)
        assert refused.returncode == 1, out + err
        assert f"host default ({system_uri}) is locked by another virt-reconcile run" in err
        assert f"pid {holder.pid}" in err
        assert _ours(system_uri) == set()
        waiting = _apply(folder, system_uri, "--lock-timeout", "120")
        assert holder.stdin is not None
        holder.stdin.close()  # release: the waiting apply goes ahead
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, out + err
    assert _ours(system_uri) == set(DOMAINS + NETWORKS)
