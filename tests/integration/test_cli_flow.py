"""The review-and-apply workflow on the command line (issue 14, "CLI"): compound
durations, size suggestions, ``render``, saved plans, selectors and targets,
manifests from stdin and skipped files."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from reconciler import cli
from tests.integration.conftest import EXAMPLES, Run, host_snapshot


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


# --- render ------------------------------------------------------------------------

HOSTS = """\
apiVersion: virt-reconcile/v1
kind: Host
metadata: {name: kvm-a}
spec: {uri: "test:///nonexistent/a.xml"}
---
apiVersion: virt-reconcile/v1
kind: Host
metadata: {name: kvm-b}
spec: {uri: "test:///nonexistent/b.xml"}
"""


def _chunks(out: str) -> dict[str, str]:
    """render's output: {header: XML}."""
    chunks: dict[str, str] = {}
    header = ""
    for line in out.splitlines():
        if line.startswith("<!-- "):
            header = line
            chunks[header] = ""
        else:
            chunks[header] += line + "\n"
    return chunks


def test_render_prints_each_objects_xml_with_a_header(run: Run) -> None:
    code, out, err = run("render", EXAMPLES)
    assert code == 0, err
    chunks = _chunks(out)
    refs = [h.split()[1] for h in chunks]
    assert refs == [
        "StoragePool/vr-lab",
        "Volume/vr-lab/db-1-data.raw",
        "Volume/vr-lab/web-1.qcow2",
        "Volume/vr-lab/web-2.qcow2",
        "Network/vr-lab-net",
        "Domain/vr-db-1",
        "Domain/vr-web-1",
        "Domain/vr-web-2",
    ]
    header = next(h for h in chunks if "Domain/vr-web-1" in h)
    assert header.startswith("<!-- Domain/vr-web-1 on host default (")
    assert "web.yaml:" in header
    web = etree.fromstring(chunks[header].encode())
    assert web.tag == "domain" and web.findtext("name") == "vr-web-1"
    assert web.find("devices/interface/mac").get("address") == "52:54:00:77:00:11"  # type: ignore[union-attr]


def test_render_needs_no_host_and_filters_by_host(run: Run, tmp_path: Path) -> None:
    # The hosts' URIs point nowhere: render never connects.
    (tmp_path / "hosts.yaml").write_text(HOSTS)
    (tmp_path / "a.yaml").write_text(_domain("on-a", extra="") + "  host: kvm-a\n")
    (tmp_path / "b.yaml").write_text(_domain("on-b") + "  host: kvm-b\n")
    code, out, err = run("render", tmp_path, "--host", "kvm-b")
    assert code == 0, err
    [header] = _chunks(out)
    assert header.startswith("<!-- Domain/on-b on host kvm-b (")
    code, out, err = run("render", tmp_path)
    assert [h.split()[1] for h in _chunks(out)] == ["Domain/on-a", "Domain/on-b"]
    code, _out, err = run("render", tmp_path, "--host", "kvm-c")
    assert code == 1 and "--host: no such host kvm-c" in err


# --- plan --out, apply --plan ------------------------------------------------------


def test_a_saved_plan_is_applied_when_the_fresh_plan_equals_it(
    run: Run, host_uri: str, tmp_path: Path, conn: Callable[[str], libvirt.virConnect]
) -> None:
    planfile = tmp_path / "plan.json"
    code, _out, err = run("plan", EXAMPLES, "-c", host_uri, "--out", planfile)
    assert code == 0, err
    saved = json.loads(planfile.read_text())
    assert saved["format"] == "virt-reconcile/plan" and saved["version"] == 1
    assert len(saved["manifests"]["sha256"]) == 64
    actions = saved["hosts"]["default"]["actions"]
    assert actions["Domain/vr-web-1"]["action"] == "create"
    assert set(actions) >= {"StoragePool/vr-lab", "Volume/vr-lab/web-1.qcow2", "Network/vr-lab-net"}
    code, out, err = run("apply", EXAMPLES, "-c", host_uri, "--plan", planfile)
    assert code == 0, out + err
    assert "Converged" in out
    assert conn(host_uri).lookupByName("vr-web-1").isActive()


