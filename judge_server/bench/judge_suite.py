"""``arena-judge bench judge``: protocols that cannot leak the answer, and what dead groups hold.

The old figure (``real``: real (correct, incorrect) pairs with the final-answer lines removed)
mostly measures an answer check: the answer is still on the last line of each trace. The suite
adds protocols in which it cannot be, and protocols that test what dead GRPO groups contain:

``real``
    The old protocol (:func:`judge.gsm8k_pairs`), for comparison.
``masked``
    The same pairs with the reference answer and both traces' own answers masked everywhere
    in both traces (:func:`judge_probes.mask_answers`), final-answer lines removed.
``<variant>/correct`` and ``<variant>/wrong``
    A planted error (:mod:`.judge_variants`) against its clean original, built from every
    distinct correct, resp. wrong, real solution; the clean one is better.
``probe:<kind>``
    A gaming probe (:mod:`.judge_probes`) against every distinct genuine correct solution.
``ties:all_correct`` and ``ties:all_wrong``
    Every pair of distinct traces of the real dead groups: the fraction of pairs the judge
    ties, and of groups in which it ties every pair.
``padding_gain:all_wrong``
    In every real all-wrong group, each trace with five true, irrelevant equations appended
    against the other traces of its group: the fraction it wins, against the fraction the
    same trace wins without them. The judge is gamed when padding wins more.
``stuffing_gain:all_wrong``
    The same with one line listing the question's numbers (``We are given 16, 3, 4 and 2.``).

Traces have their ``<<...>>`` annotations stripped; outside ``real`` and ``masked`` they keep
their final ``A:`` line, as a policy's traces would. Every protocol is judged with each
reference mode: ``worked`` (the reference solution, its ``A:`` line kept), ``answer``, ``none``.

Reported per protocol and mode: ``agreement`` (the better trace preferred after averaging
both orders; a tie counts half), ``ties`` and ``wins`` (the worse trace, or the probe,
strictly preferred), and whether the row meets its target (:func:`target`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from judge_server.comparators.base import Comparator

from . import judge_probes, judge_variants
from .judge import REFERENCE_MODES, TIE_TOLERANCE, ReferenceMode, _both_orders, ask
from .judge_protocols import Problem, Protocol, build_protocols, load_problems

WORKED_TARGET = 0.95
"""Agreement every planted error, probe and the masked protocol must reach with a worked
reference."""
VISIBLE_TARGET = 0.90
"""Agreement without a reference (and with the answer alone, which hides nothing that is
visible without one) where the error is visible without a reference."""
VISIBLE_WITHOUT_REFERENCE = frozenset(
    {"slip", "slip_in_words", "truncation", "padding", "restated", "answer_contradicts",
     *judge_probes.PROBES}
)

# --------------------------------------------------------------------------------------------
# Targets and scores


def target(name: str, mode: ReferenceMode) -> float | None:
    """The agreement a row must reach (for ``padding_gain``: the most padding may gain),
    or None when the row has no target."""
    kind = name.split("/")[0].removeprefix("probe:")
    if name.startswith(("padding_gain", "stuffing_gain")):
        return 0.0
    if name == "masked":
        return WORKED_TARGET if mode == "worked" else None
    if kind in judge_variants.PLANTED_KINDS or name.startswith("probe:"):
        if mode == "worked":
            return WORKED_TARGET
        return VISIBLE_TARGET if kind in VISIBLE_WITHOUT_REFERENCE else None
    return None


def _p_first(answers: Sequence[float]) -> list[float]:
    """P(first trace of the pair is better), averaged over both orders."""
    return [(ab + 1.0 - ba) / 2.0 for ab, ba in zip(answers[0::2], answers[1::2], strict=True)]


def _tie(p: float) -> bool:
    return abs(p - 0.5) < TIE_TOLERANCE


def score(protocol: Protocol, mode: ReferenceMode, p: list[float], p_base: list[float]) -> dict:
    """One row of the table from the judged ``p`` (P(first is better), both orders)."""
    row: dict = {"protocol": protocol.name, "reference": mode, "n_pairs": len(p),
                 "target": target(protocol.name, mode), "meets": None}
    if protocol.kind == "ties":
        groups: dict[int, list[bool]] = {}
        for group, value in zip(protocol.groups, p, strict=True):
            groups.setdefault(group, []).append(_tie(value))
        row["ties"] = _mean([_tie(v) for v in p])
        row["all_tie_groups"] = _mean([all(ties) for ties in groups.values()])
        row["n_groups"] = len(groups)
        row["identical_pairs_left_out"] = protocol.identical
        return row
    if protocol.kind == "gain":
        row["wins"] = _mean([v > 0.5 and not _tie(v) for v in p])
        row["wins_plain"] = _mean([v > 0.5 and not _tie(v) for v in p_base])
        row["ties"] = _mean([_tie(v) for v in p])
        row["gain"] = row["wins"] - row["wins_plain"]
        row["meets"] = row["gain"] <= row["target"] if p else None
        return row
    better = [v if pair.better == "a" else 1.0 - v
              for pair, v in zip(protocol.pairs, p, strict=True)]
    row["agreement"] = _mean([0.5 if _tie(v) else float(v > 0.5) for v in better])
    row["ties"] = _mean([_tie(v) for v in better])
    row["wins"] = _mean([v < 0.5 and not _tie(v) for v in better])
    if row["target"] is not None and better:
        row["meets"] = row["agreement"] >= row["target"]
    return row


def _mean(values: Sequence[float | bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


async def run(
    comparator: Comparator,
    problems: Sequence[Problem],
    *,
    modes: Sequence[ReferenceMode] = REFERENCE_MODES,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """Build every protocol and judge it in every mode (a progress bar on stderr when
    ``progress``). Returns ``{"rows", "built", "n_problems", "n_comparisons", "seconds"}``:
    one row per protocol and mode (:func:`score`), and per protocol the pairs built and the
    reasons for those skipped."""
    protocols = build_protocols(problems, seed=seed)
    by_index = {problem.index: problem for problem in problems}
    total = len(modes) * sum(2 * (len(p.pairs) + len(p.baseline)) for p in protocols)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"judge {comparator.name}", unit="cmp", file=sys.stderr)
    rows, asked, seconds = [], 0, 0.0
    try:
        for mode in modes:
            answered = await _judge_mode(comparator, protocols, by_index, mode, batch_size, bar)
            asked += answered[0]
            seconds += answered[1]
            rows += answered[2]
    finally:
        if bar is not None:
            bar.close()
    built = {p.name: {"built": len(p.pairs), "skipped": dict(p.skipped.most_common())}
             for p in protocols}
    return {"rows": rows, "built": built, "n_problems": len(problems), "n_comparisons": asked,
            "seconds": seconds, "comparisons_per_s": asked / seconds if seconds else None}


async def _judge_mode(comparator, protocols, by_index, mode, batch_size, bar):
    """Judge every protocol's pairs (and baselines) in one reference mode, in batches."""
    lists = []
    for protocol in protocols:
        for pairs in (protocol.pairs, protocol.baseline):
            lists.append([replace(pair, reference=by_index[k].reference(mode))
                          for pair, k in zip(pairs, protocol.problems, strict=False)])
    comparisons = [c for pairs in lists for c in _both_orders(pairs)]
    answers, seconds = await ask(comparator, comparisons, batch_size=batch_size, bar=bar)
    offset, judged = 0, []
    for pairs in lists:
        judged.append(_p_first(answers[offset : offset + 2 * len(pairs)]))
        offset += 2 * len(pairs)
    rows = [score(protocol, mode, judged[2 * k], judged[2 * k + 1])
            for k, protocol in enumerate(protocols)]
    return len(answers), seconds, rows


