"""`virt-reconcile watch` as a daemon on the real libvirtd: drift behind its back is reverted.

The daemon runs with ``--resync 1h``, so only libvirt's events can make it act
within the seconds these tests allow.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.testbed import browser
from tests.testbed.daemon import IsolatedHost, start_isolated_host

REPO = Path(__file__).resolve().parents[2]
DRIFT_TIMEOUT = 15.0

MANIFESTS = """\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {name: vrt-watch-def}
spec:
  type: qemu
  memory: 64MiB
  vcpus: 1
---
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {name: vrt-watch-run}
spec:
  type: qemu
  memory: 64MiB
  vcpus: 1
  boot: [hd]
  state: running
---
apiVersion: virt-reconcile/v1
kind: Network
metadata: {name: vrt-watch-net}
spec:
  forward: nat
  bridge: vrtwatch0
  ip: {address: 10.89.0.1, prefix: 24}
  state: active
"""


class Daemon:
    """``python -m reconciler watch`` in a subprocess, its log collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", *args],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, ""):
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def port(self) -> int:
        wait_for(lambda: "metrics on http://" in self.log, 20, "the metrics endpoint", self)
        m = re.search(r"metrics on http://[^:]+:(\d+)/", self.log)
        assert m
        return int(m.group(1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str, daemon: Daemon) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if daemon.proc.poll() is not None:
            pytest.fail(f"watch exited ({daemon.proc.returncode}) before {what}:\n{daemon.log}")
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"not within {timeout}s: {what}\n{daemon.log}")


def virsh(uri: str, *args: str) -> None:
    subprocess.run(["virsh", "-q", "-c", uri, *args], check=True, capture_output=True, timeout=60)


def memory_kib(conn: libvirt.virConnect, name: str) -> int:
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return int(etree.fromstring(xml.encode()).findtext("memory") or 0)


def has_domain(conn: libvirt.virConnect, name: str) -> bool:
    return name in {d.name() for d in conn.listAllDomains()}


def is_active(lookup: Callable[[str], object], name: str) -> bool:
    try:
        return bool(lookup(name).isActive())  # type: ignore[attr-defined]
    except libvirt.libvirtError:
        return False


@pytest.fixture
def daemon(system_uri: str, tmp_path: Path) -> Iterator[tuple[Daemon, libvirt.virConnect]]:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "lab.yaml").write_text(MANIFESTS)
    conn = libvirt.open(system_uri)
    d = Daemon(
        str(folder), "-c", system_uri, "--resync", "1h", "--metrics-addr", "127.0.0.1:0", "-v"
    )
    try:
        wait_for(
            lambda: (
                has_domain(conn, "vrt-watch-def")
                and is_active(conn.lookupByName, "vrt-watch-run")
                and is_active(conn.networkLookupByName, "vrt-watch-net")
            ),
            60,
            "the first pass creates everything",
            d,
        )
        # Settle: the pass that follows connecting (and our own events) has run.
        wait_for(lambda: " pass 2 " in d.log, 30, "the follow-up pass", d)
        yield d, conn
    finally:
        d.close()
        conn.close()


