"""Bad input never touches a host (issue #6).

Each case is one malformed manifest, given to ``apply`` together with the
valid examples, against a test-driver host that already holds objects (the
corpus hosts, ``conftest.Corpus``). Every case must exit 1, name the problem as
``FILE:LINE: FIELD.PATH: message``, print no traceback, and leave the host
byte for byte as it was: the valid examples are not applied either.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import EMPTY_HOST, EXAMPLES, Run, host_snapshot

Conn = Callable[[str], libvirt.virConnect]

HEAD = "apiVersion: virt-reconcile/v1\n"


def domain(spec: str, name: str = "bad-1", meta: str = "") -> str:
    return f"{HEAD}kind: Domain\nmetadata:\n  name: {name}\n{meta}spec:\n{spec}"


def volume(name: str, spec: str = "  pool: vr-lab\n  capacity: 1MiB\n") -> str:
    return f"{HEAD}kind: Volume\nmetadata:\n  name: {name}\nspec:\n{spec}"


def overlay(xml: str) -> str:
    body = "".join(f"    {line}\n" for line in xml.splitlines())
    return domain(f"  type: test\n  memory: 64MiB\n  xml: |\n{body}")


MINIMAL = "  type: test\n  memory: 64MiB\n"
LAUGHS = (
    '<!DOCTYPE domain [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n<domain><description>&c;</description>'
    "</domain>"
)
YAML_BOMB = (
    HEAD
    + "kind: Domain\nmetadata: {name: bomb}\nspec:\n  type: test\n  memory: 64MiB\n"
    + "  a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
        for i in range(8)
    )
)


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes
    line: int  # the line the message must name
    path: str  # the FIELD.PATH it must name ("" for whole-file problems)
    message: str  # a part of the message


CASES = [
    # --- wrong types
    Case("memory-bare-number", domain("  memory: 2048\n"), 6, "spec.memory", "needs a binary unit"),
    Case("vcpus-string", domain(MINIMAL + "  vcpus: two\n"), 8, "spec.vcpus", "expected integer"),
    Case("vcpus-float", domain(MINIMAL + "  vcpus: 2.0\n"), 8, "spec.vcpus", "expected integer"),
    Case(
        "autostart-word", domain(MINIMAL + "  autostart: maybe\n"), 8, "spec.autostart", "boolean"
    ),
    Case(
        "disks-mapping",
        domain(MINIMAL + "  disks: {target: vda}\n"),
        8,
        "spec.disks",
        "expected list, got mapping",
    ),
    Case(
        "metadata-string",
        f"{HEAD}kind: Domain\nmetadata: web\nspec: {{}}\n",
        3,
        "metadata",
        "mapping",
    ),
    Case(
        "label-list",
        domain(MINIMAL, meta="  labels: {tier: [a]}\n"),
        5,
        "metadata.labels.tier",
        "expected string",
    ),
    Case("state-enum", domain(MINIMAL + "  state: on\n"), 8, "spec.state", "must be one of"),
    # --- missing fields
    Case(
        "no-api-version",
        "kind: Domain\nmetadata: {name: x}\nspec: {memory: 1GiB}\n",
        1,
        "apiVersion",
        "required",
    ),
    Case("no-kind", f"{HEAD}metadata: {{name: x}}\nspec: {{}}\n", 1, "kind", "required"),
    Case(
        "no-name",
        f"{HEAD}kind: Network\nmetadata: {{}}\nspec: {{}}\n",
        3,
        "metadata.name",
        "required",
    ),
    Case("volume-no-capacity", volume("v.raw", "  pool: vr-lab\n"), 5, "spec.capacity", "required"),
    Case("volume-no-pool", volume("v.raw", "  capacity: 1MiB\n"), 5, "spec.pool", "required"),
    Case(
        "host-no-uri",
        f"{HEAD}kind: Host\nmetadata: {{name: h}}\nspec: {{}}\n",
        4,
        "spec.uri",
        "required",
    ),
    Case(
        "disk-no-target",
        domain(MINIMAL + "  disks:\n    - bus: virtio\n"),
        9,
        "spec.disks.0.target",
        "required",
    ),
    # --- unknown keys
    Case(
        "typo-field",
        domain("  type: test\n  memroy: 64MiB\n"),
        7,
        "spec.memroy",
        "did you mean 'memory'",
    ),
    Case("unknown-top-level", domain(MINIMAL) + "specs: {}\n", 8, "specs", "unknown field"),
    Case(
        "unknown-metadata",
        domain(MINIMAL, meta="  namespace: x\n"),
        5,
        "metadata.namespace",
        "unknown field",
    ),
    Case(
        "unknown-kind",
        f"{HEAD}kind: Domian\nmetadata: {{name: x}}\nspec: {{}}\n",
        2,
        "kind",
        "did you mean 'Domain'",
    ),
    Case(
        "unknown-api-version",
        "apiVersion: v2\nkind: Domain\nmetadata: {name: x}\nspec: {}\n",
        1,
        "apiVersion",
        "unknown apiVersion",
    ),
    # --- absurd sizes and values
    Case("decimal-unit", domain("  memory: 2 GB\n"), 6, "spec.memory", "needs a binary unit"),
    Case("absurd-memory", domain("  memory: 99999999TiB\n"), 6, "spec.memory", "more than 64 TiB"),
    Case(
        "absurd-capacity",
        volume("v.raw", "  pool: vr-lab\n  capacity: 99999999999TiB\n"),
        7,
        "spec.capacity",
        "more than 8 EiB",
    ),
    Case(
        "negative-capacity",
        volume("v.raw", "  pool: vr-lab\n  capacity: -1GiB\n"),
        7,
        "spec.capacity",
        "binary unit",
    ),
    Case("zero-vcpus", domain(MINIMAL + "  vcpus: 0\n"), 8, "spec.vcpus", "at least 1"),
    Case(
        "current-over-memory",
        domain(MINIMAL + "  currentMemory: 1GiB\n"),
        8,
        "spec.currentMemory",
        "more than memory",
    ),
    Case(
        "vcpus-over-max",
        domain(MINIMAL + "  vcpus: 4\n  maxVcpus: 2\n"),
        8,
        "spec.vcpus",
        "more than maxVcpus",
    ),
    # --- duplicates
    Case(
        "duplicate-name",
        domain(MINIMAL, name="vr-web-1"),
        4,
        "metadata.name",
        "is also declared at",
    ),
    Case(
        "duplicate-key", domain(MINIMAL + "  memory: 128MiB\n"), 8, "spec.memory", "duplicate key"
    ),
    Case(
        "duplicate-disk-target",
        domain(
            MINIMAL
            + "  disks:\n    - {target: vda, source: {file: /a}}\n"
            + "    - {target: vda, source: {file: /b}}\n"
        ),
        10,
        "spec.disks.1.target",
        "already used by spec.disks.0",
    ),
    Case(
        "mac-collision",
        domain(MINIMAL + "  interfaces:\n    - {network: vr-lab-net, mac: '52:54:00:77:00:11'}\n"),
        9,
        "spec.interfaces.0",
        "MAC 52:54:00:77:00:11 is also used by Domain 'vr-web-1'",
    ),
    # --- dangling references (validated before any host is touched)
    Case(
        "unknown-host",
        domain(MINIMAL + "  host: nowhere\n"),
        8,
        "spec.host",
        "no Host document declares 'nowhere'",
    ),
    Case(
        "missing-volume",
        domain(
            MINIMAL
            + "  disks:\n    - target: vda\n"
            + "      source: {volume: {pool: vr-lab, name: nope.qcow2}}\n"
        ),
        10,
        "spec.disks.0.source.volume",
        "volume 'vr-lab/nope.qcow2' does not exist on host default",
    ),
    Case(
        "missing-network",
        domain(MINIMAL + "  interfaces:\n    - network: nonet\n"),
        9,
        "spec.interfaces.0.network",
        "network 'nonet' does not exist on host default",
    ),
    Case(
        "missing-pool",
        volume("v.raw", "  pool: nopool\n  capacity: 1MiB\n"),
        6,
        "spec.pool",
        "storage pool 'nopool' does not exist on host default",
    ),
    # --- YAML syntax and bombs
    Case("yaml-syntax", domain(MINIMAL + "  disks: [\n"), 9, "", "invalid YAML"),
    Case("yaml-tab-indent", domain(MINIMAL + "\tvcpus: 1\n"), 8, "", "invalid YAML"),
    Case("yaml-unclosed-quote", domain('  memory: "64MiB\n'), 7, "", "invalid YAML"),
    Case("yaml-alias-bomb", YAML_BOMB, 7, "", "document expands to more than"),
    Case(
        "yaml-many-aliases",
        domain(MINIMAL + "  x: &x a\n  l: [" + ", ".join(["*x"] * 150) + "]\n"),
        9,
        "",
        "more than 100 aliases",
    ),
    Case(
        "yaml-python-tag",
        domain(MINIMAL + "  vcpus: !!python/object/apply:os.system [id]\n"),
        8,
        "spec.vcpus",
        "unsupported YAML tag",
    ),
    Case("yaml-list-document", "- a\n- b\n", 1, "", "a document must be a mapping, not a list"),
    Case("yaml-scalar-document", "just text\n", 1, "", "a document must be a mapping"),
    Case(
        "yaml-deep-nesting",
        domain(MINIMAL + "  x: " + "[" * 150 + "]" * 150 + "\n"),
        8,
        "",
        "nested more than 100 levels",
    ),
    Case(
        "yaml-over-4mib", domain(MINIMAL) + "#" + "x" * (4 << 20) + "\n", 1, "", "larger than 4 MiB"
    ),
    # --- XML overlays
    Case(
        "xml-doctype-entity",
        overlay('<!DOCTYPE d [<!ENTITY x "y">]>\n<domain>&x;</domain>'),
        9,
        "spec.xml",
        "<!DOCTYPE> declarations are not allowed",
    ),
    Case(
        "xml-billion-laughs",
        overlay(LAUGHS),
        9,
        "spec.xml",
        "<!DOCTYPE> declarations are not allowed",
    ),
    Case(
        "xml-external-entity",
        overlay(
            '<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<domain>&e;</domain>'
        ),
        10,
        "spec.xml",
        "<!DOCTYPE> declarations are not allowed",
    ),
    Case(
        "xml-undeclared-entity",
        overlay("<domain>\n  <description>&e;</description>\n</domain>"),
        10,
        "spec.xml",
        "Entity 'e' not defined",
    ),
    Case("xml-malformed", overlay("<domain>\n  <devices>\n</domain>"), 11, "spec.xml", "mismatch"),
    Case("xml-wrong-root", overlay("<network/>"), 9, "spec.xml", "root element must be <domain>"),
    Case(
        "xml-over-1mib",
        domain(
            MINIMAL
            + '  xml: "<domain><description>'
            + "x" * (1 << 20)
            + '</description></domain>"\n'
        ),
        8,
        "spec.xml",
        "larger than 1 MiB",
    ),
    # --- names that could leave a pool directory, or that libvirt cannot store
    Case("name-traversal", volume("../../etc/passwd"), 4, "metadata.name", "without '/'"),
    Case("name-slash", volume("a/b.raw"), 4, "metadata.name", "without '/'"),
    Case("name-dotdot", volume('".."'), 4, "metadata.name", "not '.' or '..'"),
    Case("name-nul", volume('"a\\0b"'), 4, "metadata.name", "control characters"),
    Case("name-newline", volume('"a\\nb"'), 4, "metadata.name", "control characters"),
    Case(
        "name-too-long", volume("é" * 101), 4, "metadata.name", "202 bytes in UTF-8, more than 200"
    ),
    Case(
        "disk-volume-traversal",
        domain(
            MINIMAL
            + "  disks:\n    - target: vda\n      source: {volume: {pool: vr-lab, name: ../x}}\n"
        ),
        10,
        "spec.disks.0.source.volume.name",
        "without '/'",
    ),
    # --- bytes that are not UTF-8
    Case("latin1", domain(MINIMAL).encode() + b"# caf\xe9\n", 8, "", "not valid UTF-8 (byte 0xe9"),
    Case("utf16", domain(MINIMAL).encode("utf-16"), 1, "", "not valid UTF-8"),
    Case(
        "control-char",
        domain(MINIMAL + "  description: a\x07b\n"),
        8,
        "",
        "unacceptable character #x0007",
    ),
]


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_manifest_is_refused_and_host_untouched(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus_uri: str,
    run: Run,
    conn: Conn,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXAMPLES, "manifests")
    bad = Path("bad.yaml")
    if isinstance(case.text, bytes):
        bad.write_bytes(case.text)
    else:
        bad.write_text(case.text, encoding="utf-8")
    before = host_snapshot(conn(corpus_uri))
    code, out, err = run("apply", "manifests", "bad.yaml", "-c", corpus_uri)
    text = out + err
    assert code == 1, text
    where = f"bad.yaml:{case.line}: {case.path}: " if case.path else f"bad.yaml:{case.line}: "
    lines = [ln.strip().removeprefix("error: ") for ln in text.splitlines()]
    assert any(ln.startswith(where) and case.message in ln for ln in lines), text
    assert "Traceback" not in text
    assert host_snapshot(conn(corpus_uri)) == before


def test_a_dangling_reference_on_one_host_stops_every_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run, conn: Conn
) -> None:
    """Plan-time checks run on every host before the first change on any host."""
    monkeypatch.chdir(tmp_path)
    uris = {}
    for name in ("kvm-a", "kvm-b"):
        shutil.copy(EMPTY_HOST, f"{name}.xml")
        uris[name] = f"test://{tmp_path}/{name}.xml"
    Path("hosts.yaml").write_text(
        "".join(
            f"{HEAD}kind: Host\nmetadata: {{name: {n}}}\nspec: {{uri: '{u}'}}\n---\n"
            for n, u in uris.items()
        )
    )
    Path("a.yaml").write_text(
        f"{HEAD}kind: Network\nmetadata: {{name: net-a}}\nspec: {{host: kvm-a}}\n"
    )
    Path("b.yaml").write_text(
        domain(MINIMAL + "  host: kvm-b\n  interfaces:\n    - network: nonet\n")
    )
    before = {n: host_snapshot(conn(u)) for n, u in uris.items()}
    code, out, err = run(
        "apply",
        ".",
    )
    assert code == 1, out + err
    assert (
        "b.yaml:10: spec.interfaces.0.network: network 'nonet' does not exist on host kvm-b" in out
    )
    assert "nothing was changed" in err
    assert {n: host_snapshot(conn(u)) for n, u in uris.items()} == before
