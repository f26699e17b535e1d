"""A quick run of the Bradley-Terry fit benchmark (:mod:`judge_server.bench.fit`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from judge_server.bench import fit as bench_fit

pytest.importorskip("choix")

TIMINGS = (
    "ours_median_ms",
    "opt_pairwise_median_ms",
    "ilsr_pairwise_median_ms",
    "speedup_vs_opt_pairwise",
    "speedup_vs_ilsr_pairwise",
)


def test_run_reports_finite_positive_timings_and_agreement():
    result = bench_fit.run(sizes=(8,), graphs_per_size=2, progress=False)
    json.dumps(result)  # JSON-able
    (row,) = result["sizes"]
    assert row["n_items"] == 8
    assert row["n_comparisons"] == 32
    for key in TIMINGS:
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["ours_median_iterations"] >= 1
    assert row["all_converged"] is True
    # choix's default tolerance is 1e-5 (Newton-CG xtol): agreement to well within 1e-4
    assert 0 <= row["max_abs_diff_vs_opt_pairwise"] <= 1e-4
    machine = result["machine"]
    assert machine["cpu_count"] and machine["numpy"] and machine["choix"]

    table = bench_fit.format_table(result)
    assert "opt_pairwise" in table and "x opt" in table
    assert len(table.splitlines()) == 5  # title, header, rule, one size, machine


def test_random_graph_is_connected_and_has_no_self_comparisons():
    rng = np.random.default_rng(0)
    first, second, p = bench_fit.random_graph(rng, 10, 4)
    assert first.size == second.size == p.size == 40
    assert np.all(first != second)
    assert set(np.unique(p)) <= {0.0, 1.0}
    # the cycle reaches every item from item 0
    reached, frontier = {0}, [0]
    while frontier:
        item = frontier.pop()
        for a, b in zip(first, second):
            for x, y in ((a, b), (b, a)):
                if x == item and y not in reached:
                    reached.add(int(y))
                    frontier.append(int(y))
    assert reached == set(range(10))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sizes": (1,)}, "sizes"),
        ({"sizes": ()}, "sizes"),
        ({"graphs_per_size": 0}, "graphs_per_size"),
        ({"repeats": 0}, "repeats"),
        ({"comparisons_per_item": 0}, "comparisons_per_item"),
        ({"lam": 0.0}, "lam"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        bench_fit.run(**{"sizes": (8,), "graphs_per_size": 1, "progress": False, **kwargs})
