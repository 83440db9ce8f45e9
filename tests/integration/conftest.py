"""Integration tier: every test gets its own file-backed libvirt test-driver host.

``test:///ABS/PATH.xml`` is a separate in-memory host per path; virt-reconcile
keeps one connection per test URI for the process, so the CLI calls inside one
test see the same host and two tests never share one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
EMPTY_HOST = REPO / "tests" / "data" / "testdriver" / "empty.xml"


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A test-driver host full of objects someone made by hand, and what tests may
    rely on in it: how many objects export writes, and a few names."""

    id: str
    path: Path
    domains: int  # exported (persistent) domains
    networks: int
    pools: int
    volumes: int  # exported volumes (not the LUNs of scsi/iscsi/mpath pools)
    domain: str  # one exported domain
    pool: str  # a dir pool ...
    volume: str  # ... and one of its volumes
    # Definitions the test driver loads without validation but libvirt's
    # domain.rng refuses at define: (text, replacement) that makes them valid.
    refused: Mapping[str, tuple[str, str]] = field(default_factory=dict)


# The repository's own corpus (tests/data/testdriver/corpus-host.xml, written here).
OWN_CORPUS = Corpus(
    id="own",
    path=REPO / "tests" / "data" / "testdriver" / "corpus-host.xml",
    domains=16,
    networks=14,
    pools=14,
    volumes=28,
    domain="anvil",
    pool="images",
    volume="base-debian12.qcow2",
)
# An external corpus, checked as well when it is present: virt-manager's test host
# (14 domains, 16 networks, 15 pools), in a sibling folder of the checkout or
# where $VIRT_RECONCILE_EXTERNAL_CORPUS says. A plain clone does not have it.
EXTERNAL_CORPUS = Corpus(
    id="external",
    path=Path(
        os.environ.get(
            "VIRT_RECONCILE_EXTERNAL_CORPUS",
            REPO.parent / "shared" / "corpus" / "testdriver-host.xml",
        )
    ),
    domains=13,
    networks=16,
    pools=15,
    volumes=37,
    domain="test",
    pool="pool-dir",
    volume="default-vol",
    # An NBD disk with a relative unix socket.
    refused={"Domain/test-many-devices": ('socket="relative.sock"', 'socket="/run/nbd.sock"')},
)

libvirt.registerErrorHandler(lambda *_: None, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def host_uri(tmp_path: Path) -> str:
    """An empty test-driver host of this test's own."""
    path = tmp_path / "host.xml"
    shutil.copy(EMPTY_HOST, path)
    return f"test://{path}"


@pytest.fixture(params=[OWN_CORPUS, EXTERNAL_CORPUS], ids=lambda c: f"{c.id}-corpus")
def corpus(request: pytest.FixtureRequest) -> Corpus:
    """Each corpus host in turn: the repository's own, then the external one if present."""
    found: Corpus = request.param
    if found is not OWN_CORPUS and not found.path.exists():
        pytest.skip(f"external corpus not present: {found.path}")
    return found


@pytest.fixture
def corpus_uri(corpus: Corpus, tmp_path: Path) -> str:
    """A corpus host of this test's own."""
    path = tmp_path / "corpus.xml"
    shutil.copy(corpus.path, path)
    return f"test://{path}"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A private copy of examples/manifests that a test may edit."""
    dest = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, dest)
    return dest


@pytest.fixture
def conn() -> Iterator[Callable[[str], libvirt.virConnect]]:
    """The process-wide connection virt-reconcile uses for a test URI."""
    from reconciler import hosts

    def get(uri: str) -> libvirt.virConnect:
        return hosts.open_uri(uri)

    yield get


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def plan_json(run: Run) -> Callable[..., dict[str, Any]]:
    def call(*argv: str) -> dict[str, Any]:
        code, out, err = run("plan", *argv, "-o", "json")
        assert code in (0, 2), err
        return dict(json.loads(out))

    return call


def host_snapshot(conn: libvirt.virConnect) -> dict[str, str]:
    """Every object's XML on a host, for byte-for-byte before/after comparisons."""
    snap = {f"domain/{d.name()}": d.XMLDesc(0) for d in conn.listAllDomains()}
    snap |= {f"network/{n.name()}": n.XMLDesc(0) for n in conn.listAllNetworks()}
    for p in conn.listAllStoragePools():
        snap[f"pool/{p.name()}"] = p.XMLDesc(0)
        if p.isActive():
            for v in p.listAllVolumes():
                snap[f"volume/{p.name()}/{v.name()}"] = v.XMLDesc(0)
    return snap
