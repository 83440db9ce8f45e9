"""How watch replicas share hosts: tooz's hash ring over the members, placement sets kept whole."""

from __future__ import annotations

from reconciler.coordination import owners, shards

HOSTS = [f"kvm-{i:03d}" for i in range(300)]


def test_every_host_has_one_owner_and_the_load_is_spread() -> None:
    result = owners(["r1", "r2", "r3"], HOSTS)
    assert set(result) == set(HOSTS)
    counts = {m: list(result.values()).count(m) for m in ("r1", "r2", "r3")}
    assert all(60 <= n <= 140 for n in counts.values()), counts  # ~100 each
    assert owners([], HOSTS) == {}


def test_a_joining_member_moves_about_a_quarter_of_the_hosts() -> None:
    before = owners(["r1", "r2", "r3"], HOSTS)
    after = owners(["r1", "r2", "r3", "r4"], HOSTS)
    moved = [h for h in HOSTS if before[h] != after[h]]
    assert all(after[h] == "r4" for h in moved)  # only to the newcomer
    assert 0.1 * len(HOSTS) <= len(moved) <= 0.4 * len(HOSTS)
    # ... and when it leaves again, the same assignment as before
    assert owners(["r3", "r1", "r2"], HOSTS) == before


def test_the_candidates_of_a_placed_domain_share_one_owner() -> None:
    linked = [("kvm-007", "kvm-100"), ("kvm-100", "kvm-250"), ("kvm-001", "nope")]
    keys = shards(HOSTS, linked)
    assert keys["kvm-007"] == keys["kvm-100"] == keys["kvm-250"] == "kvm-007"
    assert keys["kvm-001"] == "kvm-001"  # an undeclared candidate links nothing
    for members in (["a", "b"], ["a", "b", "c", "d", "e"]):
        result = owners(members, HOSTS, linked)
        assert result["kvm-007"] == result["kvm-100"] == result["kvm-250"]