def test_watch_reverts_drift_from_events_and_exits_0_on_sigterm(
    daemon: tuple[Daemon, libvirt.virConnect], system_uri: str, tmp_path: Path
) -> None:
    d, conn = daemon

    # Redefined behind our back (`virsh edit`): a new <memory> in the definition.
    # (`virsh setmaxmem --config` sends no event on libvirt 9.0: only --resync sees it.)
    el = etree.fromstring(
        conn.lookupByName("vrt-watch-def").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()
    )
    for tag in ("memory", "currentMemory"):
        node = el.find(tag)
        assert node is not None
        node.text, node.attrib["unit"] = "131072", "KiB"
    edited = tmp_path / "edited.xml"
    edited.write_bytes(etree.tostring(el))
    virsh(system_uri, "define", str(edited))
    wait_for(
        lambda: memory_kib(conn, "vrt-watch-def") == 65536,
        DRIFT_TIMEOUT,
        "the redefined memory is reverted",
        d,
    )

    # Stopped behind our back.
    virsh(system_uri, "destroy", "vrt-watch-run")
    wait_for(
        lambda: is_active(conn.lookupByName, "vrt-watch-run"),
        DRIFT_TIMEOUT,
        "the stopped domain is started again",
        d,
    )

    # The network stopped.
    virsh(system_uri, "net-destroy", "vrt-watch-net")
    wait_for(
        lambda: is_active(conn.networkLookupByName, "vrt-watch-net"),
        DRIFT_TIMEOUT,
        "the network is started again",
        d,
    )

    # Undefined.
    virsh(system_uri, "undefine", "vrt-watch-def")
    wait_for(
        lambda: has_domain(conn, "vrt-watch-def"),
        DRIFT_TIMEOUT,
        "the undefined domain is defined again",
        d,
    )
    assert memory_kib(conn, "vrt-watch-def") == 65536

    log = d.log
    assert "Domain/vrt-watch-def defined (updated)" in log  # the event that triggered it
    # Each was reverted by a pass over the object its event named, not the whole host.
    for cause in (
        "Domain/vrt-watch-def defined (updated)",
        "Domain/vrt-watch-run stopped (destroyed)",
        "Network/vrt-watch-net stopped",
        "Domain/vrt-watch-def undefined",
    ):
        assert re.search(rf"pass \d+ \(.*{re.escape(cause)}.*1 change\(s\).*\(scoped: ", log), (
            cause,
            log,
        )
    assert "[drift]" in log
    assert "resync" not in re.sub(r"resync every \S+", "", log)  # the timer did not do it
    with urllib.request.urlopen(f"http://127.0.0.1:{d.port()}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    drift = {
        kind: float(value)
        for kind, value in re.findall(
            r'virt_reconcile_drift_corrections_total\{host="default",kind="(\w+)"\} (\S+)',
            metrics,
        )
    }
    assert drift.get("Domain", 0) >= 3 and drift.get("Network", 0) >= 1, metrics

    # The status page, as Chromium renders it: the real host's objects, all in sync
    # again, the running guest's power state, and the drift it reverted.
    page = f"http://127.0.0.1:{d.port()}/"

    def served() -> str:
        with urllib.request.urlopen(page, timeout=5) as resp:
            return str(resp.read().decode())

    wait_for(lambda: "Domain/vrt-watch-def" in served(), 10, "the page lists the host", d)
    shown = browser.dom(page, tmp_path)
    for ref in ("Domain/vrt-watch-def", "Domain/vrt-watch-run", "Network/vrt-watch-net"):
        assert re.search(rf'<code>{ref}</code></td><td><span class="b Synced">', shown), ref
    assert re.search(r"<code>Domain/vrt-watch-run</code>.*?<td>running", shown, re.S)
    assert shown.count('class="b drift"') >= 3
    browser.screenshot(page, tmp_path, "status-page-real-host.png")

    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0, d.log
    assert "stopped after" in d.log
    assert "Traceback" not in d.log


def test_watch_reconnects_after_the_host_restarts_and_still_sees_events(
    isolated_hosts: Callable[..., list[IsolatedHost]], tmp_path: Path
) -> None:
    (host,) = isolated_hosts(n=1, prefix="wdrop")
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "lab.yaml").write_text(MANIFESTS.split("---")[0])  # vrt-watch-def only

    def defined() -> bool:
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError:
            return False
        try:
            return has_domain(conn, "vrt-watch-def")
        finally:
            conn.close()

    d = Daemon(str(folder), "-c", host.uri, "--resync", "1h", "--no-metrics")
    try:
        wait_for(defined, 60, "the first pass defines the domain", d)
        host.stop()
        wait_for(lambda: "default unreachable" in d.log, 30, "the dropped host is noticed", d)
        restarted = start_isolated_host(host.name, host.workdir)
        assert restarted.uri == host.uri
        # Retried with backoff; the pass after reconnecting converges.
        wait_for(
            lambda: "default ok" in d.log.rpartition("default unreachable")[2],
            60,
            "the watcher reconnects",
            d,
        )
        # Events are subscribed again on the new connection.
        conn = libvirt.open(host.uri)
        try:
            conn.lookupByName("vrt-watch-def").undefine()
            wait_for(
                lambda: has_domain(conn, "vrt-watch-def"),
                DRIFT_TIMEOUT,
                "the undefined domain is defined again",
                d,
            )
        finally:
            conn.close()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(60) == 0, d.log
    finally:
        d.close()
    # The dropped connection is named whichever noticed it first: the close
    # event, the liveness check before a pass, or the failed observation.
    assert "host default: connection lost; reconnecting" in d.log
