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
