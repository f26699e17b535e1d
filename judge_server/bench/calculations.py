"""Calculations in GSM8K solutions: find them through their annotations, change one, carry
the change forward.

A GSM8K solution marks every calculation with a calculator annotation,
``16 - 3 - 4 = <<16-3-4=9>>9 duck eggs``. :func:`calculations` uses the annotations to find
each calculation's written operands, operators and result in the text (unit words between
them, ``40 cups per chicken * 20 chickens``, are allowed). :func:`carry_forward` changes one
result, operand or operator and carries the change forward: a later number equal to a changed
result (an operand of a later calculation, a mention in prose, the ``A:`` line) is that result
and takes its new value, and every later calculation is recomputed from its new operands. The
annotations are stripped last, so a variant and its original differ only in the change and
what follows from it. Nothing here guesses: whatever cannot be matched exactly is refused with
:class:`VariantRefused` and a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from judge_server.comparators.arithmetic import ArithmeticRefused, evaluate

from .judge import strip_calculator_annotations

MAX_DECIMALS = 2
"""A recomputed result must be a decimal with at most this many places (else refused)."""


class VariantRefused(ValueError):
    """A variant cannot be built cleanly from this solution; the message says why."""


# --------------------------------------------------------------------------------------------
# Numbers as written


NUMBER = re.compile(r"(?<![\d.])(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|\.\d+)")
"""A number as written: ``18``, ``1,200``, ``18.50``, ``.5`` (no sign, no currency)."""
_NUMBER_WORDS = {
    word: Fraction(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    word: Fraction(10 * tens)
    for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)
} | {"dozen": Fraction(12), "hundred": Fraction(100), "thousand": Fraction(1000)}
NUMBER_WORD = re.compile(r"\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Written:
    """One number in a text: where it is, what it says and its value."""

    start: int
    end: int
    text: str
    value: Fraction


def written_numbers(text: str) -> list[Written]:
    """Every number written in digits in ``text``, in order."""
    return [
        Written(m.start(), m.end(), m[0], Fraction(m[0].replace(",", "")))
        for m in NUMBER.finditer(text)
    ]


def values_in(text: str, *, words: bool = True) -> set[Fraction]:
    """The values of the numbers in ``text``, in digits and (``words``) in number words."""
    found = {n.value for n in written_numbers(text)}
    if words:
        found |= {_NUMBER_WORDS[m[0].lower()] for m in NUMBER_WORD.finditer(text)}
    return found


def format_like(value: Fraction, like: str) -> str:
    """Write ``value`` in the style of the number ``like`` (thousands commas, decimals shown).

    Raises :class:`VariantRefused` for a negative value or one that needs more than
    :data:`MAX_DECIMALS` decimals.
    """
    if value < 0:
        raise VariantRefused("a negative result")
    shown = len(like.partition(".")[2])
    for decimals in range(max(shown, 0), max(shown, MAX_DECIMALS) + 1):
        scaled = value * 10**decimals
        if scaled.denominator == 1:
            break
    else:
        raise VariantRefused(f"{value} is no decimal with at most {MAX_DECIMALS} places")
    whole, fraction = divmod(int(scaled), 10**decimals)
    head = f"{whole:,}" if "," in like else str(whole)
    return f"{head}.{fraction:0{decimals}d}" if decimals else head


# --------------------------------------------------------------------------------------------
# Calculations


_ANNOTATION = re.compile(r"<<(?P<expression>[^<>=]*)=(?P<result>[^<>]*)>>")
_OPERATOR_SYMBOLS = {"+": "+", "-": "-", "*": "*", "/": "/", "x": "*", "X": "*", "×": "*", "÷": "/"}
_TOKEN = re.compile(
    r"(?P<num>" + NUMBER.pattern + r")"
    r"|(?P<unit>/[A-Za-z][A-Za-z'’]*|[A-Za-z][A-Za-z'’]*(?:/[A-Za-z]+)*)(?<![^A-Za-z][xX])"
    r"|(?P<op>[-+*/×÷]|(?<![A-Za-z])[xX](?![A-Za-z]))|(?P<pct>%)|(?P<par>[()])|[\s$]"
)


@dataclass(frozen=True, slots=True)
class Calculation:
    """One annotated calculation of a solution, located in its text.

    ``tokens`` are the written expression's numbers (:class:`Written`), operators (``("op",
    start, symbol)``), percent signs (``("pct", start, "%")``) and brackets (``("par", start,
    char)``), in order; unit words between them (``40 cups per chicken * 20``) are left out.
    """

    tokens: tuple[Written | tuple[str, int, str], ...]
    result: Written

    @property
    def operands(self) -> list[Written]:
        return [t for t in self.tokens if isinstance(t, Written)]

    @property
    def operators(self) -> list[tuple[str, int, str]]:
        return [t for t in self.tokens if not isinstance(t, Written) and t[0] == "op"]


def calculations(solution: str) -> list[Calculation]:
    """The annotated calculations of ``solution`` (a GSM8K solution with ``<<...>>``).

    Raises :class:`VariantRefused` when an annotation cannot be matched to what is written
    around it, or the written result is not what the written expression computes.
    """
    found = []
    for match in _ANNOTATION.finditer(solution):
        if not re.search(r"\d\s*[-+*/]", match["expression"]):
            continue  # <<40=40>>: nothing computed
        head = solution[: match.start()].rstrip(" $")
        if not head.endswith("="):
            raise VariantRefused("an annotation not just after '='")
        end = len(head) - 1
        start = max(solution.rfind("\n", 0, end), solution.rfind("=", 0, end)) + 1
        after = NUMBER.match(solution, match.end())
        if after is None:
            raise VariantRefused("no written result after an annotation")
        result = Written(after.start(), after.end(), after[0], Fraction(after[0].replace(",", "")))
        try:
            annotated = evaluate(match["expression"])
        except ArithmeticRefused as exc:
            raise VariantRefused(f"an annotation the evaluator refuses: {exc}") from exc
        tokens = _written_expression(solution, start, end, annotated)
        if annotated != result.value:
            raise VariantRefused("a written result that is not what its expression computes")
        found.append(Calculation(tuple(tokens), result))
    if not found:
        raise VariantRefused("no annotated calculation")
    return found


def _written_expression(text: str, start: int, end: int, value: Fraction) -> list:
    """The tokens of the longest expression ending at ``end`` that computes ``value``."""
    for first in range(start, end):
        if not (text[first].isdigit() or text[first] in ".("):
            continue
        if first > start and (text[first - 1].isdigit() or text[first - 1] in ".,"):
            continue
        try:
            tokens = _tokens(text, first, end)
            if _evaluate(tokens) == value:
                return tokens
        except VariantRefused:
            continue
    raise VariantRefused("no written expression that computes the annotation's value")


def _tokens(text: str, start: int, end: int) -> list:
    tokens: list = []
    position = start
    while position < end:
        match = _TOKEN.match(text, position, end)
        if match is None:
            raise VariantRefused(f"not plain arithmetic: {text[start:end]!r}")
        if match["num"]:
            value = Fraction(match["num"].replace(",", ""))
            tokens.append(Written(match.start(), match.end(), match["num"], value))
        elif match["op"]:
            previous = tokens[-1] if tokens else None
            if previous is None or (not isinstance(previous, Written) and previous[2] not in ")%"):
                raise VariantRefused("a unary sign")
            tokens.append(("op", match.start(), match["op"]))
        elif match["par"] or match["pct"]:
            kind = "par" if match["par"] else "pct"
            tokens.append((kind, match.start(), match[kind]))
        position = match.end()
    if not any(t[0] == "op" for t in tokens if not isinstance(t, Written)):
        raise VariantRefused("an annotated calculation without an operator")
    return tokens


def _evaluate(tokens, values: dict[int, Fraction] | None = None, ops: dict[int, str] | None = None):
    """Evaluate tokens exactly; ``values``/``ops`` replace operands/operators by start."""
    values, ops = values or {}, ops or {}
    parts = []
    for token in tokens:
        if isinstance(token, Written):
            value = values.get(token.start, token.value)
            parts.append(f"({value.numerator}/{value.denominator})")
        elif token[0] == "op":
            parts.append(_OPERATOR_SYMBOLS[ops.get(token[1], token[2])])
        elif token[0] == "pct":
            parts.append("/ 100")
        else:
            parts.append(token[2])
    try:
        return evaluate(" ".join(parts))
    except ArithmeticRefused as exc:
        raise VariantRefused(f"cannot evaluate: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Carrying a change forward


@dataclass(frozen=True, slots=True)
class Change:
    """One planted change: a calculation's result (``slip``), an operand (``misread``) or an
    operator (``operator_swap``), by its start in the annotated text."""

    at: int
    value: Fraction | None = None
    operator: str | None = None


def carry_forward(solution: str, question: str, change: Change) -> str:
    """Apply ``change`` to the annotated ``solution``, carry it forward and strip annotations.

    A number written after calculation ``i``'s result with the same value is that result (the
    latest such calculation). A changed result whose value the question also gives is refused:
    a later mention could be the question's number.
    """
    steps = calculations(solution)
    given = values_in(question)
    new_results: dict[int, Fraction] = {}  # step index -> new value
    edits: dict[int, tuple[int, str]] = {}  # start -> (end, replacement)

    def source(position: int, value: Fraction) -> int | None:
        latest = None
        for index, step in enumerate(steps):
            if step.result.end <= position and step.result.value == value:
                latest = index
        return latest

    for index, step in enumerate(steps):
        values: dict[int, Fraction] = {}
        ops: dict[int, str] = {}
        for operand in step.operands:
            if operand.start == change.at:
                assert change.value is not None  # a change at an operand is a value
                values[operand.start] = change.value
            else:
                origin = source(operand.start, operand.value)
                if origin in new_results:
                    values[operand.start] = new_results[origin]
        for _, start, _symbol in step.operators:
            if start == change.at:
                assert change.operator is not None  # a change at an operator is one
                ops[start] = change.operator
        if step.result.start == change.at:
            assert change.value is not None  # a change at a result is a value
            result = change.value
        elif values or ops:
            result = _evaluate(step.tokens, values, ops)
        else:
            continue
        if result != step.result.value:
            if step.result.value in given or result in given:
                raise VariantRefused("a changed result that the question also gives")
            if result <= 0:
                raise VariantRefused("a result not above zero")
            new_results[index] = result
    if not new_results:
        raise VariantRefused("the change changes no result")
    results = {step.result.start: index for index, step in enumerate(steps)}
    for number in written_numbers(solution):
        if _inside_annotation(solution, number.start):
            continue
        if number.start in results:
            index = results[number.start]
            if index in new_results:
                edits[number.start] = (number.end, format_like(new_results[index], number.text))
            continue
        if number.start == change.at and change.value is not None:
            edits[number.start] = (number.end, format_like(change.value, number.text))
            continue
        origin = source(number.start, number.value)
        if origin in new_results:
            edits[number.start] = (number.end, format_like(new_results[origin], number.text))
    for step in steps:
        for _, start, _symbol in step.operators:
            if start == change.at and change.operator is not None:
                edits[start] = (start + 1, _written_operator(change.operator, solution))
    return strip_calculator_annotations(_apply(solution, edits))


def _inside_annotation(text: str, position: int) -> bool:
    opened = text.rfind("<<", 0, position)
    return opened != -1 and text.find(">>", opened) >= position


def _written_operator(symbol: str, solution: str) -> str:
    if symbol == "*" and re.search(r"\d\s*x\s*\d", solution):
        return "x"
    return symbol


def _apply(text: str, edits: dict[int, tuple[int, str]]) -> str:
    out, position = [], 0
    for start in sorted(edits):
        end, replacement = edits[start]
        out += [text[position:start], replacement]
        position = end
    return "".join(out) + text[position:]


def number_word_value(word: str) -> Fraction:
    """The value of a number word (``three``, ``dozen``), any case."""
    return _NUMBER_WORDS[word.lower()]


__all__ = [
    "MAX_DECIMALS",
    "NUMBER",
    "NUMBER_WORD",
    "Calculation",
    "Change",
    "VariantRefused",
    "Written",
    "calculations",
    "carry_forward",
    "format_like",
    "number_word_value",
    "values_in",
    "written_numbers",
]
