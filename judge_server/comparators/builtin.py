"""The embedded default judge: a transparent, model-free judge that reads a trace's argument.

Every trace is assessed on its own (:func:`assess`): its computations are found and checked
exactly (:mod:`.arithmetic`), and its *dataflow* is built (:mod:`.dataflow`): where each
operand comes from (the problem, an earlier result, a unit constant, one operation on those,
or nowhere) and which steps the final answer depends on (the *chain*). The evidence becomes one
score per trace (:class:`Weights`, every term reported in :attr:`Assessment.contributions`), and
a comparison is ``p = sigmoid((score_first - score_second) / temperature)``.

What counts, with no reference:
    + the share of the problem's quantities that feed the answer (a misread or an early stop
      leaves some unused);
    - each wrong computation (``9 * 2 = 19``, or a bare ``35 = 6``), an operand from nowhere,
      a computation that leads nowhere (padding, counting), a step that changes nothing
      (``x * 1``), a line that only restates the problem's numbers;
    - no correct computation behind the answer, a marked answer that no computation of the
      trace produced (a correct body followed by a contradicting answer), no marked answer;
    - repetition loops, truncation, a negative answer to "how many".
With a worked reference, also:
    + the share of the reference's steps the chain reaches, matched by dataflow (the same
      quantities combined the same way, or the same value computed from supported operands),
      never by numbers merely written somewhere;
    - chain steps that follow no step of the reference, and a chain that ends on an early step
      of it (an early stop);
    and with any reference, the final answer against the reference's (``+3`` / ``-3``).

What it cannot see: a plan error with no worked reference whose arithmetic is right and uses
every quantity (``16 * 7`` where ``16 - 7`` was meant), an early stop that marks its partial
result as the answer when no worked reference is given (only unused quantities show it),
units, prose reasoning without equations, anything outside arithmetic (code, proofs). When
two traces give the same evidence it abstains: ``p = 0.5`` exactly (identical scores), which
the service reports as a tie.

The comparison is exactly antisymmetric: ``p(a, b) == 1 - p(b, a)`` bit for bit.
Text in, numbers out: nothing is evaluated with ``eval``, and sizes are bounded (of each
text at most :data:`MAX_READ_CHARS` is read).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .answers import Answer, answers_match, final_answer, is_worked, reference_answer
from .arithmetic import Step, numbers
from .base import Comparator, Comparison
from .dataflow import Flow, Plan, read_plan, read_problem, reference_match, trace_flow
from .degenerate import implausible_answer, repetition, runaway_token, truncation

# --------------------------------------------------------------------------------------------
# The assessment


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each piece of evidence moves a trace's score (in logits at temperature 1)."""

    wrong_step: float = -1.5
    """Per wrong computation, counting at most ``max_counted`` of each kind of flaw."""
    unsupported_number: float = -1.0
    dead_end: float = -0.5
    filler_step: float = -0.5
    restated_line: float = -0.5
    max_counted: int = 3
    problem_coverage: float = 3.0
    """Times the share of the problem's quantities that feed the answer."""
    no_reasoning: float = -3.0
    """No correct step behind the answer that uses the problem's quantities."""
    answer_not_derived: float = -3.0
    answer_not_last: float = -2.0
    """A marked answer that is one of the work's earlier results, not its last."""
    no_marked_answer: float = -2.5
    answer_matches: float = 3.0
    answer_contradicts: float = -3.0
    reference_steps: float = 4.0
    """Times the share of the worked reference's steps the chain reaches."""
    off_plan_step: float = -0.5
    stops_early: float = -2.0
    """The chain ends on a step of the worked reference that is not its last (matched by
    dataflow, so a slip on the way does not hide it): the work stopped part-way."""
    implausible_answer: float = -2.0
    looping: float = -3.0
    """In full from ``repetition >= 0.6`` or a runaway token, in part from 0.3."""
    truncated: float = -3.0
    empty: float = -8.0


