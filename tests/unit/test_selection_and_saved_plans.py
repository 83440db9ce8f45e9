"""Pure parts of the review workflow: object selection, labels in the ownership
record, saved-plan documents and their differences."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler import ownership, plan, report

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("options", "ref", "labels", "selected"),
    [
        (plan.Options(), "Domain/a", {}, True),
        (plan.Options(selector=(("tier", "web"),)), "Domain/a", {"tier": "web"}, True),
        (plan.Options(selector=(("tier", "web"),)), "Domain/a", {"tier": "db"}, False),
        (
            plan.Options(selector=(("tier", "web"), ("zone", "a"))),
            "Domain/a",
            {"tier": "web"},
            False,
        ),
        (plan.Options(targets=frozenset({"Domain/a"})), "Domain/a", {}, True),
        (plan.Options(targets=frozenset({"Domain/a"})), "Network/a", {}, False),
        (plan.Options(targets=frozenset({"Volume/v"})), "Volume/p/v", {}, True),
        (plan.Options(targets=frozenset({"Volume/p/v"})), "Volume/q/v", {}, False),
    ],
)
def test_selects(options: plan.Options, ref: str, labels: dict[str, str], selected: bool) -> None:
    assert options.selects(ref, labels) is selected


def test_labels_round_trip_through_the_record_and_are_left_out_when_empty() -> None:
    record = ownership.Record(labels=(("tier", "web"), ("zone", "a")))
    data = record.to_json()
    assert data["labels"] == {"tier": "web", "zone": "a"}
    assert ownership.Record.from_json(json.loads(json.dumps(data))) == record
    assert "labels" not in ownership.Record().to_json()  # older records stay byte-identical


def _saved(actions: dict[str, Any], digest: str = "d" * 64) -> dict[str, Any]:
    return {
        "format": report.SAVED_PLAN_FORMAT,
        "version": 1,
        "manifests": {"sha256": digest},
        "hosts": {"kvm-a": {"uri": "test:///x", "actions": actions}},
    }


def _update(path: str, old: str, new: str) -> dict[str, Any]:
    return {"action": "update", "changes": [{"path": path, "old": old, "new": new}]}


def test_plan_differences() -> None:
    saved = _saved(
        {"Domain/a": _update("memory", "1", "2"), "Domain/b": {"action": "create", "changes": []}}
    )
    assert report.plan_differences(saved, saved) == []
    fresh = _saved(
        {"Domain/a": _update("memory", "1", "3"), "Network/n": {"action": "delete", "changes": []}},
        digest="e" * 64,
    )
    assert report.plan_differences(saved, fresh) == [
        "manifests changed since the plan was saved (sha256 dddddddddddd → eeeeeeeeeeee)",
        "kvm-a: Domain/a: memory: planned 1 → 2, now 1 → 3",
        "kvm-a: Domain/b: planned create, now nothing",
        "kvm-a: Network/n: not in the saved plan, now delete",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid JSON"),
        ('{"format": "other"}', "not a saved plan"),
        ('{"format": "virt-reconcile/plan", "version": 2}', "saved plan version 2"),
        ('{"format": "virt-reconcile/plan", "version": 1}', 'no "hosts"'),
    ],
)
def test_read_saved_plan_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        report.read_saved_plan(text)
    assert report.read_saved_plan(json.dumps(_saved({})))["version"] == 1
