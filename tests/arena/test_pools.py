import pytest

from judge_server.arena.pools import (
    Anchor,
    PoolPolicy,
    RunPool,
    admit,
    after_group,
    refit,
    select,
    spread_indices,
)


def anchors(strengths, step=0, prefix="t"):
    return [Anchor(text=f"{prefix}{k}", strength=s, step=step) for k, s in enumerate(strengths)]


def test_spread_keeps_extremes_and_evenly_spaced_middle():
    s = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert spread_indices(s, 3) == [0, 4, 8]
    assert spread_indices(s, 20) == list(range(9))
    assert spread_indices(s, 0) == []
    assert spread_indices(s, 1) == [4]


def test_admit_caps_per_prompt_and_spreads_over_the_range():
    policy = PoolPolicy(per_prompt=3, min_gap=0.0)
    pool = admit([], anchors([0.1, 0.5, -2.0, 3.0, 0.2]), policy, step=0)
    assert sorted(a.strength for a in pool) == [-2.0, 0.2, 3.0]


def test_old_anchors_leave_after_max_age():
    policy = PoolPolicy(per_prompt=10, max_age=5, min_gap=0.0)
    pool = admit([], anchors([0.0, 1.0], step=0, prefix="old"), policy, step=0)
    pool = admit(pool, anchors([2.0], step=6, prefix="new"), policy, step=6)
    assert [a.text for a in pool] == ["new0"]


def test_redundant_anchors_keep_the_newer():
    policy = PoolPolicy(per_prompt=10, min_gap=0.1, max_age=None)
    pool = admit([], anchors([1.0], step=0, prefix="old"), policy, step=0)
    pool = admit(pool, anchors([1.05, 3.0], step=1, prefix="new"), policy, step=1)
    assert sorted(a.text for a in pool) == ["new0", "new1"]


def test_a_trace_seen_again_keeps_its_newest_strength():
    policy = PoolPolicy(per_prompt=10, min_gap=0.0)
    pool = admit([], [Anchor("same", 0.0, 0)], policy, step=0)
    pool = admit(pool, [Anchor("same", 2.0, 1)], policy, step=1)
    assert len(pool) == 1 and pool[0].strength == 2.0 and pool[0].step == 1


def test_select_and_refit():
    pool = anchors([-1.0, 0.0, 1.0, 2.0, 3.0])
    chosen = select(pool, 3)
    assert [a.strength for a in chosen] == [-1.0, 1.0, 3.0]
    moved = refit(chosen, [0.0, 0.0, 0.0])
    assert [a.trace_id for a in moved] == [a.trace_id for a in chosen]
    assert all(a.strength == 0.0 for a in moved)


def test_run_capacity_evicts_the_oldest_anchors_across_prompts():
    pool = RunPool()
    pool.put("p1", anchors([0.0, 1.0, 2.0], step=0, prefix="a"), per_run=4)
    changed = pool.put("p2", anchors([0.0, 1.0, 2.0], step=5, prefix="b"), per_run=4)
    assert pool.size() == 4
    assert changed == {"p1", "p2"}
    assert all(a.step == 5 for a in pool.get("p2"))
    assert len(pool.get("p1")) == 1


def test_pool_state_round_trips_through_plain_data():
    pool = RunPool()
    pool.put("p", anchors([0.5, -0.5], step=3), PoolPolicy().per_run)
    again = RunPool.from_dict(pool.to_dict())
    assert again == pool


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"per_prompt": -1}, "per_prompt"), ({"max_age": -2}, "max_age"),
     ({"min_gap": float("nan")}, "min_gap"), ({"per_run": -1}, "per_run")],
)
def test_bad_policy_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PoolPolicy(**kwargs)


def test_anchor_strength_must_be_finite():
    with pytest.raises(ValueError, match="strength"):
        Anchor("x", float("inf"), 0)


def test_a_later_group_never_moves_the_anchors_already_in_the_pool():
    policy = PoolPolicy(per_prompt=10, min_gap=0.0)
    first = after_group([], ["a", "b"], [-1.0, 1.0], [0.4, 0.5], policy, step=0)
    assert {(a.text, a.strength, a.stderr, a.step) for a in first} == {
        ("a", -1.0, 0.4, 0), ("b", 1.0, 0.5, 0)}
    later = after_group(first, ["c", "d"], [2.0, 3.0], [0.3, 0.3], policy, step=1)
    assert [a for a in later if a.step == 0] == first  # as stored, strengths and stderr
    assert sorted(a.text for a in later) == ["a", "b", "c", "d"]


def test_pools_stored_before_anchors_had_a_stderr_still_load():
    old = {"p": [{"text": "t", "strength": 0.5, "step": 3, "trace_id": "abc"},
                 {"text": "u", "strength": -0.5, "step": 4}]}
    pool = RunPool.from_dict(old)
    assert [a.stderr for a in pool.get("p")] == [None, None]
    assert pool.get("p")[0] == Anchor("t", 0.5, 3, "abc")
    assert RunPool.from_dict(pool.to_dict()) == pool
    with_stderr = Anchor("v", 0.1, 5, stderr=0.3)
    assert Anchor.from_dict(with_stderr.to_dict()) == with_stderr


def test_anchor_stderr_must_be_finite_and_not_negative():
    for bad in (float("nan"), -0.1, float("inf")):
        with pytest.raises(ValueError, match="stderr"):
            Anchor("x", 0.0, 0, stderr=bad)


def _evict_by_sorting(prompts: dict[str, list[Anchor]], per_run: int) -> dict[str, list[Anchor]]:
    """The run-wide rule as first written: sort every anchor, drop the oldest excess."""
    everyone = sorted((a.step, pid, a.trace_id) for pid, v in prompts.items() for a in v)
    gone = set(everyone[: max(0, len(everyone) - per_run)])
    kept = {pid: [a for a in v if (a.step, pid, a.trace_id) not in gone]
            for pid, v in prompts.items()}
    return {pid: v for pid, v in kept.items() if v}


def test_incremental_eviction_takes_the_same_anchors_as_sorting_the_whole_run():
    import random

    rng = random.Random(7)
    pool, reference = RunPool(), {}
    for k in range(600):
        pid = f"p{rng.randrange(40)}"
        step = rng.randrange(k // 4, k // 4 + 30)
        new = [Anchor(f"t{k}-{j}", float(j), step - rng.randrange(3)) for j in
               range(rng.randrange(0, 6))]
        per_run = rng.choice([10, 25, 60, 10**6])
        changed = pool.put(pid, new, per_run)
        reference[pid] = new
        expected = _evict_by_sorting(reference, per_run)
        assert pool.prompts == expected, k
        assert pool.size() == sum(len(v) for v in expected.values())
        assert changed >= {pid} and all(
            pool.get(p) != reference.get(p, []) or p == pid for p in changed
        )
        reference = expected
