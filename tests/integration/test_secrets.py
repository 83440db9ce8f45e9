"""Secrets on test-driver hosts (the plan side: libvirt's test driver has no
secrets to create). The value appears in no output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import Run

VALUE = "s3cr3t-Pa55phrase-do-not-print"


def _secret(name: str, value: str, extra: str = "") -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Secret\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  usage: {{ceph: client.{name}}}\n  value: {value}\n{extra}"
    )


POOL = (
    "apiVersion: virt-reconcile/v1\nkind: StoragePool\n"
    "metadata: {name: aaa-pool}\nspec: {type: dir, target: /var/tmp/vr-none}\n"
)


def test_plan_creates_secrets_first_and_never_shows_the_value(
    tmp_path: Path, host_uri: str, run: Run, monkeypatch: Any
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "db.key").write_text(VALUE)
    monkeypatch.setenv("VR_TEST_SECRET", VALUE)
    (tmp_path / "all.yaml").write_text(
        "---\n".join(
            [POOL, _secret("db", "{file: keys/db.key}"), _secret("tls", "{env: VR_TEST_SECRET}")]
        )
    )
    outputs = []
    for argv in (("plan",), ("plan", "-o", "json"), ("apply", "--dry-run"), ("validate",)):
        code, out, err = run(*argv, tmp_path, *(() if argv[0] == "validate" else ("-c", host_uri)))
        assert code == 0, out + err
        outputs.append(out + err)
    doc = json.loads(outputs[1])
    actions = doc["hosts"][0]["actions"]
    # Secret -> StoragePool -> Volume -> Network -> Domain.
    assert [a["kind"] for a in actions] == ["Secret", "Secret", "StoragePool"]
    db = actions[0]
    assert db["action"] == "create"
    [value] = [c for c in db["changes"] if c["path"] == "value"]
    assert (value["old"], value["new"]) == (None, f"from file {tmp_path / 'keys' / 'db.key'}")
    assert actions[1]["changes"][1]["new"] == "from environment variable VR_TEST_SECRET"
    # apply reaches the host (whose driver has no secrets) and fails there.
    code, out, err = run("apply", tmp_path, "-c", host_uri)
    assert code == 1
    assert "Secret/db" in out and "secret_define" in out
    outputs.append(out + err)
    for text in outputs:
        assert VALUE not in text


def test_a_literal_value_is_refused_with_file_and_line(tmp_path: Path, run: Run) -> None:
    (tmp_path / "s.yaml").write_text(_secret("db", VALUE))
    code, out, err = run("validate", tmp_path)
    assert code == 1
    assert f"{tmp_path / 's.yaml'}:6: spec.value: a literal value is refused" in out + err


def test_an_unreadable_value_is_a_plan_error_naming_where_from(
    tmp_path: Path, host_uri: str, run: Run, monkeypatch: Any
) -> None:
    monkeypatch.delenv("VR_NOT_SET", raising=False)
    (tmp_path / "s.yaml").write_text(
        "---\n".join([_secret("a", "{env: VR_NOT_SET}"), _secret("b", "{file: nope.key}")])
    )
    code, out, _err = run("plan", tmp_path, "-c", host_uri, "-o", "json")
    assert code == 1
    a, b = json.loads(out)["hosts"][0]["actions"]
    assert a["error"] == (
        f"{tmp_path / 's.yaml'}:6: spec.value: cannot read the value: "
        "environment variable VR_NOT_SET is not set"
    )
    assert b["error"].startswith(f"{tmp_path / 's.yaml'}:13: spec.value: cannot read the value: ")
    assert "nope.key: No such file or directory" in b["error"]
