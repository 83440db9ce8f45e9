"""A cached "unchanged" verdict (``reconciler.verdicts``) never hides a difference:
after each kind of change (the host's XML, power state, autostart, registry;
the manifest; the options), the plan from warm caches shows it and is the plan
from cold ones."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from reconciler import cache, ownership, verdicts
from reconciler.actions import Options
from tests.integration.conftest import Run

Conn = Callable[[str], libvirt.virConnect]


def _changed(plan: dict[str, Any]) -> dict[str, str]:
    return {
        a["ref"] if "ref" in a else a["name"]: a["action"]
        for h in plan["hosts"]
        for a in h["actions"]
        if a["action"] != "unchanged" or a.get("error")
    }


def _store_entries(folder: Path) -> int:
    """How many cached verdicts the stores under ``folder`` hold."""
    return sum(
        sum(1 for k in json.loads(f.read_bytes()) if k.startswith("v:"))
        for f in (folder / "verdicts").rglob("*")
        if f.is_file() and not f.name.startswith(".tmp-")
    )


@pytest.fixture
def warm(
    examples: Path,
    host_uri: str,
    run: Run,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The examples applied, and a no-op plan's verdicts cached (the cache folder)."""
    folder = tmp_path / "warm"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    assert _changed(plan_json(examples, "-c", host_uri)) == {}
    assert _store_entries(folder) >= 7  # every domain, network, pool and volume
    return folder


