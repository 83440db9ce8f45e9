"""Prune guards (issue #6): an empty folder, a wrong path or a file that parses
to nothing never empties a host; in-use volumes are never deleted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import Run, host_snapshot

Conn = Callable[[str], libvirt.virConnect]

NETWORK = """\
apiVersion: virt-reconcile/v1
kind: Network
metadata: {name: NAME}
spec: {forward: none, state: inactive}
"""


@pytest.fixture
def applied(host_uri: str, examples: Path, run: Run) -> str:
    """A host holding the 8 managed objects of the examples."""
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    return host_uri


def _names(c: libvirt.virConnect) -> set[str]:
    out = {f"domain/{d.name()}" for d in c.listAllDomains()}
    out |= {f"network/{n.name()}" for n in c.listAllNetworks()}
    for p in c.listAllStoragePools():
        out.add(f"pool/{p.name()}")
        out |= {f"volume/{p.name()}/{v.name()}" for v in p.listAllVolumes()}
    return out


def _nothing(tmp_path: Path, case: str) -> Path:
    """Manifest paths that name none of the host's objects."""
    if case == "empty-folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif case == "unrelated-folder":
        path = tmp_path / "unrelated"
        path.mkdir()
        (path / "net.yaml").write_text(NETWORK.replace("NAME", "other-net"))
        (path / "README.txt").write_text("not a manifest\n")
    else:  # a file that parses to nothing: comments and empty documents
        path = tmp_path / "nothing.yaml"
        path.write_text("# all commented out\n---\n---\n# apiVersion: virt-reconcile/v1\n")
    return path


@pytest.mark.parametrize("case", ["empty-folder", "unrelated-folder", "parses-to-nothing"])
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_prune_of_nothing_is_refused_and_host_untouched(
    applied: str, tmp_path: Path, run: Run, conn: Conn, case: str, command: str
) -> None:
    before = host_snapshot(conn(applied))
    code, out, err = run(command, _nothing(tmp_path, case), "-c", applied, "--prune")
    assert code == 1, out + err
    assert "prune guard: no manifest names 7 of the 8 managed objects on host default" in out
    assert "more than --max-prune 50%" in out and "--force-prune" in out
    assert "Traceback" not in out + err
    assert host_snapshot(conn(applied)) == before


def test_force_prune_then_deletes_what_prune_may(
    applied: str, tmp_path: Path, run: Run, conn: Conn
) -> None:
    empty = _nothing(tmp_path, "empty-folder")
    code, out, err = run("apply", empty, "-c", applied, "--prune", "--force-prune")
    assert code == 0, out + err
    # Volumes without `prune: true` stay, and so does the pool that holds one.
    assert _names(conn(applied)) == {
        "pool/vr-lab",
        "volume/vr-lab/db-1-data.raw",
        "network/virt-reconcile-registry",  # the ownership records of the two
    }
    assert "not deleted: it holds volumes db-1-data.raw" in out
    # Converged: nothing more to delete.
    assert run("plan", empty, "-c", applied, "--prune", "--detailed-exitcode")[0] == 0


def test_max_prune_is_honoured_at_the_boundary(
    applied: str, examples: Path, run: Run, conn: Conn
) -> None:
    (examples / "web.yaml").unlink()  # 2 of the 8 managed objects: 25%
    before = host_snapshot(conn(applied))
    code, out, _ = run("apply", examples, "-c", applied, "--prune", "--max-prune", "24")
    assert code == 1
    assert "no manifest names 2 of the 8 managed objects on host default (25%)" in out
    assert "more than --max-prune 24%" in out
    assert host_snapshot(conn(applied)) == before
    code, out, err = run("apply", examples, "-c", applied, "--prune", "--max-prune", "25")
    assert code == 0, out + err
    assert not {"domain/vr-web-1", "domain/vr-web-2"} & _names(conn(applied))


def test_max_prune_rejects_a_bad_percentage(applied: str, examples: Path, run: Run) -> None:
    with pytest.raises(SystemExit) as exc:
        run("plan", examples, "-c", applied, "--prune", "--max-prune", "150")
    assert exc.value.code == 1  # a usage error, never 2 (--detailed-exitcode: changes)


