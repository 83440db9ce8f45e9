"""The foreign corpus (tests/data/foreign) on a file-backed test-driver host.

Every document, whatever its architecture: defined with libvirt directly, then its
manifest (the complete document in ``spec.xml``, nothing beside it) planned, edited,
overridden and applied through the CLI, in batches (see ``tests/foreign.py``).  Each
document is its own test id, so a failure names the document; ``python -m tests.foreign
report`` prints the same results as a table with every differing path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import foreign

DOCS = foreign.load()
EDITS = [(d, e.label) for d in DOCS for e in foreign.edits(d)]
OVERRIDES = [d for d in DOCS if foreign.override(d) is not None]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, foreign.DocResult]:
    workdir: Path = tmp_path_factory.mktemp("foreign")
    return foreign.check(DOCS, foreign.TestDriverHost(workdir), workdir)


def _explain(r: foreign.DocResult, *checks: str) -> str:
    lines = [f"{what}: {detail}" for what, detail in foreign.failures(r) if what.startswith(checks)]
    return f"{r.doc.path}\n  " + "\n  ".join(lines)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_adopting_shows_no_change(
    results: dict[str, foreign.DocResult], doc: foreign.Document
) -> None:
    r = results[doc.id]
    assert r.define_error is None, f"libvirt refuses the corpus document itself: {r.define_error}"
    assert r.adopt is not None
    assert not r.false_diff, _explain(r, "adopt")


@pytest.mark.parametrize(("doc", "label"), EDITS, ids=[f"{d.id}:{label}" for d, label in EDITS])
def test_one_edit_is_one_change(
    results: dict[str, foreign.DocResult], doc: foreign.Document, label: str
) -> None:
    r = results[doc.id]
    edit, outcome = r.edits[label]
    assert outcome.error is None, outcome.error
    assert not r.edit_missed(label), f"{edit.what}: the plan does not show it"
    assert r.edit_ok(label), _explain(r, f"edit {label}", "adopt")


@pytest.mark.parametrize("doc", OVERRIDES, ids=lambda d: d.id)
def test_friendly_override_is_one_change(
    results: dict[str, foreign.DocResult], doc: foreign.Document
) -> None:
    r = results[doc.id]
    assert r.override is not None
    assert r.override_ok, _explain(r, "override", "adopt")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_apply_converges(results: dict[str, foreign.DocResult], doc: foreign.Document) -> None:
    r = results[doc.id]
    assert r.converged, _explain(r, "apply")
