"""watch as a service: sd_notify, JSON logs, --dry-run, /readyz, metrics hygiene, contrib/.

Fixtures and helpers come from ``test_watch.py`` (same file-backed test-driver hosts).
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import yaml

from reconciler import cli, watch
from reconciler.watch import notify
from tests.integration import test_watch as base
from tests.integration.conftest import REPO
from tests.integration.test_watch import DOMAIN, Start, domain_exists, http, memory_kib, wait_for

manifests = base.manifests  # fixtures shared with test_watch.py
start_watch = base.start_watch

CONTRIB = REPO / "contrib"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notification socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify.sock"))
    s.settimeout(20)
    yield s
    s.close()


def messages(
    s: socket.socket, until: str, timeout: float = 20, lines: object = None
) -> list[dict[str, str]]:
    """Notifications received until one carries the field ``until`` (e.g. READY=1)."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = s.recv(4096).decode()
        except TimeoutError:
            break
        fields = dict(line.split("=", 1) for line in data.splitlines() if line)
        got.append(fields)
        if until in (f"{k}={v}" for k, v in fields.items()):
            return got
    pytest.fail(f"no {until} within {timeout}s: {got} {lines}")


# --- sd_notify ----------------------------------------------------------------------


def test_notify_without_socket_does_nothing_and_abstract_sockets_work(tmp_path: Path) -> None:
    assert notify.notify({"READY": "1"}, env={}) is False
    name = f"vr-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert notify.notify({"STATUS": "a\nb"}, env={"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"STATUS=a b\n"  # one field per line: newlines folded


def test_cli_watch_notifies_systemd_logs_json_and_reloads_on_sighup(
    manifests: Path, tmp_path: Path, notify_socket: socket.socket
) -> None:
    host = tmp_path / "host.xml"
    host.write_text((REPO / "tests" / "data" / "testdriver" / "empty.xml").read_text())
    argv = [sys.executable, "-m", "reconciler", "watch", str(manifests), "-c", f"test://{host}"]
    argv += ["--metrics-addr", "127.0.0.1:0", "--resync", "1h", "--log-format", "json"]
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        first = messages(notify_socket, "READY=1")
        assert "pass(es); hosts 1 ok" in first[-1]["STATUS"], first
        proc.send_signal(signal.SIGHUP)
        reload = messages(notify_socket, "READY=1", lines=lines)
        assert reload[0]["RELOADING"] == "1" and int(reload[0]["MONOTONIC_USEC"]) > 0
        proc.send_signal(signal.SIGTERM)
        assert messages(notify_socket, "STOPPING=1")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        proc.stderr.close()  # type: ignore[union-attr]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    create = next(d for d in docs if d.get("action") == "create" and "Domain" in d["object"])
    assert create["host"] == "default" and create["object"] == "Domain/vrt-w1"
    assert create["drift"] is False and create["level"] == "info"
    assert any(d.get("pass") == 1 and "seconds" in d for d in docs)


# --- --dry-run ----------------------------------------------------------------------


