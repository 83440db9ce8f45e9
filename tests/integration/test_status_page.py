"""The status page of ``watch`` (``GET /``), rendered by headless Chromium.

A watcher reconciles a file-backed test-driver host; Chromium loads the page
from the daemon's HTTP endpoint, the DOM it built is checked, and a screenshot
is kept: under the test's tmp dir, and copied to ``$VIRT_RECONCILE_ARTIFACTS``
(default ``artifacts/`` in the repository when ``$CI`` is set).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration import test_watch as base
from tests.integration.test_watch import DOMAIN, NETWORK, Start, http, wait_for
from tests.testbed import browser

start_watch = base.start_watch  # fixture shared with test_watch.py

ODD = "vrt-<b>odd<b>&amp;"  # a legal libvirt name that is also markup


@pytest.fixture
def watched(tmp_path: Path, host_uri: str, conn: object, start_watch: Start) -> object:
    """A watcher over two hosts: kvm-a reconciled (and its drift reverted), kvm-b unreachable."""
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "hosts.yaml").write_text(
        f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: kvm-a}}\n"
        f"spec: {{uri: '{host_uri}'}}\n---\n"
        "apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {name: kvm-b}\n"
        f"spec: {{uri: 'test://{tmp_path}/no-such-host.xml'}}\n"
    )
    on_a = "spec:\n  host: kvm-a\n"
    (d / "domain.yaml").write_text(DOMAIN.format(memory="64MiB").replace("spec:\n", on_a))
    (d / "network.yaml").write_text(NETWORK.replace("spec:\n", on_a))
    odd = DOMAIN.format(memory="32MiB").replace("name: vrt-w1", f"name: '{ODD}'")
    (d / "odd.yaml").write_text(
        odd.replace("spec:\n", on_a).replace("state: running", "state: shutoff")
    )
    (d / "b.yaml").write_text(
        DOMAIN.format(memory="32MiB")
        .replace("name: vrt-w1", "name: vrt-w2")
        .replace("spec:\n", "spec:\n  host: kvm-b\n")
    )
    c = conn(host_uri)  # type: ignore[operator]
    w = start_watch(paths=(str(d),))
    wait_for(lambda: w.readiness()["ready"], 10, "the first pass")
    assert w.wait_idle(10)
    # Drift: the network is stopped behind the watcher's back; it starts it again.
    c.networkLookupByName("vrt-wnet").destroy()
    wait_for(lambda: any(e.what == "drift" for e in w.recent), 10, "the drift is reverted")
    assert w.wait_idle(10)
    return w


def test_status_page_renders_the_watched_host_in_chromium(watched: object, tmp_path: Path) -> None:
    w = watched
    url = f"http://127.0.0.1:{w.metrics_port}/"  # type: ignore[attr-defined]
    dom = browser.dom(url, tmp_path)
    assert "<title>virt-reconcile watch</title>" in dom
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', dom)
    # The host, its objects with their sync state, power and health.
    assert 'id="host-kvm-a"' in dom and 'id="host-kvm-b"' in dom
    rows = re.findall(r"<tr><td><code>(.*?)</code></td><td><span class=\"b (\w+)\">", dom)
    states = dict(rows)
    assert states["Domain/vrt-w1"] == "Synced"
    assert states["Network/vrt-wnet"] == "Synced"
    assert states["Domain/vrt-w2"] == "Failed"
    assert '<span class="b unreachable">unreachable</span>' in dom
    assert "running" in dom and "shutoff" in dom
    # Markup in a name is shown as text, never as an element.
    assert "Domain/vrt-&lt;b&gt;odd&lt;b&gt;&amp;amp;" in dom
    assert "<b>odd" not in dom
    # The last pass and recent happenings: the drift correction and the error.
    assert "last pass" in dom
    assert re.search(r'class="b drift">drift</span></td><td><code>~ update Network/vrt-wnet', dom)
    assert re.search(r'class="b error">error</span></td><td><code>[^<]*no-such-host', dom)
    assert dom.count('class="b error"') == 1  # retries of the same error: one entry, counted

    browser.screenshot(url, tmp_path, "status-page.png")


def test_status_page_over_http_is_escaped_and_read_only(watched: object) -> None:
    w = watched
    code, body = http(w, "/")  # type: ignore[arg-type]
    assert code == 200
    assert "<b>odd" not in body and "&lt;b&gt;odd&lt;b&gt;&amp;amp;" in body
    assert "<script" not in body and "<form" not in body  # nothing to click, nothing to run
    assert "Synced" in body and "Failed" in body


def test_status_page_before_any_pass(tmp_path: Path, start_watch: Start) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "domain.yaml").write_text(DOMAIN.format(memory="not a size"))
    w = start_watch(paths=(str(d),), connect="test:///default")
    assert w.wait_idle(5)
    _, body = http(w, "/")
    assert "manifests: <b>INVALID</b>" in body
    assert "No host reconciled yet." in body


def test_a_host_no_manifest_names_leaves_the_page(watched: object, tmp_path: Path) -> None:
    w = watched
    d = tmp_path / "manifests"
    (d / "b.yaml").unlink()
    hosts = (d / "hosts.yaml").read_text().split("---\n")[0]
    (d / "hosts.yaml").write_text(hosts)
    wait_for(lambda: 'id="host-kvm-b"' not in http(w, "/")[1], 10, "kvm-b leaves the page")  # type: ignore[arg-type]
    assert 'id="host-kvm-a"' in http(w, "/")[1]  # type: ignore[arg-type]
