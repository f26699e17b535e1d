"""The dataflow of a trace: operand sources, the answer's chain, dead ends, reference plans."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from judge_server.comparators.arithmetic import find_steps
from judge_server.comparators.builtin import assess
from judge_server.comparators.dataflow import (
    read_plan,
    read_problem,
    reference_match,
    trace_flow,
)

PROMPT = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with "
    "four. She sells the remainder for $2 per egg. How much does she make every day?"
)
WORKED = "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\nA: 18"


def sources(trace: str) -> list[list[str]]:
    flow = trace_flow(trace, read_problem(PROMPT))
    return [[op.source for op in ops] for ops in flow.operands]


def test_the_problem_gives_numbers_number_words_and_multiplier_words() -> None:
    problem = read_problem("Half of the three dozen eggs, 25% of them and 16 more.")
    assert {Fraction(3), Fraction(16), Fraction(25), Fraction(1, 4)} <= problem.values
    assert {Fraction(12), Fraction(1, 2)} <= problem.implied
    assert problem.quantity_of(Fraction(1, 4)) == problem.quantity_of(Fraction(25))


def test_each_operand_is_traced_to_its_source() -> None:
    assert sources("3 + 4 = 7 eggs.\n16 - 7 = 9 eggs.\n9 * 2 = 18") == [
        ["given", "given"],
        ["given", "result"],
        ["result", "given"],
    ]
    # 19 was never written, but 16 + 3 gives it: a step done in the head.
    assert sources("19 - 4 = 15 eggs.\n15 * 2 = 30") == [["derived", "given"], ["result", "given"]]
    assert sources("16 - 11 = 5") == [["given", "unsupported"]]
    assert sources("11 * 60 = 660") == [["unsupported", "constant"]]


def test_a_constant_cannot_explain_a_number_first_met_in_a_calculation() -> None:
    # 11 = 10 + 1, but only numbers stated in prose may lean on constants (and no one
    # operation on 16, 3, 4 and 2 gives 11).
    assert sources("16 - 3 - 11 = 2") == [["given", "given", "unsupported"]]
    assert sources("She walks 11 blocks.\n16 - 3 - 11 = 2") == [["given", "given", "derived"]]


def test_the_chain_is_what_the_answer_depends_on() -> None:
    trace = "3 + 4 = 7 eggs.\n2 * 5 = 10 (a side note)\n16 - 7 = 9 eggs.\n9 * 2 = 18"
    flow = trace_flow(trace, read_problem(PROMPT))
    assert flow.chain == {0, 2, 3}
    assert flow.dead_ends == (1,)
    assert len(flow.used_quantities) == 4  # 16, three, four, $2
    # A marked answer ends the chain at the step that produced it.
    early = trace_flow(trace, read_problem(PROMPT), answer=Fraction(9))
    assert early.chain == {0, 2}


def test_steps_that_change_nothing_are_fillers() -> None:
    flow = trace_flow("16 - 7 = 9\n9 * 1 = 9\n9 + 0 = 9", read_problem(PROMPT))
    assert flow.fillers == (1, 2)


def test_lines_that_only_restate_the_problem_are_counted() -> None:
    flow = trace_flow("She has 16 eggs, eats 3 and bakes 4.\n16 - 7 = 9", read_problem(PROMPT))
    assert flow.lines_restating == 1


def test_false_bare_equations_and_unreadable_results_are_steps() -> None:
    bare, masked = find_steps("35 = 6\n9 * 2 = [masked] dollars")
    assert bare.wrong and bare.claimed == 6
    assert masked.verdict == "open" and masked.computed == 18 and masked.value == 18
    assert find_steps("Step 1 = 3\nx = 5\n9 = 9") == []


def test_reference_steps_are_reached_by_the_same_operations_on_the_same_quantities() -> None:
    plan = read_plan(WORKED, PROMPT)
    problem = read_problem(PROMPT)

    def reached(trace: str) -> float:
        match = reference_match(trace_flow(trace, problem), plan)
        assert match is not None
        return match.reached

    assert reached("16 - 3 - 4 = 9\n9 * 2 = 18") == 1.0
    assert reached("3 + 4 = 7\n16 - 7 = 9\n9 * 2 = 18") == 1.0  # another route, same values
    # A slip carried forward: 8 * 2 still combines "the eggs sold" with "the price".
    assert reached("16 - 3 - 4 = 8\n8 * 2 = 16") == 1.0
    assert reached("16 * 2 = 32") == 0.0
    assert reached("The numbers are 9 and 18.") == 0.0  # written, not computed


def test_a_chain_that_ends_on_an_early_step_of_the_plan_stops_early() -> None:
    plan = read_plan("37+48=85\n85+19=104\n104+64=168\nA: 168", "Q: 37+48+19+64")
    problem = read_problem("Q: 37+48+19+64")

    def match(trace: str):
        return reference_match(trace_flow(trace, problem), plan)

    assert match("37+48=85\n85+19=104").stops_early
    assert match("37+48=85\n85+19=114").stops_early  # a slip does not hide it
    assert not match("37+48=85\n85+19=104\n104+64=168").stops_early
    assert not match("37+48=75\n75+19=94\n94+64=158").stops_early  # complete, one slip


def test_a_reference_in_algebra_still_gives_its_milestones() -> None:
    plan = read_plan("Let x be his age. 45 = 2 * x - 5, so 50 = 2 * x.\nx = 25\nA: 25", "")
    assert Fraction(50) in plan.milestones


def test_placeholders_are_unknowns_followed_from_step_to_step() -> None:
    gives, uses = find_steps("100 - 64 = [N] signatures\n[N] / 2 = [M] per week")
    assert (gives.computed, gives.claimed, gives.gives) == (36, None, "[N]")
    assert (uses.computed, uses.unknowns, uses.gives) == (None, ("[N]",), "[M]")
    flow = trace_flow("20 + 44 = 64\n100 - 64 = [N]\n[N] / 2 = [M]", read_problem("20 44 100"))
    assert flow.chain == {0, 1, 2}  # the last step uses what the one before gave
    assert flow.operands[2][-1].source == "unknown" and flow.operands[2][-1].step == 1
    # Its answer cannot be read: the work does not end on 36 just because 36 is readable.
    assert assess("20 + 44 = 64\n100 - 64 = [N]\n[N] / 2 = [M]").final_answer is None


def test_number_words_are_read_line_by_line_and_long_lines_are_left_alone() -> None:
    from judge_server.comparators.dataflow import MAX_WORDS_LINE, digits

    assert (
        digits("She eats three.\nShe bakes with four <<3+4=7>>.")
        == "She eats 3.\nShe bakes with 4 ."
    )
    # alpha2digit is quadratic in its input: a runaway line keeps its words.
    long = "three and " * (MAX_WORDS_LINE // 10 + 1)
    assert digits(long) == long


def test_numbers_past_the_derivation_budget_are_not_derived() -> None:
    from judge_server.comparators.dataflow import MAX_DERIVATIONS

    # Each number the prose states that nothing at hand gives is looked for as one operation
    # on what is (19 = 16 + 3): MAX_DERIVATIONS times a text at the most.
    noise = [str(5_000_011 + 1000 * k) for k in range(MAX_DERIVATIONS)]
    within = f"Noted: {' '.join(noise[:-1])}.\n19 - 4 = 15 eggs."
    past = f"Noted: {' '.join(noise)}.\n19 - 4 = 15 eggs."
    assert sources(within) == [["derived", "given"]]
    assert sources(past) == [["unsupported", "given"]]


_ROUNDABLE = st.builds(
    lambda value, decimals: value if decimals is None else round(value, decimals),
    st.fractions(min_value=-3, max_value=3, max_denominator=12),
    st.sampled_from([None, 0, 1, 2]),
)


@given(st.lists(_ROUNDABLE, max_size=12), _ROUNDABLE)
def test_near_values_finds_what_comparing_one_by_one_finds(
    known: list[Fraction], value: Fraction
) -> None:
    from judge_server.comparators.dataflow import NearValues, _near

    index = NearValues((u, k) for k, u in enumerate(known))
    assert index.tags(value) == {k for k, u in enumerate(known) if _near(value, u)}
    assert (value in index) == any(_near(value, u) for u in known)
    assert index.tags(None) == set()
