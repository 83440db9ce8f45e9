"""Read-only commands open read-only libvirt connections (``libvirt.openReadOnly``)."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from reconciler import errors, hosts, manifests, plan
from reconciler.reconcile import Run, apply, resolve_hosts
from tests.integration.conftest import Run as CliRun

_NET = "<network><name>vr-ro-probe</name></network>"


def _refuses_changes(uri: str) -> bool:
    """Whether the connection the process keeps for ``uri`` is a read-only one."""
    try:
        hosts.open_uri(uri, read_only=True).networkDefineXML(_NET)
    except libvirt.libvirtError as e:
        return e.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    return False


@pytest.mark.parametrize(
    "command",
    [
        ("plan",),
        ("status",),
        ("apply", "--dry-run"),
        ("export", "-d", "OUT"),
    ],
)
def test_read_only_commands_hold_no_read_write_connection(
    command: tuple[str, ...], host_uri: str, examples: Path, run: CliRun, tmp_path: Path
) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    paths = [] if command[0] == "export" else [examples]
    code, out, err = run(*argv, *paths, "-c", host_uri)
    assert code == 0, err
    # Domains were planned, so the private normaliser (a test:/// host of its own) ran too.
    assert command[0] == "export" or "vr-web-1" in out
    assert _refuses_changes(host_uri)


def test_plan_after_apply_sees_what_apply_did(host_uri: str, examples: Path, run: CliRun) -> None:
    assert run("plan", examples, "-c", host_uri)[0] == 0
    assert run("apply", examples, "-c", host_uri)[0] == 0
    code, out, err = run("plan", examples, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err
    assert "no changes" in out
    code, out, _ = run("export", "-c", host_uri, "-d", str(examples.parent / "exp"), "--adopt")
    assert code == 0, out


def test_a_read_only_run_never_writes(host_uri: str, examples: Path) -> None:
    """Even asked to, a read-only run changes nothing: steps, placement and registry refused."""
    target = resolve_hosts(manifests.load([str(examples)]), connect=host_uri)
    ro = Run(target=target, options=plan.Options(), read_only=True)
    try:
        ro.connect_and_observe()
        ro.build_plans()
        applied = apply(ro)
        results = [r for rs in applied.results.values() for r in rs if r.action.steps]
        assert results and all(r.result == "failed" for r in results)
        assert all("read-only" in (r.error or "") for r in results)
        session = ro.sessions["default"]
        with pytest.raises(errors.HostError, match="read-only"):
            session.record_applied({"revision": "x"})
        assert not session.calls
    finally:
        ro.close()
    assert hosts.open_uri(host_uri, read_only=True).listAllDomains() == []
