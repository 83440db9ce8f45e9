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
