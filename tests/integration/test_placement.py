"""Placement (SPEC §3) on file-backed test-driver hosts: first fit, stay, pending, fallback.

Each ``test:///PATH.xml`` URI is one in-process host. The test driver has no
domain capabilities, so these hosts are judged by their networks and volumes
and by define; the capability check runs on real daemons in
``tests/e2e/test_placement.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import libvirt
from conftest import EMPTY_HOST, Run, host_snapshot

from reconciler import hosts as vr_hosts
from reconciler.hosts import observe as vr_observe

HEAD = "apiVersion: virt-reconcile/v1\n"
UUID = "3f1e0a52-5a0e-4c1b-9d6e-0c2f4b8e7a11"


def _host_file(tmp_path: Path, name: str, body: str = "") -> Path:
    path = tmp_path / f"{name}.xml"
    if body:
        path.write_text(f"<node>{body}</node>\n")
    else:
        shutil.copy(EMPTY_HOST, path)
    return path


def _hosts_doc(uris: dict[str, str], labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return "".join(
        f"{HEAD}kind: Host\nmetadata: {{name: {n}, labels: {{zone: {labels.get(n, n)}}}}}\n"
        f"spec: {{uri: '{u}'}}\n---\n"
        for n, u in uris.items()
    )


def _network(name: str, host: str) -> str:
    return (
        f"{HEAD}kind: Network\nmetadata: {{name: {name}}}\nspec: {{host: {host}, forward: none}}\n"
    )


def _domain(name: str, placement: str, extra: str = "") -> str:
    return (
        f"{HEAD}kind: Domain\nmetadata: {{name: {name}}}\n"
        f"spec:\n  type: test\n  placement: {placement}\n  memory: 64MiB\n  vcpus: 1\n"
        f"  interfaces: [{{name: lan, network: lab}}]\n  state: running\n{extra}"
    )


def _write(folder: Path, *docs: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "all.yaml").write_text("---\n".join(docs))
    return folder


def _domains(uri: str) -> dict[str, libvirt.virDomain]:
    return {d.name(): d for d in vr_hosts.open_uri(uri).listAllDomains()}


def _registry_domains(uri: str) -> dict[str, Any]:
    net = vr_hosts.open_uri(uri).networkLookupByName("virt-reconcile-registry")
    text = net.XMLDesc(0)
    start = text.index("{", text.index("<vr:registry"))
    data: dict[str, Any] = json.loads(text[start : text.index("</vr:registry>")])
    return dict(data.get("domains", {}))


def _doc(out: str) -> dict[str, Any]:
    return dict(json.loads(out))


def _action(doc: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    by_host = {h["host"]: h for h in doc["hosts"]}
    found = [a for a in by_host[host]["actions"] if a["name"] == name]
    assert found, f"no action for {name} on {host}: {by_host[host]}"
    return dict(found[-1])


def _placed_on_b(tmp_path: Path, run: Run) -> tuple[str, str, str, Path]:
    """Hosts a and b, network lab only on b: web (candidates a, b) applied, so on b."""
    a, b = (f"test://{_host_file(tmp_path, n)}" for n in ("a", "b"))
    hosts = _hosts_doc({"a": a, "b": b})
    folder = _write(tmp_path / "m", hosts, _network("lab", "b"), _domain("web", "{hosts: [a, b]}"))
    assert run("apply", folder)[0] == 0
    return a, b, hosts, folder


def _both_fit(folder: Path, hosts: str, placement: str) -> None:
    """Network lab on a and on b: both candidates fit."""
    _write(folder, hosts, _network("lab", "b"), _network("lab", "a"), _domain("web", placement))


def test_first_candidate_without_the_network_places_on_the_second(tmp_path: Path, run: Run) -> None:
    a, b = (f"test://{_host_file(tmp_path, n)}" for n in ("a", "b"))
    folder = _write(
        tmp_path / "m",
        _hosts_doc({"a": a, "b": b}),
        _network("lab", "b"),
        _domain("web", "{hosts: [a, b]}"),
    )
    code, out, err = run("plan", folder, "-o", "json")
    assert code == 0, out + err
    planned = _action(_doc(out), "b", "web")
    assert planned["action"] == "create"
    assert planned["placement"]["host"] == "b"
    assert planned["placement"]["skipped"] == {"a": "network lab missing"}
    assert all(x["name"] != "web" for x in _doc(out)["hosts"][0]["actions"])

    code, out, err = run("apply", folder)
    assert code == 0, out + err
    assert "placement: host b" in out and "a: network lab missing" in out
    assert "web" in _domains(b) and "web" not in _domains(a)
    assert _domains(b)["web"].isActive()
    # Recorded on the chosen host (the domain's own record) and on the other candidate.
    own = vr_observe.record_of(_domains(b)["web"].XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert own is not None and own.host == "b" and own.placement == ("a", "b")
    assert _registry_domains(a)["web"]["host"] == "b"
    assert run("plan", folder, "--detailed-exitcode")[0] == 0
    code, out, err = run("status", folder, "-o", "json")
    assert code == 0, out + err
    seen = {h["host"]: [o["name"] for o in h["objects"]] for h in _doc(out)["hosts"]}
    assert "web" in seen["b"] and "web" not in seen["a"]


def test_unreachable_first_candidate_is_a_warning_and_the_second_gets_it(
    tmp_path: Path, run: Run
) -> None:
    b = f"test://{_host_file(tmp_path, 'b')}"
    missing = f"test://{tmp_path / 'no-such-host.xml'}"
    folder = _write(
        tmp_path / "m",
        # The selector matches both hosts, in the Host documents' order.
        _hosts_doc({"a": missing, "b": b}, labels={"a": "any", "b": "any"}),
        _network("lab", "b"),
        _domain("web", "{selector: {zone: any}}"),
    )
    code, out, err = run("apply", folder, "-o", "json")
    assert code == 0, out + err
    doc = _doc(out)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["a"]["reachable"] is False and by_host["a"]["actions"] == []
    web = _action(doc, "b", "web")
    assert web["result"] == "ok"
    assert web["placement"]["skipped"]["a"].startswith("unreachable:")
    assert doc["summary"]["failed"] == 0
    assert "web" in _domains(b)
    code, out, _ = run("plan", folder)
    assert code == 0 and "unreachable" in out
    # a is back and fits now: web stays on b, and a learns where it lives.
    a = f"test://{_host_file(tmp_path, 'a')}"
    override = tmp_path / "override.yaml"
    override.write_text(_hosts_doc({"a": a}))
    _write(
        folder,
        _hosts_doc({"a": missing, "b": b}, labels={"a": "any", "b": "any"}),
        _network("lab", "a"),
        _network("lab", "b"),
        _domain("web", "{selector: {zone: any}}"),
    )
    code, out, err = run("apply", folder, "--hosts-override", override)
    assert code == 0, out + err
    assert "web" not in _domains(a) and _registry_domains(a)["web"]["host"] == "b"


def test_a_placed_domain_stays_when_the_first_candidate_fits_later(
    tmp_path: Path, run: Run
) -> None:
    a, b, hosts, folder = _placed_on_b(tmp_path, run)
    uuid = _domains(b)["web"].UUIDString()
    # Host a gets the network too: it fits now, and comes first.
    _both_fit(folder, hosts, "{hosts: [a, b]}")
    code, out, err = run("apply", folder, "-o", "json")
    assert code == 0, out + err
    assert _action(_doc(out), "b", "web")["placement"]["reason"] == "exists there"
    assert "web" not in _domains(a) and _domains(b)["web"].UUIDString() == uuid
    # A new order of the candidates does not move it either.
    _both_fit(folder, hosts, "{hosts: [b, a]}")
    assert run("plan", folder, "--detailed-exitcode")[0] == 0
    # Gone from b behind our back: it is created again on b, where it was placed.
    _domains(b)["web"].destroy()
    _domains(b)["web"].undefine()
    _both_fit(folder, hosts, "{hosts: [a, b]}")
    code, out, err = run("apply", folder, "-o", "json")
    assert code == 0, out + err
    assert _action(_doc(out), "b", "web")["placement"]["reason"] == "placed there by an earlier run"
    assert "web" in _domains(b) and "web" not in _domains(a)


def test_recorded_host_unreachable_is_pending_and_not_created_elsewhere(
    tmp_path: Path, run: Run
) -> None:
    a, _, hosts, folder = _placed_on_b(tmp_path, run)
    # a fits now; b becomes unreachable.
    _both_fit(folder, hosts, "{hosts: [a, b]}")
    override = tmp_path / "override.yaml"
    override.write_text(_hosts_doc({"b": f"test://{tmp_path / 'gone.xml'}"}))
    code, out, err = run("plan", folder, "--hosts-override", override, "-o", "json")
    assert code == 1, out + err
    web = _action(_doc(out), "b", "web")
    assert web["placement"]["pending"] is True and "unreachable" in web["error"]
    assert "not created on another candidate" in web["note"]
    before = host_snapshot(vr_hosts.open_uri(a))
    code, out, err = run("apply", folder, "--hosts-override", override)
    assert code == 1, out + err
    assert "pending" in out
    assert "web" not in _domains(a)
    # Only the network was created on a.
    after = host_snapshot(vr_hosts.open_uri(a))
    assert {k for k in after if k not in before} == {"network/lab"}


def test_define_refused_on_the_first_candidate_is_rolled_back_and_the_next_gets_it(
    tmp_path: Path, run: Run
) -> None:
    # Host a holds another domain with the UUID the manifest asks for: a's
    # libvirt refuses the define (a real refusal, not a name clash/adoption).
    other = (
        f"<domain type='test'><name>other</name><uuid>{UUID}</uuid>"
        "<memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    a = f"test://{_host_file(tmp_path, 'a', other)}"
    b = f"test://{_host_file(tmp_path, 'b')}"
    overlay = f"  xml: '<domain><uuid>{UUID}</uuid></domain>'\n"
    folder = _write(
        tmp_path / "m",
        _hosts_doc({"a": a, "b": b}),
        _network("lab", "a"),
        _network("lab", "b"),
        _domain("web", "{hosts: [a, b]}", overlay),
    )
    code, out, err = run("plan", folder, "-o", "json")
    assert code == 0, out + err
    planned = _action(_doc(out), "a", "web")
    assert planned["placement"]["host"] == "a" and planned["placement"]["fallbacks"] == ["b"]

    code, out, err = run("apply", folder, "-o", "json")
    assert code == 0, out + err
    doc = _doc(out)
    on_a = _action(doc, "a", "web")
    assert on_a["result"] == "rolled-back" and f"already defined with uuid {UUID}" in on_a["error"]
    on_b = _action(doc, "b", "web")
    assert on_b["result"] == "ok"
    assert on_b["placement"]["host"] == "b"
    assert on_b["placement"]["skipped"]["a"].startswith("failed there, rolled back")
    assert doc["converged"] is True and doc["summary"]["failed"] == 0
    assert set(_domains(a)) == {"other"}
    assert _domains(b)["web"].UUIDString() == UUID and _domains(b)["web"].isActive()
    assert _registry_domains(a)["web"]["host"] == "b"
    assert run("plan", folder, "--detailed-exitcode")[0] == 0


def test_no_candidate_fits_is_a_plan_time_error(tmp_path: Path, run: Run) -> None:
    a, b = (f"test://{_host_file(tmp_path, n)}" for n in ("a", "b"))
    folder = _write(tmp_path / "m", _hosts_doc({"a": a, "b": b}), _domain("web", "{hosts: [a, b]}"))
    code, out, err = run("apply", folder)
    assert code == 1, out + err
    assert "no candidate host fits: a: network lab missing; b: network lab missing" in out
    assert not _domains(a) and not _domains(b)
