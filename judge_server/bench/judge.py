"""How good is a judge? Agreement with known labels on pairs of traces, for any comparator.

A :class:`LabelledPair` is two traces of one prompt of which one is known to be better. The
benchmark asks the comparator both orders of every pair and reports

``agreement``
    the fraction of pairs where the judge prefers the better trace, after averaging both
    orders (``p = (p_ab + 1 - p_ba) / 2``); a tie (``|p - 0.5| < 1e-9``) counts half;
``agreement_first_order_only``
    the same from the order stored in the pair alone (what a judge asked once would give);
``position_consistency``
    the fraction of pairs whose verdict flips with the order (``p_ab > 0.5`` iff ``p_ba < 0.5``,
    and a tie in one order is a tie in the other): a judge without position bias scores 1;
``n_pairs`` and ``comparisons_per_s``.

Sources of pairs: :func:`gsm8k_pairs` (real GPT-3 solutions of GSM8K test problems, every
(correct, incorrect) pair of solutions of the same problem) and :func:`load_pairs_jsonl`
(your own labelled pairs).

From the command line: ``arena-judge bench judge --protocol real --reference worked|answer|none``
(this figure), or ``--pairs my_pairs.jsonl``. This protocol mostly measures an answer check:
with the final-answer line removed the answer is still on a trace's last line. The default,
``arena-judge bench judge``, runs the suite of :mod:`.judge_suite`, whose protocols cannot leak
the answer (masked answers, planted errors, gaming probes, ties in dead groups).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from judge_server.comparators.base import Comparator, Comparison
from judge_server.comparators.dataflow import strip_annotations

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GSM8K_PATH = REPO_ROOT / ".." / "shared" / "data" / "gsm8k" / "model_solutions.jsonl"
TIE_TOLERANCE = 1e-9

ReferenceMode = Literal["worked", "answer", "none"]
REFERENCE_MODES: tuple[ReferenceMode, ...] = ("worked", "answer", "none")


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """Two traces of one prompt; ``better`` says which one is better: ``"a"`` or ``"b"``."""

    prompt: str
    trace_a: str
    trace_b: str
    better: Literal["a", "b"]
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.better not in ("a", "b"):
            raise ValueError(f"better must be 'a' or 'b', not {self.better!r}")


# --------------------------------------------------------------------------------------------
# Pair sources


def gsm8k_problems(path: str | Path = DEFAULT_GSM8K_PATH) -> Iterator[dict]:
    """The problems of ``model_solutions.jsonl`` in file order (a relative ``path`` is taken
    relative to the repository root): question, reference solution and answer, solutions."""
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


_FINAL_ANSWER_LINE = re.compile(r"(?:\A|\n)[ \t]*(?:A:|####)[^\n]*\Z")


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: ``16 - 3 = <<16-3=13>>13`` -> ``16 - 3 = 13``.

    An annotation cut off by the end of the text (``... = <<7962``) is removed too. (The
    embedded judge's own reading, :func:`~judge_server.comparators.dataflow.strip_annotations`.)
    """
    return strip_annotations(text)


def remove_final_answer_line(text: str) -> str:
    """Remove a last line that states the final answer (``A: 18`` or ``#### 18``)."""
    return _FINAL_ANSWER_LINE.sub("", text.rstrip())


def gsm8k_pairs(
    path: str | Path = DEFAULT_GSM8K_PATH,
    *,
    reference: ReferenceMode = "worked",
    strip_annotations: bool = True,
    drop_final_answer_line: bool = True,
) -> list[LabelledPair]:
    """Every (correct, incorrect) pair of model solutions of the same GSM8K problem.

    Parameters
    ----------
    path
        ``model_solutions.jsonl`` (see ``shared/data/gsm8k/README.md``). A relative path is
        taken relative to the repository root.
    reference
        What the judge is shown as reference: ``"worked"``, the reference solution (its
        annotations stripped too when ``strip_annotations``; its final ``A:`` line kept, as it
        is the reference answer); ``"answer"``, only the final answer; ``"none"``.
    strip_annotations
        Remove ``<<...>>`` calculator annotations from the traces: real traces of newer models
        carry none, and they give every calculation away.
    drop_final_answer_line
        Remove each trace's final ``A: ...``/``#### ...`` line, so that the judge must read the
        reasoning rather than the stated answer.

    Returns
    -------
    list of LabelledPair
        Ordered by problem, then correct solution, then incorrect one. Which trace is ``a``
        alternates from pair to pair, so that a judge with a position bias gets no free points
        in ``agreement_first_order_only``.
    """
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference must be one of {REFERENCE_MODES}, not {reference!r}")
    strip = strip_calculator_annotations if strip_annotations else _same
    drop = remove_final_answer_line if drop_final_answer_line else _same
    pairs: list[LabelledPair] = []
    for problem in gsm8k_problems(path):
        shown = {
            "worked": strip(problem["reference_solution"]),
            "answer": str(problem["reference_answer"]),
            "none": None,
        }[reference]
        traces = [(drop(strip(s["text"])), bool(s["is_correct"])) for s in problem["solutions"]]
        for good, good_ok in traces:
            if not good_ok:
                continue
            for bad, bad_ok in traces:
                if bad_ok:
                    continue
                if len(pairs) % 2:
                    pair = LabelledPair(problem["question"], bad, good, "b", shown)
                else:
                    pair = LabelledPair(problem["question"], good, bad, "a", shown)
                pairs.append(pair)
    return pairs


