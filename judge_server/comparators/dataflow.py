"""The dataflow of a reasoning trace: what it computes, from what, and towards what answer.

A trace's computations are its :class:`~.arithmetic.Step` s (``16 - 3 - 4 = 9``). Each operand
of a step is traced to where it comes from (:class:`Source`):

``given``
    a quantity the problem states: a number, a number word (``three``, read with
    ``text2num``) or a multiplier word (``half``, ``twice``, ``a dozen``);
``result``
    the result of an earlier step of the trace;
``constant``
    a unit conversion or a common constant (``60`` minutes, ``100`` per cent, ``7`` days, ...);
``derived``
    a number the trace did not compute in writing but that one operation on the quantities
    above gives (``16 - 7`` after "she uses 3 and 4": 7 = 3 + 4);
``unsupported``
    none of the above: a number that comes from nowhere (a misread, an invented quantity).

The *chain* is the set of steps the final answer depends on: the step that produces the
answer and, recursively, the steps whose results feed it. A step outside the chain whose
result nothing uses is a *dead end* (padding, a side calculation that leads nowhere).

With a worked reference, the reference is read the same way, and its steps are matched to the
trace's chain by dataflow (:func:`reference_match`): a reference step is reached when a chain
step combines the same quantities with the same operations (the quantities identified by where
they come from: the same given, or the result of a step that itself matched the same reference
step), or computes the same value from supported operands. So a trace that carries one slip
forward still follows the reference's plan after the slip, and a trace that merely lists the
reference's numbers reaches nothing.

Pure functions, text in and plain data out; sizes are bounded by :mod:`.arithmetic`.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Generic, Literal, TypeVar

from .arithmetic import ArithmeticRefused, Step, evaluate, find_steps, numbers

T = TypeVar("T")
Source = Literal["given", "result", "constant", "derived", "unsupported", "unknown"]
STAND_IN_BELOW = Fraction(1, 10**9)
"""Positive numbers below this are the stand-ins of :func:`.arithmetic.find_steps` for
placeholders (``[ANSWER]``); no text writes them."""

#: Numbers any solution may use without the problem stating them: unit conversions and
#: per-cent. Kept short on purpose: every constant here is a number a misread could hide in.
CONSTANTS = frozenset(Fraction(v) for v in (1, 2, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000))
#: Constants that are seldom a step done in the head (16 - 7 after 3 and 4 is; 100 is per cent).
PLAIN_CONSTANTS = frozenset(Fraction(v) for v in (1, 2, 10, 100, 1000))
#: Words that state a quantity without a digit; text2num reads cardinals, not these.
MULTIPLIER_WORDS = {
    "half": (Fraction(1, 2), Fraction(2)),
    "halves": (Fraction(1, 2), Fraction(2)),
    "twice": (Fraction(2),),
    "double": (Fraction(2),),
    "doubles": (Fraction(2),),
    "triple": (Fraction(3),),
    "thrice": (Fraction(3),),
    "quarter": (Fraction(1, 4), Fraction(4)),
    "quarters": (Fraction(1, 4), Fraction(4)),
    "third": (Fraction(1, 3), Fraction(3)),
    "thirds": (Fraction(1, 3), Fraction(3)),
    "dozen": (Fraction(12),),
    "dozens": (Fraction(12),),
}
_WORD = re.compile(r"[a-z]+")
_ANNOTATION = re.compile(r"<<[^<>]*>>|<<[^<>]*\Z")
_OPERATORS = re.compile(r"(?<=[\d.)%])\s*([-+*/])")
MAX_STEPS = 200
"""Steps analysed per trace; a longer trace is judged on its first ones."""
MAX_WORDS_LINE = 2000
"""Longer lines keep their number words as words (see :func:`digits`)."""
MAX_AVAILABLE = 64
"""Quantities considered when looking for a one-operation derivation of a number."""
MAX_DERIVATIONS = 128
"""One-operation derivations looked for per text (each tries up to ``6 * MAX_AVAILABLE``
operations, about a millisecond); later numbers are not derived. The GSM8K traces and
references need at most 15."""


# --------------------------------------------------------------------------------------------
# Reading text


def strip_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: ``16 - 3 = <<16-3=13>>13`` -> ``16 - 3 = 13``.

    An annotation cut off by the end of the text (``... = <<7962``) is removed too.
    """
    return _ANNOTATION.sub("", text)


