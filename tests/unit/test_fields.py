"""Plans in the manifest's language (``reconciler.fields``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import canonical, fields, render
from reconciler.model import Kind
from reconciler.render import identity

DOMAIN = {
    "memory": "1GiB",
    "vcpus": 2,
    "disks": [{"target": "vdb", "format": "qcow2", "source": {"file": "/x.img"}}],
    "interfaces": [{"name": "mgmt", "network": "default"}, {"network": "lab"}],
    "xml": "<domain><features><acpi/></features></domain>",
}
VDB = "devices/disk[target=vdb]"
REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "reconciler" / "schemas"
DOCS = REPO / "docs" / "manifests.md"


@pytest.mark.parametrize(
    ("path", "old", "new", "want"),
    [
        ("memory", "1048576", "2097152", ("memory", "1GiB", "2GiB")),
        ("vcpu", "2", "4", ("vcpus", "2", "4")),
        (f"{VDB}/driver/@type", "qcow2", "raw", ("disks[vdb].format", "qcow2", "raw")),
        (f"{VDB}/source/@file", "/x.img", "/y.img", ("disks[vdb].source", "/x.img", "/y.img")),
        (f"devices/interface[mac={identity.derive_mac('web', 'mgmt')}]/source/@network", "a", "b",
         ("interfaces[mgmt].network", "a", "b")),
        (f"devices/interface[mac={identity.derive_mac('web', 'nic1')}]/link/@state", "up", "down",
         ("interfaces[nic1].link", "up", "down")),
        # Only the overlay says it: no field, the XML path stays the name.
        ("features/acpi", None, "", (None, None, "")),
        # A disk the manifest does not declare (from spec.xml).
        ("devices/disk[target=vdc]/driver/@type", "raw", "qcow2", (None, "raw", "qcow2")),
    ],
)  # fmt: skip
def test_domain_changes_name_the_manifest_field_in_its_units(
    path: str, old: str | None, new: str | None, want: tuple[str | None, str | None, str | None]
) -> None:
    got = fields.describe(Kind.DOMAIN, "web", DOMAIN, path, old, new)
    assert (got.field, got.old, got.new) == want


def test_a_value_from_a_complete_document_has_no_field() -> None:
    spec = {"xml": "<domain><name>web</name><memory>1048576</memory></domain>"}
    got = fields.describe(Kind.DOMAIN, "web", spec, "memory", "1048576", "2097152")
    assert (got.field, got.old, got.new) == (None, "1GiB", "2GiB")


def test_other_kinds() -> None:
    net = {"ip": {"address": "10.0.0.1", "prefix": 24, "dhcp": {"range": ["10.0.0.2", "10.0.0.9"]}}}
    got = fields.describe(
        Kind.NETWORK,
        "n",
        net,
        "ip[address=10.0.0.1]/dhcp/range[start=10.0.0.2]/@end",
        "10.0.0.9",
        "10.0.0.8",
    )
    assert got.field == "ip.dhcp.range"
    got = fields.describe(
        Kind.VOLUME, "v", {"capacity": "10GiB"}, "capacity", "10737418240", "21474836480"
    )
    assert (got.field, got.old, got.new) == ("capacity", "10GiB", "20GiB")
    got = fields.describe(
        Kind.VOLUME, "v", {"format": "raw"}, "target/format/@type", "qcow2", "raw"
    )
    assert (got.field, got.old, got.new) == ("format", "qcow2", "raw")
    got = fields.describe(Kind.STORAGE_POOL, "p", {"target": "/b"}, "target/path", "/a", "/b")
    assert got.field == "target"
    # IPv4 and IPv6 <ip> elements are told apart by their address.
    both = {**net, "ipv6": {"address": "fd00::1", "prefix": 64}, "portgroups": [{"name": "a"}]}
    got = fields.describe(Kind.NETWORK, "n", both, "ip[address=fd00::1]/@prefix", "64", "56")
    assert got.field == "ipv6.prefix"
    got = fields.describe(Kind.NETWORK, "n", both, "ip[address=10.0.0.1]/@prefix", "24", "16")
    assert got.field == "ip.prefix"
    got = fields.describe(Kind.NETWORK, "n", both, "portgroup[name=a]/vlan/tag/@id", None, "4")
    assert got.field == "portgroups[a].vlan"


def _schema_fields(kind: Kind) -> set[str]:
    """Every field path of a kind's schema, list items as ``[]``."""
    schema = json.loads((SCHEMAS / f"{kind.value}.json").read_text())

    def walk(props: dict[str, Any], prefix: str) -> set[str]:
        out: set[str] = set()
        for key, sub in props.items():
            out.add(prefix + key)
            if sub.get("type") == "object" and "properties" in sub:
                out |= walk(sub["properties"], prefix + key + ".")
            items = sub.get("items")
            if sub.get("type") == "array" and isinstance(items, dict) and "properties" in items:
                out |= walk(items["properties"], prefix + key + "[].")
        return out

    return walk(schema["properties"]["spec"]["properties"], "")


