"""The embedded default judge: transparent rules for math and code reasoning, no model, no GPU.

Every trace is assessed on its own by small, pure checks, each returning evidence a person can
read (:class:`Assessment`); the evidence is weighed into one score per trace (:class:`Weights`),
and a comparison becomes ``p = sigmoid((score_first - score_second) / temperature)``.

Checks, and the evidence each gives:

arithmetic
    Every equation the trace writes (``16 - 3 - 4 = 9``, ``9 * 2 = $18``, ``20% of 50 = 10``)
    is recomputed exactly by a safe evaluator (:mod:`.arithmetic`). A wrong calculation is
    strong evidence of bad reasoning; equations that are correct up to the rounding shown
    (``10/3 = 3.33``) are not held against the trace.
final answer vs reference
    The trace's final answer (an ``A:``/``Answer:``/``####`` line, ``The answer is ...``,
    ``\\boxed{...}``; otherwise the last number it states) compared numerically with the
    reference's final answer. The reference may be the answer alone (``"84"``) or a worked
    solution ending in ``#### 18`` or ``A: 18``.
reference coverage
    For a worked reference: the fraction of its computed results (the right-hand sides of its
    equations, the results of ``<<a=b>>`` annotations, its final answer) that the trace also
    reaches. Numbers given in the prompt do not count.
prompt coverage
    The fraction of the quantities the prompt gives (``16``, ``$2``, ``25%``, ``three``) that
    the trace uses. A solution that leaves a given quantity unused has usually misread the
    problem. Works without a reference.
implausible answer
    A negative final answer to a "how many"/"how much" question.
repetition, truncation, emptiness
    Degenerate generations: the same lines or phrases over and over, a number that runs away
    (``181818...``), a trace that stops on an operator, a comma or a dangling word, or with
    brackets or a code block open, an empty trace.

Scoring is additive and every term is reported in :attr:`Assessment.contributions`. The
comparison is exactly antisymmetric: ``p(a, b) == 1 - p(b, a)`` bit for bit, and identical
traces give 0.5.

Measured on GSM8K pairs (:mod:`judge_server.bench.judge`): with a worked or an answer-only
reference the judge prefers the correct solution about 99% of the time; without a reference,
where only the arithmetic, prompt coverage and degeneracy checks speak, about 61%.
Tried and left out: penalising operands that appear neither in the prompt nor earlier in the
trace (no gain), and a final answer that is no computed result (no gain with prompt coverage).

Text in, numbers out: nothing is evaluated with ``eval``, sizes are bounded, and a 256 KiB
trace is assessed in well under a second.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .arithmetic import Claim, find_claims, normalise, numbers, same_number
from .base import Comparator, Comparison

# --------------------------------------------------------------------------------------------
# Final answers


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
    if not _is_worked(reference) and "=" not in reference:
        return _answer_from(reference, explicit=True)
    return answer


def _is_worked(reference: str) -> bool:
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


# --------------------------------------------------------------------------------------------
# Reference coverage


_ANNOTATION_RESULT = re.compile(r"<<[^<>=]*=(?P<result>[^<>]*)>>")
_AFTER_EQUALS = re.compile(r"(?<![=<>!])=(?!=)\s*(?P<rest>[^\n]{0,40})")


def reference_results(reference: str, *, prompt: str = "") -> frozenset[Fraction]:
    """The values a worked reference computes: the results of its equations and annotations
    and its final answer, less the numbers the prompt gives."""
    results: set[Fraction] = set()
    for match in _ANNOTATION_RESULT.finditer(reference):
        results.update(n.value for n in numbers(match["result"]))
    plain = _ANNOTATION_RESULT.sub("", reference)
    for match in _AFTER_EQUALS.finditer(normalise(plain)):
        first = next(numbers(match["rest"]), None)
        if first is not None and first.start <= 2:
            results.add(first.value)
    answer = reference_answer(plain)
    if answer is not None and answer.value is not None:
        results.add(answer.value)
    given = {n.value for n in numbers(prompt)}
    return frozenset(results - given)


@dataclass(frozen=True, slots=True)
class _Written:
    """The numbers a text writes: their values (a percentage also as a fraction) and the
    numbers of decimals shown."""

    values: frozenset[Fraction]
    decimals: frozenset[int]

    @classmethod
    def of(cls, text: str) -> _Written:
        values: set[Fraction] = set()
        decimals: set[int] = set()
        for number in numbers(text):
            values.add(number.value)
            if number.percent:
                values.add(number.value / 100)
            if 0 < number.decimals <= 4:
                decimals.add(number.decimals)
        return cls(frozenset(values), frozenset(decimals))

    def has(self, value: Fraction) -> bool:
        """Written exactly, or rounded to a number of decimals the text uses."""
        return value in self.values or any(round(value, d) in self.values for d in self.decimals)


def coverage(results: frozenset[Fraction], trace: str) -> float | None:
    """The fraction of ``results`` that appear among the numbers of ``trace`` (``3.33`` counts
    for 10/3 when the trace writes two decimals)."""
    return _coverage(results, _Written.of(trace))


def _coverage(results: frozenset[Fraction], written: _Written) -> float | None:
    if not results:
        return None
    return sum(written.has(value) for value in results) / len(results)


# --------------------------------------------------------------------------------------------
# The prompt's quantities and the question asked


_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
    if value > 1  # "one" and "zero" are seldom quantities ("one of them")
} | {
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "dozen": 12,
}
_WORD = re.compile(r"[a-z]+")
_COUNT_QUESTION = re.compile(r"\bhow\s+(?:many|much)\b", re.IGNORECASE)


def given_quantities(prompt: str) -> list[frozenset[Fraction]]:
    """The distinct quantities the prompt gives, each as the values that would express it
    (``25%`` may be written 25 or 0.25); number words (``three``, ``a dozen``) included."""
    given: set[frozenset[Fraction]] = set()
    for number in numbers(prompt):
        if number.percent:
            given.add(frozenset({number.value, number.value / 100}))
        else:
            given.add(frozenset({number.value}))
    for word in _WORD.findall(prompt.lower()):
        if word in _NUMBER_WORDS:
            given.add(frozenset({Fraction(_NUMBER_WORDS[word])}))
    return sorted(given, key=min)


def prompt_coverage(prompt: str, trace: str) -> float | None:
    """The fraction of the prompt's quantities the trace uses (None when it gives none).

    A solution that leaves a given quantity unused has usually misread the problem.
    """
    return _prompt_coverage(given_quantities(prompt), _Written.of(trace))


def _prompt_coverage(given: list[frozenset[Fraction]], written: _Written) -> float | None:
    if not given:
        return None
    return sum(bool(values & written.values) for values in given) / len(given)


def implausible_answer(prompt: str, answer: Answer | None) -> str | None:
    """Why the final answer cannot answer the question, or None: a negative number for a
    "how many" or "how much" question."""
    if answer is None or answer.value is None or answer.value >= 0:
        return None
    question = _COUNT_QUESTION.search(prompt)
    if question is None:
        return None
    return f"negative answer {answer.text!r} to {question[0].lower()!r}"


# --------------------------------------------------------------------------------------------
# Degenerate generations


_TOKEN = re.compile(r"\S+")
_NGRAM = 8
_MIN_LINE_CHARS = 8
_RUNAWAY_CHARS = 64
_RUNAWAY_TAIL = 48


def repetition(trace: str) -> float:
    """How much of the trace repeats earlier text, in [0, 1].

    The larger of two fractions: lines (of 8 characters or more) that repeat an earlier line,
    and word 8-grams that repeat an earlier 8-gram. Ordinary reasoning stays below 0.2; a
    generation stuck in a loop approaches 1.
    """
    lines = [line.strip() for line in trace.splitlines()]
    lines = [line for line in lines if len(line) >= _MIN_LINE_CHARS]
    line_repeats = (len(lines) - len(set(lines))) / len(lines) if len(lines) >= 4 else 0.0
    tokens = _TOKEN.findall(trace)
    ngrams = [tuple(tokens[i : i + _NGRAM]) for i in range(len(tokens) - _NGRAM + 1)]
    ngram_repeats = (len(ngrams) - len(set(ngrams))) / len(ngrams) if len(ngrams) >= 24 else 0.0
    return max(line_repeats, ngram_repeats)


def runaway_token(trace: str) -> bool:
    """True when a "word" ends in a long periodic run: ``0.181818...``, ``!!!!!!...``."""
    for token in _TOKEN.findall(trace):
        if len(token) >= _RUNAWAY_CHARS:
            tail = token[-_RUNAWAY_TAIL:]
            if any(tail[period:] == tail[:-period] for period in range(1, 9)):
                return True
    return False


_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_DANGLING_END = re.compile(
    r"(?:[=+*/^,(\[{:\\$€£-]|\b(?:"
    + "|".join(
        "the a an and or of to for with in on at by from is are was were be that which so then "
        "because than as if but into per its their this".split()
    )
    + r"))\s*\Z",
    re.IGNORECASE,
)


def truncation(trace: str) -> str | None:
    """Why the trace looks cut off, or None: it ends on an operator, a currency sign, a comma
    or a word that must be followed by more ("... for an"), or leaves brackets or a code block
    open. (Ending without a full stop is not enough: many finished traces do.)"""
    text = trace.rstrip()
    if not text:
        return None
    if _DANGLING_END.search(text[-200:]):
        return f"ends with {text[-20:]!r}"
    if text.count("```") % 2:
        return "code block left open"
    depth = dict.fromkeys(_OPENERS, 0)
    for char in text:
        if char in _OPENERS:
            depth[char] += 1
        elif char in _CLOSERS and depth[_CLOSERS[char]]:
            depth[_CLOSERS[char]] -= 1
    opened = [char for char, d in depth.items() if d]
    if opened:
        return f"bracket {opened[0]!r} left open"
    return None


# --------------------------------------------------------------------------------------------
# The assessment


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each piece of evidence moves a trace's score (in logits at temperature 1)."""

    wrong_claim: float = -1.5
    """Per wrong calculation, counting at most ``max_wrong_claims``."""
    max_wrong_claims: int = 3
    answer_matches: float = 3.0
    answer_contradicts: float = -3.0
    reference_coverage: float = 2.0
    """Times the fraction of the reference's results the trace reaches."""
    prompt_coverage: float = 1.0
    """Times the fraction of the prompt's quantities the trace uses."""
    implausible_answer: float = -2.0
    looping: float = -3.0
    """In full from ``repetition >= 0.6`` or a runaway token, in part from 0.3."""
    truncated: float = -2.0
    empty: float = -8.0