def test_dry_run_reports_what_it_would_create_and_changes_nothing(
    manifests: Path,
    host_uri: str,
    conn: object,
    start_watch: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = conn(host_uri)  # type: ignore[operator]
    caplog.set_level("INFO", logger="reconciler")
    w = start_watch(paths=(str(manifests),), connect=host_uri, dry_run=True)
    wait_for(lambda: w.readiness()["ready"], 5, "the first pass")
    assert w.wait_idle(5)
    assert not domain_exists(c) and c.listAllNetworks() == []
    _, text = http(w, "/metrics")
    assert 'virt_reconcile_pending_changes{action="create",host="default"} 2.0' in text
    assert 'virt_reconcile_objects{host="default",sync="Missing"} 2.0' in text
    assert "virt_reconcile_changes_total{" not in text
    would = [r.getMessage() for r in caplog.records if "(dry run)" in r.getMessage()]
    assert "host default: would + create Domain/vrt-w1 (dry run)" in would
    assert w.last_outcomes["default"].pending == 2
    assert w.health()["dryRun"] is True

    # A domain of that name appears by hand: a new pending change (an update instead of
    # the create) is logged, the unchanged one is not again, and neither is called
    # drift — the host was never in sync.
    c.defineXML(
        "<domain type='test'><name>vrt-w1</name><memory>32768</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    wait_for(
        lambda: any("would ~ update Domain/vrt-w1" in r.getMessage() for r in caplog.records),
        5,
        "the new pending change is logged",
    )
    assert not [r for r in caplog.records if "[drift]" in r.getMessage()]
    logged = [r.getMessage() for r in caplog.records if "would + create Network" in r.getMessage()]
    assert len(logged) == 1


def test_dry_run_detects_drift_and_leaves_it(
    manifests: Path,
    host_uri: str,
    conn: object,
    start_watch: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = conn(host_uri)  # type: ignore[operator]
    assert cli.main(["apply", str(manifests), "-c", host_uri]) == 0
    caplog.set_level("INFO", logger="reconciler")
    w = start_watch(paths=(str(manifests),), connect=host_uri, dry_run=True)
    wait_for(lambda: w.readiness()["ready"], 5, "the first pass")
    assert w.wait_idle(5)
    _, text = http(w, "/metrics")
    assert 'virt_reconcile_pending_changes{action="update",host="default"} 0.0' in text

    # Behind its back: the domain's memory is changed; libvirt's event marks the host.
    xml = c.lookupByName("vrt-w1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    c.defineXML(re.sub(r"<memory unit='KiB'>\d+<", "<memory unit='KiB'>131072<", xml))
    wait_for(
        lambda: 'pending_changes{action="update",host="default"} 1.0' in http(w, "/metrics")[1],
        5,
        "the drift is reported",
    )
    assert memory_kib(c) == 128 * 1024  # left as it is
    would = [r.getMessage() for r in caplog.records if "(dry run)" in r.getMessage()]
    assert any("would ~ update Domain/vrt-w1: memory [drift]" in m for m in would), would
    assert [e.what for e in w.recent] == ["would"]
    _, page = http(w, "/")  # the status page says so too
    assert "mode: <b>dry run (changes nothing)</b>" in page
    assert re.search(r'class="b would">would</span></td><td><code>~ update Domain/vrt-w1', page)
    assert re.search(r"<code>Domain/vrt-w1</code></td><td><span class=\"b OutOfSync\">", page)


# --- endpoints and metrics -------------------------------------------------------------


def test_readyz_waits_for_valid_manifests_and_a_pass_over_every_host(
    manifests: Path, host_uri: str, start_watch: Start
) -> None:
    (manifests / "domain.yaml").write_text(DOMAIN.format(memory="lots"))
    w = start_watch(paths=(str(manifests),), connect=host_uri)
    assert w.wait_idle(5)
    with pytest.raises(Exception, match="503") as e:
        http(w, "/readyz")
    assert json.loads(e.value.read()) == {"ready": False, "waitingFor": "valid manifests"}  # type: ignore[attr-defined]
    assert http(w, "/healthz")[0] == 200  # alive, though not ready

    (manifests / "domain.yaml").write_text(DOMAIN.format(memory="64MiB"))
    wait_for(lambda: w.readiness()["ready"], 5, "ready after the first pass")
    code, body = http(w, "/readyz")
    assert code == 200 and json.loads(body) == {"ready": True, "waitingFor": []}


def test_metrics_have_build_info_and_no_created_series(
    manifests: Path, host_uri: str, start_watch: Start
) -> None:
    w = start_watch(paths=(str(manifests),), connect=host_uri)
    wait_for(lambda: w.readiness()["ready"], 5, "the first pass")
    _, text = http(w, "/metrics")
    assert re.search(
        r'^virt_reconcile_build_info\{python="[\d.]+",version="'
        + re.escape(cli.__version__)
        + r'"\} 1\.0$',
        text,
        re.M,
    )
    assert "_created" not in text
    assert "virt_reconcile_reconcile_runs_total{" in text


def test_default_metrics_port_is_not_libvirt_exporters() -> None:
    args = cli._parser().parse_args(["watch", "x"])
    assert args.metrics_addr == "127.0.0.1:9178" == watch.DEFAULT_ADDRESS


# --- contrib/ -------------------------------------------------------------------------------


def metric_names() -> set[str]:
    """Every series name the daemon can export (counters' _total, histograms' _bucket...)."""
    names = set()
    for family in watch.Metrics().registry.collect():
        names.add(family.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_info"):
            names.add(family.name + suffix)
    return names


def test_alert_rules_parse_and_name_only_real_metrics() -> None:
    rules = yaml.safe_load((CONTRIB / "prometheus-alerts.yaml").read_text())
    known = metric_names()
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 4
    for rule in alerts:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        used = set(re.findall(r"\bvirt_reconcile_\w+", rule["expr"]))
        assert used or rule["expr"].startswith("up{"), rule["alert"]
        assert used <= known, (rule["alert"], used - known)
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_systemd_unit_is_type_notify_and_runs_a_valid_watch_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(CONTRIB / "virt-reconcile-watch.service")
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "libvirtd.service" in unit["Unit"]["After"].split()
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[1] == "watch"
    args = cli._parser().parse_args(command[1:])  # the options exist
    assert args.command == "watch"
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(CONTRIB / "virt-reconcile-watch.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    # systemd-analyze checks the syntax; the binary it names need not exist here.
    problems = [
        line
        for line in verify.stderr.splitlines()
        if line and "is not executable" not in line and "No such file" not in line
    ]
    assert problems == [], verify.stderr
