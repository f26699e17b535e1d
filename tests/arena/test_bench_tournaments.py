import math

from judge_server.bench import tournaments


def test_bench_reports_every_design_and_the_checks():
    result = tournaments.run((8,), trials=6, progress=False)
    (size,) = result["sizes"]
    labels = [d["label"] for d in size["designs"]]
    assert "live (paper)" in labels and "round_robin (both orders)" in labels
    for d in size["designs"]:
        assert -1.0 <= d["tau"] <= 1.0 and d["calls"] > 0 and math.isfinite(d["tau_se"])
    by = {d["label"]: d for d in size["designs"]}
    assert by["live (paper)"]["calls"] == 18
    assert by["round_robin (both orders)"]["calls"] == 56
    assert size["checks"]["calls_fraction_of_round_robin_both"] == 18 / 56
    assert "G = 8" in tournaments.format_table(result)


def test_bench_prints_tau_against_calls_and_the_selection_cost():
    result = tournaments.run((8,), trials=4, progress=False, soft=True)
    curve = result["sizes"][0]["curves"]
    assert curve["budgets"] == sorted(curve["budgets"]) and curve["budgets"][-1] <= 56
    for label, line in curve["lines"].items():
        assert all(-1.0 <= p["tau"] <= 1.0 for p in line)
        if label != "adaptive, anytime stop":  # a design never spends more than its budget
            assert all(p["calls"] <= b for p, b in zip(line, curve["budgets"]))
    anytime = curve["lines"]["adaptive, anytime stop"]
    assert all(p["calls"] <= curve["anytime_cap"] for p in anytime)
    # a lower threshold never stops a group earlier on the same strengths and seeds
    assert [p["calls"] for p in anytime] == sorted(p["calls"] for p in anytime)
    assert set(result["selection_ms"]) == {"16", "64", "256", "1024"}
    assert all(ms > 0 for ms in result["selection_ms"].values())
    table = tournaments.format_table(result)
    assert "tau against calls" in table and "anytime stop" in table and "G = 1024" in table
