"""The judge benchmark suite: its variant builders keep their promises, and the suite runs.

Nothing here asserts a judge's scores (the judge changes); these tests check what the
benchmark claims to measure: a slip is exactly one wrong calculation, a misread or a swapped
operator leaves every calculation right and changes the answer, padding is true, masked traces
hold no answer in any format, and every protocol comes back in every reference mode.
"""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction

import pytest

from judge_server.bench import judge, judge_probes, judge_suite, judge_variants
from judge_server.bench.calculations import (
    NUMBER,
    NUMBER_WORD,
    Change,
    VariantRefused,
    calculations,
    carry_forward,
    format_like,
    number_word_value,
    values_in,
    written_numbers,
)
from judge_server.cli import main
from judge_server.comparators.arithmetic import find_claims, numbers
from judge_server.comparators.base import Comparator
from judge_server.comparators.builtin import BuiltinComparator

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day?"
)
SOLUTION = (
    "Janet eats 3 duck eggs for breakfast and bakes 4 into muffins so 3 + 4 = <<3+4=7>>7 duck "
    "eggs are used\nEach day Janet's ducks lay 16 eggs and she uses 7, 16 - 7 = <<16-7=9>>9 "
    "duck eggs are for sale\nShe sells her eggs for $2 per egg and has 9 available for sale so "
    "2 * 9 = $<<2*9=18>>18 per day\nA: 18"
)
REFERENCE = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\nA: 18"
)
SAMPLE = 40


def wrong(text: str) -> int:
    return sum(claim.wrong for claim in find_claims(text))


# --------------------------------------------------------------------------------------------
# Calculations and carrying a change forward


def test_calculations_are_found_through_their_annotations() -> None:
    steps = calculations(SOLUTION)
    assert [step.result.value for step in steps] == [7, 9, 18]
    assert [[o.value for o in step.operands] for step in steps] == [[3, 4], [16, 7], [2, 9]]
    units = calculations("so 40 cups per chicken * 20 chickens = <<40*20=800>>800 cups")
    assert [o.value for o in units[0].operands] == [40, 20]


def test_a_written_result_that_is_not_computed_is_refused() -> None:
    with pytest.raises(VariantRefused, match="not what its expression computes"):
        calculations("so 130,000*.15 = $<<130000*.15=19500.0>>195,000")


def test_a_slip_is_carried_forward_into_every_later_use() -> None:
    seven = calculations(SOLUTION)[0].result.start
    variant = carry_forward(SOLUTION, QUESTION, Change(seven, Fraction(6)))
    assert "3 + 4 = 6" in variant and "16 - 6 = 10" in variant and "2 * 10 = $20" in variant
    assert "uses 6," in variant and "has 10 available" in variant
    assert variant.endswith("A: 20") and "<<" not in variant
    assert wrong(variant) == 1
    with pytest.raises(VariantRefused, match="question also gives"):  # 2 * 8 = 16, a given
        carry_forward(SOLUTION, QUESTION, Change(seven, Fraction(8)))


def test_format_like_keeps_the_style_of_the_number_it_replaces() -> None:
    assert format_like(Fraction(1300), "1,200") == "1,300"
    assert format_like(Fraction(19), "18.00") == "19.00"
    assert format_like(Fraction(5, 2), "2") == "2.5"
    with pytest.raises(VariantRefused):
        format_like(Fraction(1, 3), "2")
    with pytest.raises(VariantRefused):
        format_like(Fraction(-1), "2")


@pytest.mark.parametrize("seed", range(5))
def test_planted_variants_of_one_solution(seed: int) -> None:
    rng = random.Random(seed)
    clean = judge.strip_calculator_annotations(SOLUTION)
    slip = judge_variants.slip(SOLUTION, QUESTION, rng)
    assert wrong(slip) == 1 and judge_variants.final_value(slip) != 18
    for build in (judge_variants.misread, judge_variants.operator_swap):
        variant = build(SOLUTION, QUESTION, rng)
        assert wrong(variant) == 0 and judge_variants.final_value(variant) != 18
    assert clean.startswith(judge_variants.truncation(SOLUTION, QUESTION, rng))
    contradicts = judge_variants.answer_contradicts(SOLUTION, QUESTION, rng)
    assert contradicts.rsplit("\n", 1)[0] == clean.rsplit("\n", 1)[0]
    assert judge_variants.final_value(contradicts) != 18


