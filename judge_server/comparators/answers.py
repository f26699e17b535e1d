"""Final answers: reading the answer a trace or a reference states, and comparing two answers.

The embedded judge's (:mod:`.builtin`). The verifiable reward is not read here but by the one
verifier, :mod:`trainer_client.verifier` (math-verify). Why by hand here: the judge needs an
answer's exact value and its written precision (a ``Fraction``, its decimals, a percentage) to
weigh it against the numbers a trace computes on its lines, and it reads hundreds of traces
per group, where sympy would cost more than the comparison is worth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .arithmetic import normalise, numbers, same_number


@dataclass(frozen=True, slots=True)
class Answer:
    """A final answer: the text it was read from and, when it is a number, its value."""

    text: str
    value: Fraction | None
    decimals: int = 0
    percent: bool = False
    explicit: bool = True
    """False when no answer was marked and the last number stated was taken instead."""


_BOXED = re.compile(r"\\boxed\s*\{(?P<ans>(?:[^{}]|\{[^{}]*\}){1,200})\}")
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_]*(?:final[ \t]+answer|answer|a)[ \t*_]*[:：][ \t*_]*(?P<ans>[^\n]*\S)",
    re.IGNORECASE | re.MULTILINE,
)
_HASHES = re.compile(r"^[ \t]*####[ \t]*(?P<ans>[^\n]*\S)", re.MULTILINE)
_ANSWER_IS = re.compile(
    r"\b(?:final\s+)?answer\s+(?:is|=)\s*[:：]?\s*(?P<ans>[^\n]*\S)", re.IGNORECASE
)
_FRACTION_ANSWER = re.compile(
    r"(?<![\w.])(?P<sign>-?)\s*(?P<num>\d{1,30})\s*/\s*(?P<den>\d{1,30})(?!\d|\.\d)"
)
_EXACT = 30
"""Decimals recorded for an answer written as a fraction: it is exact."""
_SHORT_REFERENCE_CHARS = 40
_EQUALS = re.compile(r"(?<![=<>!])=(?!=)")


def _boxed(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m["ans"]) for m in _BOXED.finditer(text)]


def _answer_from(text: str, *, explicit: bool) -> Answer:
    """Read a value out of the text of an answer (``$1,200``, ``18 eggs``, ``3/4``, ``25%``)."""
    cleaned = normalise(text.strip())
    fraction = _FRACTION_ANSWER.search(cleaned)
    first = next(numbers(cleaned), None)
    if (
        fraction is not None
        and int(fraction["den"])
        and (first is None or fraction.start() <= first.start)
    ):
        value = Fraction(int(fraction["num"]), int(fraction["den"]))
        if fraction["sign"]:
            value = -value
        return Answer(text.strip(), value, decimals=_EXACT, explicit=explicit)
    if first is None:
        return Answer(text.strip(), None, explicit=explicit)
    return Answer(text.strip(), first.value, first.decimals, first.percent, explicit)


def final_answer(trace: str) -> Answer | None:
    """The trace's final answer: the last one marked, else the last result stated, else None.

    Marked answers: ``\\boxed{...}``, a line ``A: ...``/``Answer: ...``/``Final answer: ...``,
    a line ``#### ...``, or ``the answer is ...``. Without one, the last line that states a
    number gives the answer: the result of its last equation (``... = 50 miles in 7 hours``
    gives 50), or else its last number.
    """
    marked = _boxed(trace)
    for pattern in (_ANSWER_LINE, _HASHES, _ANSWER_IS):
        marked.extend((m.start(), m["ans"]) for m in pattern.finditer(trace))
    if marked:
        _, text = max(marked, key=lambda item: item[0])
        return _answer_from(text, explicit=True)
    for line in reversed(trace.splitlines()):
        stated = list(numbers(line))
        if not stated:
            continue
        # The result of the line's last equation, else its last number.
        equals = [m.end() for m in _EQUALS.finditer(line)]
        after = [n for n in stated if equals and n.start >= equals[-1]]
        last = after[0] if after else stated[-1]
        return Answer(
            line[last.start : last.end].strip(),
            last.value,
            last.decimals,
            last.percent,
            explicit=False,
        )
    return None


def reference_answer(reference: str) -> Answer | None:
    """The final answer of a reference: a marked answer (``#### 18``, ``A: 18``); the
    reference itself when it is a short answer (``"84"``, ``"$18"``, ``"3/4 cup"``); else what
    :func:`final_answer` reads from a worked solution."""
    reference = reference.strip()
    if not reference:
        return None
    answer = final_answer(reference)
    if answer is not None and answer.explicit:
        return answer
    if not is_worked(reference) and "=" not in reference:
        return _answer_from(reference, explicit=True)
    return answer


def is_worked(reference: str) -> bool:
    reference = reference.strip()
    return len(reference) > _SHORT_REFERENCE_CHARS or "\n" in reference


def answers_match(answer: Answer, reference: Answer) -> bool | None:
    """True or False when the two answers can be compared, None when they cannot."""
    if answer.value is None or reference.value is None:
        if answer.value is None and reference.value is None and answer.explicit:
            return _plain(answer.text) == _plain(reference.text)
        return None if reference.value is None else False
    values = [answer.value]
    if answer.percent:
        values.append(answer.value / 100)
    if reference.percent:
        values.append(answer.value * 100)
    return any(
        same_number(v, reference.value, decimals_a=answer.decimals, decimals_b=reference.decimals)
        for v in values
    )


def _plain(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.casefold()).strip()


__all__ = [
    "Answer",
    "answers_match",
    "final_answer",
    "is_worked",
    "reference_answer",
]