DEFAULT_WEIGHTS = Weights()
REPETITION_ONSET = 0.3
REPETITION_FULL = 0.6
MAX_READ_CHARS = 32_768
"""The most of a trace, a prompt or a reference that :func:`assess` reads. A longer text is
read as its first and last halves (cut at line breaks, so that no line is read in part): its
beginning and its end, where the final answer is. The judge's time grows with the text it
reads (a few microseconds a character on a pathological text, about 0.2 s at this size,
where a 256 KiB trace, the server's default limit, took up to 30 s when read whole); the
longest GSM8K model solution is 1,571 characters."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """The evidence about one trace, and the score it adds up to."""

    empty: bool
    steps: int = 0
    wrong_steps: tuple[Step, ...] = ()
    chain: int = 0
    """Steps the final answer depends on."""
    unsupported_numbers: tuple[Fraction, ...] = ()
    dead_ends: int = 0
    filler_steps: int = 0
    restated_lines: int = 0
    problem_coverage: float | None = None
    """Share of the problem's quantities that feed the answer (None: it gives none)."""
    final_answer: Answer | None = None
    answer_derived: bool | None = None
    """Whether a marked final answer is the result of a computation (None: nothing marked)."""
    reference_answer: Answer | None = None
    matches_reference: bool | None = None
    """None without a reference, or when the two answers cannot be compared."""
    reference_steps: float | None = None
    """Share of a worked reference's steps reached (None: no worked reference)."""
    off_plan_steps: int = 0
    stops_early: bool = False
    implausible_answer: str | None = None
    repetition: float = 0.0
    looping: bool = False
    truncated: str | None = None
    score: float = 0.0
    contributions: tuple[tuple[str, float], ...] = ()
    """The non-zero terms of ``score``, by check."""

    @property
    def claims_wrong(self) -> int:
        return len(self.wrong_steps)

    def explain(self) -> str:
        """A few lines saying what was found and what it was worth."""
        lines = [f"score {self.score:+.2f}"]
        lines += [f"  {name:<20} {value:+.2f}" for name, value in self.contributions]
        if self.wrong_steps:
            lines.append(
                "  wrong: "
                + "; ".join(f"{s.expression} = {s.result}" for s in self.wrong_steps[:5])
            )
        if self.unsupported_numbers:
            lines.append("  from nowhere: " + ", ".join(map(str, self.unsupported_numbers[:5])))
        if self.final_answer is not None:
            how = "marked" if self.final_answer.explicit else "last result"
            lines.append(f"  final answer {self.final_answer.text!r} ({how})")
        for note in (self.implausible_answer, self.truncated and f"truncated: {self.truncated}"):
            if note:
                lines.append(f"  {note}")
        return "\n".join(lines)


