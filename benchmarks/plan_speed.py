"""How long `plan` takes on a host with many objects, next to the raw libvirt floor.

The floor is what any tool must do to know a host: one ``listAll*`` per kind and
one XML read (plus state and autostart) per object, over the same connection.
virt-reconcile's `plan` adds loading the manifests, rendering, canonicalising
and diffing. Both are timed in the same process, on the same host, after an
apply, so the plan is the steady state (every object unchanged).

    .venv/bin/python benchmarks/plan_speed.py                      # test driver, 100/500 domains
    .venv/bin/python benchmarks/plan_speed.py --sizes 50 --uri qemu:///system

With ``--uri`` the objects are defined on that host as ``vrbench-*`` (domains
defined, not started) and removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reconciler import cli, hosts, manifests, plan  # noqa: E402
from reconciler.reconcile import Run, resolve_hosts  # noqa: E402

PREFIX = "vrbench"


def write_manifests(folder: Path, domains: int) -> None:
    docs = [
        f"""apiVersion: virt-reconcile/v1
kind: Network
metadata: {{name: {PREFIX}-net}}
spec:
  forward: nat
  bridge: vrbench0
  ip: {{address: 10.213.0.1, prefix: 16, dhcp: {{range: [10.213.1.1, 10.213.9.254]}}}}
"""
    ]
    for i in range(domains):
        docs.append(
            f"""apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {PREFIX}-{i:04d}, labels: {{tier: bench}}}}
spec:
  type: qemu
  machine: q35
  memory: 256MiB
  vcpus: 2
  disks:
    - {{target: vda, bus: virtio, source: {{file: /var/lib/libvirt/images/{PREFIX}-{i:04d}.qcow2}}}}
  interfaces:
    - {{name: lan, network: {PREFIX}-net, model: virtio}}
  consoles: [{{type: pty}}]
  graphics: [{{type: vnc, listen: 127.0.0.1}}]
"""
        )
    (folder / "bench.yaml").write_text("---\n".join(docs))


def floor(conn: libvirt.virConnect) -> int:
    """Read everything once, as any tool must: returns the number of objects read."""
    n = 0
    for dom in conn.listAllDomains():
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        state, _ = dom.state()
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
            dom.XMLDesc(0)
        dom.autostart()
        n += 1
    for net in conn.listAllNetworks():
        net.XMLDesc(0)
        net.autostart()
        n += 1
    for pool in conn.listAllStoragePools():
        pool.XMLDesc(0)
        n += 1
        if pool.isActive():
            for vol in pool.listAllVolumes():
                vol.XMLDesc(0)
                n += 1
    return n


def our_plan(folder: Path, uri: str) -> int:
    loaded = manifests.load([str(folder)])
    target = resolve_hosts(loaded, connect=uri, only=[], overrides=None)
    run = Run(target=target, options=plan.Options())
    run.connect_and_observe()
    run.build_plans()
    actions = [a for hp in run.plans.values() for a in hp.actions]
    changed = [a.ref for a in actions if a.type.is_change]
    if changed:
        raise SystemExit(f"benchmark host is not converged: {changed[:5]}")
    return len(actions)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, int]:
    """Median wall time (s) over ``repeat`` runs, then the peak traced memory
    (bytes) of one more run (tracemalloc slows Python down, so not while timing)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak


def cleanup(conn: libvirt.virConnect) -> None:
    for dom in conn.listAllDomains():
        if dom.name().startswith(PREFIX):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for net in conn.listAllNetworks():
        if net.name().startswith(PREFIX):
            if net.isActive():
                net.destroy()
            net.undefine()


def bench(size: int, uri: str | None, repeat: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="vr-bench-"))
    try:
        if uri is None:
            host = work / "host.xml"
            shutil.copy(REPO / "tests" / "data" / "testdriver" / "empty.xml", host)
            target_uri = f"test://{host}"
        else:
            target_uri = uri
        write_manifests(work, size)
        conn = hosts.open_uri(target_uri)
        if uri is not None:
            cleanup(conn)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["apply", str(work), "-c", target_uri, "-o", "json"])
        apply_s = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"apply failed with exit code {code}")
        objects = floor(conn)
        floor_s, floor_mem = timed(lambda: floor(conn), repeat)
        plan_s, plan_mem = timed(lambda: our_plan(work, target_uri), repeat)
        if uri is not None:
            cleanup(conn)
        return {
            "objects": objects,
            "apply_s": apply_s,
            "floor_s": floor_s,
            "plan_s": plan_s,
            "floor_mib": floor_mem / 2**20,
            "plan_mib": plan_mem / 2**20,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500], help="domains per run")
    p.add_argument("--uri", help="a real host (default: a fresh test-driver host per size)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    libvirt.registerErrorHandler(lambda *_: None, None)
    where = args.uri or "test driver"
    print(
        "| host | domains | objects read | floor (libvirt reads) | virt-reconcile plan | "
        "ratio | Python heap peak floor / plan | first apply |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = bench(size, args.uri, args.repeat)
        print(
            f"| {where} | {size} | {int(r['objects'])} | {r['floor_s'] * 1000:.0f} ms | "
            f"{r['plan_s'] * 1000:.0f} ms | {r['plan_s'] / r['floor_s']:.1f}x | "
            f"{r['floor_mib']:.1f} / {r['plan_mib']:.1f} MiB | {r['apply_s']:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