@functools.lru_cache(maxsize=1024)
def digits(text: str) -> str:
    """``text`` with number words written as digits (``three`` -> ``3``, ``twenty-five`` ->
    ``25``) by ``text2num``, and calculator annotations ``<<16-3=13>>`` removed.

    Line by line, and only lines of at most :data:`MAX_WORDS_LINE` characters: ``alpha2digit``
    takes time quadratic in its input (1.3 s for one line of 145,000 characters), and a line
    that long is no sentence of reasoning.
    """
    from text_to_num import alpha2digit

    lines = strip_annotations(text).split("\n")
    for index, line in enumerate(lines):
        if len(line) <= MAX_WORDS_LINE and any(c.isalpha() for c in line):
            try:
                lines[index] = alpha2digit(line, "en")
            except Exception:  # a Rust extension: never let a reading fail the judge
                continue
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Problem:
    """The quantities a problem gives: one entry per distinct quantity, each as the values that
    would express it (``25%`` may be written 25 or 0.25); and the multiplier words' values."""

    quantities: tuple[frozenset[Fraction], ...]
    implied: frozenset[Fraction]
    values: frozenset[Fraction]
    """Every value of ``quantities``."""
    index: Mapping[Fraction, int] = field(compare=False)
    """Each value's first quantity (:meth:`quantity_of` in constant time)."""

    def quantity_of(self, value: Fraction) -> int | None:
        return self.index.get(value)


@functools.lru_cache(maxsize=256)
def read_problem(prompt: str) -> Problem:
    text = digits(prompt)
    quantities: set[frozenset[Fraction]] = set()
    for number in numbers(text):
        values = {number.value}
        if number.percent:
            values.add(number.value / 100)
        quantities.add(frozenset(values))
    implied = {v for w in _WORD.findall(text.lower()) for v in MULTIPLIER_WORDS.get(w, ())}
    every_value = frozenset().union(*quantities) if quantities else frozenset()
    ordered = tuple(sorted(quantities, key=min))
    index: dict[Fraction, int] = {}
    for quantity, expressed in enumerate(ordered):
        for value in expressed:
            index.setdefault(value, quantity)
    return Problem(ordered, frozenset(implied), every_value, index)


def operands(expression: str) -> list[Fraction]:
    """The numbers an expression combines, a percentage as its fraction (``20%`` -> 1/5)."""
    return [n.value / 100 if n.percent else n.value for n in numbers(expression)]


def operators(expression: str) -> frozenset[str]:
    return frozenset(_OPERATORS.findall(expression))


