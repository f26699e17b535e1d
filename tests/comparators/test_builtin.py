"""The built-in judge: the safe evaluator, each check, the comparator, and the benchmark."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge_server.bench import judge as bench
from judge_server.comparators.arithmetic import ArithmeticRefused, evaluate, find_claims
from judge_server.comparators.base import Comparator, Comparison
from judge_server.comparators.builtin import (
    BuiltinComparator,
    Weights,
    assess,
    final_answer,
    preference,
    reference_answer,
    repetition,
    truncation,
)

PROMPT = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day?"
)
WORKED = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n"
    "#### 18"
)
GOOD = (
    "Janet uses 3 + 4 = 7 eggs a day.\n"
    "So she sells 16 - 7 = 9 eggs.\n"
    "She makes 9 * 2 = $18 every day."
)
PLANTED = (
    GOOD.replace("16 - 7 = 9 eggs", "16 - 7 = 8 eggs")
    .replace("9 * 2", "8 * 2")
    .replace("$18", "$16")
)
WRONG_PLAN = (
    "Janet uses 3 + 4 = 7 eggs a day.\n"
    "So she has 16 * 7 = 112 eggs.\n"
    "She makes 112 * 2 = $224 every day."
)


def p(first: str, second: str, *, prompt: str = PROMPT, reference: str | None = None) -> float:
    return BuiltinComparator().compare_sync([Comparison(prompt, first, second, reference)])[0]


# --------------------------------------------------------------------------------------------
# The safe evaluator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("16 - 3 - 4", Fraction(9)),
        ("9 * 2", Fraction(18)),
        ("1/2 * 10", Fraction(5)),
        ("0.1 + 0.2", Fraction(3, 10)),
        ("-(3 - 5) ** 2", Fraction(-4)),
        ("7 // 2 + 7 % 2", Fraction(4)),
        ("2 ** -2", Fraction(1, 4)),
        (".5 * 1e3", Fraction(500)),
    ],
)
def test_evaluate_is_exact(expression: str, value: Fraction) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "x + 1",
        "abs(-3)",
        "(1).real",
        "[1, 2][0]",
        "'a' * 3",
        "3j",
        "True + 1",
        "lambda: 1",
        "1 / 0",
        "2 ** 0.5",
        "2 ** 100",
        "1e999",
        "(10 ** 60) ** 60",
        "1 +" * 200 + "1",
        "(" * 300 + "1" + ")" * 300,
    ],
)
def test_evaluate_refuses(expression: str) -> None:
    with pytest.raises(ArithmeticRefused):
        evaluate(expression)


@pytest.mark.timeout(60)  # a hang guard: computing any of these would never end
def test_evaluate_refuses_huge_powers_at_once() -> None:
    for expression in ("2**10**10", "9**9**9**9", "(10**64)**64", "(2**64)**64 * 3"):
        with pytest.raises(ArithmeticRefused):
            evaluate(expression)
    assert evaluate("10**64 * 10**64") == 10**128  # large but bounded is fine


# --------------------------------------------------------------------------------------------
# Claims in prose


@pytest.mark.parametrize(
    "text",
    [
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.",
        "She makes 9 * 2 = $18 every day",
        "3+4=7 meals",
        "1/2 * 10 = 5",
        "20% of 50 = 10",
        "$1,200 + $300 = $1,500",
        "It takes 2 x 0.5 = 1.0 bolts",
        "12 × 3 = 36",
        "4 cups * 2 = 8 cups",
        "10/3 = 3.33 each",
        "7 / 3 = 2.3333333333333335",
        "2 + 3 = 5 * 2 = 10",
        "13 = 16 - 3",
        "10/50 = 20%",
        "\\frac{10}{4} = 2.5",
    ],
)
def test_correct_claims_verify(text: str) -> None:
    claims = find_claims(text)
    assert claims, text
    assert not any(c.wrong for c in claims), claims


@pytest.mark.parametrize(
    "text",
    ["16 - 3 = 12 eggs", "9 * 2 = $19", "20% of 50 = 15", "130000 * .15 = 195,000", "2+2=5"],
)
def test_wrong_claims_are_caught(text: str) -> None:
    assert [c.wrong for c in find_claims(text)] == [True]


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("16 - 3 - 4 = 9. 9 * 2 = 20", [False, True]),
        ("16 - 3 - 4 = 9 eggs. 9 * 2 = 20 dollars, so 18.", [False, True]),
        ("It costs 2.5 + 1.5 = 4 dollars. Then 4 * 2 = 8.", [False, False]),
    ],
)
def test_claims_of_several_sentences_on_one_line_are_each_checked(text, wrong) -> None:
    assert [c.wrong for c in find_claims(text)] == wrong


@pytest.mark.parametrize(
    "text",
    [
        "2x + 3 = 7",  # algebra, not arithmetic
        "Total - 3 = 7",
        "x*3 + 4 = 10",
        "3:30 + 2 = 5:30",  # times of day
        "1/2 hour = 30 minutes",  # a conversion
        "100 - 20% = 80",  # 20% of what?
        "9 * 2 = 18 + 2 more eggs",
        "3 million * 2 = 6 million",
        "if a == b + 1",
        "x += 3",
    ],
)
def test_ambiguous_equations_are_not_judged(text: str) -> None:
    assert not any(c.wrong for c in find_claims(text))


# --------------------------------------------------------------------------------------------
# Final answers


@pytest.mark.parametrize(
    ("trace", "value"),
    [
        ("She sells 9 eggs.\nA: 26", 26),
        ("So 9 * 2 = 18\n#### 18", 18),
        ("The answer is 26.", 26),
        ("Thus the total is $\\boxed{1,200}$.", 1200),
        ("**Final answer:** 3/4", Fraction(3, 4)),
        ("She sells 9 eggs.\nShe makes 9 * 2 = $18 every day", 18),
        ("She can run a total of 30 + 20 = 50 miles in 7 hours.", 50),
        ("The candle will be 8 cm shorter from 1:00 to 5:00.", 8),
    ],
)
def test_final_answer(trace: str, value: Fraction | int) -> None:
    answer = final_answer(trace)
    assert answer is not None and answer.value == value


def test_final_answer_of_a_trace_without_numbers() -> None:
    assert final_answer("I do not know.") is None


@pytest.mark.parametrize(
    ("reference", "value"),
    [(WORKED, 18), ("She makes $18.\nA: 18", 18), ("84", 84), ("$1,200", 1200), ("3/4 cup", 0.75)],
)
def test_reference_answer(reference: str, value: float) -> None:
    answer = reference_answer(reference)
    assert answer is not None and answer.value == Fraction(value)


def test_a_contradicted_final_answer_loses() -> None:
    wrong = assess(WRONG_PLAN, prompt=PROMPT, reference="18")
    right = assess(GOOD, prompt=PROMPT, reference="18")
    assert wrong.matches_reference is False and right.matches_reference is True
    assert p(GOOD, WRONG_PLAN, reference="18") > 0.95
    assert assess(GOOD, prompt=PROMPT).matches_reference is None  # no reference, no verdict


def test_rounded_final_answers_match() -> None:
    assert assess("10 / 3 = 3.33", reference="10/3").matches_reference is True
    assert assess("So 18.4", reference="18").matches_reference is False


# --------------------------------------------------------------------------------------------
# Reference coverage


def test_reference_steps_are_matched_by_dataflow_not_by_numbers_written() -> None:
    assert assess(GOOD, prompt=PROMPT, reference=WORKED).reference_steps == 1.0
    # The reference's numbers listed, or written beside a wrong plan, reach no step.
    listed = assess("16 3 4 9 2 18", prompt=PROMPT, reference=WORKED)
    assert listed.reference_steps == 0.0
    beside = assess("We need 9 and 18. 16 * 2 = 32", prompt=PROMPT, reference=WORKED)
    assert beside.reference_steps == 0.0
    # One slip carried forward still follows the plan: 8 * 2 combines the same quantities.
    assert assess(PLANTED, prompt=PROMPT, reference=WORKED).reference_steps == 1.0
    assert assess(WRONG_PLAN, prompt=PROMPT, reference=WORKED).reference_steps == 0.0
    assert assess(GOOD, prompt=PROMPT, reference="18").reference_steps is None  # no worked ref


def test_number_words_are_given_quantities() -> None:
    # "three" and "four" are the problem's quantities: GOOD uses all four of them.
    assessed = assess(GOOD, prompt=PROMPT)
    assert assessed.problem_coverage == 1.0 and not assessed.unsupported_numbers
    misread = "Janet uses 11 + 4 = 15 eggs a day.\nSo she sells 16 - 15 = 1 egg.\n1 * 2 = $2."
    assessed = assess(misread, prompt=PROMPT)
    assert assessed.problem_coverage is not None  # a prompt was given
    assert assessed.problem_coverage < 1.0 and assessed.unsupported_numbers == (11,)


SLIPPED = GOOD.replace("16 - 7 = 9 eggs", "16 - 7 = 8 eggs")  # one slip, not carried forward
GAMES = {
    "padding": GOOD + "\n2 * 5 = 10\n16 + 3 = 19\n4 * 4 = 16",
    "counting": "1 + 1 = 2\n2 + 1 = 3\n3 + 1 = 4\n4 + 1 = 5",
    "numbers listed": "16, 3, 4 and 2. So 18.",
    "inputs restated": "Janet has 16 eggs. She eats 3 and bakes 4. Eggs sell at $2.\n" + GOOD,
    "unchecked lines": "35 = 6\n12 = 4\nA: 18",
    "no idea": "I have no idea.",
    "early stop": "Janet uses 3 + 4 = 7 eggs a day.",
    "contradicting answer": GOOD + "\nA: 20",
}


@pytest.mark.parametrize("game", sorted(GAMES))
@pytest.mark.parametrize("reference", [None, "18", WORKED])
def test_games_lose_to_the_genuine_solution(game: str, reference: str | None) -> None:
    assert p(GOOD, GAMES[game], reference=reference) > 0.6, assess(GAMES[game], prompt=PROMPT)


@pytest.mark.parametrize("game", ["unchecked lines", "no idea", "numbers listed", "counting"])
def test_nothing_checkable_never_beats_an_honest_attempt_with_one_slip(game: str) -> None:
    for reference in (None, WORKED):
        assert p(SLIPPED, GAMES[game], reference=reference) > 0.5


def test_an_answer_that_the_work_does_not_give_loses_without_a_reference() -> None:
    contradicted = assess(GOOD + "\nA: 20", prompt=PROMPT)
    early = assess(GOOD + "\nA: 9", prompt=PROMPT)  # an earlier result, not the last
    assert contradicted.answer_derived is False
    assert (
        early.answer_derived is True and early.score < assess(GOOD + "\nA: 18", prompt=PROMPT).score
    )
    assert assess(GOOD + "\nA: 18", prompt=PROMPT).answer_derived is True


def test_a_whole_number_answer_may_round_the_last_result() -> None:
    trace = "Each gets 800 / 3 = 266.67 cups.\nA: 266"
    assert assess(trace, prompt="800 cups for 3 meals").answer_derived is True


# --------------------------------------------------------------------------------------------
# Degenerate traces


def test_repetition_loop_is_penalised() -> None:
    loop = GOOD + "\n" + "Then she sells 9 eggs at $2 each so she makes more.\n" * 40
    assessed = assess(loop, prompt=PROMPT)
    assert assessed.looping and assessed.repetition > 0.9
    assert repetition(GOOD) < 0.2
    assert p(GOOD, loop) > 0.9


def test_runaway_number_is_a_loop() -> None:
    assert assess("So each gets 200 / 11 = 18." + "18" * 200, prompt=PROMPT).looping


@pytest.mark.parametrize(
    "ending",
    ["She makes 9 * 2 =", "She makes 9 * 2 = $", "She sells them for an", "She makes (9 * 2"],
)
def test_truncated_traces(ending: str) -> None:
    trace = "Janet uses 3 + 4 = 7 eggs a day.\n" + ending
    assert truncation(trace) is not None
    assert assess(trace, prompt=PROMPT).truncated
    assert p(GOOD, trace) > 0.5


def test_finished_traces_are_not_truncated() -> None:
    assert truncation(GOOD) is None
    assert truncation("She has 5 apples left") is None  # no full stop is fine
    assert truncation("f(x) = [1, 2] and {a}") is None


@pytest.mark.parametrize("empty", ["", "   ", "\n\t\n"])
def test_empty_traces_lose(empty: str) -> None:
    assert assess(empty, prompt=PROMPT).empty
    assert p(GOOD, empty) > 0.99
    assert p(empty, "") == 0.5


# --------------------------------------------------------------------------------------------
# The comparator


def test_prefers_the_correct_trace_over_a_planted_arithmetic_error() -> None:
    planted = GOOD.replace("16 - 7 = 9", "16 - 7 = 8")  # the same trace, one result changed
    assert assess(planted, prompt=PROMPT).claims_wrong == 1
    assert p(GOOD, planted) > 0.75
    assert p(planted, GOOD) < 0.25
    for reference in (None, "18", WORKED):
        assert p(GOOD, planted, reference=reference) > 0.5
        assert p(GOOD, PLANTED, reference=reference) > 0.5


def test_identical_traces_tie() -> None:
    for trace in (GOOD, PLANTED, "", "🙂"):
        assert p(trace, trace) == 0.5
        assert p(trace, trace, reference=WORKED) == 0.5


TRACES = st.one_of(
    st.sampled_from([GOOD, PLANTED, WRONG_PLAN, "", "A: 18", "16 - 3 = 12\n####", "9 * 2 = 18"]),
    st.text(max_size=300),
    st.text(alphabet="0123456789 +-*/=()$%.,\nxA:#", max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(a=TRACES, b=TRACES, reference=st.sampled_from([None, "18", WORKED]))
def test_preference_is_exactly_antisymmetric(a: str, b: str, reference: str | None) -> None:
    p_ab, p_ba = BuiltinComparator(cache_size=0).compare_sync(
        [Comparison(PROMPT, a, b, reference), Comparison(PROMPT, b, a, reference)]
    )
    assert 0.0 <= p_ab <= 1.0
    assert p_ab == 1.0 - p_ba
    assert p_ba == 1.0 - p_ab


@pytest.mark.parametrize("margin", [0.0, 1e-12, 0.3, 1.5, 37.0, 800.0, float("inf")])
def test_preference_is_a_sigmoid_in_the_unit_interval(margin: float) -> None:
    up, down = preference(margin, 0.0), preference(0.0, margin)
    assert 0.0 <= down <= 0.5 <= up <= 1.0
    assert up == 1.0 - down and down == 1.0 - up
    if margin < 30:
        assert up == pytest.approx(1.0 / (1.0 + 2.718281828459045**-margin), abs=1e-15)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "blob",
    [
        ("Step: 12 * 3 = 36 apples. ünïcødé ∑ 🙂 \u202e\u0000\ufeff " * 9000)[: 256 * 1024],
        "(" * (256 * 1024),
        "1=" * (128 * 1024),
        "9" * (256 * 1024) + " * 9 = 1",
        "\\boxed{" * 37000,
        "\U0001f600" * (64 * 1024),
        "".join(f"{k} + {k + 7} = {2 * k + 7}\n" for k in range(20000))[: 256 * 1024],
        " ".join(str(k * 7919 % 10**6) for k in range(40000))[: 256 * 1024],
    ],
    ids=["prose", "parens", "equals", "digits", "boxed", "emoji", "lines", "numbers"],
)
@pytest.mark.timeout(120)  # a hang guard (a quadratic scan of 256 KB), not a speed gate
def test_odd_and_huge_inputs_are_judged(blob: str) -> None:
    # Their speed is a benchmark's business: ``pytest tests/comparators/test_builtin.py -k
    # odd_and_huge --durations=0`` prints each (README, Benchmarks).
    assert 0.0 <= p(blob, GOOD, reference=WORKED) <= 1.0


def test_a_trace_past_the_read_limit_is_judged_on_its_beginning_and_end() -> None:
    from judge_server.comparators.builtin import MAX_READ_CHARS, readable

    head = "Janet uses 3 + 4 = 7 eggs a day.\n"
    tail = "So she sells 16 - 7 = 9 eggs.\nShe makes 9 * 2 = $18 every day.\nA: 18"
    counting = "".join(f"Basket {k} holds some eggs.\n" for k in range(MAX_READ_CHARS // 20))
    long = head + counting + "She thinks 9 * 2 = 19 for a moment.\n" + counting + tail
    read = readable(long)
    assert len(read) <= MAX_READ_CHARS < len(long)
    assert read.startswith(head) and read.endswith(tail)
    assert set(read.splitlines()) <= set(long.splitlines())  # whole lines only
    judged = assess(long, prompt=PROMPT, reference=WORKED)
    assert judged == assess(read, prompt=PROMPT, reference=WORKED)
    assert judged.claims_wrong == 0  # the slip in the middle is not read
    assert judged.final_answer is not None and judged.final_answer.text == "18"
    # The prompt and the reference are read within the same limit.
    assert assess(GOOD, prompt=long, reference=long) == assess(
        GOOD, prompt=read, reference=read
    )
    line = "7" * (2 * MAX_READ_CHARS)  # no line break: its two ends
    assert readable(line) == "7" * (MAX_READ_CHARS // 2) + "\n" + "7" * (MAX_READ_CHARS // 2)
    assert readable(GOOD) == GOOD


async def test_compare_batches_in_order_through_a_thread() -> None:
    judge = BuiltinComparator(thread_threshold=2)
    batch = [Comparison(PROMPT, GOOD, PLANTED), Comparison(PROMPT, PLANTED, GOOD)] * 10
    assert judge.name == "builtin" and isinstance(judge, Comparator)
    answers = await judge.compare(batch)
    assert answers == BuiltinComparator(thread_threshold=None).compare_sync(batch)
    assert answers[0] > 0.5 > answers[1]
    assert await judge.compare([]) == []
    assert await judge.check_health()
    await judge.aclose()


def test_options_are_keyword_only_and_checked() -> None:
    with pytest.raises(TypeError):
        BuiltinComparator(2.0)  # type: ignore[call-arg]  # keyword-only
    with pytest.raises(ValueError):
        BuiltinComparator(temperature=0.0)
    sharp = BuiltinComparator(temperature=0.1).compare_sync([Comparison(PROMPT, GOOD, PLANTED)])
    soft = BuiltinComparator(temperature=10).compare_sync([Comparison(PROMPT, GOOD, PLANTED)])
    assert sharp[0] > soft[0] > 0.5
    no_arithmetic = BuiltinComparator(weights=Weights(wrong_step=0.0))
    assert no_arithmetic.compare_sync([Comparison(PROMPT, GOOD, PLANTED)]) == [0.5]


def test_assessment_explains_itself() -> None:
    assessed = assess(PLANTED, prompt=PROMPT, reference=WORKED)
    text = assessed.explain()
    assert "wrong steps" in text and "16 - 7 = 8" in text
    assert assessed.score == pytest.approx(sum(v for _, v in assessed.contributions))


# --------------------------------------------------------------------------------------------
# The benchmark


class _FirstWins(Comparator):
    """Always prefers the trace shown first: all position bias, no judgement."""

    name = "first-wins"

    async def compare(self, comparisons):
        return [0.9 for _ in comparisons]


async def test_benchmark_metrics_on_a_biased_judge(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "q", "trace_a": "1 + 1 = 2", "trace_b": "1 + 1 = 3", "better": "a"},
        {"prompt": "q", "reference": "2", "trace_a": "x", "trace_b": "y", "better": "b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = bench.load_pairs_jsonl(path)
    assert [pair.better for pair in pairs] == ["a", "b"] and pairs[1].reference == "2"

    biased = await bench.evaluate(_FirstWins(), pairs, batch_size=1, progress=False)
    assert biased["agreement"] == 0.5  # both orders average to a tie: half credit each
    assert biased["agreement_first_order_only"] == 0.5  # right once, wrong once
    assert biased["position_consistency"] == 0.0
    assert biased["n_pairs"] == 2 and biased["comparisons_per_s"] > 0

    fair = await bench.evaluate(BuiltinComparator(), pairs[:1], progress=False)
    assert fair["agreement"] == 1.0 and fair["position_consistency"] == 1.0
    assert "agreement" in bench.format_report(fair)


def test_load_pairs_jsonl_names_the_bad_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q", "trace_a": "a", "trace_b": "b", "better": "c"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        bench.load_pairs_jsonl(path)


def test_gsm8k_trace_preparation() -> None:
    text = "She has 16 - 3 = <<16-3=13>>13 eggs\nShe makes 13 * 2 = $<<13*2=26>>26\nA: 26"
    stripped = bench.remove_final_answer_line(bench.strip_calculator_annotations(text))
    assert stripped == "She has 16 - 3 = 13 eggs\nShe makes 13 * 2 = $26"
    assert bench.strip_calculator_annotations("so 4 * 2 = <<4*2") == "so 4 * 2 = "
    assert bench.remove_final_answer_line("x\n#### 18\n") == "x"


@pytest.fixture(scope="module")
def gsm8k() -> None:
    if not bench.DEFAULT_GSM8K_PATH.is_file():
        pytest.skip(f"GSM8K model solutions not found at {bench.DEFAULT_GSM8K_PATH.resolve()}")


@pytest.mark.parametrize(
    ("reference", "floor"), [("worked", 0.90), ("answer", 0.90), ("none", 0.55)]
)
async def test_gsm8k_agreement(
    gsm8k, reference: Literal["worked", "answer", "none"], floor: float
) -> None:
    pairs = bench.gsm8k_pairs(reference=reference)
    assert len(pairs) == 2429
    assert not any("<<" in pair.trace_a or "\nA:" in pair.trace_a for pair in pairs)
    result = await bench.evaluate(BuiltinComparator(), pairs, progress=False)
    assert result["agreement"] >= floor, bench.format_report(result)
    assert result["position_consistency"] == 1.0


def test_a_fraction_answer_at_the_end_of_a_sentence() -> None:
    for text, value in (("The answer is 1/2.", Fraction(1, 2)), ("A: 3/4.", Fraction(3, 4))):
        answer = final_answer(text)
        assert answer is not None and answer.value == value, text


def test_the_assessment_cache_keeps_digests_not_texts():
    """A cached assessment is found again, and the cache holds a short key, not the texts
    (4,096 entries of 256 KiB traces, prompts and references would be GiBs)."""
    judge = BuiltinComparator()
    long_trace = GOOD + "\n" + "Let me check again.\n" * 10_000
    first = judge.assess(long_trace, prompt=PROMPT, reference=None)
    assert judge.assess(long_trace, prompt=PROMPT, reference=None) is first
    assert judge.assess(long_trace, prompt=PROMPT, reference="") is not first
    assert all(isinstance(k, bytes) and len(k) == 16 for k in judge._cache)