DEFAULT_WEIGHTS = Weights()
REPETITION_ONSET = 0.3
REPETITION_FULL = 0.6


@dataclass(frozen=True, slots=True)
class Assessment:
    """The evidence about one trace, and the score it adds up to."""

    empty: bool
    claims_checked: int = 0
    claims_wrong: int = 0
    wrong_claims: tuple[Claim, ...] = ()
    final_answer: Answer | None = None
    reference_answer: Answer | None = None
    matches_reference: bool | None = None
    """None without a reference, or when the two answers cannot be compared."""
    reference_coverage: float | None = None
    """Only for a worked reference with computed results."""
    prompt_coverage: float | None = None
    implausible_answer: str | None = None
    repetition: float = 0.0
    looping: bool = False
    truncated: str | None = None
    """Why the trace looks cut off, or None."""
    score: float = 0.0
    contributions: tuple[tuple[str, float], ...] = ()
    """The non-zero terms of ``score``, by check."""

    def explain(self) -> str:
        """A few lines saying what was found and what it was worth."""
        lines = [f"score {self.score:+.2f}"]
        lines += [f"  {name:<20} {value:+.2f}" for name, value in self.contributions]
        if self.wrong_claims:
            lines.append("  wrong: " + "; ".join(str(c) for c in self.wrong_claims[:5]))
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
    """
    if not trace.strip():
        return Assessment(
            empty=True, score=weights.empty, contributions=(("empty", weights.empty),)
        )
    context = _reference_context(reference, prompt)
    claims = find_claims(trace)
    wrong = tuple(c for c in claims if c.wrong)
    answer = final_answer(trace)
    matches = None
    if answer is not None and context.answer is not None:
        matches = answers_match(answer, context.answer)
    written = _Written.of(trace)
    covered = _coverage(context.results, written) if context.worked else None
    used = _prompt_coverage(given_quantities(prompt), written)
    implausible = implausible_answer(prompt, answer)
    repeated = repetition(trace)
    runaway = runaway_token(trace)
    truncated = truncation(trace)

    if runaway:
        loop_share = 1.0
    else:
        loop_share = (repeated - REPETITION_ONSET) / (REPETITION_FULL - REPETITION_ONSET)
        loop_share = min(1.0, max(0.0, loop_share))
    terms = {
        "wrong claims": weights.wrong_claim * min(len(wrong), weights.max_wrong_claims),
        "final answer": (
            0.0
            if matches is None
            else weights.answer_matches
            if matches
            else weights.answer_contradicts
        ),
        "reference coverage": weights.reference_coverage * (covered or 0.0),
        "prompt coverage": weights.prompt_coverage * (used or 0.0),
        "implausible answer": weights.implausible_answer if implausible else 0.0,
        "looping": weights.looping * loop_share,
        "truncated": weights.truncated if truncated else 0.0,
    }
    contributions = tuple((name, value) for name, value in terms.items() if value)
    return Assessment(
        empty=False,
        claims_checked=len(claims),
        claims_wrong=len(wrong),
        wrong_claims=wrong,
        final_answer=answer,
        reference_answer=context.answer,
        matches_reference=matches,
        reference_coverage=covered,
        prompt_coverage=used,
        implausible_answer=implausible,
        repetition=repeated,
        looping=loop_share >= 1.0,
        truncated=truncated,
        score=math.fsum(value for _, value in contributions),
        contributions=contributions,
    )


@dataclass(frozen=True, slots=True)
class _ReferenceContext:
    answer: Answer | None
    results: frozenset[Fraction]
    worked: bool


@functools.lru_cache(maxsize=256)
def _reference_context(reference: str | None, prompt: str) -> _ReferenceContext:
    """What a reference says, read once per (reference, prompt) rather than once per trace."""
    if reference is None or not reference.strip():
        return _ReferenceContext(None, frozenset(), False)
    worked = _is_worked(reference)
    results = reference_results(reference, prompt=prompt) if worked else frozenset()
    return _ReferenceContext(reference_answer(reference), results, worked)


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
        Batches of at least this many comparisons are assessed in a worker thread, so that a
        large batch does not stall the event loop. ``None`` never uses a thread.
    """

    name = "builtin"

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        weights: Weights = DEFAULT_WEIGHTS,
        cache_size: int = 4096,
        thread_threshold: int | None = 16,
    ) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature
        self.weights = weights
        self.cache_size = cache_size
        self.thread_threshold = thread_threshold
        self._cache: OrderedDict[tuple[str, str, str | None], Assessment] = OrderedDict()
        self._lock = threading.Lock()

    def assess(self, trace: str, *, prompt: str = "", reference: str | None = None) -> Assessment:
        """:func:`assess` with this comparator's weights, through its cache."""
        key = (trace, prompt, reference)
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
        if self.thread_threshold is not None and len(comparisons) >= self.thread_threshold:
            return await asyncio.to_thread(self.compare_sync, comparisons)
        return self.compare_sync(comparisons)

    async def aclose(self) -> None:
        with self._lock:
            self._cache.clear()


__all__ = [
    "DEFAULT_WEIGHTS",
    "Answer",
    "Assessment",
    "BuiltinComparator",
    "Weights",
    "answers_match",
    "assess",
    "coverage",
    "final_answer",
    "given_quantities",
    "implausible_answer",
    "preference",
    "prompt_coverage",
    "reference_answer",
    "reference_results",
    "repetition",
    "runaway_token",
    "truncation",
]
