"""The foreign corpus on the real ``qemu:///system``: x86_64 domains, networks that start,
dir pools (``Document.real`` in ``tests/foreign.py``).

The CLI runs as ``python -m reconciler`` in a subprocess, over one manifest folder per
check (a few plan/apply runs for the whole corpus).  The objects are named ``vrf-*`` and
removed before and after; nothing else on the shared daemon is touched.
"""

from __future__ import annotations

import pytest

from tests import foreign

DOCS = [d for d in foreign.load() if d.real]
EDITS = [(d, e.label) for d in DOCS for e in foreign.edits(d)]
OVERRIDES = [d for d in DOCS if foreign.override(d) is not None]


@pytest.fixture(scope="module")
def results(system_uri: str) -> dict[str, foreign.DocResult]:
    return foreign.run_real_tier(DOCS, uri=system_uri)


def _explain(r: foreign.DocResult, *checks: str) -> str:
    lines = [f"{what}: {detail}" for what, detail in foreign.failures(r) if what.startswith(checks)]
    return f"{r.doc.path}\n  " + "\n  ".join(lines)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_adopting_shows_no_change(
    results: dict[str, foreign.DocResult], doc: foreign.Document
) -> None:
    r = results[doc.id]
    assert r.define_error is None, f"libvirt refuses the corpus document itself: {r.define_error}"
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
    assert r.override_ok, _explain(r, "override", "adopt")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_apply_converges(results: dict[str, foreign.DocResult], doc: foreign.Document) -> None:
    r = results[doc.id]
    assert r.converged, _explain(r, "apply")
