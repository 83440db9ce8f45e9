"""Integration tier: every test gets its own file-backed libvirt test-driver host.

``test:///ABS/PATH.xml`` is a separate in-memory host per path; virt-reconcile
keeps one connection per test URI for the process, so the CLI calls inside one
test see the same host and two tests never share one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
EMPTY_HOST = REPO / "tests" / "data" / "testdriver" / "empty.xml"
CORPUS = REPO.parent / "shared" / "corpus" / "testdriver-host.xml"

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


@pytest.fixture
def corpus_uri(tmp_path: Path) -> str:
    """virt-manager's test host (14 domains, 16 networks, 15 pools) of this test's own."""
    if not CORPUS.exists():
        pytest.fail(f"corpus host missing: {CORPUS}")
    path = tmp_path / "corpus.xml"
    shutil.copy(CORPUS, path)
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
