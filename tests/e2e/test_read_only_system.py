"""Read-only commands on the real daemon: ``libvirt.openReadOnly`` is all they use."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler import cli


def test_plan_and_status_need_only_the_read_only_socket(
    system_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    name = f"vrt-ro-{uuid.uuid4().hex[:8]}"
    (tmp_path / "net.yaml").write_text(
        f"apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {{name: {name}}}\n"
        "spec: {forward: nat, ip: {address: 10.251.7.1, prefix: 24}}\n"
    )

    real_open = libvirt.open

    def refused(uri: str) -> libvirt.virConnect:
        # The private normaliser (an in-memory test:/// host of its own) defines freely.
        assert uri.startswith("test:///"), f"read-write connection opened to {uri}"
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", refused)
    assert cli.main(["plan", str(tmp_path), "-c", system_uri, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    actions = {
        a["name"]: a["action"]
        for h in doc["hosts"]
        for a in h["actions"]
        if "orphan" not in a  # managed objects of other tests on the shared daemon
    }
    assert actions == {name: "create"}
    assert cli.main(["status", str(tmp_path), "-c", system_uri]) == 0
    assert "Missing" in capsys.readouterr().out
    # libvirt itself refuses a change on such a connection.
    conn = libvirt.openReadOnly(system_uri)
    try:
        with pytest.raises(libvirt.libvirtError) as e:
            conn.networkDefineXML(f"<network><name>{name}</name></network>")
        assert e.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    finally:
        conn.close()
