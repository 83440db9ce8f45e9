"""Every kind has a handler (``kinds.KINDS``), and every part of every handler works.

The kind-agnostic stages reach a kind only through its handler, so a kind
without one, or a handler part that nothing exercises, fails here.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from lxml import etree

from reconciler import canonical, export, manifests, ownership, plan, render
from reconciler.actions import ActionType, Options
from reconciler.kinds import KINDS, Context, RecordHome, handler
from reconciler.kinds.base import Power
from reconciler.model import API_VERSION, Host, Kind, Manifest, Source
from reconciler.observed import HostState, Observed
from reconciler.render.rules import Rules
from reconciler.steps import Define, RegistrySet, SetDomainRecord, Stop

pytestmark = pytest.mark.unit

HOST = Host(name="h", uri="test:///x")
SPECS: dict[Kind, dict[str, Any]] = {
    Kind.DOMAIN: {"type": "kvm", "memory": "1GiB", "vcpus": 2, "state": "running"},
    Kind.NETWORK: {"forward": "nat", "ip": {"address": "10.0.0.1", "prefix": 24}},
    Kind.STORAGE_POOL: {"type": "dir", "target": "/x"},
    Kind.VOLUME: {"pool": "p", "capacity": "1GiB", "format": "qcow2", "prune": True},
    # The value is a file's content: this file's, read by the planner for its digest.
    Kind.SECRET: {"usage": {"ceph": "client.k1"}, "value": {"file": __file__}, "private": False},
}
CONTEXT = Context(
    host=HOST,
    options=Options(),
    registry=ownership.Registry(),
    network_users={},
    volume_users={},
    running_domains=frozenset(),
)


def manifest(kind: Kind) -> Manifest:
    return Manifest(kind=kind, name="k1", spec=SPECS[kind], source=Source(file="m", line=1))


def test_kinds_complete() -> None:
    assert set(KINDS) == set(Kind) - {Kind.HOST}
    assert all(h.kind is kind for kind, h in KINDS.items())
    # The tests below run every part of every handler.
    assert set(SPECS) == set(KINDS)
    with pytest.raises(ValueError, match="Host objects have no libvirt XML"):
        handler(Kind.HOST)


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_renderer_is_the_pipelines_and_gives_the_root_tag(kind: Kind) -> None:
    h = KINDS[kind]
    m = manifest(kind)
    el = h.render(m.name, m.spec)
    assert el.tag == h.root
    # Render and export walk one field table, the kind's own.
    assert h.fields.root == h.root and h.fields.kind == kind.value
    assert h.fields is render.RENDERERS[kind][1]
    assert etree.tostring(el) == etree.tostring(render.render(m))


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_planner_creates_with_the_record_where_the_kind_keeps_it(kind: Kind) -> None:
    h = KINDS[kind]
    m = manifest(kind)
    action = h.plan(m, h.render(m.name, m.spec), None, CONTEXT)
    assert action.type is ActionType.CREATE and action.kind is kind and action.error is None
    registered = [s for s in action.steps if isinstance(s, RegistrySet)]
    defined = [s for s in action.steps if isinstance(s, Define)]
    # The last write holds the record (an earlier one may mark it "starting").
    if h.record_home is RecordHome.METADATA:
        assert not registered and defined
        record = ownership.read_record(etree.fromstring(defined[-1].xml))
    else:
        assert registered and all(s.kind is kind for s in registered)
        record = registered[-1].record
    assert record is not None and record.managed and record.host == "h"


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_exporter_reads_back_what_the_renderer_wrote(kind: Kind) -> None:
    h = KINDS[kind]
    m = manifest(kind)
    cleaned = export.clean(h.render(m.name, m.spec), kind)
    obs = Observed(
        kind=kind,
        name=m.name,
        pool=m.spec.get("pool"),
        xml=etree.tostring(cleaned, encoding="unicode"),
        state="running" if kind is Kind.DOMAIN else "active",
    )
    spec = {**h.export(cleaned, ()), **h.export_state(obs)}
    document = {"apiVersion": API_VERSION, "kind": kind.value, "metadata": {"name": m.name}}
    assert manifests.schema_valid(kind, {**document, "spec": spec})
    again = canonical.flatten(h.render(m.name, spec), kind).values
    assert again == canonical.flatten(cleaned, kind).values
    assert set(h.export_required) <= set(spec)
    if kind is Kind.DOMAIN:
        assert spec["state"] == "running"


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_delete_steps_find_the_record_where_the_kind_keeps_it(kind: Kind) -> None:
    h = KINDS[kind]
    record = ownership.Record(managed=True, prune=True, host="h")
    pool = "p" if kind is Kind.VOLUME else None
    registry = ownership.Registry()
    if kind is Kind.STORAGE_POOL:
        registry = registry.with_pool("k1", record)
    elif kind is Kind.VOLUME:
        registry = registry.with_volume("p/k1", record)
    elif kind is Kind.SECRET:
        registry = registry.with_secret("k1", record)
    in_xml = record if h.record_home is RecordHome.METADATA else None
    up, down = ("running", "shutoff") if kind is Kind.DOMAIN else ("active", "inactive")
    for state, stops in ((up, True), (down, False)):
        obs = Observed(kind=kind, name="k1", pool=pool, xml="<x/>", state=state, record=in_xml)
        found, steps = h.delete(obs, registry)
        assert found == record
        assert steps
        # A running object is stopped first; a volume or a secret has nothing to stop.
        assert isinstance(steps[0], Stop) is (stops and kind not in (Kind.VOLUME, Kind.SECRET))
        assert any(isinstance(s, RegistrySet) and s.record is None for s in steps) is (
            h.record_home is RecordHome.REGISTRY
        )


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_a_changed_record_is_written_where_the_kind_keeps_it(kind: Kind) -> None:
    h = KINDS[kind]
    record = ownership.Record(managed=True, host="h", labels=(("tier", "web"),))
    pool = "p" if kind is Kind.VOLUME else None
    xml = f"<{h.root}><name>k1</name></{h.root}>"
    step = h.write_record(Observed(kind=kind, name="k1", pool=pool, xml=xml), record)
    if isinstance(step, RegistrySet):
        assert h.record_home is RecordHome.REGISTRY
        assert (step.kind, step.key, step.record) == (kind, "p/k1" if pool else "k1", record)
    else:
        assert h.record_home is RecordHome.METADATA
        if isinstance(step, Define):  # the whole document, the record in it
            assert step.kind is kind
            written = etree.fromstring(step.xml)
            assert written.findtext("name") == "k1"
        else:  # only the record, into the metadata
            assert isinstance(step, SetDomainRecord)
            written = etree.fromstring(f"<{h.root}><metadata>{step.xml}</metadata></{h.root}>")
        assert ownership.read_record(written) == record


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_every_kind_declares_its_comparison_rules_in_its_home(kind: Kind) -> None:
    # Beside its FIELDS, in render/<kind>.py (possibly empty); canonical reads them there.
    home = sys.modules[render.RENDERERS[kind][0].__module__]
    assert isinstance(home.COMPARE, Rules)
    assert render.RULES[kind] is home.COMPARE is canonical.rules(kind)
    assert all(f.kind is kind for f in home.COMPARE.filled)
    assert [f for f in canonical.FILLED if f.kind is kind] == list(home.COMPARE.filled)
    assert {t for k, t in canonical.IDENTITY if k is kind} == set(home.COMPARE.identity)
    assert {p for k, p in canonical.IMPLIED if k is kind} == set(home.COMPARE.implied)


REFERENCES: dict[Kind, tuple[dict[str, Any], list[tuple[str, Kind, str, str | None]]]] = {
    Kind.DOMAIN: (
        {
            "disks": [{"target": "vda", "source": {"volume": {"pool": "p", "name": "v"}}}],
            "interfaces": [{"network": "n"}],
        },
        [
            ("spec.disks.0.source.volume", Kind.VOLUME, "v", "p"),
            ("spec.interfaces.0.network", Kind.NETWORK, "n", None),
        ],
    ),
    Kind.NETWORK: ({}, []),
    Kind.STORAGE_POOL: ({}, []),
    Kind.VOLUME: ({}, [("spec.pool", Kind.STORAGE_POOL, "p", None)]),
    Kind.SECRET: ({}, []),
}


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_references_name_what_a_manifest_needs_on_its_host(kind: Kind) -> None:
    extra, expected = REFERENCES[kind]
    m = Manifest(
        kind=kind, name="k1", spec={**SPECS[kind], **extra}, source=Source(file="m", line=1)
    )
    refs = KINDS[kind].references(m)
    assert [(r.field, r.kind, r.name, r.pool) for r in refs] == expected
    # Planned on an empty host, each missing one is an error naming the field.
    hp = plan.build_host_plan([(m, render.render(m))], HostState(host=HOST), Options())
    [action] = hp.actions
    for field, ref_kind, _name, _pool in expected:
        assert f"{field}: {KINDS[ref_kind].label} '" in (action.error or "")
    assert (action.error is None) is (not expected)


POWER: dict[Kind, list[tuple[str, str, Power]]] = {
    Kind.DOMAIN: [
        ("running", "booted", Power("running", "booted", True)),
        ("shutoff", "unknown", Power("shutoff", "", True)),
        ("paused", "ioerror", Power("paused", "ioerror", False)),
        ("crashed", "panicked", Power("crashed", "panicked", False)),
    ],
    Kind.NETWORK: [("active", "", Power("active")), ("inactive", "", Power("inactive"))],
    Kind.STORAGE_POOL: [("active", "", Power("active")), ("inactive", "", Power("inactive"))],
    Kind.VOLUME: [("active", "", Power(None))],
    Kind.SECRET: [("active", "", Power(None))],
}


@pytest.mark.parametrize("kind", list(SPECS), ids=str)
def test_power_state_and_health_for_status(kind: Kind) -> None:
    for state, reason, expected in POWER[kind]:
        obs = Observed(kind=kind, name="k1", xml="<x/>", state=state, state_reason=reason)
        assert KINDS[kind].power(obs) == expected
