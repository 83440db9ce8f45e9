"""Plans speak the manifest's language: fields and units, not XML paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.integration.conftest import EXAMPLES, Run


def test_a_change_is_named_by_its_field_in_the_manifests_units(
    tmp_path: Path, host_uri: str, run: Run
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(EXAMPLES, folder)
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 0, out + err
    web = folder / "web.yaml"
    web.write_text(web.read_text().replace("memory: 256MiB", "memory: 512MiB", 1))
    code, out, err = run("plan", folder, "-c", host_uri, "-o", "json")
    assert code == 0, err
    changes = [
        c
        for h in json.loads(out)["hosts"]
        for a in h["actions"]
        for c in a["changes"]
        if a["name"] == "vr-web-1"
    ]
    assert [(c["field"], c["display"], c["path"], c["new"]) for c in changes] == [
        ("memory", {"old": "256MiB", "new": "512MiB"}, "memory", "524288")
    ]
    code, out, err = run("plan", folder, "-c", host_uri)
    assert "memory: 256MiB → 512MiB" in out
    assert "1048576" not in out and "524288" not in out
    # The XML views: a unified diff with -v, XPath-addressed edits with --diff xml;
    # neither shows the ownership record.
    code, out, err = run("plan", folder, "-c", host_uri, "-v")
    assert '+  <memory unit="KiB">524288</memory>' in out
    assert "virt-reconcile.dev/xmlns/owner" not in out
    code, out, err = run("plan", folder, "-c", host_uri, "--diff", "xml")
    assert '[update-text, /domain/memory[1], "524288"' in out
    assert "owner" not in out and "--- live" not in out
