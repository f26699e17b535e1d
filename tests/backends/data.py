"""Comparisons shared by the backend tests: two problems, a tournament round each."""

from __future__ import annotations

from judge_server.comparators.base import Comparison

PROBLEM_1 = "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest at $2. How much?"
TRACES_1 = [
    "16 - 3 - 4 = 9 eggs. 9 * 2 = 18 dollars.",
    "16 - 3 = 13, 13 - 4 = 9, so 9 * 2 = $18.",
    "She has 16 - 7 = 9 eggs and makes 9 * 2 = 20.",
    "16 + 3 + 4 = 23 eggs, 23 * 2 = 46 dollars.",
]
PROBLEM_2 = "Tom reads 12 pages a day. How many pages does he read in a week?"
TRACES_2 = ["12 * 7 = 84 pages.", "12 + 7 = 19 pages.", "A week has 7 days: 7 * 12 = 84."]


def round_comparisons() -> list[Comparison]:
    """A round where trace 0 meets the others (it recurs first), a pair in both orders, and
    a second problem with a reference, in another run."""
    out = [Comparison(PROBLEM_1, TRACES_1[0], t, None, "run-1") for t in TRACES_1[1:]]
    out.append(Comparison(PROBLEM_1, TRACES_1[2], TRACES_1[1], None, "run-1"))
    out += [
        Comparison(PROBLEM_2, TRACES_2[0], TRACES_2[1], "84", "run-2"),
        Comparison(PROBLEM_2, TRACES_2[1], TRACES_2[0], "84", "run-2"),
        Comparison(PROBLEM_2, TRACES_2[2], TRACES_2[1], "84", "run-2"),
    ]
    return out