@pytest.mark.parametrize("kind", [k for k in Kind if k is not Kind.HOST])
def test_schema_field_table_and_docs_agree(kind: Kind) -> None:
    """Every schema field is declared in reconciler/fields.py (an XML field or a
    setting), every declared field exists in the schema, and the docs name it."""
    schema = _schema_fields(kind)
    known = fields.declared(kind)

    def covered(name: str) -> bool:  # a leaf inside a declared field is that field's
        return any(k in (name, name + "[]") or name.startswith((k + ".", k + "[]")) for k in known)

    assert sorted(n for n in schema if not covered(n)) == []
    assert sorted(n for n in known if n not in schema and n.removesuffix("[]") not in schema) == []
    docs = DOCS.read_text()
    section = docs.split(f"## {kind.value}\n", 1)[1].split("\n## ", 1)[0]
    top = {n.split(".", 1)[0].split("[", 1)[0] for n in schema}
    assert sorted(n for n in top if f"`{n}`" not in section and f"`{n}[]`" not in section) == []


# --- every declared field is exercised (virtinst's test_checkprops idea) ----------------

DATA = REPO / "tests" / "data"
# Fields export does not write, on purpose: the element an export golden's overlay
# shows it in instead (None: export leaves it out altogether).
NOT_EXPORTED: dict[tuple[Kind, str], str | None] = {
    # The secret is named by a UUID derived from its name: not reversible.
    (Kind.DOMAIN, "disks[].encryption"): "<encryption",
    (Kind.VOLUME, "encryption"): "<encryption",
    # The space a volume uses is the host's (canonical.FILLED): never exported.
    (Kind.VOLUME, "allocation"): None,
}


def _specs(folder: str, kind: Kind) -> list[dict[str, Any]]:
    out = []
    for path in sorted((DATA / folder).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] == kind.value:
            out.append(doc["spec"])
    return out


def _sets(spec: Any, name: str) -> bool:
    """Whether ``spec`` sets the field ``name`` (``disks[].bus``: some disk has a bus)."""
    head, _, rest = name.partition(".")
    many = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(spec, dict) or key not in spec:
        return False
    values = spec[key] if many else [spec[key]]
    return any(_sets(v, rest) for v in values) if rest else True


@pytest.mark.parametrize("kind", list(render.RENDERERS), ids=str)
def test_fields_exercised(kind: Kind) -> None:
    """Every declared field appears in a golden render case (tests/data/render) and
    in an export golden pair (tests/data/export): a field nothing exercises fails."""
    table = render.RENDERERS[kind][1]
    names = sorted({name for name, _decl, _items in table.walk()})
    assert names
    rendered = _specs("render", kind)
    exported = _specs("export", kind)
    assert sorted(n for n in names if not any(_sets(s, n) for s in rendered)) == []
    missing = []
    for name in names:
        if any(_sets(s, name) for s in exported):
            assert (kind, name) not in NOT_EXPORTED, f"{name} exports now: drop its exemption"
            continue
        if (kind, name) not in NOT_EXPORTED:
            missing.append(name)
            continue
        shows = NOT_EXPORTED[(kind, name)]
        if shows is not None and not any(shows in str(s.get("xml", "")) for s in exported):
            missing.append(name)
    assert missing == []


@pytest.mark.parametrize(
    ("items", "heading"),
    [("disks", "Disk (`disks[]`)"), ("interfaces", "Interface (`interfaces[]`)")],
)
def test_every_disk_and_interface_field_has_its_docs_row(items: str, heading: str) -> None:
    """Lists with a table of their own in docs/manifests.md: one row per declared field."""
    section = DOCS.read_text().split(heading, 1)[1].split("\n\n", 1)[0]
    names = {
        n.split("[].", 1)[1] for n in fields.declared(Kind.DOMAIN) if n.startswith(items + "[].")
    }
    assert names
    assert sorted(n for n in names if f"| `{n}`" not in section) == []


def test_network_live_declarations_agree_with_the_net_update_sections() -> None:
    """A Network field declared Live.UPDATE is one the planner changes with
    virNetworkUpdate (``kinds.network``), and every friendly path it changes so is
    declared so: checked on every path of the golden networks."""
    from reconciler.kinds import network as net_kind

    paths = set()
    for case in ("network-nat-dhcp", "network-extras"):
        spec = yaml.safe_load((DATA / "render" / f"{case}.yaml").read_text())["spec"]
        paths |= set(canonical.flatten(render.render_network("n", spec), Kind.NETWORK).values)
    checked = 0
    for path in sorted(paths):
        declared = fields.field_at(Kind.NETWORK, path)
        if declared is None:
            continue
        live = declared.live is fields.Live.UPDATE
        section = net_kind._net_section(path) is not None
        assert live == section, (path, declared.name, declared.live)
        checked += live
    assert checked
