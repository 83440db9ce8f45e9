"""The command line never surprises a script (issue 14, "CLI honesty").

Usage errors exit 1 (argparse's 2 is what ``--detailed-exitcode`` means by
"changes"); ``-o json`` with invalid input prints a JSON error document on
stdout; ``--replace`` must name a volume a manifest declares; plan-time
problems of one object are listed one per line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import EXAMPLES, Run, host_snapshot


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--detailed-exitcode", "--bogus"],
        ["plan", "--detailed-exitcode", "--max-prune", "150"],
        ["apply", "--detailed-exitcode", "--lock-timeout", "soon"],
        ["apply", "--detailed-exitcode", "-o", "yaml"],
        ["status", "-o", "xml"],
        ["validate", "--nope"],
    ],
    ids=["unknown-flag", "bad-percent", "bad-seconds", "bad-choice", "status-choice", "validate"],
)
def test_usage_errors_exit_1_not_2(argv: list[str], run: Run, host_uri: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*argv, EXAMPLES, "-c", host_uri)
    assert exc.value.code == 1


def test_unknown_command_exits_1(run: Run) -> None:
    with pytest.raises(SystemExit) as exc:
        run("plna", EXAMPLES)
    assert exc.value.code == 1


BAD = """apiVersion: virt-reconcile/v1
kind: Domain
metadata:
  name: bad-1
spec:
  type: test
  memory: 64MiB
  vcpu: 2
"""


@pytest.mark.parametrize("command", ["plan", "apply", "status", "validate"])
def test_json_output_with_invalid_manifests_is_an_error_document(
    command: str, run: Run, host_uri: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    host = [] if command == "validate" else ["-c", host_uri]
    code, out, err = run(command, EXAMPLES, bad, *host, "-o", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc == {
        "version": 1,
        "errors": [
            {
                "file": str(bad),
                "line": 8,
                "path": "spec.vcpu",
                "message": "unknown field 'vcpu' (did you mean 'vcpus'?)",
            }
        ],
    }
    assert f"{bad}:8: spec.vcpu: unknown field" in err  # humans still read stderr


def test_json_output_of_other_errors_is_an_error_document(
    run: Run, host_uri: str, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(
        "apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {name: a}\n"
        f"spec: {{uri: '{host_uri}'}}\n"
    )
    code, out, _ = run("plan", hosts, "-c", host_uri, "-o", "json")
    assert code == 1
    (error,) = json.loads(out)["errors"]
    assert error["file"] is None and error["line"] is None and error["path"] is None
    assert "Host documents" in error["message"]


def test_validate_json_of_valid_manifests(run: Run) -> None:
    code, out, _ = run("validate", EXAMPLES, "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["errors"] == []
    assert doc["files"] == 4 and doc["documents"] > 4


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nonsense", "--replace nonsense: no manifest declares it; use Volume/POOL/NAME"),
        (
            "Volume/vr-lab/web-1.qcow",
            "--replace Volume/vr-lab/web-1.qcow: no manifest declares it; use "
            "Volume/POOL/NAME (did you mean Volume/vr-lab/web-1.qcow2?)",
        ),
        ("Domain/vr-web-1", "--replace Domain/vr-web-1: only volumes are replaced"),
    ],
)
def test_replace_must_name_a_declared_volume(
    ref: str, message: str, run: Run, host_uri: str
) -> None:
    code, out, err = run("apply", EXAMPLES, "-c", host_uri, "--replace", ref)
    assert code == 1
    assert message in err
    assert "Apply" not in out and "Plan" not in out  # refused before any host was read


def test_replace_of_a_declared_volume_is_accepted(run: Run, host_uri: str) -> None:
    for ref in ("Volume/vr-lab/web-1.qcow2", "Volume/web-1.qcow2"):
        code, out, err = run("apply", EXAMPLES, "-c", host_uri, "--replace", ref, "--dry-run")
        assert code == 0, out + err


def test_plan_time_problems_are_one_per_line(run: Run, host_uri: str, tmp_path: Path) -> None:
    manifest = tmp_path / "lonely.yaml"
    manifest.write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: lonely}\n"
        "spec:\n  type: test\n  memory: 64MiB\n"
        "  disks:\n    - {target: vda, source: {volume: {pool: nopool, name: a.qcow2}}}\n"
        "  interfaces:\n    - {network: nonet}\n    - {network: othernet}\n"
    )
    code, out, _ = run("plan", manifest, "-c", host_uri)
    assert code == 1
    errors = [line.strip() for line in out.splitlines() if "error:" in line]
    assert len(errors) == 3, out
    assert errors[0].startswith(f"error: {manifest}:8: spec.disks.0.source.volume: volume")
    assert errors[1].startswith(f"error: {manifest}:10: spec.interfaces.0.network: network")
    assert errors[2].startswith(f"error: {manifest}:11: spec.interfaces.1.network: network")
    assert not any("; " in e for e in errors)


def test_plan_time_problems_in_json_are_lines_of_the_error(
    run: Run, host_uri: str, conn: Callable[[str], libvirt.virConnect], tmp_path: Path
) -> None:
    before = host_snapshot(conn(host_uri))
    manifest = tmp_path / "lonely.yaml"
    manifest.write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: lonely}\n"
        "spec:\n  type: test\n  memory: 64MiB\n  interfaces:\n    - {network: a}\n"
        "    - {network: b}\n"
    )
    code, out, _ = run("apply", manifest, "-c", host_uri, "-o", "json")
    assert code == 1
    (action,) = json.loads(out)["hosts"][0]["actions"]
    assert action["error"].splitlines() == [
        f"{manifest}:8: spec.interfaces.0.network: network 'a' does not exist on host "
        "default and no manifest declares it",
        f"{manifest}:9: spec.interfaces.1.network: network 'b' does not exist on host "
        "default and no manifest declares it",
    ]
    assert host_snapshot(conn(host_uri)) == before


def test_test_default_is_named_as_an_in_memory_host(run: Run) -> None:
    code, _out, err = run("plan", EXAMPLES, "-c", "test:///default")
    assert code == 0, err
    assert "in-memory host of this process only" in err
