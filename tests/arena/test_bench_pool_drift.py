from judge_server.bench import pool_drift


def test_a_pool_tracks_a_drifting_policy_and_the_old_ratchet_does_not():
    arms = tuple(a for a in pool_drift.ARMS if a.label in
                 ("no pool", "before, prior (ratchet)", "after, prior"))
    result = pool_drift.run((8,), runs=4, steps=10, drift=0.5, arms=arms, progress=False)
    (size,) = result["sizes"]
    by = {a["label"]: a for a in size["arms"]}
    assert {a["calls"] for a in size["arms"]} == {18.0}  # equal calls
    assert by["no pool"]["anchor_calls"] == 0 and by["no pool"]["step_mean_corr"] is None
    after = by["after, prior"]
    assert after["anchor_calls"] > 0
    assert after["step_mean_corr"] > 0.8 and after["fitted_drift_per_step"] > 0.25
    assert by["before, prior (ratchet)"]["step_mean_corr"] < 0  # the pool fell as it improved
    assert "G = 8" in pool_drift.format_table(result)
