"""Editors, hooks and shells: the combined JSON Schema, modelines, the pre-commit hook,
completion scripts and the man page — each checked against the parser or the schemas."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from argparse_manpage.manpage import Manpage

from reconciler import cli, schema
from reconciler.model import Kind

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
MAN = REPO / "docs" / "virt-reconcile.1"
SCRIPT = Path(sys.executable).parent / "virt-reconcile"  # the console script of this venv


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (a subprocess costs seconds of imports)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# --- the combined schema --------------------------------------------------------------


@pytest.fixture(scope="module")
def combined() -> dict[str, Any]:
    proc = run("schema")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def properties(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property schema under ``node``, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if isinstance(sub, dict):  # ``true``: anything goes (status)
                found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            if key in ("if", "then", "not"):
                continue  # conditions, not fields
            if key != "properties" or not isinstance(sub, dict):
                found += properties(sub, f"{path}/{key}")
            else:
                for name, prop in sub.items():
                    found += properties(prop, f"{path}.{name}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += properties(sub, f"{path}[{i}]")
    return found


def test_schema_is_one_valid_schema_for_every_kind(combined: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(combined)
    assert set(combined["$defs"]) == {k.value for k in Kind}
    assert combined["properties"]["kind"]["enum"] == sorted(k.value for k in Kind)
    # Every field an editor completes has a description (hover text).
    props = properties(combined)
    assert len(props) > 130
    missing = [p for p, sub in props if "description" not in sub]
    assert missing == []
    assert "size such as 2GiB" in json.dumps(combined["$defs"]["Domain"]["properties"]["spec"])


def test_schema_accepts_the_examples_and_refuses_what_validate_refuses(
    combined: dict[str, Any], tmp_path: Path
) -> None:
    validator = jsonschema.Draft202012Validator(combined)
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    assert {d["kind"] for d in docs} >= {"Domain", "Network", "StoragePool", "Volume"}
    for doc in docs:
        assert list(validator.iter_errors(doc)) == [], doc["metadata"]["name"]
    head = {"apiVersion": "virt-reconcile/v1", "metadata": {"name": "x"}}
    bad = [
        {**head, "kind": "Domain", "spec": {"memory": "1GiB", "colour": "red"}},
        {**head, "kind": "Network", "spec": {"bridge": "a-name-longer-than-15"}},
        {**head, "kind": "Volume", "spec": {"pool": "p", "capacity": "1GiB", "prune": "yes"}},
        {**head, "kind": "Host", "spec": {}},
        {**head, "kind": "Pod", "spec": {}},
    ]
    for i, doc in enumerate(bad):
        assert list(validator.iter_errors(doc)), doc
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        assert run("validate", str(path)).returncode == 1, doc  # validate agrees


def test_committed_schema_and_modelines_are_current(combined: dict[str, Any]) -> None:
    committed = EXAMPLES / schema.FILE_NAME
    assert json.loads(committed.read_text()) == combined, (
        "run: virt-reconcile schema > examples/manifests/virt-reconcile.schema.json"
    )
    for f in sorted(EXAMPLES.glob("*.yaml")):
        first = f.read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema={schema.FILE_NAME}", f.name
        assert (f.parent / first.split("=", 1)[1]).is_file()


# --- pre-commit ----------------------------------------------------------------------------


def test_pre_commit_hook_runs_validate(tmp_path: Path) -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"virt-reconcile-validate", "virt-reconcile-validate-system"}
    assert len({(h["entry"], tuple(h["args"])) for h in hooks}) == 1  # the same command
    hook = next(h for h in hooks if h["id"] == "virt-reconcile-validate")
    assert {"id", "name", "entry", "language"} <= set(hook)
    assert re.search(hook["files"], "manifests/web.yaml") and not re.search(hook["files"], "a.py")
    argv = [*hook["entry"].split(), *hook["args"]]
    assert argv[:2] == ["virt-reconcile", "validate"]
    shutil.copytree(EXAMPLES, tmp_path / "manifests")
    command = [str(SCRIPT), *argv[1:]]
    ok = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "manifests" / "web.yaml").write_text(
        (EXAMPLES / "web.yaml").read_text().replace("memory: ", "memroy: ", 1)
    )
    broken = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode == 1
    assert "web.yaml:" in broken.stderr and "memroy" in broken.stderr


# --- completion ---------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_mentions_every_subcommand_and_option(shell: str) -> None:
    proc = run("completion", shell)
    assert proc.returncode == 0, proc.stderr
    for name, sub in subcommands(cli._parser()).items():
        assert re.search(rf"\b{name}\b", proc.stdout), (shell, name)
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    spelled = f"-l {opt[2:]}" if shell == "fish" else opt
                    assert spelled in proc.stdout, (shell, name, opt)


def bash_complete(script: str, words: list[str], tmp_path: Path) -> list[str]:
    """What bash offers for ``words`` (the last one being typed)."""
    (tmp_path / "completion.bash").write_text(script)
    line = " ".join(f"'{w}'" for w in words)
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f"source {tmp_path / 'completion.bash'}; COMP_WORDS=({line}); "
            f'COMP_CWORD={len(words) - 1}; COMP_LINE="{" ".join(words)}"; '
            "COMP_POINT=${#COMP_LINE}; _shtab_virt_reconcile; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_completes_subcommands_options_and_choices(tmp_path: Path) -> None:
    script = run("completion", "bash").stdout
    assert set(bash_complete(script, ["virt-reconcile", ""], tmp_path)) >= set(
        subcommands(cli._parser())
    )
    assert bash_complete(script, ["virt-reconcile", "watch", "--log-f"], tmp_path) == [
        "--log-format"
    ]
    assert bash_complete(script, ["virt-reconcile", "completion", "z"], tmp_path) == ["zsh"]


# --- man page ---------------------------------------------------------------------------------


def test_man_page_is_current_and_mentions_every_subcommand_and_option() -> None:
    text = MAN.read_text()
    fresh = str(
        Manpage(
            cli._parser(),
            _data={
                "project_name": "virt-reconcile",
                "prog": "virt-reconcile",
                "version": cli.__version__,
                "description": "declarative GitOps reconciler for libvirt",
                "manual_title": "virt-reconcile manual",
                "include": str(REPO / "docs" / "virt-reconcile.1.include"),
            },
            format="single-commands-section",
        )
    )

    def body(page: str) -> str:
        return "\n".join(line for line in page.splitlines() if not line.startswith(".TH "))

    assert body(fresh) == body(text), "the man page is stale: run bash scripts/manpage.sh"
    plain = text.replace("\\-", "-")
    for section in ("EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert f".SH {section}" in text, section
    for name, sub in subcommands(cli._parser()).items():
        assert f"virt-reconcile {name}" in plain, name
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in plain or opt in ("-h", "--help"), (name, opt)
