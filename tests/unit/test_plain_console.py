"""cli's plain console writes what rich would, off a terminal, without loading rich."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console
from rich.markup import escape as rich_escape

from reconciler import cli

TEXTS = [
    "plain",
    "",
    "trailing  ",
    "é → ü",
    "[bold]Host x[/] (test:///a/b.xml)",
    "  [green]+ create Domain/vm-1[/]  [dim]a.yaml:3[/]",
    "x [red]y[/red] z",
    "[link=http://x]y[/link]",
    "a[1]b",
    "[]",
    "[abc",
    "name:smile: x",
    "qemu+ssh://h:22/system",
    "tab\tx",
    "cr\rx",
    "bell\ax",
    "back\\slash",
    "ends\\",
    "[/]",
    "[b]x[/i]",
]


def rich_text(text: str) -> str:
    buf = io.StringIO()
    try:
        Console(file=buf, highlight=False, soft_wrap=True).print(text, style="red")
    except Exception as e:  # rich's markup error: the plain console must give it too
        return type(e).__name__
    return buf.getvalue()


def plain_text(text: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    try:
        cli._Plain().print(text, style="red")
    except Exception as e:
        return type(e).__name__
    return capsys.readouterr().out


@pytest.mark.parametrize("text", TEXTS + [cli.escape(t) for t in TEXTS])
def test_plain_console_prints_as_rich_does(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.escape(text) == rich_escape(text)
    assert plain_text(text, capsys) == rich_text(text)
    wrapped = f"[bold]{cli.escape(text)}[/]"
    assert plain_text(wrapped, capsys) == rich_text(wrapped)


def test_plain_console_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    cli._Plain(stderr=True).print("[red]error: x[/]", end="!\n")
    assert capsys.readouterr() == ("", "error: x!\n")


def test_plain_console_defers_to_rich_when_forced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert cli._Plain().is_terminal
    cli._Plain().print("[red]x[/]")
    assert "\x1b[" in capsys.readouterr().out  # coloured: rich wrote it


def test_a_no_op_plan_to_a_pipe_does_not_import_rich(tmp_path: object) -> None:
    code = (
        "import sys; from reconciler import cli; cli.main(['validate', 'examples/manifests']);"
        " print('rich' in sys.modules, file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stderr.strip().splitlines()[-1] == "False"
    assert "valid" in p.stdout
