"""A plan from warm on-disk caches (manifests, flattened documents) is the plan
from cold ones: same actions, same changes, same XML, drift included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from reconciler import cache
from tests.integration.conftest import Run


def test_warm_and_cold_caches_plan_the_same_drift(
    examples: Path,
    host_uri: str,
    conn: Callable[[str], Any],
    run: Run,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "warm"))
    code, _, err = run("apply", examples, "-c", host_uri)
    assert code == 0, err
    plan_json(examples, "-c", host_uri)  # fills the caches with the converged state
    # Drift the definition: less memory, the NIC gone, a vCPU more.
    dom = conn(host_uri).lookupByName("vr-web-2")
    root = etree.fromstring(dom.XMLDesc(0))
    for el in root.findall("devices/interface"):
        el.getparent().remove(el)
    root.find("memory").text = str(int(root.find("memory").text) // 2)
    root.find("currentMemory").text = root.find("memory").text
    root.find("vcpu").text = str(int(root.find("vcpu").text) + 1)
    conn(host_uri).defineXML(etree.tostring(root, encoding="unicode"))

    warm = [plan_json(examples, "-c", host_uri, "-v") for _ in range(2)]
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cold"))
    cold = plan_json(examples, "-c", host_uri, "-v")
    assert warm[0] == warm[1] == cold
    changed = [a for h in cold["hosts"] for a in h["actions"] if a["action"] != "unchanged"]
    assert [a["name"] for a in changed] == ["vr-web-2"]
    assert "interface" in str(changed[0])


def test_plan_with_c_reads_the_host_early_and_plans_the_same(
    examples: Path,
    host_uri: str,
    run: Run,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # -c URI: the host is read while the manifests load (reconcile.Prefetch);
    # LIBVIRT_DEFAULT_URI: read after, as before. Same plan either way.
    code, _, err = run("apply", examples, "-c", host_uri)
    assert code == 0, err
    (examples / "web.yaml").write_text(
        (examples / "web.yaml").read_text().replace("memory: 256MiB", "memory: 384MiB", 1)
    )
    early = plan_json(examples, "-c", host_uri, "-v")
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", host_uri)
    late = plan_json(examples, "-v")
    assert early == late
    assert any(a["action"] == "update" for h in early["hosts"] for a in h["actions"])
    # Bad manifests: the early read is dropped, the error is the manifests'.
    (examples / "bad.yaml").write_text("apiVersion: virt-reconcile/v1\nkind: Nope\n")
    code, _, err = run("plan", examples, "-c", host_uri)
    assert code == 1 and "bad.yaml:2" in err
