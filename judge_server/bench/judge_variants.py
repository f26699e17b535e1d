"""Planted errors: variants of a real GSM8K solution that a judge must rank below the original.

The calculations are found and changed by :mod:`.calculations`; a variant and its original
differ only in the planted error and what follows from it.

Variants (each a pure function of the annotated solution, the question and a seeded
``random.Random``; each raises :class:`VariantRefused` with the reason when it cannot be built
cleanly):

``slip``
    One calculation's result is wrong (``9 * 2 = 19``); later calculations are right given it.
``slip_in_words``
    A slip with the arithmetic of both traces written in words (``9 times 2 is 19``): a
    reader still sees it, a check that only parses ``a * b = c`` does not.
``misread``
    One operand taken from the question is replaced by another number (another of the
    question's numbers when it has one); every calculation is right, the plan is wrong.
``operator_swap``
    One operator swapped (``+`` for ``-``, ``/`` for ``*``, and back); every calculation right.
``truncation``
    The solution cut at the end of a line or inside one, before its final answer.
``padding``
    Three to five true equations that nothing uses inserted between the lines.
``restated``
    The question's statements (not its question) restated, and nothing else.
``answer_contradicts``
    The body unchanged, a final ``A:`` line that contradicts it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from fractions import Fraction

from judge_server.comparators.arithmetic import find_claims

from .calculations import (
    NUMBER,
    Change,
    VariantRefused,
    calculations,
    carry_forward,
    format_like,
    values_in,
    written_numbers,
)
from .judge import strip_calculator_annotations

PLANTED_KINDS = (
    "slip",
    "slip_in_words",
    "misread",
    "operator_swap",
    "truncation",
    "padding",
    "restated",
    "answer_contradicts",
)
# --------------------------------------------------------------------------------------------
# The variants


_ANSWER_LINE = re.compile(r"^[ \t]*A:[^\n]*$", re.MULTILINE)
_SWAPS = {"+": "-", "-": "+", "*": "/", "x": "/", "X": "/", "×": "/", "/": "*", "÷": "*"}


def final_value(trace: str) -> Fraction | None:
    """The value on the trace's last ``A:`` line, or None."""
    lines = _ANSWER_LINE.findall(trace)
    numbers = written_numbers(lines[-1]) if lines else []
    if not numbers:
        return None
    negative = re.search(r"-\s*\$?\s*\Z", lines[-1][: numbers[0].start])
    return -numbers[0].value if negative else numbers[0].value


def split_answer(trace: str) -> tuple[list[str], str | None]:
    """The trace's body lines, as written, and its final ``A:`` line, if any (blank lines at
    the end are dropped)."""
    lines = trace.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and _ANSWER_LINE.fullmatch(lines[-1]):
        return lines[:-1], lines[-1]
    return lines, None


def _changed(solution: str, question: str, changes: list[Change], check) -> str:
    """The first change that builds a variant passing ``check``; refused when none does."""
    clean = strip_calculator_annotations(solution)
    before = final_value(clean)
    if before is None:
        raise VariantRefused("no final answer line")
    reasons = []
    for change in changes:
        try:
            variant = carry_forward(solution, question, change)
        except VariantRefused as exc:
            reasons.append(str(exc))
            continue
        after = final_value(variant)
        if after is None or after == before:
            reasons.append("the final answer does not change")
        elif not check(clean, variant):
            reasons.append("the claims found are not as planted")
        else:
            return variant
    raise VariantRefused(max(reasons, key=reasons.count) if reasons else "nothing to change")


def _wrong(text: str) -> int:
    return sum(claim.wrong for claim in find_claims(text))


def slip(solution: str, question: str, rng: random.Random) -> str:
    """One result off (by 1, 2 or 10); later calculations right given it."""
    changes = []
    for step in calculations(solution):
        for delta in rng.sample([1, 2, -1, -2, 10, -10], 6):
            if step.result.value + delta > 0:
                changes.append(Change(step.result.start, step.result.value + delta))
    rng.shuffle(changes)
    return _changed(solution, question, changes, lambda c, v: _wrong(v) == _wrong(c) + 1)


_OPERATOR_WORDS = {"+": "plus", "-": "minus", "*": "times", "x": "times", "X": "times",
                   "×": "times", "/": "divided by", "÷": "divided by"}
_BETWEEN_NUMBERS = re.compile(r"(?<=[\d)])\s*([-+*/xX×÷])\s*(?=[$€(]?\.?\d)")
_EQUALS = re.compile(r"\s*=\s*")


def in_words(trace: str) -> str:
    """The trace's arithmetic in words: ``9 * 2 = 18`` becomes ``9 times 2 is 18``."""
    spelled = _BETWEEN_NUMBERS.sub(lambda m: f" {_OPERATOR_WORDS[m[1]]} ", trace)
    return _EQUALS.sub(" is ", spelled)


def slip_in_words(solution: str, question: str, rng: random.Random) -> str:
    """:func:`slip`, its arithmetic in words (pair it with ``in_words`` of the clean trace)."""
    return in_words(slip(solution, question, rng))