# --------------------------------------------------------------------------------------------
# Masking and probes


def test_every_format_of_an_answer_is_masked() -> None:
    text = "18 eggs, $18, 18.0, 18.00, eighteen, 18% and 1,200 but not 180, 1.8 or 118"
    masked = judge_probes.mask_answers(text, {Fraction(18), Fraction(1200)})
    assert masked.count(judge_probes.MASK) == 7
    assert "180, 1.8 or 118" in masked
    assert {Fraction(18), Fraction(1200)}.isdisjoint(values_in(masked))
    percent = judge_probes.mask_answers("0.68 of it, 68%", {Fraction(68)}, question="what %?")
    assert not any(c.isdigit() for c in percent)


def test_padding_lines_are_true_and_fresh() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        padded = judge_variants.padding(SOLUTION, QUESTION, rng, reference=REFERENCE)
        clean = judge.strip_calculator_annotations(SOLUTION)
        added = [line for line in padded.splitlines() if line not in clean.splitlines()]
        assert 3 <= len(added) <= 5 and padded.endswith("A: 18")
        for line in added:
            (claim,) = find_claims(line)
            assert claim.verdict == "exact"
            seen = values_in(clean) | values_in(QUESTION) | values_in(REFERENCE)
            assert claim.claimed not in seen


def test_probes_say_nothing_checkable_or_only_true_things() -> None:
    rng = random.Random(0)
    genuine = judge.strip_calculator_annotations(SOLUTION)
    assert judge_probes.question_numbers(QUESTION, REFERENCE, genuine, rng) == "16, 2"
    assert "18" in judge_probes.reference_numbers(QUESTION, REFERENCE, genuine, rng)
    counting = judge_probes.counting(QUESTION, REFERENCE, genuine, rng)
    assert all(c.verdict == "exact" for c in find_claims(counting))
    uncheckable = judge_probes.uncheckable(QUESTION, REFERENCE, genuine, rng)
    assert uncheckable == "16=9\n2=18"
    assert judge_probes.early_stop(QUESTION, REFERENCE, genuine, rng) == genuine.splitlines()[0]


# --------------------------------------------------------------------------------------------
# The suite on real data


@pytest.fixture(scope="module")
def problems() -> list[judge_suite.Problem]:
    if not judge.DEFAULT_GSM8K_PATH.is_file():
        pytest.skip(f"GSM8K model solutions not found at {judge.DEFAULT_GSM8K_PATH.resolve()}")
    return judge_suite.load_problems(sample=SAMPLE, seed=1)


@pytest.fixture(scope="module")
def protocols(problems) -> dict[str, judge_suite.Protocol]:
    return {p.name: p for p in judge_suite.build_protocols(problems, seed=1)}


def clean_and_variant(pair: judge.LabelledPair) -> tuple[str, str]:
    if pair.better == "a":
        return pair.trace_a, pair.trace_b
    return pair.trace_b, pair.trace_a


def answer_of(protocol: judge_suite.Protocol, k: int, problems) -> Fraction:
    return next(p for p in problems if p.index == protocol.problems[k]).answer_value


@pytest.mark.parametrize("context", ["correct", "wrong"])
def test_a_slip_is_exactly_one_more_wrong_claim(protocols, problems, context) -> None:
    protocol = protocols[f"slip/{context}"]
    assert len(protocol.pairs) >= SAMPLE // 2
    for k, pair in enumerate(protocol.pairs):
        clean, slip = clean_and_variant(pair)
        assert wrong(slip) == wrong(clean) + 1, (clean, slip)
        assert len(find_claims(slip)) == len(find_claims(clean))
        after = judge_variants.final_value(slip)
        assert after not in (judge_variants.final_value(clean), answer_of(protocol, k, problems))
        assert "<<" not in slip and "<<" not in clean


