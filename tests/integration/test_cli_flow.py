"""The review-and-apply workflow on the command line (issue 14, "CLI"): compound
durations, size suggestions, ``render``, saved plans, selectors and targets,
manifests from stdin and skipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import cli
from tests.integration.conftest import Run


@pytest.mark.parametrize(
    ("argv", "attr", "seconds"),
    [
        (["watch", "m", "--interval", "1m30s"], "interval", 90.0),
        (["watch", "m", "--resync", "2h"], "resync", 7200.0),
        (["watch", "m", "--resync", "1h30m"], "resync", 5400.0),
        (["apply", "m", "--lock-timeout", "1m30s"], "lock_timeout", 90.0),
        (["apply", "m", "--lock-timeout", "500ms"], "lock_timeout", 0.5),
        (["apply", "m", "--lock-timeout", "2.5"], "lock_timeout", 2.5),
    ],
)
def test_compound_durations_on_the_command_line(argv: list[str], attr: str, seconds: float) -> None:
    assert getattr(cli._parser().parse_args(argv), attr) == seconds


@pytest.mark.parametrize("value", ["1m30", "90 secs", "-1s"])
def test_a_bad_duration_is_a_usage_error(value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli._parser().parse_args(["watch", "m", "--interval", value])
    assert exc.value.code == 1


def _domain(name: str, memory: str = "64MiB", extra: str = "") -> str:
    return (
        f"apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata:\n  name: {name}\n{extra}"
        f"spec:\n  type: test\n  memory: {memory}\n  vcpus: 1\n"
    )


@pytest.mark.parametrize(
    ("memory", "hint"),
    [
        ("2G", "did you mean 2GiB?"),
        ("2 GB", "decimal units are refused: 2GB is 1.86GiB; did you mean 2GiB?"),
    ],
)
def test_a_size_in_libvirt_or_decimal_units_gets_a_suggestion(
    memory: str, hint: str, run: Run, tmp_path: Path
) -> None:
    (tmp_path / "web.yaml").write_text(_domain("web-1", memory))
    code, _out, err = run("validate", tmp_path / "web.yaml")
    assert code == 1
    assert f"{tmp_path / 'web.yaml'}:7: spec.memory: size '{memory}' needs a binary unit" in err
    assert err.splitlines()[0].endswith(f"(e.g. '2GiB'); {hint}")