def _same(text: str) -> str:
    return text


def load_pairs_jsonl(path: str | Path) -> list[LabelledPair]:
    """Labelled pairs from JSON lines ``{"prompt", "reference"?, "trace_a", "trace_b",
    "better": "a" | "b"}``. Raises ValueError naming the line of a malformed record."""
    pairs = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                reference = record.get("reference")
                pairs.append(
                    LabelledPair(
                        prompt=str(record["prompt"]),
                        trace_a=str(record["trace_a"]),
                        trace_b=str(record["trace_b"]),
                        # checked by LabelledPair itself
                        better=cast(Literal["a", "b"], str(record["better"]).strip().lower()),
                        reference=None if reference is None else str(reference),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a labelled pair: {exc}") from exc
    return pairs


# --------------------------------------------------------------------------------------------
# Evaluation


async def evaluate(
    comparator: Comparator,
    pairs: Sequence[LabelledPair],
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, float | int]:
    """Ask ``comparator`` both orders of every pair, in batches; report agreement.

    Returns a dict with ``agreement``, ``agreement_first_order_only``,
    ``position_consistency``, ``n_pairs``, ``n_comparisons``, ``seconds`` and
    ``comparisons_per_s`` (see the module docstring).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    comparisons = list(_both_orders(pairs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(comparisons), desc=f"judge {comparator.name}", unit="cmp", file=sys.stderr
        )
    try:
        answers, seconds = await ask(comparator, comparisons, batch_size=batch_size, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    return _score(pairs, answers, seconds)


async def ask(
    comparator: Comparator, comparisons: Sequence[Comparison], *, batch_size: int, bar=None
) -> tuple[list[float], float]:
    """Ask ``comparator`` every comparison in batches: the answers, in order, and the seconds
    spent waiting for them. ``bar`` (a tqdm bar) is advanced by each batch."""
    answers: list[float] = []
    seconds = 0.0
    for start in range(0, len(comparisons), batch_size):
        batch = comparisons[start : start + batch_size]
        began = time.perf_counter()
        answers.extend(await comparator.compare(batch))
        seconds += time.perf_counter() - began
        if bar is not None:
            bar.update(len(batch))
    if len(answers) != len(comparisons):
        raise RuntimeError(
            f"{comparator.name} answered {len(answers)} of {len(comparisons)} comparisons"
        )
    return answers, seconds


def _both_orders(pairs: Iterable[LabelledPair]) -> Iterable[Comparison]:
    for pair in pairs:
        yield Comparison(pair.prompt, pair.trace_a, pair.trace_b, pair.reference)
        yield Comparison(pair.prompt, pair.trace_b, pair.trace_a, pair.reference)


def _credit(p_better: float) -> float:
    """1 when the better trace is preferred, 0.5 for a tie, 0 otherwise."""
    if abs(p_better - 0.5) < TIE_TOLERANCE:
        return 0.5
    return 1.0 if p_better > 0.5 else 0.0


def _side(p: float) -> int:
    return 0 if abs(p - 0.5) < TIE_TOLERANCE else (1 if p > 0.5 else -1)


def _score(pairs: Sequence[LabelledPair], answers: Sequence[float], seconds: float) -> dict:
    agreement = first_only = consistent = 0.0
    for pair, p_ab, p_ba in zip(pairs, answers[0::2], answers[1::2], strict=True):
        p_a = (p_ab + (1.0 - p_ba)) / 2.0  # P(a is better), both orders
        if pair.better == "a":
            agreement += _credit(p_a)
            first_only += _credit(p_ab)
        else:
            agreement += _credit(1.0 - p_a)
            first_only += _credit(1.0 - p_ab)
        consistent += _side(p_ab) == -_side(p_ba)
    n = len(pairs)
    return {
        "agreement": agreement / n if n else float("nan"),
        "agreement_first_order_only": first_only / n if n else float("nan"),
        "position_consistency": consistent / n if n else float("nan"),
        "n_pairs": n,
        "n_comparisons": len(answers),
        "seconds": seconds,
        "comparisons_per_s": len(answers) / seconds if seconds > 0 else float("inf"),
    }


def format_report(result: dict, *, title: str = "") -> str:
    """A few aligned lines for a terminal or a log."""
    lines = [title] if title else []
    lines += [
        f"  pairs                    {result['n_pairs']}",
        f"  agreement (both orders)  {result['agreement']:.4f}",
        f"  agreement (first order)  {result['agreement_first_order_only']:.4f}",
        f"  position consistency     {result['position_consistency']:.4f}",
        f"  comparisons/s            {result['comparisons_per_s']:.0f}",
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_GSM8K_PATH",
    "ask",
    "REFERENCE_MODES",
    "LabelledPair",
    "evaluate",
    "format_report",
    "gsm8k_pairs",
    "load_pairs_jsonl",
    "remove_final_answer_line",
    "strip_calculator_annotations",
]
