"""No silent outcomes: orphans, domains another host may hold, in-use replaces, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import Run


def _actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "/".join(filter(None, (a["kind"], a.get("pool"), a["name"]))): a
        for h in doc["hosts"]
        for a in h["actions"]
    }


def _drop_db(examples: Path) -> None:
    """vr-db-1 and its volume (no prune: true) are named by no manifest any more."""
    (examples / "db.yaml").unlink()
    storage = examples / "storage.yaml"
    text = storage.read_text()
    storage.write_text(text[: text.rindex("---\napiVersion")])


def test_orphans_are_shown_without_prune_with_what_prune_would_do(
    host_uri: str, examples: Path, run: Run
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    _drop_db(examples)
    code, out, err = run("plan", examples, "-c", host_uri, "-o", "json", "--detailed-exitcode")
    assert code == 0, out + err  # an orphan is no change without --prune
    doc = json.loads(out)
    actions = _actions(doc)
    dom, vol = actions["Domain/vr-db-1"], actions["Volume/vr-lab/db-1-data.raw"]
    assert dom["action"] == vol["action"] == "unchanged"
    assert dom["orphan"] == {"requiresPruning": True, "prune": "delete", "reason": None}
    assert vol["orphan"]["prune"] == "keep"
    assert "volume prune is false" in vol["orphan"]["reason"]
    assert doc["summary"]["orphan"] == 2
    assert "orphan" not in actions["Domain/vr-web-1"]

    code, out, _ = run("plan", examples, "-c", host_uri)
    assert "? orphan Domain/vr-db-1" in out
    assert "orphan: requires pruning (no manifest names it); --prune would delete it" in out

    code, out, _ = run("status", examples, "-c", host_uri, "-o", "json")
    assert code == 0
    orphans = {
        o["name"]: o["reason"]
        for h in json.loads(out)["hosts"]
        for o in h["objects"]
        if o["sync"] == "Orphan"
    }
    assert set(orphans) == {"vr-db-1", "db-1-data.raw"}
    assert "--prune would delete it" in orphans["vr-db-1"]
    code, out, _ = run("status", examples, "-c", host_uri)
    assert "Orphan" in out and "vr-db-1" in out

    # With --prune: a change, deleted, and the kept volume still says why.
    code, out, _ = run(
        "plan", examples, "-c", host_uri, "--prune", "-o", "json", "--detailed-exitcode"
    )
    assert code == 2
    actions = _actions(json.loads(out))
    assert actions["Domain/vr-db-1"]["action"] == "delete"
    assert actions["Domain/vr-db-1"]["orphan"]["requiresPruning"] is False
    assert actions["Volume/vr-lab/db-1-data.raw"]["orphan"]["prune"] == "keep"


def test_the_prune_guard_is_what_prune_would_do(host_uri: str, examples: Path, run: Run) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    for f in ("db.yaml", "web.yaml", "network.yaml"):
        (examples / f).unlink()
    # 4 of the 8 managed objects would go: more than --max-prune 40.
    code, out, err = run("plan", examples, "-c", host_uri, "-o", "json", "--max-prune", "40")
    assert code == 0, out + err
    guarded = [a for a in _actions(json.loads(out)).values() if "orphan" in a]
    assert guarded and all(a["orphan"]["prune"] == "keep" for a in guarded)
    assert any("prune guard" in (a["orphan"]["reason"] or "") for a in guarded)


def test_plan_for_one_host_says_which_placed_domains_it_leaves_alone(
    tmp_path: Path, run: Run
) -> None:
    head = "apiVersion: virt-reconcile/v1\n"
    uris = {n: f"test://{tmp_path / n}.xml" for n in ("kvm-a", "kvm-b")}
    for n in uris:
        (tmp_path / f"{n}.xml").write_text("<node/>\n")
    docs = [
        f"{head}kind: Host\nmetadata: {{name: {n}}}\nspec: {{uri: '{u}'}}\n"
        for n, u in uris.items()
    ]
    docs.append(
        f"{head}kind: Domain\nmetadata: {{name: web}}\nspec:\n  type: test\n"
        "  placement: {hosts: [kvm-a, kvm-b]}\n  memory: 64MiB\n  vcpus: 1\n"
    )
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "all.yaml").write_text("---\n".join(docs))
    code, out, err = run("plan", folder, "--host", "kvm-a", "-o", "json")
    assert code == 0, out + err
    doc = json.loads(out)
    assert _actions(doc) == {}
    [skipped] = doc["notPlaced"]
    assert (skipped["kind"], skipped["name"]) == ("Domain", "web")
    assert "kvm-b" in skipped["note"] and "not in this run" in skipped["note"]
    assert skipped["placement"]["pending"] is True
    code, out, _ = run("plan", folder, "--host", "kvm-a")
    assert "Note: Domain/web is not placed yet" in out and "kvm-b" in out
    # With every candidate in the run, it is placed; nothing is noted.
    doc = json.loads(run("plan", folder, "-o", "json")[1])
    assert doc["notPlaced"] == [] and "Domain/web" in _actions(doc)


def test_replace_of_a_volume_in_use_is_refused_at_plan_time(
    host_uri: str, examples: Path, run: Run, conn: Any
) -> None:
    storage = examples / "storage.yaml"
    original = storage.read_text()
    spare = original[original.rindex("apiVersion") :].replace("db-1-data.raw", "spare.raw")

    def write(db_format: str, spare_format: str) -> None:
        db_doc = original[original.rindex("apiVersion") :]
        storage.write_text(
            original.replace(db_doc, db_doc.replace("format: raw", f"format: {db_format}"))
            + "---\n"
            + spare.replace("format: raw", f"format: {spare_format}")
        )

    write("raw", "raw")
    assert run("apply", examples, "-c", host_uri)[0] == 0
    pool = conn(host_uri).storagePoolLookupByName("vr-lab")
    write("qcow2", "qcow2")
    code, out, err = run(
        "apply", examples, "-c", host_uri, "--replace", "Volume/vr-lab/db-1-data.raw",
        "--replace", "Volume/vr-lab/spare.raw",
    )  # fmt: skip
    assert code == 1, out + err
    assert "--replace Volume/vr-lab/db-1-data.raw refused: in use by domain(s) vr-db-1" in out
    assert "nothing was changed" in err
    assert "<format type='raw'/>" in pool.storageVolLookupByName("spare.raw").XMLDesc(0)
    # A volume no domain uses is replaced.
    write("raw", "qcow2")
    code, out, err = run("apply", examples, "-c", host_uri, "--replace", "Volume/vr-lab/spare.raw")
    assert code == 0, out + err
    assert "<format type='qcow2'/>" in pool.storageVolLookupByName("spare.raw").XMLDesc(0)


def test_apply_says_which_domains_wait_for_a_restart(
    host_uri: str, examples: Path, run: Run
) -> None:
    code, out, _ = run("apply", examples, "-c", host_uri)
    assert "Converged: a fresh plan finds nothing left to do." in out
    web = examples / "web.yaml"
    web.write_text(
        web.read_text().replace("  vcpus: 1\n  maxVcpus: 2", "  vcpus: 1\n  maxVcpus: 4")
    )
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    assert "Converged; 1 domain waits for a restart (vr-web-1)" in out
    code, out, _ = run("apply", examples, "-c", host_uri, "-o", "json")
    doc = json.loads(out)
    assert doc["converged"] is True
    assert doc["pendingRestart"] == [{"host": "default", "kind": "Domain", "name": "vr-web-1"}]