def misread(solution: str, question: str, rng: random.Random) -> str:
    """One operand the question gives replaced by another of its numbers, or by one near it."""
    steps = calculations(solution)
    given = sorted(values_in(question, words=False))
    results = [s.result for s in steps]
    changes = []
    for step in steps:
        for operand in step.operands:
            derived = any(r.end <= operand.start and r.value == operand.value for r in results)
            if derived or operand.value not in given:
                continue
            others = [v for v in given if v != operand.value]
            near = [operand.value + d for d in (1, 2, -1, -2)] + [operand.value * 2]
            for value in rng.sample(others, len(others)) + rng.sample(near, len(near)):
                if value > 0 and value != operand.value:
                    changes.append(Change(operand.start, value))
    rng.shuffle(changes)
    changes.sort(key=lambda c: c.value not in given)  # another given number first
    return _changed(solution, question, changes, lambda c, v: _wrong(v) == _wrong(c))


def operator_swap(solution: str, question: str, rng: random.Random) -> str:
    """One operator swapped (+ and -, * and /); every calculation right given it."""
    changes = [
        Change(start, operator=_SWAPS[symbol])
        for step in calculations(solution)
        for _, start, symbol in step.operators
    ]
    rng.shuffle(changes)
    return _changed(solution, question, changes, lambda c, v: _wrong(v) == _wrong(c))


def truncation(solution: str, question: str, rng: random.Random) -> str:
    """Cut the solution at the end of a line, or inside one at a space, before its answer."""
    body, _ = split_answer(strip_calculator_annotations(solution))
    if len(body) < 2:
        raise VariantRefused("a one-line solution")
    if rng.random() < 0.5:
        return "\n".join(body[: rng.randrange(1, len(body))])
    line = rng.randrange(len(body))
    words = body[line].split(" ")
    if len(words) < 3:
        return "\n".join(body[: max(line, 1)])
    cut = " ".join(words[: rng.randrange(1, len(words) - 1)])
    return "\n".join([*body[:line], cut])


def padding(
    solution: str, question: str, rng: random.Random, *, reference: str = "", lines: int = 0
) -> str:
    """Insert 3 to 5 (or ``lines``) true equations from the question's numbers that nothing
    uses; their results appear nowhere in the solution, the question or ``reference``."""
    clean = strip_calculator_annotations(solution)
    body, answer = split_answer(clean)
    facts = filler(question, rng, count=lines or rng.randint(3, 5),
                   avoid=values_in(clean) | values_in(question) | values_in(reference))
    for fact in facts:
        body.insert(rng.randrange(len(body) + 1), fact)
    return "\n".join(body + ([answer] if answer else []))


def filler(question: str, rng: random.Random, *, count: int, avoid: set[Fraction]) -> list[str]:
    """``count`` true equations ``a + b = c``, ``a * b = c``, ``a - b = c`` with distinct results
    not in ``avoid``: on the question's whole numbers first, then on 2..12."""
    given = sorted(v for v in values_in(question, words=False) if v.denominator == 1 and v > 0)
    chosen: dict[Fraction, str] = {}
    for pool in (given, [Fraction(v) for v in range(2, 13)]):
        candidates = [
            (f"{a} {symbol} {b} = {value}", value)
            for a in pool
            for b in pool
            for symbol, value in (("+", a + b), ("*", a * b), ("-", a - b))
            if 0 < value < 10**7 and value not in avoid and (a != b or symbol != "-")
        ]
        rng.shuffle(candidates)
        for text, value in candidates:
            if len(chosen) == count:
                return list(chosen.values())
            chosen.setdefault(value, text)
    if len(chosen) == count:
        return list(chosen.values())
    raise VariantRefused("too few true equations with fresh results")


def restated(solution: str, question: str, rng: random.Random) -> str:
    """The question's statements (its sentences that are not questions), and nothing else."""
    sentences = re.split(r"(?<=[.?!])\s+", question.strip())
    statements = [s for s in sentences if not s.endswith("?") and NUMBER.search(s)]
    if not statements:
        raise VariantRefused("a question without statements of numbers")
    return " ".join(statements)


def answer_contradicts(solution: str, question: str, rng: random.Random, *,
                       avoid: frozenset[Fraction] = frozenset()) -> str:
    """The body unchanged; a final ``A:`` line stating another value (an earlier result of
    the solution, else the answer plus or minus 1 to 3) that is not in ``avoid``."""
    clean = strip_calculator_annotations(solution)
    body, answer = split_answer(clean)
    stated = final_value(clean)
    if answer is None or stated is None or not body:
        raise VariantRefused("no final answer line")
    earlier = [s.result.value for s in _try(calculations, solution) or []]
    near = [stated + d for d in rng.sample([1, 2, 3, -1, -2, -3], 6)]
    for value in rng.sample(earlier, len(earlier)) + near:
        if value != stated and value > 0 and value not in avoid:
            like = written_numbers(answer)[0].text
            return "\n".join([*body, f"A: {format_like(value, like)}"])
    raise VariantRefused("no contradicting value")


def _try(function: Callable, *args):
    try:
        return function(*args)
    except VariantRefused:
        return None


__all__ = [
    "PLANTED_KINDS",
    "VariantRefused",
    "answer_contradicts",
    "filler",
    "final_value",
    "in_words",
    "misread",
    "operator_swap",
    "padding",
    "restated",
    "slip",
    "slip_in_words",
    "split_answer",
    "truncation",
]
