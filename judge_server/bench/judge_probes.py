"""Answers masked, and gaming probes: traces that say nothing and must still lose.

:func:`mask_answers`
    Replaces every number whose value is one of the given answers by :data:`MASK`, in any
    format (``18``, ``$18``, ``18.0``, ``18.00``, ``1,200``, ``18%``, ``eighteen``; for a
    percentage question also ``0.18`` for 18). Intermediate results equal to an answer are
    masked too: that is intended, they would give the answer away.

Gaming probes (each a pure function of the question, the reference solution, a genuine trace
and a seeded ``random.Random``; :class:`VariantRefused` when a probe cannot be built):

``question_numbers``
    The question's numbers listed (``16, 3, 4, 2``), no reasoning.
``reference_numbers``
    The worked reference's numbers listed, its answer included, no reasoning.
``counting``
    True filler: ``1 + 1 = 2``, ``2 + 1 = 3``, ... (eight lines).
``no_idea``
    "I don't know." and the like.
``uncheckable``
    Lines such as ``16=9``: a question's number "equal" to a reference result, nothing that
    an arithmetic check can parse as a calculation.
``early_stop``
    The genuine trace's first line, nothing after it.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from .calculations import (
    NUMBER,
    NUMBER_WORD,
    VariantRefused,
    calculations,
    number_word_value,
    written_numbers,
)
from .judge import strip_calculator_annotations
from .judge_variants import final_value, split_answer

MASK = "[ANSWER]"
"""What a masked number becomes: no digit in it, so no judge can read a number from it."""
PROBE_KINDS = (
    "question_numbers",
    "reference_numbers",
    "counting",
    "no_idea",
    "uncheckable",
    "early_stop",
)
NO_IDEA = (
    "I don't know.",
    "I am not sure how to solve this problem.",
    "Let me think about this step by step.",
    "This problem cannot be solved with the information given.",
)
_PERCENT_QUESTION = re.compile(r"%|\bpercent", re.IGNORECASE)


def mask_answers(text: str, answers: set[Fraction], *, question: str = "") -> str:
    """Replace every number in ``text`` whose value is in ``answers`` by :data:`MASK`.

    Signs are ignored (``-18`` is masked for 18 and 18 for -18). When ``question`` asks about
    a percentage, ``0.18`` is masked for 18 and 18 for 0.18.
    """
    masked = {abs(value) for value in answers}
    if _PERCENT_QUESTION.search(question):
        masked |= {value / 100 for value in masked} | {value * 100 for value in masked}

    def digits(match: re.Match[str]) -> str:
        return MASK if Fraction(match[0].replace(",", "")) in masked else match[0]

    def words(match: re.Match[str]) -> str:
        return MASK if number_word_value(match[0]) in masked else match[0]

    return NUMBER_WORD.sub(words, NUMBER.sub(digits, text))


def stated_answer(trace: str) -> Fraction | None:
    """The trace's answer: the value on its ``A:`` line, else the last number it writes."""
    value = final_value(trace)
    if value is not None:
        return value
    numbers = written_numbers(trace)
    return numbers[-1].value if numbers else None


# --------------------------------------------------------------------------------------------
# Gaming probes


def question_numbers(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """The question's numbers, as written, in order: ``16, 3, 4, 2``."""
    listed = _distinct(n.text for n in written_numbers(question))
    if not listed:
        raise VariantRefused("a question without numbers in digits")
    return ", ".join(listed)


def reference_numbers(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """The worked reference's numbers, its final answer included, in order."""
    listed = _distinct(n.text for n in written_numbers(strip_calculator_annotations(reference)))
    if not listed:
        raise VariantRefused("a reference without numbers")
    return ", ".join(listed)


def counting(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """``1 + 1 = 2`` to ``8 + 1 = 9``: true, checkable, and about nothing."""
    return "\n".join(f"{k} + 1 = {k + 1}" for k in range(1, 9))


def no_idea(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """A sentence that gives up (one of :data:`NO_IDEA`)."""
    return rng.choice(NO_IDEA)


def uncheckable(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """``q=r`` lines pairing the question's numbers with the reference's results: equations
    with nothing computed, so an arithmetic check finds nothing wrong."""
    given = [n.text for n in written_numbers(question)]
    try:
        results = [step.result.text for step in calculations(reference)]
    except VariantRefused:
        results = []
    if not given or not results:
        raise VariantRefused("no numbers to pair")
    lines = [f"{given[k % len(given)]}={result}" for k, result in enumerate(results)]
    lines = [line for line in lines if len(set(map(_value, line.split("=")))) == 2]
    if not lines:
        raise VariantRefused("no numbers to pair")
    return "\n".join(lines)


def _value(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def early_stop(question: str, reference: str, genuine: str, rng: random.Random) -> str:
    """The genuine trace's first line only."""
    body, _ = split_answer(genuine)
    if len(body) < 2:
        raise VariantRefused("a one-line trace")
    return body[0]


def _distinct(texts) -> list[str]:
    seen, out = set(), []
    for text in texts:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


PROBES = {
    "question_numbers": question_numbers,
    "reference_numbers": reference_numbers,
    "counting": counting,
    "no_idea": no_idea,
    "uncheckable": uncheckable,
    "early_stop": early_stop,
}

__all__ = [
    "MASK",
    "NO_IDEA",
    "PROBES",
    "PROBE_KINDS",
    "counting",
    "early_stop",
    "mask_answers",
    "no_idea",
    "question_numbers",
    "reference_numbers",
    "stated_answer",
    "uncheckable",
]