def test_only_managed_object_needs_force_prune(
    host_uri: str, tmp_path: Path, run: Run, conn: Conn
) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "net.yaml").write_text(NETWORK.replace("NAME", "lonely"))
    assert run("apply", one, "-c", host_uri)[0] == 0
    (one / "net.yaml").unlink()
    code, out, _ = run("apply", one, "-c", host_uri, "--prune")
    assert code == 1
    assert "no manifest names 1 of the 1 managed objects on host default (the only one) (100%)" in (
        out
    )
    assert "network/lonely" in _names(conn(host_uri))
    assert run("apply", one, "-c", host_uri, "--prune", "--force-prune")[0] == 0
    assert "network/lonely" not in _names(conn(host_uri))


def test_volume_used_by_an_unmanaged_domain_is_never_deleted(
    applied: str, examples: Path, run: Run, conn: Conn
) -> None:
    c = conn(applied)
    path = c.storagePoolLookupByName("vr-lab").storageVolLookupByName("web-1.qcow2").path()
    c.defineXML(
        "<domain type='test'><name>hand-made</name><memory>65536</memory>"
        "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<source file='{path}'/><target dev='vdb'/></disk></devices></domain>"
    )
    # Drop the web domains and the web-1 volume from the manifests.
    (examples / "web.yaml").unlink()
    storage = examples / "storage.yaml"
    docs = storage.read_text().split("---\n")
    storage.write_text("---\n".join(d for d in docs if "name: web-1.qcow2" not in d))
    for _ in range(2):  # the second run sees the web domains gone
        code, out, err = run("apply", examples, "-c", applied, "--prune", "--force-prune")
        assert code == 0, out + err
    names = _names(c)
    assert "volume/vr-lab/web-1.qcow2" in names and "domain/hand-made" in names
    doc = json.loads(run("plan", examples, "-c", applied, "--prune", "-o", "json")[1])
    (kept,) = [a for a in doc["hosts"][0]["actions"] if a["name"] == "web-1.qcow2"]
    assert kept["action"] == "unchanged"
    assert kept["note"] == "not deleted: in use by hand-made"


def test_volume_of_a_domain_deleted_in_the_same_run_goes_too(
    applied: str, examples: Path, run: Run, conn: Conn
) -> None:
    (examples / "web.yaml").unlink()
    storage = examples / "storage.yaml"
    docs = storage.read_text().split("---\n")
    storage.write_text("---\n".join(d for d in docs if "name: web-" not in d))
    code, out, err = run("apply", examples, "-c", applied, "--prune", "--force-prune")
    assert code == 0, out + err
    assert "Converged" in out
    names = _names(conn(applied))
    assert not {"volume/vr-lab/web-1.qcow2", "volume/vr-lab/web-2.qcow2"} & names
    assert "volume/vr-lab/db-1-data.raw" in names


def test_volume_delete_rechecks_users_just_before_deleting(
    applied: str, examples: Path, conn: Conn
) -> None:
    """A domain defined after the plan was made still protects the volume."""
    from reconciler import manifests, plan
    from reconciler.reconcile import Run as ReconcileRun
    from reconciler.reconcile import resolve_hosts

    (examples / "web.yaml").unlink()
    storage = examples / "storage.yaml"
    docs = storage.read_text().split("---\n")
    storage.write_text("---\n".join(d for d in docs if "name: web-1.qcow2" not in d))
    target = resolve_hosts(manifests.load([str(examples)]), connect=applied)
    r = ReconcileRun(target=target, options=plan.Options(prune=True, force_prune=True))
    r.connect_and_observe()
    r.build_plans()
    assert any(a.name == "web-1.qcow2" and a.steps for a in r.plans["default"].actions)
    c = conn(applied)
    c.defineXML(
        "<domain type='test'><name>late</name><memory>65536</memory>"
        "<os><type>hvm</type></os><devices><disk type='volume' device='disk'>"
        "<source pool='vr-lab' volume='web-1.qcow2'/><target dev='vdb'/></disk></devices>"
        "</domain>"
    )
    results = r.execute()["default"]
    (res,) = [x for x in results if x.action.name == "web-1.qcow2"]
    assert res.result == "failed"
    assert res.error is not None and "not deleted: domain late uses it" in res.error
    assert "volume/vr-lab/web-1.qcow2" in _names(c)


def test_wrong_path_with_prune_changes_nothing(
    applied: str, tmp_path: Path, run: Run, conn: Conn
) -> None:
    before = host_snapshot(conn(applied))
    code, out, err = run("apply", tmp_path / "typo", "-c", applied, "--prune", "--force-prune")
    assert code == 1, out + err
    assert f"{tmp_path / 'typo'}:0: no such file or directory" in err
    assert host_snapshot(conn(applied)) == before