# --------------------------------------------------------------------------------------------
# The table


def format_table(result: dict, *, title: str = "") -> str:
    """One line per protocol, one column group per reference mode, and what was built."""
    modes = list(dict.fromkeys(row["reference"] for row in result["rows"]))
    cells: dict[str, dict[str, str]] = {}
    sizes: dict[str, int] = {}
    for row in result["rows"]:
        cells.setdefault(row["protocol"], {})[row["reference"]] = _cell(row)
        sizes[row["protocol"]] = row["n_pairs"]
    width = 30
    lines = [title] if title else []
    lines.append(f"{'':26} {'':>6}" + "".join(f" | {m:<{width}}" for m in modes))
    lines.append(f"{'protocol':26} {'pairs':>6}"
                 + "".join(f" | {'agree  ties  wins  target':<{width}}" for _ in modes))
    for name, by_mode in cells.items():
        lines.append(f"{name:26} {sizes[name]:>6}"
                     + "".join(f" | {by_mode.get(m, ''):<{width}}" for m in modes))
    met = [r["meets"] for r in result["rows"] if r["meets"] is not None]
    lines.append(f"targets met: {sum(met)} of {len(met)}  (agree: better trace preferred, a tie "
                 "half; wins: the worse trace or probe strictly preferred; ties rows: pairs "
                 "tied / groups all tied; *_gain: gamed wins / plain wins)")
    lines.append("built (skipped, most common reason):")
    for name, built in result["built"].items():
        skipped = built["skipped"]
        reason = f" - {next(iter(skipped))} ({next(iter(skipped.values()))})" if skipped else ""
        lines.append(f"  {name:26} {built['built']:>6} ({sum(skipped.values())} skipped{reason})")
    return "\n".join(lines)


def _cell(row: dict) -> str:
    if "all_tie_groups" in row:
        return f"ties {row['ties']:.3f}  groups {row['all_tie_groups']:.3f}"
    mark = {True: "ok", False: "MISS", None: "-"}[row["meets"]]
    if "gain" in row:
        return f"wins {row['wins']:.3f} vs {row['wins_plain']:.3f} {mark}"
    goal = f">={row['target']:.2f} {mark}" if row["target"] is not None else "-"
    return f"{row['agreement']:.3f} {row['ties']:.3f} {row['wins']:.3f} {goal}"


__all__ = [
    "VISIBLE_TARGET",
    "VISIBLE_WITHOUT_REFERENCE",
    "WORKED_TARGET",
    "Problem",
    "Protocol",
    "build_protocols",
    "format_table",
    "load_problems",
    "run",
    "score",
    "target",
]
