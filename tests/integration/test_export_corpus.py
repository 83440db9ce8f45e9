"""export on the corpus hosts: round trips with no false diffs.

Each corpus (``conftest.Corpus``: the repository's own, and virt-manager's
test host when present) has domains in every state, networks of every forward
mode, pools of many types and their volumes. For every object: export, validate,
plan against the same host -> only ``adopt``; ``export --adopt`` -> nothing to
do; the exported manifests applied to an empty host converge; one edited
friendly field -> exactly that one change.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml
from lxml import etree

from reconciler import export, units
from tests.integration.conftest import EMPTY_HOST, Corpus, Run


def _key(a: dict[str, Any]) -> str:
    return f"{a['kind']}/{a['pool'] + '/' if a.get('pool') else ''}{a['name']}"


def _actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {_key(a): a for host in doc["hosts"] for a in host["actions"]}


def _host_objects(conn: libvirt.virConnect) -> dict[str, str]:
    """Every object on the host, by ``KIND/NAME`` -> why it is not exported ("" = exported)."""
    found = {}
    for dom in conn.listAllDomains():
        found[f"Domain/{dom.name()}"] = "" if dom.isPersistent() else "transient"
    for net in conn.listAllNetworks():
        if net.name() != "virt-reconcile-registry":
            found[f"Network/{net.name()}"] = ""
    for pool in conn.listAllStoragePools():
        found[f"StoragePool/{pool.name()}"] = ""
        ptype = etree.fromstring(pool.XMLDesc(0)).get("type")
        if pool.isActive():
            for vol in pool.listAllVolumes():
                lun = ptype in export.LUN_POOLS
                found[f"Volume/{pool.name()}/{vol.name()}"] = "LUN" if lun else ""
    return found


@pytest.fixture
def exported(
    corpus_uri: str, run: Run, tmp_path: Path, conn: Callable[[str], libvirt.virConnect]
) -> Path:
    out = tmp_path / "exported"
    code, stdout, err = run("export", "-c", corpus_uri, "-d", out)
    assert code == 0, stdout + err
    return out


def _files(out: Path) -> dict[str, Path]:
    """Exported manifests by ``KIND/[POOL/]NAME``."""
    files = {}
    for path in sorted(out.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        pool = doc["spec"].get("pool")
        files[f"{doc['kind']}/{pool + '/' if pool else ''}{doc['metadata']['name']}"] = path
    return files


def test_export_writes_every_object_and_says_why_it_skips_one(
    corpus: Corpus,
    corpus_uri: str,
    exported: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    on_host = _host_objects(conn(corpus_uri))
    files = _files(exported)
    assert set(files) == {ref for ref, why in on_host.items() if not why}
    counts = {kind: sum(ref.startswith(kind + "/") for ref in files) for kind in export.Kind}
    assert counts[export.Kind.DOMAIN] == corpus.domains
    assert counts[export.Kind.NETWORK] == corpus.networks
    assert counts[export.Kind.STORAGE_POOL] == corpus.pools
    assert counts[export.Kind.VOLUME] == corpus.volumes
    assert {"transient", "LUN"} <= set(on_host.values())  # both reasons to skip occur
    # Layout: DIR/HOST/KIND/NAME.yaml, volumes under their pool.
    assert (exported / "default" / "domain" / f"{corpus.domain}.yaml").is_file()
    assert (exported / "default" / "volume" / corpus.pool / f"{corpus.volume}.yaml").is_file()
    code, out, err = run("export", "-c", corpus_uri, "-d", exported)
    for ref, why in on_host.items():
        if why:
            assert f"skipped {ref}:" in out, (ref, out)
    code, out, err = run("validate", exported)
    assert code == 0, out + err
    # Every manifest in the readable form (friendly fields + an overlay): leaving out
    # what libvirt fills in never sends one to the fallback, a complete document.
    for ref, path in files.items():
        xml = yaml.safe_load(path.read_text())["spec"].get("xml")
        if xml is not None:
            overlay = etree.fromstring(xml.encode())
            assert overlay.find("name") is None and overlay.find("uuid") is None, ref


def test_export_then_plan_shows_only_adopt_for_every_object(
    corpus_uri: str, exported: Path, plan_json: Callable[..., dict[str, Any]]
) -> None:
    actions = _actions(plan_json(exported, "-c", corpus_uri))
    files = _files(exported)
    assert set(actions) == set(files)
    wrong = {
        ref: [(c["path"], c["old"], c["new"]) for c in a["changes"]] or a.get("error")
        for ref, a in actions.items()
        if a["action"] != "adopt" or a.get("error")
    }
    assert not wrong, f"{len(wrong)} of {len(actions)} objects do not round-trip: {wrong}"


def test_export_adopt_then_plan_is_empty(
    corpus_uri: str, run: Run, tmp_path: Path, plan_json: Callable[..., dict[str, Any]]
) -> None:
    out = tmp_path / "adopted"
    code, stdout, err = run("export", "-c", corpus_uri, "-d", out, "--adopt")
    assert code == 0, stdout + err
    assert f"Adopted {len(_files(out))} object(s)" in stdout
    code, stdout, err = run("plan", out, "-c", corpus_uri, "--detailed-exitcode")
    assert code == 0, stdout + err
    doc = plan_json(out, "-c", corpus_uri)
    assert {a["action"] for a in _actions(doc).values()} == {"unchanged"}
    # Pools and volumes are recorded in the registry, domains and networks in metadata.
    code, stdout, err = run("plan", out, "-c", corpus_uri, "--prune", "--detailed-exitcode")
    assert code == 0, stdout + err


def test_exported_manifests_apply_to_an_empty_host_and_converge(
    corpus: Corpus, exported: Path, run: Run, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.xml"
    shutil.copy(EMPTY_HOST, empty)
    uri = f"test://{empty}"
    code, out, err = run("apply", exported, "-c", uri)
    # Definitions libvirt 9.0 refuses as they stand (``Corpus.refused``: the
    # test driver loaded them without validation, but they fail domain.rng).
    # Define-with-validation reports them; made valid, everything converges.
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert failed == [f"  FAILED default: create {ref}" for ref in corpus.refused], out + err
    if corpus.refused:
        assert "failed to validate against schema" in out
    for ref, (text, replacement) in corpus.refused.items():
        path = _files(exported)[ref]
        path.write_text(path.read_text().replace(text, replacement))
    code, out, err = run("apply", exported, "-c", uri)
    assert code == 0, out + err
    assert "Converged" in out
    code, out, err = run("plan", exported, "-c", uri, "--detailed-exitcode")
    assert code == 0, out + err


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc["spec"])
    path.write_text(export.to_yaml(doc))


def _first(files: dict[str, Path], kind: str, has: Callable[[dict[str, Any]], bool]) -> str:
    for ref, path in files.items():
        if ref.startswith(kind + "/") and has(yaml.safe_load(path.read_text())["spec"]):
            return ref
    raise AssertionError(f"no exported {kind} fits")


def test_one_edited_field_is_exactly_one_change(
    corpus_uri: str, exported: Path, plan_json: Callable[..., dict[str, Any]]
) -> None:
    files = _files(exported)
    networks = [ref.split("/", 1)[1] for ref in files if ref.startswith("Network/")]
    nic_domain = _first(
        files, "Domain", lambda s: any("network" in n for n in s.get("interfaces", []))
    )
    domain = next(r for r in files if r.startswith("Domain/") and r != nic_domain)
    doubled = 2 * units.size_kib(yaml.safe_load(files[domain].read_text())["spec"]["memory"])

    # An IPv4 or an IPv6 DHCP range (an IPv6-only network exports ``ipv6``).
    def ip_key(spec: dict[str, Any]) -> str:
        return "ip" if "range" in spec.get("ip", {}).get("dhcp", {}) else "ipv6"

    dhcp_net = _first(files, "Network", lambda s: "range" in s.get(ip_key(s), {}).get("dhcp", {}))
    pool = _first(files, "StoragePool", lambda s: s.get("type") == "dir" and "target" in s)
    nic_edit: dict[str, str] = {}

    def more_memory(spec: dict[str, Any]) -> None:
        spec["memory"] = f"{doubled}KiB"

    def other_network(spec: dict[str, Any]) -> None:
        nic = next(n for n in spec["interfaces"] if "network" in n)
        nic["network"] = next(n for n in networks if n != nic["network"])
        nic_edit.update(mac=nic["mac"], network=nic["network"])

    def shorter_range(spec: dict[str, Any]) -> None:
        start, _end = spec[ip_key(spec)]["dhcp"]["range"]
        spec[ip_key(spec)]["dhcp"]["range"] = [start, start]

    def other_target(spec: dict[str, Any]) -> None:
        spec["target"] = "/var/lib/vrt-elsewhere"

    edits = {
        domain: (more_memory, "memory", str(doubled)),
        dhcp_net: (shorter_range, "/dhcp/range[", None),
        pool: (other_target, "target/path", "/var/lib/vrt-elsewhere"),
    }
    for ref, (change, _, _) in edits.items():
        _edit(files[ref], change)
    _edit(files[nic_domain], other_network)
    actions = _actions(plan_json(exported, "-c", corpus_uri))
    changed = {ref: a for ref, a in actions.items() if a["action"] != "adopt"}
    assert set(changed) == {*edits, nic_domain}, changed
    for ref, (_, path, new) in edits.items():
        changes = changed[ref]["changes"]
        assert len(changes) == 1, (ref, changes)
        assert path in changes[0]["path"], (ref, changes)
        if new is not None:
            assert changes[0]["new"] == new
    (change,) = changed[nic_domain]["changes"]
    assert change["path"] == f"devices/interface[mac={nic_edit['mac']}]/source/@network"
    assert change["new"] == nic_edit["network"]


def test_export_selects_kinds_and_names(
    corpus: Corpus, corpus_uri: str, run: Run, tmp_path: Path
) -> None:
    out = tmp_path / "some"
    code, stdout, err = run(
        "export", "-c", corpus_uri, "-d", out, "--kind", "StoragePool", "--name", corpus.pool
    )
    assert code == 0, stdout + err
    files = _files(out)
    assert f"StoragePool/{corpus.pool}" in files
    assert {ref.split("/")[0] for ref in files} == {"StoragePool", "Volume"}
    assert all(
        ref.startswith((f"StoragePool/{corpus.pool}", f"Volume/{corpus.pool}/")) for ref in files
    )
    with pytest.raises(SystemExit):
        run("export", "-c", corpus_uri, "-d", out, "--kind", "Disk")


def test_export_with_host_documents_names_the_host(
    corpus_uri: str,
    run: Run,
    tmp_path: Path,
    plan_json: Callable[..., dict[str, Any]],
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: lab}}\n"
        f"spec: {{uri: '{corpus_uri}'}}\n"
    )
    out = tmp_path / "out"
    code, stdout, err = run("export", inventory, "--host", "lab", "-d", out, "--kind", "Network")
    assert code == 0, stdout + err
    files = _files(out)
    assert files and all(p.parent == out / "lab" / "network" for p in files.values())
    assert all(yaml.safe_load(p.read_text())["spec"]["host"] == "lab" for p in files.values())
    actions = _actions(plan_json(inventory, out))
    assert set(actions) == set(files)
    assert {a["action"] for a in actions.values()} == {"adopt"}
    # --adopt adopts what it wrote, and nothing else the PATHs declare.
    with inventory.open("a") as f:
        f.write(
            "---\napiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: vrt-extra}\n"
            "spec: {host: lab}\n"
        )
    code, stdout, err = run("export", inventory, "-d", out, "--kind", "Network", "--adopt")
    assert code == 0, stdout + err
    assert f"Adopted {len(files)} object(s)" in stdout
    assert (
        "vrt-extra" not in conn(corpus_uri).listNetworks() + conn(corpus_uri).listDefinedNetworks()
    )
    # -c beside Host documents is refused, as for plan.
    code, stdout, err = run("export", inventory, "-c", corpus_uri, "-d", out)
    assert code == 1 and "Host documents" in err