@pytest.mark.parametrize("kind", ["misread", "operator_swap"])
@pytest.mark.parametrize("context", ["correct", "wrong"])
def test_misread_and_swap_keep_every_claim_right_and_change_the_answer(
    protocols, problems, kind, context
) -> None:
    protocol = protocols[f"{kind}/{context}"]
    assert len(protocol.pairs) >= SAMPLE // 2
    for k, pair in enumerate(protocol.pairs):
        clean, variant = clean_and_variant(pair)
        assert wrong(variant) == wrong(clean), (clean, variant)
        after = judge_variants.final_value(variant)
        assert after not in (judge_variants.final_value(clean), answer_of(protocol, k, problems))
        assert len(variant.splitlines()) == len(clean.splitlines())


@pytest.mark.parametrize("context", ["correct", "wrong"])
def test_a_slip_in_words_differs_from_its_clean_twin_in_numbers_only(protocols, context) -> None:
    spelled = judge_variants.in_words("so 9 * 2 = $18 and 3x4=12")
    assert spelled == "so 9 times 2 is $18 and 3 times 4 is 12"
    protocol = protocols[f"slip_in_words/{context}"]
    assert len(protocol.pairs) >= SAMPLE // 2
    for pair in protocol.pairs:
        clean, slip = clean_and_variant(pair)
        assert "=" not in clean and "=" not in slip and clean != slip
        assert re.sub(r"[\d,.]+", "#", clean) == re.sub(r"[\d,.]+", "#", slip)


@pytest.mark.parametrize("context", ["correct", "wrong"])
def test_structural_variants(protocols, problems, context) -> None:
    for pair in protocols[f"truncation/{context}"].pairs:
        clean, cut = clean_and_variant(pair)
        assert clean.startswith(cut) and len(cut) < len(clean) and "\nA:" not in cut
    for pair in protocols[f"padding/{context}"].pairs:
        clean, padded = clean_and_variant(pair)
        added = [line for line in padded.splitlines() if line not in clean.splitlines()]
        assert 3 <= len(added) <= 5
        assert all(c.verdict == "exact" for line in added for c in find_claims(line))
        assert wrong(padded) == wrong(clean)
    for pair in protocols[f"restated/{context}"].pairs:
        _, restated = clean_and_variant(pair)
        assert restated in pair.prompt.replace("  ", " ") or all(
            sentence in pair.prompt for sentence in restated.split(". ")
        )
    for k, pair in enumerate(protocols[f"answer_contradicts/{context}"].pairs):
        clean, contradicts = clean_and_variant(pair)
        assert contradicts.splitlines()[:-1] == clean.splitlines()[:-1]
        stated = judge_variants.final_value(contradicts)
        protocol = protocols[f"answer_contradicts/{context}"]
        assert stated not in (judge_variants.final_value(clean), answer_of(protocol, k, problems))


def test_masked_traces_hold_no_answer_in_any_format(protocols, problems) -> None:
    masked = protocols["masked"]
    assert len(masked.pairs) == len(protocols["real"].pairs) > 0
    originals = [
        (problem, good, bad)
        for problem in problems
        for good, good_ok in problem.solutions
        for bad, bad_ok in problem.solutions
        if good_ok and not bad_ok
    ]
    for pair, (problem, good, bad) in zip(masked.pairs, originals, strict=True):
        answers = {problem.answer_value}
        for text in (good, bad):
            stated = judge_probes.stated_answer(judge.strip_calculator_annotations(text))
            answers |= {abs(stated)} if stated is not None else set()
        for trace in (pair.trace_a, pair.trace_b):
            assert "<<" not in trace and "\nA:" not in "\n" + trace
            found = {n.value for n in written_numbers(trace)}
            found |= {abs(n.value) for n in numbers(trace)}
            found |= {number_word_value(m[0]) for m in NUMBER_WORD.finditer(trace)}
            assert answers.isdisjoint(found), (answers, trace)


