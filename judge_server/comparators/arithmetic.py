"""Exact, safe arithmetic for checking the calculations a reasoning trace writes down.

Two layers:

:func:`evaluate`
    Evaluates one arithmetic expression exactly, as a :class:`fractions.Fraction`. The text is
    parsed with :mod:`ast` and only numeric literals, ``+ - * / // % **``, unary signs and
    parentheses are walked; anything else (names, calls, attributes, subscripts, strings) is
    refused. Sizes are bounded so that no input can make it hang or exhaust memory: the
    expression length, exponents, and the bit length of every intermediate result. Never
    ``eval``.
:func:`find_claims`
    Finds the equations a trace asserts in prose (``16 - 3 - 4 = 9``, ``9 * 2 = $18``,
    ``3+4=7 meals``, ``20% of 50 = 10``, ``12 x 3 = 36``, ``4 cups * 2 = 8 cups``, chains
    ``2 + 3 = 5 * 2 = 10``) and checks each with :func:`evaluate`. Extraction is conservative:
    an equation whose meaning is ambiguous (variables, a percentage added to a plain number,
    ``= 1.5 million``, a result followed by more arithmetic in prose) is skipped rather than
    judged, because a wrongly flagged claim would punish correct reasoning.

Rounding is lenient: a claimed value written with ``d`` decimals is fine when it is the true
value rounded or truncated to ``d`` decimals (``10/3 = 3.33``, ``2/3 = 0.66``), and an integer
claim within 1 of a non-integer value is taken as deliberate rounding (``10/3 = 3 boxes``).
Such claims count as ``"rounded"``, neither verified nor wrong.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

MAX_EXPRESSION_CHARS = 256
"""Longer expressions are refused (no prose calculation is this long)."""
MAX_EXPONENT = 64
"""Largest absolute integer exponent ``**`` accepts."""
MAX_BITS = 4096
"""Largest bit length of a numerator or denominator, for every intermediate result."""
MAX_CLAIMS = 2000
"""At most this many equations are checked per text; the rest is ignored."""

Verdict = Literal["exact", "rounded", "wrong"]


class ArithmeticRefused(ValueError):
    """The text is not plain arithmetic, or is out of bounds, or is undefined (``1/0``)."""


# --------------------------------------------------------------------------------------------
# The safe evaluator


_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def evaluate(expression: str) -> Fraction:
    """Evaluate a plain arithmetic expression exactly.

    Parameters
    ----------
    expression
        Python arithmetic syntax: numeric literals (``12``, ``0.5``, ``.5``, ``1e3``),
        ``+ - * / // % **``, unary ``-``/``+`` and parentheses.

    Returns
    -------
    Fraction
        The exact value; decimal literals are read as written (``0.1`` is ``1/10``).

    Raises
    ------
    ArithmeticRefused
        For anything else: names, calls, attribute access, strings, complex numbers, an
        exponent that is not an integer or exceeds :data:`MAX_EXPONENT`, a result wider than
        :data:`MAX_BITS`, division by zero, or a text longer than :data:`MAX_EXPRESSION_CHARS`.

    Examples
    --------
    >>> evaluate("16 - 3 - 4")
    Fraction(9, 1)
    >>> evaluate("1/2 * 10")
    Fraction(5, 1)
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ArithmeticRefused(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ArithmeticRefused(f"not an expression: {expression!r}") from exc
    try:
        return _walk(tree.body, expression.strip())
    except RecursionError as exc:
        raise ArithmeticRefused("expression nested too deeply") from exc


def _walk(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        return _literal(node, source)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _walk(node.operand, source)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY_OPS):
        left = _walk(node.left, source)
        right = _walk(node.right, source)
        return _bounded(_apply(node.op, left, right))
    raise ArithmeticRefused(f"not plain arithmetic: {type(node).__name__}")


def _literal(node: ast.Constant, source: str) -> Fraction:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArithmeticRefused(f"not a real number literal: {value!r}")
    if isinstance(value, int):
        return _bounded(Fraction(value))
    # Read the literal as written, so that 0.1 is exactly 1/10 and not the nearest double.
    text = (ast.get_source_segment(source, node) or repr(value)).replace("_", "")
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > 64:
        raise ArithmeticRefused(f"literal out of range: {text}")
    try:
        return _bounded(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:  # inf, nan
        raise ArithmeticRefused(f"not a finite number: {text}") from exc


def _apply(op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
    try:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            return left / right
        if isinstance(op, ast.FloorDiv):
            return Fraction(left // right)
        if isinstance(op, ast.Mod):
            return left % right
        return _power(left, right)
    except ZeroDivisionError as exc:
        raise ArithmeticRefused("division by zero") from exc


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ArithmeticRefused("non-integer exponent")
    e = exponent.numerator
    if abs(e) > MAX_EXPONENT:
        raise ArithmeticRefused(f"exponent {e} exceeds {MAX_EXPONENT}")
    width = max(base.numerator.bit_length(), base.denominator.bit_length())
    if width * abs(e) > MAX_BITS:
        raise ArithmeticRefused("power too large")
    return base**e


def _bounded(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ArithmeticRefused("number too large")
    return value


# --------------------------------------------------------------------------------------------
# Numbers in prose


_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER_IN_TEXT = re.compile(
    r"(?<![\w.,])(?<!\d:)(?P<sign>[-−](?=[$\d.]))?\$?(?P<num>" + _NUMBER + r")(?![\d,]\d|:\d)"
    r"(?P<pct>\s?%)?"
)


@dataclass(frozen=True, slots=True)
class Number:
    """A number as written in a text: its value, decimals shown, and whether it had ``%``."""

    value: Fraction
    decimals: int
    percent: bool
    start: int
    end: int


def numbers(text: str) -> Iterator[Number]:
    """Yield the numbers written in ``text``, in order (``$1,200.50``, ``-3``, ``25%``, ``.5``).

    A ``%`` sign is recorded, not applied: ``25%`` yields 25 with ``percent=True``.
    """
    for match in _NUMBER_IN_TEXT.finditer(text):
        raw = match["num"].replace(",", "")
        if len(raw) > 200:  # a runaway digit string, e.g. a repetition loop
            continue
        value = _fraction(raw)
        if match["sign"]:
            value = -value
        decimals = len(raw.partition(".")[2])
        yield Number(value, decimals, bool(match["pct"]), match.start(), match.end())


@functools.lru_cache(maxsize=4096)
def _fraction(decimal: str) -> Fraction:
    return Fraction(decimal)


def same_number(a: Fraction, b: Fraction, *, decimals_a: int = 0, decimals_b: int = 0) -> bool:
    """True when ``a`` and ``b`` are equal up to the precision both were written with.

    ``3.33`` matches ``3.3333`` (two decimals shown), ``18`` does not match ``18.4``.
    """
    if a == b:
        return True
    shown = min(decimals_a, decimals_b)
    if shown <= 0:
        return False
    return abs(a - b) <= Fraction(1, 2 * 10**shown)


# --------------------------------------------------------------------------------------------
# Claims: equations asserted in prose


@dataclass(frozen=True, slots=True)
class Claim:
    """One equation a text asserts, checked.

    ``expression`` and ``result`` are the two sides as normalised for evaluation (``x`` and
    ``×`` become ``*``, currency and thousands separators are dropped, ``20% of`` becomes
    ``20% *``); ``verdict`` is ``"exact"``, ``"rounded"`` (within the rounding the written
    result allows) or ``"wrong"``.
    """

    expression: str
    result: str
    computed: Fraction
    claimed: Fraction
    verdict: Verdict

    @property
    def wrong(self) -> bool:
        return self.verdict == "wrong"

    def __str__(self) -> str:
        return f"{self.expression} = {self.result} ({self.verdict})"


_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, flags), replacement)
    for pattern, replacement, flags in (
        # Markdown bold (**18**, **Step 1:**), which is not a power unless between numbers.
        (r"(?<![\d)])\*\*|\*\*(?![\d(.])", " ", 0),
        # LaTeX and unicode operators.
        (r"\\(?:times|cdot)", "*", 0),
        (r"\\div", "/", 0),
        (r"\\frac\{([^{}]{1,40})\}\{([^{}]{1,40})\}", r"(\1)/(\2)", 0),
        (r"\\left|\\right", "", 0),
        (r"\\%", "%", 0),
        (r"[×·⋅∙✕]", "*", 0),
        (r"÷", "/", 0),
        (r"[−–]", "-", 0),
        (r"(?<![\d.])(\d+)([¼½¾])", r"(\1+\2)", 0),
        (r"¼", "(1/4)", 0),
        (r"½", "(1/2)", 0),
        (r"¾", "(3/4)", 0),
        (r"²", "**2", 0),
        (r"³", "**3", 0),
        (r"\^", "**", 0),
        # A rate's unit right after a number: $20/hour, 0.25 km/lap -> 20, 0.25 km.
        (r"(?<=[\d)])\s*/\s*(?![xX]\b)[A-Za-z][A-Za-z'’]*", "", 0),
        # Currency before a number, thousands separators.
        (r"\\?[$€£¥₹](?=\s?[\d.])", "", 0),
        (r"(?<=\d),(?=\d{3}(?!\d))", "", 0),
        # Words for operators.
        (r"(?<=\d)\s*(?:percent\b|per\s+cent\b)", "%", re.IGNORECASE),
        (r"(?<=[\d)])\s*\btimes\b\s*(?=[\d(.])", " * ", re.IGNORECASE),
        (r"(?<=[\d)])\s+(?:multiplied\s+by)\s+(?=[\d(.])", " * ", re.IGNORECASE),
        (r"(?<=[\d)])\s+(?:divided\s+by|over)\s+(?=[\d(.])", " / ", re.IGNORECASE),
        (r"(?<=[\d)])\s+plus\s+(?=[\d(.])", " + ", re.IGNORECASE),
        (r"(?<=[\d)])\s+minus\s+(?=[\d(.])", " - ", re.IGNORECASE),
        (r"(?<=%)\s*of\s+(?=[\d(.])", " * ", 0),
        (r"(?<![\w.])(\d+\s*/\s*\d+)\s+of\s+(?=[\d(.])", r"\1 * ", 0),
    )
)
# ``x`` between two numbers is multiplication: ``12 x 3``, ``12x3``, ``(2+1) x 4``.
_TIMES_X = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(.])")
# Unit words between a number and an operator: ``4 cups * 2``, ``2 eggs per day x 7``.
_UNIT_WORD = r"[A-Za-z][A-Za-z'’/]*\.?"
_UNITS = re.compile(
    r"(?<=[\d)%])(?P<units>(?:\s+" + _UNIT_WORD + r"){1,3})\s*"
    r"(?=(?:[-+*/]|[xX](?=\s*[\d(.]))\s*[\d(.])"
)
# A unit before the equals sign that the result repeats: ``8 laps * 0.25 km = 2 km``. (A
# conversion, ``1/2 hour = 30 minutes``, changes the unit and stays unjudged.)
_SAME_UNIT = re.compile(
    r"(?<=[\d)%])(?P<unit>(?:\s+[A-Za-z][A-Za-z'’/]*){1,3})\s*="
    r"(?P<result>\s*\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?P=unit)\b)"
)
# Units after the last operand of a computation: ``20 * 35 hours/week = 700``. Not after a
# written fraction (``1/2 hour = 30 minutes`` converts) or a multiplier word (``3 dozen``).
_UNIT_BEFORE_EQUALS = re.compile(
    r"(?P<operand>(?:[-+*]|\s/)\s*\(?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\)?)"
    r"(?P<units>(?:\s+[A-Za-z][A-Za-z'’/]*){1,3})\s*(?==)"
)
_MULTIPLIER_WORDS = frozenset(
    "dozen dozens hundred hundreds thousand thousands million millions billion billions "
    "trillion k m bn half twice thrice squared cubed x".split()
)

# One equals sign that asserts equality (not ==, <=, >=, !=, +=, :=, ...), or an
# approximation sign.
_EQUALS = re.compile(r"(?<![=<>!+\-*/%&|^:~])(?P<op>=|≈|≃|~=)(?!=)")
_ARITHMETIC_CHARS = frozenset("0123456789.()+-*/% \t")
_OPERATOR = re.compile(r"(?<=[\d.)%])\s*[-+*/]|(?<=[\d.)])\s*%\s*(?=[\d(.])")
_LEADING_NUMBER = re.compile(r"-?\s*(?:\d+(?:\.\d+)?|\.\d+)(?!\s*%)")
_BARE_NUMBER = re.compile(r"\s*-?\s*(?:\d+(?:\.\d+)?|\.\d+)\s*%?\s*")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s?%(?!\s*[\d(.])")
_RESULT_FOLLOWER = re.compile(r"\s*(?P<word>[A-Za-z]+)")


def normalise(line: str) -> str:
    """Rewrite one line of prose arithmetic into evaluator syntax where it is unambiguous."""
    for pattern, replacement in _SUBSTITUTIONS:
        line = pattern.sub(replacement, line)
    line = _UNITS.sub(_drop_units, line)
    line = _SAME_UNIT.sub(r" =\g<result>", line)
    line = _SAID.sub(_said_equals, line)
    line = _TIMES_X.sub(" * ", line)
    return _UNIT_BEFORE_EQUALS.sub(_drop_units_before_equals, line)


# "is", "equals", "makes", "gives" after a computation say "=": ``9 * 2 is 18``.
_SAID = re.compile(
    r"(?<=[\d)%])(?P<units>(?:\s+[A-Za-z][A-Za-z'’/]*){0,3}?)\s+(?:is|equals|makes|gives)\s+"
    r"(?=\$?-?[\d(.])",
    re.IGNORECASE,
)
_COMPUTATION = re.compile(r"[\d)]\s*[-+*/]\s*\$?[\d(.]")


def _said_equals(match: re.Match[str]) -> str:
    """ " = " when a computation ends right before the word (not "36 is 6 more than 30")."""
    start = match.string.rfind("=", max(0, match.start() - 60), match.start()) + 1
    clause = match.string[max(start, match.start() - 60) : match.start()]
    clause = clause[max(clause.rfind(". "), clause.rfind(", ")) + 1 :]
    units = {w.strip(".").lower() for w in match["units"].split()}
    if units & _MULTIPLIER_WORDS or not _COMPUTATION.search(clause):
        return match.group(0)
    return " = "


def _drop_units_before_equals(match: re.Match[str]) -> str:
    words = {w.strip(".").lower() for w in match["units"].split()}
    return match.group(0) if words & _MULTIPLIER_WORDS else match["operand"] + " "


def _drop_units(match: re.Match[str]) -> str:
    words = {w.strip(".").lower() for w in match["units"].split()}
    return match.group(0) if words & _MULTIPLIER_WORDS else " "


@dataclass(frozen=True, slots=True)
class Step:
    """One computation a text writes down: the expression, its true value, and the result the
    text states for it (``None`` when that result cannot be read, e.g. ``9 * 2 = [masked]``).

    ``verdict`` is a :data:`Verdict`, or ``"open"`` when it cannot be checked. A bare equation
    of two different numbers at the start of a line (``35 = 6``) is a step too, and wrong:
    it asserts something false that no calculation supports.

    A bracketed placeholder (``[ANSWER]``, ``[redacted]``) is an *unknown*: a step that
    combines one (``[ANSWER] / 2 = 5``) has no computed value, and a step that results in one
    (``100 - 64 = [ANSWER]``) has no stated result; both stay open, and the names say which
    unknowns a step uses and gives, so that a reader can follow them from step to step.
    """

    line: int
    expression: str
    computed: Fraction | None
    claimed: Fraction | None
    verdict: Verdict | Literal["open"]
    result: str = ""
    unknowns: tuple[str, ...] = ()
    """The placeholders the expression combines."""
    gives: str | None = None
    """The placeholder the step results in."""

    @property
    def wrong(self) -> bool:
        return self.verdict == "wrong"

    @property
    def value(self) -> Fraction | None:
        """What the text carries forward: the stated result, else the computed one."""
        return self.computed if self.claimed is None else self.claimed


def find_steps(text: str, *, max_steps: int = MAX_CLAIMS) -> list[Step]:
    """Find every computation ``text`` writes down, in order, each checked where it can be.

    A superset of :func:`find_claims`: it adds computations whose result cannot be read
    (``"open"``), computations with unknowns, and false bare equations at the start of a line
    (``35 = 6``, wrong).
    """
    steps: list[Step] = []
    budget = 8 * max_steps  # equals signs examined, step or not
    for number, line in enumerate(text.splitlines()):
        if not _ASSERTS.search(line):
            continue
        line, unknowns = _stand_ins(line)
        line = normalise(line)
        signs = list(itertools.islice(_EQUALS.finditer(line), budget))
        budget -= len(signs)
        for step in _line_steps(number, line, signs):
            steps.append(_with_unknowns(step, unknowns) if unknowns else step)
            if len(steps) >= max_steps:
                return steps
        if budget <= 0:
            break
    return steps


_PLACEHOLDER = re.compile(r"\[[A-Za-z_][\w ]{0,23}\]")
_STAND_IN = "0.000000000907{:03d}1"
"""An unknown's stand-in while a line is parsed: a number no text writes."""


def _stand_ins(line: str) -> tuple[str, dict[str, str]]:
    """The line with each placeholder replaced by a stand-in number, and stand-in -> name."""
    if "[" not in line:
        return line, {}
    names: dict[str, str] = {}

    def stand_in(match: re.Match[str]) -> str:
        for text, name in names.items():
            if name == match[0]:
                return text
        text = _STAND_IN.format(len(names) % 1000)
        names[text] = match[0]
        return text

    return _PLACEHOLDER.sub(stand_in, line), names


def _with_unknowns(step: Step, names: dict[str, str]) -> Step:
    used = tuple(name for text, name in names.items() if text in step.expression)
    gives = next((name for text, name in names.items() if step.result.strip() == text), None)
    if not used and gives is None:
        return step
    return Step(
        step.line,
        step.expression,
        None if used else step.computed,
        None if gives is not None else step.claimed,
        "open",
        step.result,
        used,
        gives,
    )


def find_claims(text: str, *, max_claims: int = MAX_CLAIMS) -> list[Claim]:
    """Find and check the equations ``text`` asserts. See the module docstring."""
    return [
        Claim(step.expression, step.result, step.computed, step.claimed, step.verdict)
        for step in find_steps(text, max_steps=max_claims)
        if step.claimed is not None and step.computed is not None and step.result
        and step.verdict != "open"  # implied by both values, said for the type
    ]


_ASSERTS = re.compile(r"[=≈≃]|\s(?:is|equals|makes|gives)\s+\$?-?[\d.]", re.IGNORECASE)
_LINE_START_CHARS = " \t>*•#-"  # what a line's text may begin with


def _line_steps(number: int, line: str, signs: list[re.Match[str]]) -> Iterator[Step]:
    for k, sign in enumerate(signs):
        left_start = signs[k - 1].end() if k else 0
        right_end = signs[k + 1].start() if k + 1 < len(signs) else len(line)
        left = _left_side(line, left_start, sign.start())
        if left is None:
            continue
        right = _right_side(line[sign.end() : right_end], chained=k + 1 < len(signs))
        approximate = sign["op"] != "="
        claim = _check(left, right, approximate=approximate) if right is not None else None
        if claim is not None and right is not None and claim.wrong and k + 1 < len(signs):
            # A running computation "2 + 3 = 5 * 2 = 10" says 2 + 3 = 5, then 5 * 2 = 10.
            lead = _LEADING_NUMBER.match(right)
            running = _check(left, lead[0], approximate=approximate) if lead else None
            if running is not None and not running.wrong:
                claim = running
        if claim is not None:
            yield Step(
                number,
                claim.expression,
                claim.computed,
                claim.claimed,
                claim.verdict,
                claim.result,
            )
            continue
        if _OPERATOR.search(left):
            computed = _side_value(left)
            if computed is not None:  # a computation whose result cannot be read
                yield Step(number, left, computed[0], None, "open")
            continue
        bare = _bare_equation(line, k, left, right, approximate=approximate)
        if bare is not None:
            yield Step(number, *bare)


def _bare_equation(
    line: str, k: int, left: str, right: str | None, *, approximate: bool
) -> tuple[str, Fraction, Fraction, Verdict, str] | None:
    """A false bare equation at the start of a line (``35 = 6``), or None.

    Only the first equals sign of a line whose text begins with the number counts: ``Step 1 =
    3`` or ``x = 5`` assert nothing false.
    """
    if k or right is None or not _BARE_NUMBER.fullmatch(right) or "%" in left + right:
        return None
    if not line.lstrip(_LINE_START_CHARS).startswith(left):
        return None
    sides = _side_value(left), _side_value(right)
    if sides[0] is None or sides[1] is None:
        return None
    value, claimed = sides[0][0], sides[1][0]
    decimals = len(right.strip().partition(".")[2])
    verdict = _verdict(value, claimed, decimals=decimals, approximate=approximate)
    if verdict != "wrong":
        return None  # "9 = 9" restates, it does not compute
    return left, value, claimed, verdict, right.strip()


_SENTENCE_END = re.compile(r"\.\s+")


def _left_side(line: str, start: int, end: int) -> str | None:
    """The arithmetic expression that ends just before an equals sign, or None."""
    i = end
    while i > start and line[i - 1] in _ARITHMETIC_CHARS:
        i -= 1
    # A full stop and a space end a sentence: "9 eggs. 9 * 2 = 18" claims 9 * 2 = 18. (A
    # decimal point is never followed by a space.)
    sentence = _SENTENCE_END.search(line, i, end)
    while sentence is not None:
        i = sentence.end()
        sentence = _SENTENCE_END.search(line, i, end)
    while i < end and line[i] in " \t":
        i += 1
    if end - i > MAX_EXPRESSION_CHARS:
        return None
    # An expression glued to a word, a time (3:30) or a decimal point is a tail of something
    # that is not arithmetic: 2x + 3, 3:30 + 2, v1.5 + 2.
    if i > start and (line[i - 1].isalnum() or line[i - 1] in ".:,_'’"):
        return None
    expression = line[i:end].strip()
    # Drop opening brackets that are not closed inside the expression: "(total 3 + 4 = 7".
    while expression.startswith("(") and expression.count("(") > expression.count(")"):
        expression = expression[1:].lstrip()
    # Drop closing brackets that close something outside: "(total of 3 + 4) = 7".
    while expression.endswith(")") and expression.count(")") > expression.count("("):
        expression = expression[:-1].rstrip()
    if not expression or not (expression[0].isdigit() or expression[0] in ".(-"):
        return None
    if expression[0] == "-":
        before = line[start:i].rstrip()
        if before and (before[-1].isalnum() or before[-1] in ")%"):
            return None  # binary minus after a word: "total - 3 = 7"
    return expression


def _right_side(segment: str, *, chained: bool) -> str | None:
    """The value asserted just after an equals sign, or None when it is ambiguous."""
    sentence = _SENTENCE_END.search(segment)
    if sentence is not None:  # the claim ends with its sentence: "= 9. 9 * 2 = 18"
        segment = segment[: sentence.start()]
    if chained:  # a middle link of a = b = c, when it is arithmetic as a whole
        text = segment.strip()
        if text and set(text) <= _ARITHMETIC_CHARS:
            return text if len(text) <= MAX_EXPRESSION_CHARS else None
    i = 0
    while i < len(segment) and segment[i] in _ARITHMETIC_CHARS:
        i += 1
        if i > MAX_EXPRESSION_CHARS:
            return None
    value, rest = segment[:i].strip(), segment[i:]
    if not value:
        return None
    if value.endswith("."):  # a full stop after the number
        value = value[:-1].rstrip()
    if not _BARE_NUMBER.fullmatch(value):
        # An expression after the last equals sign counts only when nothing but punctuation
        # follows it: "= 18 + 2 more eggs" is ambiguous.
        return value if not rest.strip(" \t.,;:!?)$") else None
    if re.match(r":\d", rest):
        return None  # a time of day: "5 - 3 = 2:00 pm"
    follower = _RESULT_FOLLOWER.match(rest)
    if follower and follower["word"].lower() in _MULTIPLIER_WORDS:
        return None  # "= 1.5 million"
    return value


def _side_value(side: str) -> tuple[Fraction, bool] | None:
    """Evaluate one side; also say whether it contains a percentage."""
    # (_PERCENT backtracks over a run of digits: time quadratic in its length, so only a side
    # with a percent sign is searched.)
    python, n_percent = _PERCENT.subn(r"(\1/100)", side) if "%" in side else (side, 0)
    if "%" in python:
        return None  # "%" between numbers in prose is a typo more often than a modulo
    if n_percent and re.search(r"(?<=[\d.)%])\s*[-+]", side):
        # 100 - 20% is ambiguous (20% of what?) unless every term is a percentage.
        terms = re.findall(r"(?:\d+(?:\.\d+)?|\.\d+)(\s?%)?", side)
        if not all(terms):
            return None
    try:
        return evaluate(python), bool(n_percent)
    except ArithmeticRefused:
        return None


def _check(left: str, right: str, *, approximate: bool) -> Claim | None:
    left_has_op = bool(_OPERATOR.search(left))
    right_has_op = bool(_OPERATOR.search(right))
    if not (left_has_op or right_has_op):
        return None  # "x = 5", "= 13 = 13": nothing computed
    if not left_has_op and right_has_op:
        left, right = right, left  # "13 = 16 - 3"
    computed = _side_value(left)
    claimed = _side_value(right)
    if computed is None or claimed is None:
        return None
    (value, _), (result, result_percent) = computed, claimed
    candidates = [result]
    if result_percent:  # "10/50*100 = 20%" and "10/50 = 20%" both say the same thing
        candidates.append(result * 100)
    decimals = len(right.strip().rstrip("%").strip().partition(".")[2]) if not right_has_op else 9
    verdict: Verdict = "wrong"
    for candidate in candidates:
        verdict = _verdict(value, candidate, decimals=decimals, approximate=approximate)
        if verdict != "wrong":
            result = candidate
            break
    return Claim(left, right.strip(), value, result, verdict)


def _verdict(value: Fraction, claimed: Fraction, *, decimals: int, approximate: bool) -> Verdict:
    if value == claimed:
        return "exact"
    error = abs(value - claimed)
    if decimals == 0:
        if value.denominator != 1 and error < 1:
            return "rounded"  # 10/3 = 3 boxes
    elif error <= Fraction(1, 10**decimals):
        return "rounded"  # 10/3 = 3.33 or 3.34, 2/3 = 0.66 or 0.67
    if decimals >= 6 and error <= abs(value) * Fraction(1, 10**9):
        return "rounded"  # a float printed in full: 7 / 3 = 2.3333333333333335
    if approximate and error <= abs(value) / 100:
        return "rounded"
    return "wrong"


__all__ = [
    "MAX_BITS",
    "MAX_CLAIMS",
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "ArithmeticRefused",
    "Claim",
    "Number",
    "Step",
    "evaluate",
    "find_claims",
    "find_steps",
    "normalise",
    "numbers",
    "same_number",
]
