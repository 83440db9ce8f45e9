"""apply's convergence check reads again only what the apply wrote.

After executing, ``reconcile.Run.check_again`` observes and plans again the
objects an apply changed (a domain by name, a volume with its pool), not the
whole host; a no-op apply reads the host once. What libvirt does not keep is
still reported: here another writer stands in for libvirt rewriting a value
(it redefines or deletes the object right after our write).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reconciler.hosts import Session
from reconciler.model import Kind
from reconciler.observed import HostState, ObjectKey
from reconciler.plan import Action
from reconciler.steps import Step
from tests.integration.conftest import Run

Reads = dict[str, list[Any]]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    """Every whole-host observation and every read-again (its keys) of the test."""
    seen: Reads = {"observe": [], "observe_again": []}
    observe, observe_again = Session.observe, Session.observe_again

    def whole(self: Session, **kwargs: Any) -> HostState:
        seen["observe"].append(self.host.name)
        return observe(self, **kwargs)

    def again(self: Session, state: HostState, keys: Any) -> HostState:
        keys = set(keys)
        seen["observe_again"].append(keys)
        return observe_again(self, state, keys)

    monkeypatch.setattr(Session, "observe", whole)
    monkeypatch.setattr(Session, "observe_again", again)
    yield seen


def _after_write(monkeypatch: pytest.MonkeyPatch, ref: str, then: Callable[[], None]) -> None:
    """Call ``then`` right after the apply's (last) step on ``ref``."""
    run = Session.run

    def step(self: Session, s: Step, action: Action) -> None:
        run(self, s, action)
        if action.ref == ref and s is action.steps[-1]:
            then()

    monkeypatch.setattr(Session, "run", step)


def _json(out: str) -> dict[str, Any]:
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_noop_apply_reads_the_host_once(
    host_uri: str, examples: Path, run: Run, reads: Reads
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    reads["observe"].clear()
    reads["observe_again"].clear()
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 0, out + err
    assert "Converged" in out
    assert reads == {"observe": ["default"], "observe_again": []}


def test_one_change_reads_again_only_that_object(
    host_uri: str, examples: Path, run: Run, reads: Reads
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    reads["observe"].clear()
    reads["observe_again"].clear()
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("memory: 512MiB", "memory: 1GiB"))
    code, out, err = run("apply", examples, "-c", host_uri, "-o", "json")
    assert code == 0, out + err
    doc = _json(out)
    assert doc["converged"] is True
    assert reads["observe"] == ["default"]
    want: set[ObjectKey] = {(Kind.DOMAIN, "vr-db-1")}
    assert reads["observe_again"] == [want]
    assert run("plan", examples, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_a_value_libvirt_did_not_keep_is_reported(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    db = examples / "db.yaml"
    db.write_text(db.read_text().replace("memory: 512MiB", "memory: 1GiB"))

    def rewrite() -> None:  # as if libvirt had stored another size
        c = conn(host_uri)
        xml = c.lookupByName("vr-db-1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        c.defineXML(xml.replace("1048576", "786432"))

    _after_write(monkeypatch, "Domain/vr-db-1", rewrite)
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 1, out + err
    assert "Not converged" in out
    assert "default: Domain/vr-db-1 memory" in out


def test_a_volume_is_checked_with_its_pool(
    host_uri: str,
    examples: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    monkeypatch: pytest.MonkeyPatch,
    reads: Reads,
) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    storage = examples / "storage.yaml"
    extra = "\n---\napiVersion: virt-reconcile/v1\nkind: Volume\nmetadata:\n  name: extra.raw\n"
    storage.write_text(storage.read_text() + extra + "spec:\n  pool: vr-lab\n  capacity: 1MiB\n")

    def remove() -> None:  # the new volume is gone again
        c = conn(host_uri)
        c.storagePoolLookupByName("vr-lab").storageVolLookupByName("extra.raw").delete(0)

    _after_write(monkeypatch, "Volume/vr-lab/extra.raw", remove)
    code, out, err = run("apply", examples, "-c", host_uri)
    assert code == 1, out + err
    assert "Not converged" in out
    assert "default: Volume/vr-lab/extra.raw definition: (absent) → created" in out
    assert reads["observe_again"][-1] == {(Kind.VOLUME, "vr-lab/extra.raw")}


def test_a_pruned_domain_is_not_left(host_uri: str, examples: Path, run: Run, reads: Reads) -> None:
    assert run("apply", examples, "-c", host_uri)[0] == 0
    (examples / "db.yaml").unlink()
    reads["observe_again"].clear()
    code, out, err = run("apply", examples, "-c", host_uri, "--prune", "-o", "json")
    assert code == 0, out + err
    assert _json(out)["converged"] is True
    assert {(Kind.DOMAIN, "vr-db-1")} <= set().union(*reads["observe_again"])
    assert run("plan", examples, "-c", host_uri, "--prune", "--detailed-exitcode")[0] == 0