def test_probes_and_dead_groups(protocols) -> None:
    for kind in judge_probes.PROBE_KINDS:
        protocol = protocols[f"probe:{kind}"]
        assert protocol.kind == "probe" and len(protocol.pairs) > 0
    for pair in protocols["probe:counting"].pairs:
        _, probe = clean_and_variant(pair)
        assert wrong(probe) == 0
    for pair in protocols["probe:uncheckable"].pairs:
        _, probe = clean_and_variant(pair)
        for line in probe.splitlines():  # a number "equal" to another, nothing computed
            left, right = line.split("=")
            assert NUMBER.fullmatch(left) and NUMBER.fullmatch(right) and left != right
    for name in ("padding_gain:all_wrong", "stuffing_gain:all_wrong"):
        gain = protocols[name]
        assert len(gain.pairs) == len(gain.baseline) > 0
        for gamed, plain in zip(gain.pairs, gain.baseline, strict=True):
            assert gamed.trace_b == plain.trace_b and gamed.trace_a != plain.trace_a
            assert wrong(gamed.trace_a) == wrong(plain.trace_a)
            added = set(gamed.trace_a.splitlines()) - set(plain.trace_a.splitlines())
            assert len(added) == (1 if name.startswith("stuffing") else 5)
    ties = protocols["ties:all_wrong"]
    assert len(ties.groups) == len(ties.pairs) > 0


class _Undecided(Comparator):
    name = "undecided"

    async def compare(self, comparisons):
        return [0.5 for _ in comparisons]


async def test_the_suite_scores_an_undecided_judge_as_all_ties(problems) -> None:
    result = await judge_suite.run(_Undecided(), problems[:10], seed=1)
    for row in result["rows"]:
        assert row["ties"] == 1.0 or row["n_pairs"] == 0
        if "agreement" in row and row["n_pairs"]:
            assert row["agreement"] == 0.5 and row["wins"] == 0.0
        if "gain" in row:
            assert row["gain"] == 0.0 and row["meets"]


async def test_the_suite_runs_the_builtin_judge_and_returns_every_row(problems) -> None:
    result = await judge_suite.run(BuiltinComparator(), problems[:12], seed=1)
    names = [p.name for p in judge_suite.build_protocols(problems[:12], seed=1)]
    expected = {(name, mode) for name in names for mode in judge.REFERENCE_MODES}
    assert {(row["protocol"], row["reference"]) for row in result["rows"]} == expected
    for row in result["rows"]:
        for key in ("agreement", "ties", "wins", "all_tie_groups"):
            assert key not in row or row["n_pairs"] == 0 or 0.0 <= row[key] <= 1.0
        assert (row["meets"] is None) == (row["target"] is None or row["n_pairs"] == 0)
    table = judge_suite.format_table(result)
    assert all(name in table for name in names)
    assert set(result["built"]) == set(names)


def test_targets_follow_the_issue() -> None:
    assert judge_suite.target("masked", "worked") == 0.95
    assert judge_suite.target("masked", "none") is None
    assert judge_suite.target("slip/wrong", "none") == 0.90
    assert judge_suite.target("misread/correct", "worked") == 0.95
    assert judge_suite.target("misread/correct", "none") is None
    assert judge_suite.target("probe:counting", "worked") == 0.95
    assert judge_suite.target("real", "worked") is None
    assert judge_suite.target("padding_gain:all_wrong", "none") == 0.0
    assert judge_suite.target("stuffing_gain:all_wrong", "worked") == 0.0
    assert judge_suite.target("slip_in_words/wrong", "none") == 0.90


def test_the_command_line_runs_the_suite_on_a_sample(problems, capsys) -> None:
    assert main(["bench", "judge", "--sample", "4", "--reference", "none", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_problems"] == 4 and result["sample"] == 4
    assert {row["reference"] for row in result["rows"]} == {"none"}