def _redefine(c: libvirt.virConnect, name: str, edit: Callable[[etree._Element], None]) -> None:
    root = etree.fromstring(c.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    edit(root)
    c.defineXML(etree.tostring(root, encoding="unicode"))


def _less_memory(root: etree._Element) -> None:
    memory = root.find("memory")
    assert memory is not None and memory.text
    memory.text = str(int(memory.text) // 2)
    current = root.find("currentMemory")
    if current is not None:
        current.text = memory.text


def _uploading(c: libvirt.virConnect) -> None:
    """The registry says web-1.qcow2's upload never finished (its XML is the same)."""
    net = c.networkLookupByName(ownership.REGISTRY_NETWORK)
    registry = ownership.Registry.from_xml(net.XMLDesc(0))
    record = registry.volumes["vr-lab/web-1.qcow2"]
    registry = registry.with_volume(
        "vr-lab/web-1.qcow2", dataclasses.replace(record, uploading=True)
    )
    c.networkDefineXML(registry.to_xml())


HOST_CHANGES: dict[str, tuple[Callable[[libvirt.virConnect], None], str]] = {
    "inactive XML": (lambda c: _redefine(c, "vr-web-2", _less_memory), "vr-web-2"),
    "power state": (lambda c: c.lookupByName("vr-web-1").destroy(), "vr-web-1"),
    "autostart": (lambda c: c.storagePoolLookupByName("vr-lab").setAutostart(0), "vr-lab"),
    "registry record": (_uploading, "web-1.qcow2"),
}


@pytest.mark.parametrize("change", sorted(HOST_CHANGES))
def test_a_change_on_the_host_is_planned_despite_a_cached_verdict(
    change: str,
    warm: Path,
    examples: Path,
    host_uri: str,
    conn: Conn,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edit, name = HOST_CHANGES[change]
    edit(conn(host_uri))
    warm_plan = plan_json(examples, "-c", host_uri, "-v")
    assert name in {a["name"] for h in warm_plan["hosts"] for a in h["actions"]}
    changed = [
        a["name"] for h in warm_plan["hosts"] for a in h["actions"] if a["action"] != "unchanged"
    ]
    assert changed == [name], changed
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cold"))
    assert plan_json(examples, "-c", host_uri, "-v") == warm_plan


MANIFEST_CHANGES: dict[str, tuple[str, str, str, str]] = {
    # file, old text, new text, the object that changes
    "a field": ("web.yaml", "memory: 256MiB", "memory: 384MiB", "vr-web-1"),
    "only labels": ("web.yaml", "labels: {tier: web}", "labels: {tier: front}", "vr-web-1"),
    "a volume's size": ("storage.yaml", "capacity: 64MiB", "capacity: 96MiB", "web-1.qcow2"),
}


@pytest.mark.parametrize("change", sorted(MANIFEST_CHANGES))
def test_a_changed_manifest_is_planned_despite_a_cached_verdict(
    change: str,
    warm: Path,
    examples: Path,
    host_uri: str,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file, old, new, name = MANIFEST_CHANGES[change]
    text = (examples / file).read_text()
    assert old in text
    (examples / file).write_text(text.replace(old, new, 1))
    warm_plan = plan_json(examples, "-c", host_uri, "-v")
    changed = [
        a["name"] for h in warm_plan["hosts"] for a in h["actions"] if a["action"] != "unchanged"
    ]
    assert changed == [name], changed
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cold"))
    assert plan_json(examples, "-c", host_uri, "-v") == warm_plan


def test_other_options_plan_afresh_and_the_same(
    warm: Path,
    examples: Path,
    host_uri: str,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The manifests no longer name web-2.qcow2's domain: with --prune the plan
    # deletes it, without it only says so; a selector narrows the run.
    web = examples / "web.yaml"
    web.write_text(web.read_text().split("---\n")[0])
    runs = (["--prune"], [], ["--prune", "-l", "tier=web"], ["--target", "Domain/vr-web-1"])
    for i, options in enumerate(runs):
        warm_plan = plan_json(examples, "-c", host_uri, "-v", *options)
        monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / f"cold{i}"))
        assert plan_json(examples, "-c", host_uri, "-v", *options) == warm_plan, options
        monkeypatch.setenv(cache.CACHE_ENV, str(warm))
    assert _changed(plan_json(examples, "-c", host_uri, "--prune"))["vr-web-2"] == "delete"


def test_the_key_covers_the_options_and_the_host_facts() -> None:
    from reconciler.kinds import Context
    from reconciler.model import Host
    from reconciler.observed import HostState

    host = Host(name="h", uri="test:///nowhere")
    state = HostState(host=host)
    ctx = Context(
        host=host,
        options=Options(),
        registry=state.registry,
        network_users={},
        volume_users={},
        running_domains=frozenset(),
    )
    store = cache.Store("unused", {})

    def part(s: HostState, o: Options, c: Context) -> str:
        return verdicts.Verdicts.open(store, s, o, c)._host

    first = part(state, Options(), ctx)
    assert part(state, Options(), ctx) == first
    others = [
        part(state, Options(prune=True), ctx),
        part(state, Options(replace=frozenset({"Volume/p/v"})), ctx),
        part(state, Options(selector=(("tier", "web"),)), ctx),
        part(state, Options(max_prune=10), ctx),
        part(dataclasses.replace(state, parser="9000000"), Options(), ctx),
        part(state, Options(), dataclasses.replace(ctx, running_domains=frozenset({"d"}))),
        part(state, Options(), dataclasses.replace(ctx, volume_users={"p/v": ("d",)})),
    ]
    assert first not in others and len(set(others)) == len(others)
    # The host's key for secret value digests never goes into a key, even hashed.
    keyed = dataclasses.replace(state.registry, secret_key="k")
    secret = dataclasses.replace(state, registry=keyed)
    assert part(secret, Options(), ctx) == first


def test_a_broken_or_unwritable_cache_only_costs_time(
    warm: Path,
    examples: Path,
    host_uri: str,
    conn: Conn,
    plan_json: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for store in (warm / "verdicts").rglob("*"):
        if store.is_file():
            store.write_bytes(b'{"v:' + b"0" * 64 + b'": tru')  # cut short
    _redefine(conn(host_uri), "vr-web-2", _less_memory)
    assert _changed(plan_json(examples, "-c", host_uri)) == {"vr-web-2": "update"}
    # Stores of the wrong shape, and a cache folder that cannot be written.
    for store in (warm / "verdicts").rglob("*"):
        if store.is_file():
            store.write_text('["v:"]')
    assert _changed(plan_json(examples, "-c", host_uri)) == {"vr-web-2": "update"}
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocked))
    assert _changed(plan_json(examples, "-c", host_uri)) == {"vr-web-2": "update"}


def test_an_unchanged_host_is_planned_without_comparing_a_field(
    warm: Path,
    examples: Path,
    host_uri: str,
    plan_json: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reconciler import diff

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a field diff in a no-op plan of cached verdicts")

    monkeypatch.setattr(diff, "diff_fields", refuse)
    assert _changed(plan_json(examples, "-c", host_uri)) == {}


def test_a_narrowed_plan_keeps_the_verdicts_of_the_whole_host(
    warm: Path,
    examples: Path,
    host_uri: str,
    plan_json: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plan of one object (``--target``; a scoped watch pass; apply's check of
    what it wrote) adds its own entries and must not drop the others: with many
    objects (here: no slack at all) the next whole plan found none (benchmark)."""
    from reconciler import diff

    monkeypatch.setattr(cache, "_SLACK", 0)
    before = _store_entries(warm)
    plan = plan_json(examples, "-c", host_uri)
    domain = next(
        a["name"] for h in plan["hosts"] for a in h["actions"] if a.get("kind") == "Domain"
    )
    assert _changed(plan_json(examples, "-c", host_uri, "--target", f"Domain/{domain}")) == {}
    assert _store_entries(warm) > before  # the narrowed plan's own, beside the others

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a field diff in a no-op plan of cached verdicts")

    monkeypatch.setattr(diff, "diff_fields", refuse)
    assert _changed(plan_json(examples, "-c", host_uri)) == {}