@functools.lru_cache(maxsize=4096)
def partial_values(expression: str) -> frozenset[Fraction]:
    """The value of every operation inside an expression: ``16 - 3 - 4`` gives 13 and 9."""
    python = re.sub(r"(\d+(?:\.\d+)?|\.\d+)\s?%", r"(\1/100)", expression)
    try:
        tree = ast.parse(python.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    values = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            segment = ast.get_source_segment(python.strip(), node)
            try:
                values.add(evaluate(segment or ""))
            except ArithmeticRefused:
                continue
    return frozenset(values)


# --------------------------------------------------------------------------------------------
# The dataflow


@dataclass(frozen=True, slots=True)
class Operand:
    value: Fraction | None
    """None for an unknown (a placeholder such as ``[ANSWER]``)."""
    source: Source
    step: int | None = None
    """The step whose result it is (``source == "result"``)."""
    quantities: frozenset[int] = frozenset()
    """The problem's quantities it stands for (given, or derived from given ones)."""
    steps: frozenset[int] = frozenset()
    """The steps it is derived from (``source == "derived"``)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """A trace's computations and where their operands come from."""

    steps: tuple[Step, ...]
    operands: tuple[tuple[Operand, ...], ...]
    """Per step, its operands in order."""
    chain: frozenset[int] = frozenset()
    """The steps the final value depends on (indices into ``steps``)."""
    final: int | None = None
    """The step producing the final value, or None."""
    used_quantities: frozenset[int] = frozenset()
    """The problem's quantities the chain uses."""
    dead_ends: tuple[int, ...] = ()
    """Steps outside the chain whose results nothing uses."""
    fillers: tuple[int, ...] = ()
    """Steps that change nothing (``x * 1``, ``x + 0``) or restate an operand."""
    unsupported: tuple[Fraction, ...] = ()
    """Distinct operand values that come from nowhere."""
    lines_restating: int = 0
    """Lines that only repeat the problem's numbers: no computation, nothing new."""


def _near(a: Fraction | None, b: Fraction | None) -> bool:
    """Equal, or ``a`` is ``b`` rounded to at most two decimals (or the other way round)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    for x, y in ((a, b), (b, a)):
        if x.denominator in _ROUNDED_DENOMINATORS and y.denominator != 1:
            if any(round(y, d) == x for d in _ROUNDED_DECIMALS):
                return True
    return False


_ROUNDED_DECIMALS = (0, 1, 2)
_ROUNDED_DENOMINATORS = (1, 2, 4, 5, 10, 20, 25, 50, 100)
"""The denominators of numbers with at most two decimals: what ``round(y, d)`` gives."""


class NearValues(Generic[T]):
    """Values, each with tags (a step's index, say), found up to rounding in constant time:
    :meth:`tags` of ``v`` are the tags of every value ``u`` with :func:`_near` ``(v, u)``
    (equal, or one of the two is the other rounded to at most two decimals), without
    comparing ``v`` with each ``u``."""

    __slots__ = ("_exact", "_rounded")

    def __init__(self, tagged: Iterable[tuple[Fraction, T]] = ()) -> None:
        self._exact: dict[Fraction, set[T]] = {}
        self._rounded: dict[Fraction, set[T]] = {}  # a non-integer's roundings
        for value, tag in tagged:
            self.add(value, tag)

    def add(self, value: Fraction, tag: T) -> None:
        self._exact.setdefault(value, set()).add(tag)
        if value.denominator != 1:
            for d in _ROUNDED_DECIMALS:
                self._rounded.setdefault(round(value, d), set()).add(tag)

    def tags(self, value: Fraction | None) -> set[T]:
        if value is None:
            return set()
        found = self._exact.get(value, set()) | self._rounded.get(value, set())
        if value.denominator != 1:
            for d in _ROUNDED_DECIMALS:
                found |= self._exact.get(round(value, d), set())
        return found

    def __contains__(self, value: Fraction | None) -> bool:
        return bool(self.tags(value))


def _derivation(
    value: Fraction, available: dict[Fraction, tuple[frozenset[int], frozenset[int]]]
) -> tuple[frozenset[int], frozenset[int]] | None:
    """(quantities, steps) of two available values one operation combines into ``value``."""
    latest = list(itertools.islice(reversed(available.items()), MAX_AVAILABLE))
    for a, (qa, sa) in reversed(latest):
        candidates = [value - a, a - value, value + a, value * a]
        if a:
            candidates.append(value / a)
        if value:
            candidates.append(a / value)
        for b in candidates:
            found = available.get(b)
            if found is not None:
                return qa | found[0], sa | found[1]
    return None


def trace_flow(trace: str, problem: Problem, *, answer: Fraction | None = None) -> Flow:
    """Trace every step's operands to their source, and find the answer's chain.

    The chain ends at the last step whose result is ``answer`` (a marked final answer), else
    at the last step.
    """
    text = digits(trace)
    steps = tuple(find_steps(text, max_steps=MAX_STEPS))
    lines = text.splitlines()
    step_lines = {s.line for s in steps}
    # Values at hand before each line: given quantities, constants, earlier results.
    available: dict[Fraction, tuple[frozenset[int], frozenset[int]]] = {}
    for index, values in enumerate(problem.quantities):
        for v in values:
            available.setdefault(v, (frozenset({index}), frozenset()))
    # A number first met as an operand may be one operation on given quantities and results
    # (a step done in the head: 16 - 7 after 3 and 4); a constant takes part only in numbers
    # the trace states in prose first (a misread 3 for a given 2 would be 2 + 1).
    worked = dict(available)
    for v in CONSTANTS | problem.implied:
        available.setdefault(v, (frozenset(), frozenset()))
    results: NearValues[int] = NearValues()
    gave: dict[str, int] = {}  # unknowns (placeholders) by the step that resulted in them
    flows: list[tuple[Operand, ...]] = []
    unsupported: list[Fraction] = []
    # Numbers the trace stated in prose before a step, with what they stand for.
    stated: dict[Fraction, tuple[frozenset[int], frozenset[int]]] = {}
    line_cursor = 0
    derivations = MAX_DERIVATIONS

    def derive(
        value: Fraction, pool: dict[Fraction, tuple[frozenset[int], frozenset[int]]]
    ) -> tuple[frozenset[int], frozenset[int]] | None:
        nonlocal derivations
        if derivations <= 0:
            return None
        derivations -= 1
        return _derivation(value, pool)

    def take_prose(up_to_line: int) -> None:
        nonlocal line_cursor
        while line_cursor < min(up_to_line, len(lines)):
            if line_cursor not in step_lines:
                for v in operands(lines[line_cursor]):
                    if v in available or v in stated:
                        continue
                    derived = derive(v, available)
                    if derived is not None:
                        stated[v] = derived
            line_cursor += 1

    for i, step in enumerate(steps):
        take_prose(step.line)
        ops = []
        for v in operands(step.expression):
            if STAND_IN_BELOW > v > 0:
                continue  # an unknown's stand-in: see below
            quantity = problem.quantity_of(v)
            earlier = max(results.tags(v), default=None)  # the latest
            if earlier is not None:  # an earlier result, even when the problem gives it too
                ops.append(Operand(v, "result", step=earlier))
            elif quantity is not None:
                ops.append(Operand(v, "given", quantities=frozenset({quantity})))
            elif v in PLAIN_CONSTANTS:
                ops.append(Operand(v, "constant"))
            elif derived := stated.get(v) or derive(v, worked):
                ops.append(Operand(v, "derived", quantities=derived[0], steps=derived[1]))
            elif v in available:  # a unit constant no step done in the head gives
                ops.append(Operand(v, "constant"))
            else:
                ops.append(Operand(v, "unsupported"))
                if v not in unsupported:
                    unsupported.append(v)
        ops += [Operand(None, "unknown", step=gave.get(name)) for name in step.unknowns]
        flows.append(tuple(ops))
        if step.gives is not None:
            gave[step.gives] = i
        if step.value is not None:
            results.add(step.value, i)  # a wrong result is carried forward as written
            available.setdefault(step.value, (frozenset(), frozenset({i})))
            worked.setdefault(step.value, (frozenset(), frozenset({i})))
    take_prose(len(lines))
    final = len(steps) - 1 if steps else None
    if answer is not None and steps:
        final = next(
            (i for i in reversed(range(len(steps))) if _near(steps[i].value, answer)), final
        )
    restating = _restating_lines(lines, step_lines, problem)
    return _with_chain(steps, tuple(flows), final, unsupported, restating)


def _restating_lines(lines: Sequence[str], step_lines: set[int], problem: Problem) -> int:
    count = 0
    for number, line in enumerate(lines):
        if number in step_lines:
            continue
        values = operands(line)
        if len(values) >= 2 and all(v in problem.values for v in values):
            count += 1
    return count


def _with_chain(
    steps: tuple[Step, ...],
    flows: tuple[tuple[Operand, ...], ...],
    final: int | None,
    unsupported: list[Fraction],
    restating: int,
) -> Flow:
    chain: set[int] = set()
    used: set[int] = set()
    todo = [final] if final is not None else []
    while todo:
        i = todo.pop()
        if i in chain:
            continue
        chain.add(i)
        for op in flows[i]:
            used |= op.quantities
            if op.step is not None:
                todo.append(op.step)
            todo.extend(op.steps)
    consumed = {op.step for ops in flows for op in ops if op.step is not None}
    consumed |= {s for ops in flows for op in ops for s in op.steps}
    dead = tuple(i for i in range(len(steps)) if i not in chain and i not in consumed)
    fillers = tuple(i for i, (s, ops) in enumerate(zip(steps, flows, strict=True)) if _idle(s, ops))
    return Flow(
        steps=steps,
        operands=flows,
        chain=frozenset(chain),
        final=final,
        used_quantities=frozenset(used),
        dead_ends=dead,
        fillers=fillers,
        unsupported=tuple(unsupported),
        lines_restating=restating,
    )


def _idle(step: Step, ops: Sequence[Operand]) -> bool:
    """A step that computes nothing new: its value is one of its operands (``x * 1``,
    ``x + 0``, ``x / 1``), or it has a single operand."""
    values = [op.value for op in ops]
    return len(values) < 2 or (step.computed is not None and step.computed in values)


# --------------------------------------------------------------------------------------------
# Matching a worked reference


@dataclass(frozen=True, slots=True)
class Plan:
    """A worked reference read as a dataflow: per step, its operand identities, operators and
    result; the other numbers it derives in prose (``50 = 2 * x`` gives 50); and every value
    computed along the way."""

    steps: tuple[tuple[tuple[frozenset, ...], frozenset[str], Fraction | None], ...]
    milestones: frozenset[Fraction]
    """Numbers the reference writes that are neither given, constants, nor step results."""
    partials: frozenset[Fraction]
    near_results: NearValues[int] = field(compare=False, repr=False)
    """Each step's result, tagged with the step's index (found up to rounding)."""
    near_milestones: NearValues[Fraction] = field(compare=False, repr=False)
    near_partials: NearValues[None] = field(compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.steps) + len(self.milestones)


@functools.lru_cache(maxsize=256)
def read_plan(reference: str, prompt: str) -> Plan:
    problem = read_problem(prompt)
    flow = trace_flow(reference, problem)
    steps = []
    for step, ops in zip(flow.steps, flow.operands, strict=True):
        identities = tuple(_identity(op, flow_steps_matched=None) for op in ops)
        steps.append((identities, operators(step.expression), step.value))
    results = {step.value for step in flow.steps if step.value is not None}
    known = NearValues(
        (v, None) for v in problem.values | CONSTANTS | problem.implied | results
    )
    milestones = frozenset(v for v in operands(digits(reference)) if v not in known)
    partials = frozenset(
        v for s in flow.steps if not s.unknowns for v in partial_values(s.expression)
    ) | milestones
    return Plan(
        tuple(steps),
        milestones,
        partials,
        NearValues((result, k) for k, (_, _, result) in enumerate(steps) if result is not None),
        NearValues((m, m) for m in milestones),
        NearValues((v, None) for v in partials),
    )


def _identity(op: Operand, flow_steps_matched: dict[int, set[int]] | None) -> frozenset:
    """What an operand stands for, as tokens two dataflows can share."""
    tokens: set = {("v", op.value)} if op.value is not None else set()
    tokens |= {("q", q) for q in op.quantities}
    if op.step is not None:
        if flow_steps_matched is None:
            tokens.add(("r", op.step))
        else:
            tokens |= {("r", k) for k in flow_steps_matched.get(op.step, ())}
    return frozenset(tokens)


@dataclass(frozen=True, slots=True)
class PlanMatch:
    """How far a trace's chain follows a worked reference."""

    reached: float
    """The share of the plan's steps and milestones the chain reaches."""
    off_plan: int
    """Chain steps that follow no step of the plan (neither its operations nor any value it
    computes)."""
    stops_early: bool
    """The chain ends on a step of the plan that is not its last, and reaches none after it."""


def reference_match(flow: Flow, plan: Plan) -> PlanMatch | None:
    """Match the trace's chain to the plan's steps by dataflow (see the module docstring)."""
    if not plan.size:
        return None
    # Reference steps are indexed by their position in the reference's flow; map them.
    matched: dict[int, set[int]] = {}
    fillers = set(flow.fillers)
    reached: set[int] = set()
    milestones: set[Fraction] = set()
    off_plan = 0
    for i in sorted(flow.chain):
        step, ops = flow.steps[i], flow.operands[i]
        # A step that changes nothing (75 * 1 = 75) reaches nothing, whatever its value.
        supported = all(op.source != "unsupported" for op in ops) and i not in fillers
        mine = tuple(_identity(op, matched) for op in ops)
        hits = set()
        values = (
            partial_values(step.expression) | {step.computed}
            if supported and step.computed is not None
            else set()
        )
        near = set().union(*(plan.near_results.tags(v) for v in values))
        mine_kinds = operators(step.expression)
        for k, (theirs, kinds, _) in enumerate(plan.steps):
            if k in near:
                hits.add(k)
            elif i not in fillers and kinds == mine_kinds and _same_operands(mine, theirs):
                hits.add(k)
        milestones |= set().union(*(plan.near_milestones.tags(v) for v in values))
        if hits:
            matched[i] = hits
            reached |= hits
        elif step.computed not in plan.near_partials and step.value not in plan.near_partials:
            off_plan += 1
    last = len(plan.steps) - 1
    ends = matched.get(flow.final, set()) if flow.final is not None else set()
    stops_early = bool(ends) and last not in reached and max(reached) == max(ends)
    return PlanMatch((len(reached) + len(milestones)) / plan.size, off_plan, stops_early)


def _same_operands(mine: Sequence[frozenset], theirs: Sequence[frozenset]) -> bool:
    if len(mine) != len(theirs):
        return False
    left = list(mine)
    for identity in theirs:
        for j, candidate in enumerate(left):
            if identity & candidate:
                del left[j]
                break
        else:
            return False
    return True


__all__ = [
    "CONSTANTS",
    "MULTIPLIER_WORDS",
    "Flow",
    "Operand",
    "Plan",
    "PlanMatch",
    "Problem",
    "Source",
    "digits",
    "operands",
    "operators",
    "partial_values",
    "read_plan",
    "read_problem",
    "reference_match",
    "strip_annotations",
    "trace_flow",
]