def assess(
    trace: str,
    *,
    prompt: str = "",
    reference: str | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Assessment:
    """Assess one trace of ``prompt``, against ``reference`` when one is given.

    Pure and deterministic; the score depends on this trace only, never on its opponent.
    Of each text it reads at most :data:`MAX_READ_CHARS` (:func:`readable`).
    """
    trace, prompt = readable(trace), readable(prompt)
    reference = None if reference is None else readable(reference)
    if not trace.strip():
        return Assessment(
            empty=True, score=weights.empty, contributions=(("empty", weights.empty),)
        )
    problem = read_problem(prompt)
    read = final_answer(trace)
    marked = read if read is not None and read.explicit and read.value is not None else None
    flow = trace_flow(trace, problem, answer=None if marked is None else marked.value)
    answer, derived, last = _answer(trace, flow, marked, read)
    context = _reference_context(reference, prompt)
    matches = None
    if answer is not None and context.answer is not None:
        matches = answers_match(answer, context.answer)
    plan = reference_match(flow, context.plan) if context.plan is not None else None
    reached = plan.reached if plan else None
    off_plan = plan.off_plan if plan else 0
    early = bool(plan and plan.stops_early) and matches is not True
    steps = flow.steps
    wrong = tuple(s for s in steps if s.wrong)
    quantities = len(problem.quantities)
    # Reasoning about this problem: a correct step behind the answer that uses its quantities.
    reasoned = any(not steps[i].wrong for i in flow.chain) and (
        bool(flow.used_quantities) or not quantities
    )
    coverage = len(flow.used_quantities) / quantities if quantities else None
    fillers = set(flow.fillers)
    dead = [i for i in flow.dead_ends if i not in fillers]
    repeated = repetition(trace)
    loop_share = 1.0 if runaway_token(trace) else _ramp(repeated)
    truncated = truncation(trace)
    implausible = implausible_answer(prompt, answer)
    w, cap = weights, weights.max_counted
    terms = {
        "wrong steps": w.wrong_step * min(len(wrong), cap),
        "from nowhere": w.unsupported_number * min(len(flow.unsupported), cap),
        "dead ends": w.dead_end * min(len(dead), cap),
        "filler steps": w.filler_step * min(len(fillers), cap),
        "restated lines": w.restated_line * min(flow.lines_restating, cap),
        "problem coverage": w.problem_coverage * (coverage or 0.0),
        "no reasoning": 0.0 if reasoned else w.no_reasoning,
        "answer not derived": w.answer_not_derived if derived is False else 0.0,
        "answer not last": w.answer_not_last if derived and not last else 0.0,
        "no marked answer": w.no_marked_answer if marked is None else 0.0,
        "final answer": (
            0.0 if matches is None else w.answer_matches if matches else w.answer_contradicts
        ),
        "reference steps": w.reference_steps * (reached or 0.0),
        "off plan": w.off_plan_step * min(off_plan, cap),
        "stops early": w.stops_early if early else 0.0,
        "implausible answer": w.implausible_answer if implausible else 0.0,
        "looping": w.looping * loop_share,
        "truncated": w.truncated if truncated else 0.0,
    }
    contributions = tuple((name, value) for name, value in terms.items() if value)
    return Assessment(
        empty=False,
        steps=len(steps),
        wrong_steps=wrong,
        chain=len(flow.chain),
        unsupported_numbers=flow.unsupported,
        dead_ends=len(dead),
        filler_steps=len(fillers),
        restated_lines=flow.lines_restating,
        problem_coverage=coverage,
        final_answer=answer,
        answer_derived=derived,
        reference_answer=context.answer,
        matches_reference=matches,
        reference_steps=reached,
        off_plan_steps=off_plan,
        stops_early=early,
        implausible_answer=implausible,
        repetition=repeated,
        looping=loop_share >= 1.0,
        truncated=truncated,
        score=math.fsum(value for _, value in contributions),
        contributions=contributions,
    )


def readable(text: str, limit: int = MAX_READ_CHARS) -> str:
    """What :func:`assess` reads of ``text``: all of it up to ``limit`` characters, else its
    first and last ``limit // 2`` characters, each cut back to whole lines when it has a line
    break, joined by one (see :data:`MAX_READ_CHARS`)."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit // 2], text[-(limit // 2) :]
    head = head[: head.rfind("\n")] if "\n" in head else head
    tail = tail[tail.find("\n") + 1 :] if "\n" in tail else tail
    return head + "\n" + tail


def _ramp(repeated: float) -> float:
    share = (repeated - REPETITION_ONSET) / (REPETITION_FULL - REPETITION_ONSET)
    return min(1.0, max(0.0, share))


def _answer(
    trace: str, flow: Flow, marked: Answer | None, read: Answer | None
) -> tuple[Answer | None, bool | None, bool]:
    """The trace's final answer; whether a marked one follows from the trace's own work (None:
    nothing marked, or no work); and whether it is the work's last result.

    Unmarked, the answer is the last step's result (a masked or missing answer line leaves
    the computation that led to it), else what :func:`final_answer` ``read``: the last number
    stated. Marked, it should be the
    last result the body states (rounding to a whole number allowed); one of the body's
    earlier numbers is an answer that stops early or contradicts the end of the work, and a
    number the body never states is not derived at all.
    """
    if marked is None:
        if flow.final is None:
            return read, None, True
        step = flow.steps[flow.final]
        if step.value is None:  # the work ends in an unknown: its answer cannot be read
            return None, None, True
        shown = len(step.result.partition(".")[2]) if step.claimed is not None else 30
        return Answer(str(step.value), step.value, decimals=shown, explicit=False), None, True
    body = _body(trace, marked)
    last = final_answer(body)
    if last is None or last.value is None:
        return marked, None, True
    if _consistent(marked, last):
        return marked, True, True
    stated = [n.value for n in numbers(body)] + [s.value for s in flow.steps if s.value is not None]
    if any(_consistent(marked, Answer(str(v), v)) for v in stated):
        return marked, True, False
    return marked, False, False


def _body(trace: str, marked: Answer) -> str:
    """The trace up to the line that marks its final answer."""
    lines = trace.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if marked.text in lines[index]:
            head = lines[index][: lines[index].rfind(marked.text)]
            return "\n".join([*lines[:index], head])
    return trace


def _consistent(answer: Answer, result: Answer) -> bool:
    """The same number, or ``result`` rounded (either way) to the whole number ``answer``."""
    if answers_match(answer, result) is True:
        return True
    a, r = answer.value, result.value
    return (
        a is not None
        and r is not None
        and a.denominator == 1
        and r.denominator != 1
        and abs(a - r) < 1
    )


@dataclass(frozen=True, slots=True)
class _ReferenceContext:
    answer: Answer | None
    plan: Plan | None


def _digest(trace: str, prompt: str, reference: str | None) -> bytes:
    """A short key for an assessment's inputs (the texts, unambiguously joined)."""
    h = hashlib.blake2b(digest_size=16)
    for text in (trace, prompt, reference):
        data = b"\xff" if text is None else text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


