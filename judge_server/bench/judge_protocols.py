"""The protocols of ``arena-judge bench judge`` (:mod:`.judge_suite`): GSM8K problems turned
into pairs a judge must rank, none of which can leak the answer where it claims not to.

See :mod:`.judge_suite` for what each protocol measures; this module only builds the pairs
(pure functions of the problems and a seed) and records what it had to skip and why.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from . import judge_probes, judge_variants
from .calculations import VariantRefused, values_in, written_numbers
from .judge import (
    DEFAULT_GSM8K_PATH,
    REPO_ROOT,
    LabelledPair,
    ReferenceMode,
    remove_final_answer_line,
    strip_calculator_annotations,
)

PADDING_LINES = 5


@dataclass(frozen=True, slots=True)
class Problem:
    """One GSM8K problem: its question, worked reference, answer and real solutions
    (annotated text and correctness label)."""

    index: int
    question: str
    reference_solution: str
    reference_answer: str
    solutions: tuple[tuple[str, bool], ...]

    def reference(self, mode: ReferenceMode) -> str | None:
        """What the judge is shown as reference in ``mode``."""
        if mode == "worked":
            return strip_calculator_annotations(self.reference_solution)
        return self.reference_answer if mode == "answer" else None

    @property
    def answer_value(self) -> Fraction:
        return Fraction(self.reference_answer.replace(",", "").strip())

    def distinct(self, correct: bool) -> list[tuple[int, str]]:
        """(solution number, annotated text) of the solutions with this label, one per
        distinct stripped text."""
        seen, out = set(), []
        for number, (text, ok) in enumerate(self.solutions):
            plain = strip_calculator_annotations(text)
            if ok == correct and plain not in seen:
                seen.add(plain)
                out.append((number, text))
        return out


def load_problems(
    path: str | Path = DEFAULT_GSM8K_PATH, *, sample: int = 0, seed: int = 0
) -> list[Problem]:
    """The problems of ``model_solutions.jsonl``; ``sample`` > 0 keeps that many, drawn with
    ``seed``, in file order."""
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                solutions = tuple((s["text"], bool(s["is_correct"])) for s in row["solutions"])
                problems.append(Problem(len(problems), row["question"], row["reference_solution"],
                                        str(row["reference_answer"]), solutions))
    if 0 < sample < len(problems):
        problems = sorted(random.Random(seed).sample(problems, sample), key=lambda p: p.index)
    return problems


# --------------------------------------------------------------------------------------------
# Protocols


@dataclass
class Protocol:
    """Pairs to judge and what to report on them.

    ``kind``: ``"agreement"`` (``better`` is known), ``"probe"`` (the same, the worse trace is
    a gaming probe), ``"ties"`` (no label: ties are counted per group) or ``"gain"`` (the
    first trace is padded; ``baseline`` holds the same pairs without the padding).
    ``problems`` gives each pair's problem (its reference is set per mode).
    """

    name: str
    kind: str
    pairs: list[LabelledPair] = field(default_factory=list)
    problems: list[int] = field(default_factory=list)
    baseline: list[LabelledPair] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    identical: int = 0

    def add(self, problem: Problem, better: str, worse: str, *, first_better: bool) -> None:
        if first_better:
            pair = LabelledPair(problem.question, better, worse, "a")
        else:
            pair = LabelledPair(problem.question, worse, better, "b")
        self.pairs.append(pair)
        self.problems.append(problem.index)


def real_protocol(problems: Sequence[Problem]) -> Protocol:
    """The old protocol: every (correct, incorrect) pair, final-answer lines removed."""
    protocol = Protocol("real", "agreement")
    for problem in problems:
        traces = [(remove_final_answer_line(strip_calculator_annotations(t)), ok)
                  for t, ok in problem.solutions]
        for good, good_ok in traces:
            for bad, bad_ok in traces:
                if good_ok and not bad_ok:
                    protocol.add(problem, good, bad, first_better=len(protocol.pairs) % 2 == 0)
    return protocol


def masked_protocol(problems: Sequence[Problem]) -> Protocol:
    """Every (correct, incorrect) pair with the reference answer and both traces' answers
    masked in both traces, final-answer lines removed."""
    protocol = Protocol("masked", "agreement")
    for problem in problems:
        for good_text, good_ok in problem.solutions:
            for bad_text, bad_ok in problem.solutions:
                if not good_ok or bad_ok:
                    continue
                good, bad = (strip_calculator_annotations(t) for t in (good_text, bad_text))
                answers = {problem.answer_value}
                stated = map(judge_probes.stated_answer, (good, bad))
                answers |= {a for a in stated if a is not None}
                good, bad = (
                    judge_probes.mask_answers(remove_final_answer_line(t), answers,
                                              question=problem.question)
                    for t in (good, bad)
                )
                protocol.add(problem, good, bad, first_better=len(protocol.pairs) % 2 == 0)
    return protocol


def _planted(kind: str, problem: Problem, text: str, rng: random.Random) -> str:
    build = getattr(judge_variants, kind)
    if kind == "padding":
        return build(text, problem.question, rng, reference=problem.reference_solution)
    if kind == "answer_contradicts":
        return build(text, problem.question, rng, avoid=frozenset({problem.answer_value}))
    return build(text, problem.question, rng)


_ANSWER_CHANGING = frozenset(
    {"slip", "slip_in_words", "misread", "operator_swap", "answer_contradicts"}
)


def planted_protocols(problems: Sequence[Problem], *, seed: int = 0) -> list[Protocol]:
    """One protocol per planted variant and context (correct, wrong solutions)."""
    protocols = []
    for kind in judge_variants.PLANTED_KINDS:
        for context, correct in (("correct", True), ("wrong", False)):
            protocol = Protocol(f"{kind}/{context}", "agreement")
            for problem in problems:
                for number, text in problem.distinct(correct):
                    rng = random.Random(f"{seed}:{kind}:{problem.index}:{number}")
                    try:
                        variant = _planted(kind, problem, text, rng)
                        if kind in _ANSWER_CHANGING and judge_variants.final_value(
                                variant) == problem.answer_value:
                            raise VariantRefused("the variant's answer is the reference answer")
                    except VariantRefused as exc:
                        protocol.skipped[str(exc)] += 1
                        continue
                    clean = strip_calculator_annotations(text)
                    if kind == "slip_in_words":
                        clean = judge_variants.in_words(clean)
                    protocol.add(problem, clean, variant, first_better=rng.random() < 0.5)
            protocols.append(protocol)
    return protocols


def probe_protocols(problems: Sequence[Problem], *, seed: int = 0) -> list[Protocol]:
    """One protocol per gaming probe, against every distinct genuine correct solution."""
    protocols = []
    for kind, probe in judge_probes.PROBES.items():
        protocol = Protocol(f"probe:{kind}", "probe")
        for problem in problems:
            for number, text in problem.distinct(True):
                rng = random.Random(f"{seed}:{kind}:{problem.index}:{number}")
                genuine = strip_calculator_annotations(text)
                try:
                    fake = probe(problem.question, problem.reference_solution, genuine, rng)
                except VariantRefused as exc:
                    protocol.skipped[str(exc)] += 1
                    continue
                protocol.add(problem, genuine, fake, first_better=rng.random() < 0.5)
        protocols.append(protocol)
    return protocols


def dead_group_protocols(problems: Sequence[Problem], *, seed: int = 0) -> list[Protocol]:
    """Ties in the real all-correct and all-wrong groups, and padding in the all-wrong ones."""
    protocols = []
    for context, correct in (("all_correct", True), ("all_wrong", False)):
        protocol = Protocol(f"ties:{context}", "ties")
        for problem in _dead(problems, correct):
            traces = [strip_calculator_annotations(t) for t, _ in problem.solutions]
            for i in range(len(traces)):
                for j in range(i + 1, len(traces)):
                    if traces[i] == traces[j]:
                        protocol.identical += 1
                        continue
                    protocol.add(problem, traces[i], traces[j], first_better=True)
                    protocol.groups.append(problem.index)
        protocols.append(protocol)
    for name, gaming in (("padding_gain", _append_filler), ("stuffing_gain", _append_givens)):
        gain = Protocol(f"{name}:all_wrong", "gain")
        for problem in _dead(problems, False):
            traces = [strip_calculator_annotations(t) for t, _ in problem.solutions]
            for i, trace in enumerate(traces):
                rng = random.Random(f"{seed}:{name}:{problem.index}:{i}")
                try:
                    gamed = gaming(trace, problem, rng)
                except VariantRefused as exc:
                    gain.skipped[str(exc)] += 1
                    continue
                for other in dict.fromkeys(traces):
                    if other != trace:
                        gain.pairs.append(LabelledPair(problem.question, gamed, other, "b"))
                        gain.baseline.append(LabelledPair(problem.question, trace, other, "b"))
                        gain.problems.append(problem.index)
        protocols.append(gain)
    return protocols


def _dead(problems: Sequence[Problem], correct: bool) -> list[Problem]:
    return [p for p in problems if all(ok == correct for _, ok in p.solutions)]


def _append_filler(trace: str, problem: Problem, rng: random.Random) -> str:
    body, answer = judge_variants.split_answer(trace)
    avoid = values_in(trace) | values_in(problem.question) | values_in(problem.reference_solution)
    facts = judge_variants.filler(problem.question, rng, count=PADDING_LINES, avoid=avoid)
    return "\n".join(body + facts + ([answer] if answer else []))


def _append_givens(trace: str, problem: Problem, rng: random.Random) -> str:
    """The trace with one line listing the question's numbers before its answer."""
    given = list(dict.fromkeys(n.text for n in written_numbers(problem.question)))
    if not given:
        raise VariantRefused("a question without numbers in digits")
    body, answer = judge_variants.split_answer(trace)
    listed = ", ".join(given[:-1]) + f" and {given[-1]}" if len(given) > 1 else given[0]
    return "\n".join([*body, f"We are given {listed}.", *([answer] if answer else [])])


def build_protocols(problems: Sequence[Problem], *, seed: int = 0) -> list[Protocol]:
    """Every protocol of the suite, in table order."""
    return [
        real_protocol(problems),
        masked_protocol(problems),
        *planted_protocols(problems, seed=seed),
        *probe_protocols(problems, seed=seed),
        *dead_group_protocols(problems, seed=seed),
    ]


__all__ = [
    "PADDING_LINES",
    "Problem",
    "Protocol",
    "build_protocols",
    "dead_group_protocols",
    "load_problems",
    "masked_protocol",
    "planted_protocols",
    "probe_protocols",
    "real_protocol",
]
