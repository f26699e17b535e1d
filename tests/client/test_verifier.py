"""The one answer verifier (trainer_client.verifier): final answers, equivalence, threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys

import pytest

from trainer_client.verifier import final_answer, verify_answer


@pytest.mark.parametrize(
    ("response", "label", "reward"),
    [
        # Issue 13. "It's 2/4" against 0.5: the response's last (and only) expression is 2/4,
        # which is 0.5; the old server verifier read the 4 alone. Right: 1.
        ("It's 2/4", "0.5", 1.0),
        ("It's 2/4", 0.5, 1.0),
        # "50%" against 0.5: fifty percent is the number 0.5; the old client verifier dropped
        # the % and read 50. Right: 1 (math-verify's reading, and the old server's).
        ("50%", "0.5", 1.0),
        ("\\boxed{50\\%}", "0.5", 1.0),
        # ... and against 50, the label of a question that asks for a percentage: also 1.
        ("50%", "50", 1.0),
        ("50%", "0.4", 0.0),
    ],
)
def test_the_issues_cases(response, label, reward):
    assert verify_answer(response, label) == reward


@pytest.mark.parametrize(
    ("response", "label", "reward"),
    [
        # fractions
        ("The answer is 0.5.", "1/2", 1.0),
        ("#### 3/4", "0.75", 1.0),
        ("3/4 cup", "0.75", 1.0),
        ("The answer is 2/3.", "0.67", 0.0),  # two decimals are not 2/3
        ("0.333333", "1/3", 1.0),  # six are (math-verify's float rounding)
        # LaTeX
        ("So \\boxed{\\frac{3}{4}}.", "0.75", 1.0),
        ("\\boxed{\\dfrac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", 1.0),
        ("The answer is $-\\frac{3}{4}$.", "-0.75", 1.0),
        ("\\boxed{2^{10}}", "1024", 1.0),
        ("\\boxed{x+1}", "1+x", 1.0),
        ("\\boxed{(1,2)}", "(1, 2)", 1.0),
        ("\\boxed{x+2}", "x+1", 0.0),
        # thousands separators
        ("\\boxed{1,200}", 1200, 1.0),
        ("#### 1,000,000", "1000000", 1.0),
        ("It costs 1{,}200 in all.", "1200", 1.0),
        # units and currency
        ("It costs $1,200 in all.", "1200", 1.0),
        ("She makes \\$18.", "18", 1.0),
        ("18 dollars.", "$18", 1.0),
        ("The answer is 18 eggs.", "18", 1.0),
        ("\\boxed{18 \\text{ eggs}}", "18", 1.0),
        ("€5", "5", 1.0),
        # negative numbers
        ("The answer is -7.", "-7", 1.0),
        ("\\boxed{-3}", "3", 0.0),
        # text answers
        ("Answer: Paris", "paris", 1.0),
        ("The answer is (B).", "B", 1.0),
        ("Answer: Paris", "Rome", 0.0),
        ("Answer: eighteen", "18", 0.0),
        # no answer at all, no label
        ("no number here", "18", 0.0),
        ("", "18", 0.0),
        ("The answer is 18.", None, 0.0),
        ("The answer is 18.", "  ", 0.0),
        # a worked label (GSM8K) gives its #### answer
        ("#### 72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),
    ],
)
def test_rewards(response, label, reward):
    assert verify_answer(response, label) == reward


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("9 * 2 = 18. The answer is 18.", "18."),
        ("\\boxed{5} wait, actually the answer is 6", "6"),  # the last commitment
        ("The answer is 5.\nSo \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Work.\n#### 72", "72"),
        ("Work.\nA: 72 eggs", "72 eggs"),
    ],
)
def test_the_final_answer_is_the_last_marked_one(text, answer):
    read = final_answer(text)
    assert read is not None and read.marked and read.text == answer


def test_without_a_marker_the_last_number_answers():
    read = final_answer("16 - 3 - 4 = 9 eggs. 9 * 2 = 18 dollars.")
    assert read is not None and not read.marked and [str(v) for v in read.values] == ["18"]
    assert final_answer("no number here") is None
    label = final_answer("x+1", label=True)
    assert label is not None and label.values  # a short label is the answer itself


@pytest.mark.timeout(120)  # a hang guard, not a speed gate: computing any of these never ends
def test_answers_too_large_to_compute_get_zero_without_computing_them():
    assert verify_answer("\\boxed{9^{9^{9^{9}}}}", "1") == 0.0
    assert verify_answer("Answer: 10^100000000", "1") == 0.0
    assert verify_answer("\\boxed{100000000!}", "1") == 0.0


def test_it_works_off_the_main_thread_and_in_asyncio():
    # math-verify's own timeouts (signal.alarm) would raise off the main thread.
    cases = [("It's 2/4", "0.5"), ("\\boxed{\\frac{3}{4}}", "0.75"), ("50%", "0.5")] * 4
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda c: verify_answer(*c), cases)) == [1.0] * len(cases)

    async def main():
        return await asyncio.gather(*(asyncio.to_thread(verify_answer, *c) for c in cases))

    assert asyncio.run(main()) == [1.0] * len(cases)


def test_a_missing_math_verify_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(ImportError, match=r"reasoning-arena\[verify\]"):
        verify_answer("18", "18")