def test_apply_refuses_a_saved_plan_when_the_manifests_changed(
    run: Run,
    host_uri: str,
    examples: Path,
    tmp_path: Path,
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    code, _out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, err
    planfile = tmp_path / "plan.json"
    web = examples / "web.yaml"
    web.write_text(web.read_text().replace("currentMemory: 192MiB", "currentMemory: 128MiB", 1))
    code, _out, err = run("plan", examples, "-c", host_uri, "--out", planfile)
    assert code == 0, err
    # Reviewed: web-1's balloon goes to 128MiB. Then someone edits the manifests again.
    web.write_text(web.read_text().replace("currentMemory: 128MiB", "currentMemory: 160MiB", 1))
    before = host_snapshot(conn(host_uri))
    code, _out, err = run("apply", examples, "-c", host_uri, "--plan", planfile)
    assert code == 1
    assert f"the fresh plan differs from {planfile}" in err
    assert "manifests changed since the plan was saved" in err
    assert (
        "default: Domain/vr-web-1: currentMemory: planned 196608 → 131072, now 196608 → 163840"
        in err
    )
    assert "nothing was changed" in err
    assert host_snapshot(conn(host_uri)) == before


def test_apply_refuses_a_saved_plan_when_the_host_changed(
    run: Run, host_uri: str, tmp_path: Path, conn: Callable[[str], libvirt.virConnect]
) -> None:
    planfile = tmp_path / "plan.json"
    assert run("plan", EXAMPLES, "-c", host_uri, "--out", planfile)[0] == 0
    assert run("apply", EXAMPLES, "-c", host_uri)[0] == 0  # someone applied in between
    code, _out, err = run("apply", EXAMPLES, "-c", host_uri, "--plan", planfile)
    assert code == 1
    assert "default: Domain/vr-web-1: planned create, now nothing" in err
    assert "manifests changed" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a saved plan (invalid JSON"),
        ('{"format": "virt-reconcile/plan", "version": 7}', "saved plan version 7"),
        ("[]", "not a saved plan"),
    ],
)
def test_apply_refuses_a_file_that_is_no_saved_plan(
    text: str, message: str, run: Run, host_uri: str, tmp_path: Path
) -> None:
    planfile = tmp_path / "plan.json"
    planfile.write_text(text)
    code, _out, err = run("apply", EXAMPLES, "-c", host_uri, "--plan", planfile)
    assert code == 1 and message in err
    code, _out, err = run("apply", EXAMPLES, "-c", host_uri, "--plan", tmp_path / "missing.json")
    assert code == 1 and "No such file or directory" in err


# --- -l/--selector, --target ---------------------------------------------------------


def _refs(doc: dict[str, Any]) -> dict[str, str]:
    return {
        f"{a['kind']}/{a['pool'] + '/' if 'pool' in a else ''}{a['name']}": a["action"]
        for h in doc["hosts"]
        for a in h["actions"]
    }


def test_selector_and_target_narrow_plan_apply_and_status(
    run: Run, host_uri: str, conn: Callable[[str], libvirt.virConnect]
) -> None:
    # The web domains only: their volumes and network are neither on the host nor in the run.
    code, out, err = run("plan", EXAMPLES, "-c", host_uri, "-l", "tier=web")
    assert code == 1
    assert "+ create Domain/vr-web-1" in out and "StoragePool" not in out
    assert "no manifest in this run (narrowed by --selector/--target) declares it" in out
    code, out, err = run("plan", EXAMPLES, "-c", host_uri, "--target", "Network/vr-lab-net")
    assert code == 0, err
    assert "create Network/vr-lab-net" in out and "Domain/" not in out
    # Two selectors: both must match (the network is labelled lab=demo, not tier=web).
    code, out, err = run(
        "plan", EXAMPLES, "-c", host_uri, "-l", "tier=web", "-l", "lab=demo", "-o", "json"
    )
    assert code == 0 and _refs(json.loads(out)) == {}
    code, out, err = run(
        "apply", EXAMPLES, "-c", host_uri, "--target", "StoragePool/vr-lab",
        "--target", "Volume/db-1-data.raw", "--target", "Network/vr-lab-net",
    )  # fmt: skip
    assert code == 0, out + err
    c = conn(host_uri)
    assert [p.name() for p in c.listAllStoragePools()] == ["vr-lab"]
    assert [v.name() for v in c.storagePoolLookupByName("vr-lab").listAllVolumes()] == [
        "db-1-data.raw"
    ]
    assert c.listAllDomains() == []
    code, out, err = run("plan", EXAMPLES, "-c", host_uri, "-l", "tier=db", "-o", "json")
    assert code == 0, err
    assert _refs(json.loads(out)) == {"Domain/vr-db-1": "create"}
    code, out, err = run("status", EXAMPLES, "-c", host_uri, "-l", "tier=db", "-o", "json")
    objects = json.loads(out)["hosts"][0]["objects"]
    assert [(o["name"], o["sync"]) for o in objects] == [("vr-db-1", "Missing")]


def test_a_target_no_manifest_declares_is_a_usage_error(run: Run, host_uri: str) -> None:
    code, _out, err = run("plan", EXAMPLES, "-c", host_uri, "--target", "Domain/vr-web-9")
    assert code == 1 and "--target Domain/vr-web-9: no manifest declares it" in err
    with pytest.raises(SystemExit) as exc:
        run("plan", EXAMPLES, "-c", host_uri, "-l", "tier")
    assert exc.value.code == 1


