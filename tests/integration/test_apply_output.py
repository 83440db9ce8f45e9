"""apply shows outcomes as they happen, progress for long waits, and asks before
deleting, replacing or restarting when someone at a terminal can answer."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from reconciler import cli, hosts, manifests, plan
from reconciler.reconcile import Run, resolve_hosts
from tests.integration.conftest import EMPTY_HOST, REPO
from tests.integration.conftest import Run as CliRun


def test_each_outcome_is_printed_when_its_action_ends(
    host_uri: str, examples: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}
    real = hosts.Session.run

    def run(self: hosts.Session, step: Any, action: plan.Action) -> None:
        # What stdout holds when each action starts.
        seen.setdefault(action.ref, capsys.readouterr().out)
        real(self, step, action)

    monkeypatch.setattr(hosts.Session, "run", run)
    assert cli.main(["apply", str(examples), "-c", host_uri]) == 0
    printed = "".join(seen.values()) + capsys.readouterr().out
    # The network was created, and said so, before the first domain's define began.
    assert "ok default: create Network/vr-lab-net" in seen["Domain/vr-db-1"]
    assert printed.index("Apply:") < printed.index("ok default: create Network/vr-lab-net")
    assert printed.rstrip().endswith("a fresh plan finds nothing left to do.")


def test_long_waits_show_progress(host_uri: str, examples: Path) -> None:
    calls: list[tuple[str, str, float]] = []
    target = resolve_hosts(manifests.load([str(examples)]), connect=host_uri)

    def waiting(host: str, what: str, timeout: float) -> Any:
        calls.append((host, what, timeout))
        return io.StringIO()  # any context manager

    r = Run(target=target, options=plan.Options(), waiting=waiting)
    try:
        r.connect_and_observe()
        with r.sessions["default"].waiting("Domain/x: the guest shuts down", 60):
            pass
    finally:
        r.close()
    assert calls == [("default", "Domain/x: the guest shuts down", 60)]

    args = cli._parser().parse_args(["apply", "x"])
    plain = Console(file=io.StringIO(), force_terminal=False)
    with cli._Stream(args, plain).waiting("kvm-a", "Domain/x: the guest shuts down", 60):
        pass
    assert "… kvm-a: Domain/x: the guest shuts down" in plain.file.getvalue()  # type: ignore[attr-defined]
    tty = Console(file=io.StringIO(), force_terminal=True)
    with cli._Stream(args, tty).waiting("kvm-a", "Domain/x: the guest shuts down", 60):
        time.sleep(0.3)  # the spinner draws
    assert "kvm-a: Domain/x: the guest shuts down" in tty.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in tty.file.getvalue()  # type: ignore[attr-defined]
    silent = cli._Stream(cli._parser().parse_args(["apply", "x", "-o", "json"]), None)
    with silent.waiting("kvm-a", "nothing printed", 1):
        pass


def _orphaned(examples: Path) -> None:
    (examples / "db.yaml").unlink()


def test_a_deletion_is_confirmed_on_a_terminal(
    host_uri: str, examples: Path, run: CliRun, monkeypatch: pytest.MonkeyPatch, conn: Any
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    _orphaned(examples)
    prune = ("apply", examples, "-c", host_uri, "--prune")
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))  # Enter: the default, no
    code, out, err = run(*prune)
    assert code == 1
    assert "This apply deletes, replaces or restarts:" in out
    assert "delete default: Domain/vr-db-1" in out and "Apply these changes? [y/N]" in out
    assert "apply cancelled; nothing was changed" in err
    assert "vr-db-1" in conn(host_uri).listDefinedDomains() + [
        d.name() for d in conn(host_uri).listAllDomains()
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(*prune)
    assert code == 0, out + err
    assert "ok default: delete Domain/vr-db-1" in out
    assert "vr-db-1" not in [d.name() for d in conn(host_uri).listAllDomains()]


def test_yes_and_no_terminal_never_ask(
    host_uri: str, examples: Path, run: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    _orphaned(examples)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a read would find nothing: "no"
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    code, out, err = run("apply", examples, "-c", host_uri, "--prune", "--yes")
    assert code == 0, out + err
    assert "Apply these changes?" not in out and "ok default: delete Domain/vr-db-1" in out
    # Not a terminal (CI): no question, as with terraform apply -auto-approve.
    monkeypatch.setattr(cli, "_interactive", lambda: False)
    (examples / "web.yaml").unlink()
    code, out, err = run("apply", examples, "-c", host_uri, "--prune", "--force-prune")
    assert code == 0, out + err
    assert "Apply these changes?" not in out and "ok default: delete Domain/vr-web-1" in out


def _pty_apply(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin and stdout; answer its question."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", "TERM": "xterm"},
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not answered and b"[y/N]" in output:
            os.write(leader, answer)
            answered = True
        if proc.poll() is not None and not ready:
            break
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    return proc.wait(timeout=30), text


def test_a_real_terminal_is_asked(tmp_path: Path) -> None:
    """A managed domain no manifest names, in a host file of its own: --prune deletes it."""
    host = tmp_path / "host.xml"
    host.write_text(EMPTY_HOST.read_text())
    keep = tmp_path / "m"
    keep.mkdir()
    head = (
        "apiVersion: virt-reconcile/v1\nkind: Domain\nspec: {type: test, memory: 64MiB, vcpus: 1}\n"
    )
    (keep / "old.yaml").write_text(head + "metadata: {name: old}\n")
    uri = f"test://{host}"
    assert cli.main(["apply", str(keep), "-c", uri]) == 0
    xml = hosts.open_uri(uri).lookupByName("old").XMLDesc(0)
    host.write_text(f"<node>{xml}</node>\n")  # the managed domain, for the subprocess
    (keep / "old.yaml").write_text(head + "metadata: {name: new}\n")
    argv = ["apply", str(keep), "-c", uri, "--prune", "--force-prune"]
    code, out = _pty_apply(argv, b"n\n")
    assert code == 1, out
    assert "delete default: Domain/old" in out and "apply cancelled" in out
    assert "ok default" not in out
    code, out = _pty_apply(argv, b"y\n")
    assert code == 0, out
    assert "ok default: delete Domain/old" in out and "ok default: create Domain/new" in out


@pytest.mark.parametrize(
    ("command", "promises"),
    [
        ("plan", ("read-only", "orphans", "--host")),
        ("status", ("read-only", "orphans")),
        ("apply", ("as it ends", "--yes", "terminal", "restart", "in use", "--dry-run is plan")),
    ],
)
def test_help_says_what_the_command_promises(
    command: str, promises: tuple[str, ...], capsys: Any
) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for promise in promises:
        assert promise in text, promise
