"""The prune guard's arithmetic (pure): when pruning is refused, and what it says."""

from __future__ import annotations

import pytest

from reconciler import plan

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("orphans", "managed", "max_prune", "refused"),
    [
        (0, 0, 50, False),  # nothing to delete
        (0, 5, 0, False),
        (1, 2, 50, False),  # exactly the threshold is allowed
        (2, 3, 50, True),
        (1, 1, 50, True),  # the only managed object: 100%
        (1, 1, 100, False),  # --max-prune 100 turns the guard off
        (1, 10, 0, True),  # --max-prune 0: any deletion needs --force-prune
        (3, 10, 30, False),
        (4, 10, 30, True),
    ],
)
def test_threshold(orphans: int, managed: int, max_prune: int, refused: bool) -> None:
    options = plan.Options(prune=True, max_prune=max_prune)
    got = plan.prune_refusal(orphans, managed, host="kvm-a", options=options)
    assert (got is not None) is refused
    forced = plan.Options(prune=True, max_prune=max_prune, force_prune=True)
    assert plan.prune_refusal(orphans, managed, host="kvm-a", options=forced) is None


def test_message_names_host_counts_and_flags() -> None:
    got = plan.prune_refusal(3, 4, host="kvm-a", options=plan.Options(prune=True))
    assert got is not None
    assert "3 of the 4 managed objects on host kvm-a (75%)" in got
    assert "--max-prune 50%" in got and "--force-prune" in got


def test_the_only_object_says_so() -> None:
    got = plan.prune_refusal(1, 1, host="kvm-a", options=plan.Options(prune=True))
    assert got is not None
    assert "1 of the 1 managed objects on host kvm-a (the only one) (100%)" in got