def test_prune_under_a_selector_deletes_only_orphans_recorded_with_those_labels(
    run: Run, host_uri: str, examples: Path, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    c = conn(host_uri)
    assert '"labels":{"tier":"web"}' in c.lookupByName("vr-web-2").XMLDesc(0)
    # Neither web-2 (tier=web) nor db-1 (tier=db) is named any more.
    web = examples / "web.yaml"
    web.write_text(web.read_text().split("\n---\n")[0] + "\n")
    (examples / "db.yaml").unlink()
    code, out, err = run(
        "plan", examples, "-c", host_uri, "--prune", "-l", "tier=web", "-o", "json"
    )
    assert code == 0, err
    assert {k: v for k, v in _refs(json.loads(out)).items() if v != "unchanged"} == {
        "Domain/vr-web-2": "delete"
    }
    code, out, err = run("apply", examples, "-c", host_uri, "--prune", "-l", "tier=web")
    assert code == 0, out + err
    assert sorted(d.name() for d in c.listAllDomains()) == ["vr-db-1", "vr-web-1"]
    # A target may name a managed object to delete.
    code, out, err = run(
        "apply", examples, "-c", host_uri, "--prune", "--force-prune", "--target", "Domain/vr-db-1"
    )
    assert code == 0, out + err
    assert [d.name() for d in c.listAllDomains()] == ["vr-web-1"]


# --- '-' (stdin), --exclude, .virtreconcileignore -------------------------------------


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_manifests_from_stdin(
    run: Run,
    host_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    _stdin(monkeypatch, _domain("from-stdin"))
    code, out, err = run("apply", "-", "-c", host_uri)
    assert code == 0, out + err
    assert conn(host_uri).lookupByName("from-stdin").info()[1] == 64 * 1024
    # With other paths beside it; an error names <stdin> and the line.
    _stdin(monkeypatch, _domain("bad", memory="2G"))
    code, _out, err = run("validate", EXAMPLES, "-")
    assert code == 1
    assert err.startswith("<stdin>:7: spec.memory: size '2G' needs a binary unit")


def test_exclude_and_ignore_file_skip_manifest_files(run: Run, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_domain("a"))
    (tmp_path / "a-old.yaml").write_text(_domain("a"))  # would be a duplicate
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "b.yaml").write_text(_domain("b"))
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "c.yaml").write_text(_domain("c"))
    (tmp_path / "lab" / "broken.yaml").write_text("{not yaml")
    code, _out, err = run("validate", tmp_path)
    assert code == 1 and "is also declared" in err and "broken.yaml" in err
    (tmp_path / "lab" / ".virtreconcileignore").write_text("# work in progress\nbroken.yaml\n")
    code, out, err = run("validate", tmp_path, "--exclude", "*-old.yaml", "--exclude", "staging/")
    assert code == 0, err
    assert "2 document(s) in 2 file(s)" in out
    code, out, err = run("render", tmp_path, "--exclude", "*-old.yaml")
    assert [h.split()[1] for h in _chunks(out)] == ["Domain/a", "Domain/b", "Domain/c"]
    # A file named directly is excluded too.
    code, out, err = run("validate", tmp_path / "a-old.yaml", "--exclude", "*-old.yaml")
    assert "0 document(s) in 0 file(s)" in out
    # An ignore file at the top applies to the whole tree.
    (tmp_path / ".virtreconcileignore").write_text("*-old.yaml\n/staging\n")
    code, out, err = run("validate", tmp_path)
    assert code == 0 and "2 document(s) in 2 file(s)" in out


def test_a_label_edit_is_recorded_as_a_metadata_change(
    run: Run, host_uri: str, examples: Path, conn: Callable[[str], libvirt.virConnect]
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    for name in ("web.yaml", "network.yaml", "storage.yaml"):
        path = examples / name
        text = path.read_text().replace("labels: {tier: web}", "labels: {tier: front}")
        text = text.replace("labels: {lab: demo}", "labels: {lab: demo, tier: front}")
        path.write_text(
            text.replace("name: vr-lab\n", "name: vr-lab\n  labels: {tier: front}\n", 1)
        )
    code, out, err = run("plan", examples, "-c", host_uri, "-o", "json", "--detailed-exitcode")
    assert code == 2, err
    changed = {
        f"{a['kind']}/{a['name']}": (a["action"], a["disruption"], a["changes"])
        for a in json.loads(out)["hosts"][0]["actions"]
        if a["action"] != "unchanged"
    }
    assert changed["Domain/vr-web-1"] == (
        "update",
        "none",
        [
            {
                "path": "metadata.labels",
                "old": "tier=web",
                "new": "tier=front",
                "disruption": "none",
                "field": "metadata.labels",
                "display": {"old": "tier=web", "new": "tier=front"},
            }
        ],
    )
    assert changed["Network/vr-lab-net"][2][0]["new"] == "lab=demo,tier=front"
    assert set(changed) == {
        "Domain/vr-web-1", "Domain/vr-web-2", "Network/vr-lab-net", "StoragePool/vr-lab"
    }  # fmt: skip
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0 and "Converged" in out, out + err
    inactive = conn(host_uri).lookupByName("vr-web-1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert '"labels":{"tier":"front"}' in inactive
    # --prune -l tier=front now finds web-2 when no manifest names it.
    web = examples / "web.yaml"
    web.write_text(web.read_text().split("\n---\n")[0] + "\n")
    code, out, err = run("apply", examples, "-c", host_uri, "--prune", "-l", "tier=front")
    assert code == 0, out + err
    assert sorted(d.name() for d in conn(host_uri).listAllDomains()) == ["vr-db-1", "vr-web-1"]