@functools.lru_cache(maxsize=256)
def _reference_context(reference: str | None, prompt: str) -> _ReferenceContext:
    """What a reference says, read once per (reference, prompt) rather than once per trace."""
    if reference is None or not reference.strip():
        return _ReferenceContext(None, None)
    plan = read_plan(reference, prompt) if is_worked(reference) else None
    if plan is not None and not plan.size:
        plan = None
    return _ReferenceContext(reference_answer(reference), plan)


# --------------------------------------------------------------------------------------------
# The comparator


def preference(score_first: float, score_second: float, *, temperature: float = 1.0) -> float:
    """``sigmoid((score_first - score_second) / temperature)``, exactly antisymmetric.

    The smaller of ``p`` and ``1 - p`` is computed once and rounded to a multiple of 2**-53,
    so that ``1 - p`` is exact and ``preference(a, b) == 1 - preference(b, a)`` bit for bit.
    """
    margin = (score_first - score_second) / temperature
    if math.isnan(margin):
        return 0.5
    loser = 1.0 / (1.0 + math.exp(min(abs(margin), 700.0)))
    loser = round(loser * 2.0**53) / 2.0**53
    return 1.0 - loser if margin > 0 else loser


THREAD_CHARS = 4096
"""A batch with this much text is assessed in a worker thread, whatever its length (a
pathological trace of 4 KiB, all computations, takes about 0.03 s)."""


def _text_chars(comparisons: Sequence[Comparison], enough: int) -> int:
    """The characters of the comparisons' texts, counted until ``enough``."""
    total = 0
    for c in comparisons:
        total += len(c.first) + len(c.second) + len(c.prompt) + len(c.reference or "")
        if total >= enough:
            break
    return total


class BuiltinComparator(Comparator):
    """The default judge: rule-based, CPU only, deterministic, and explainable via :func:`assess`.

    Parameters
    ----------
    temperature
        Divides the score difference before the sigmoid; larger gives softer preferences.
        Default 1.0: one wrong calculation (-1.5) alone gives p = 0.82 against a clean twin.
    weights
        How much each check counts; see :class:`Weights`.
    cache_size
        Assessments kept, keyed by (trace, prompt, reference), so that a trace compared with
        several anchors is assessed once. 0 disables the cache.
    thread_threshold
        Batches of at least this many comparisons, or with at least ``thread_chars`` characters
        of text, are assessed in a worker thread, so that a large batch (or one of long traces:
        up to a few microseconds a character, about 0.2 s for a trace past
        :data:`MAX_READ_CHARS`) does not stall the event loop. ``None`` never uses a thread.
    thread_chars
        See ``thread_threshold``: the text of a batch's traces, prompts and references.
    """

    name = "builtin"

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        weights: Weights = DEFAULT_WEIGHTS,
        cache_size: int = 4096,
        thread_threshold: int | None = 16,
        thread_chars: int = THREAD_CHARS,
    ) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature
        self.weights = weights
        self.cache_size = cache_size
        self.thread_threshold = thread_threshold
        self.thread_chars = thread_chars
        # keyed by a digest: texts of up to the server's limits would make 4,096 entries GiBs
        self._cache: OrderedDict[bytes, Assessment] = OrderedDict()
        self._lock = threading.Lock()

    def assess(self, trace: str, *, prompt: str = "", reference: str | None = None) -> Assessment:
        """:func:`assess` with this comparator's weights, through its cache."""
        key = _digest(trace, prompt, reference)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        result = assess(trace, prompt=prompt, reference=reference, weights=self.weights)
        if self.cache_size > 0:
            with self._lock:
                self._cache[key] = result
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return result

    def compare_sync(self, comparisons: Sequence[Comparison]) -> list[float]:
        """:meth:`compare` without the event loop: one ``p`` per comparison, in order."""
        out = []
        for c in comparisons:
            first = self.assess(c.first, prompt=c.prompt, reference=c.reference)
            second = self.assess(c.second, prompt=c.prompt, reference=c.reference)
            out.append(preference(first.score, second.score, temperature=self.temperature))
        return out

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        if self.thread_threshold is not None and (
            len(comparisons) >= self.thread_threshold
            or _text_chars(comparisons, self.thread_chars) >= self.thread_chars
        ):
            return await asyncio.to_thread(self.compare_sync, comparisons)
        return self.compare_sync(comparisons)

    async def aclose(self) -> None:
        with self._lock:
            self._cache.clear()


__all__ = [
    "DEFAULT_WEIGHTS",
    "MAX_READ_CHARS",
    "Answer",
    "Assessment",
    "BuiltinComparator",
    "Weights",
    "assess",
    "final_answer",
    "preference",
    "readable",
    "reference_answer",
    "repetition",
    "truncation",
]
