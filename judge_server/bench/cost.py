"""``arena-judge bench cost``: uncached prompt tokens per group to reach a fixed Kendall tau.

What a design costs is the prompt tokens the judge engine must compute, not the calls: a call
whose problem, reference and first trace are already in the engine's prefix cache costs only
its second trace and the question. For G = 8 and 16 this benchmark puts, side by side, the
paper's ``live`` (order random), ``round_robin`` (both orders) and the default design, each at
the number of calls it needs to reach the Kendall tau that ``live`` reaches at its natural size.

Two measurements, on the same GSM8K-like groups and the same simulated judge:

quality (the pure simulator, cheap, many trials)
    Latent strengths ``b ~ N(0, 1)`` are drawn per trial, known only to the measurer; the
    judge of :class:`~judge_server.arena.simulator.SimulatedJudge` answers from them (Bernoulli
    verdicts by default, position bias 0.3 logit), as in ``arena-judge bench tournaments``.
    Each design is played at a grid of budgets: Kendall tau against calls. The target tau is
    ``live``'s at its natural size; the calls each design needs to reach it are interpolated
    on its curve (with the budget that gives them).
cost (a real vLLM engine: the tiny random model of :mod:`.tiny_model`, on the CPU)
    Each design, at the budget it needs, ranks the groups through the server's own path (an
    :class:`~judge_server.core.service.ArenaService` and its
    :class:`~judge_server.core.scheduler.JudgeScheduler`, every group in flight at once, so rounds
    of several groups share batches, no pool anchors). Every batch goes to the engine, whose
    verdicts are ignored: the simulated judge answers (:class:`EngineCost`), so the design
    plays as it would with a judge of known quality, and the engine's prefix-cache counters
    (``num_cached_tokens`` per request) say what its prompt stream costs. The prefix cache is
    emptied before each design.

Per design it reports prompt and uncached tokens per comparison, the one-trace bound (from the
second trace's block to the end of the prompt, :meth:`~judge_server.comparators.prompt.
JudgePrompt.own_tokens`: what no cache can hold when every comparison brings a new second
trace) and two ideal caches computed from the same prompt stream, infinite and order-blind:
with the engine's block size (what vLLM could do at best with these prompts) and per token
(what the orientation of the pairs allows at all). The gap between the bound and the
per-token ideal is the design's: every distinct first trace of a group and every group's
problem and reference are computed once. The gap between the ideals is the block size's.

The headline is uncached prompt tokens per group at ``live``'s tau, and the ratios the issue
sets targets for: default / ``live`` (at most 0.5) and, for the default design, uncached per
comparison / the one-trace bound (at most 1.2).

GSM8K-like groups: GSM8K has four model solutions per problem; a group of 8 or 16 takes the
problem's four model solutions and its reference solution, then variants of them with planted
changes (:mod:`.judge_variants`: a calculation slip, a misread operand, a swapped operator,
padding with true but unused equations, a truncation), in that order, until it has G distinct
traces (annotations and final answer lines removed, as the judge sees them); problems that
cannot give G are skipped. Texts only set the prompts' lengths and sharing; strengths are
drawn independently of them.

vLLM's CPU attention takes block sizes that are multiples of 32 only (16 fails: "No common
block size for 16 (CPU_ATTN: [MultipleOf(32)])"); the engine here uses 32 (its CPU default is
128). vLLM v1 registers a prompt's full blocks in the prefix cache when it schedules them, so
requests of the same engine step already share a prefix computed in that step: no
two-phase submission is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..arena.simulator import SimulatedJudge, play
from ..arena.tournaments import make_tournament
from ..comparators.base import Comparator, Comparison
from ..comparators.simulated import SimulatedComparator
from . import judge_variants
from .judge import DEFAULT_GSM8K_PATH, gsm8k_problems, remove_final_answer_line
from .judge import strip_calculator_annotations as strip
from .tournaments import DEFAULT_DESIGN

if TYPE_CHECKING:
    from ..comparators.vllm import VLLMComparator

#: (label, design, order) of the designs compared.
DESIGNS = (
    ("live (paper)", "live", "random"),
    ("round_robin (both orders)", "round_robin", "both"),
    (f"{DEFAULT_DESIGN} (default)", DEFAULT_DESIGN, "random"),
)
#: Budgets of the quality curves, as fractions of ``live``'s natural calls.
BUDGET_FRACTIONS = (0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
VARIANT_KINDS = ("slip", "misread", "operator_swap", "padding", "truncation")
TARGETS = {"default_over_live": 0.5, "uncached_over_bound": 1.2}


# --------------------------------------------------------------------------------------------
# Groups


def gsm8k_like_groups(
    n: int, group_size: int, *, path: str | Path = DEFAULT_GSM8K_PATH, seed: int = 0
) -> list[dict]:
    """``n`` groups of ``group_size`` distinct GSM8K-like traces (module docstring):
    ``{"prompt", "reference", "texts"}``; the reference is the final answer."""
    groups: list[dict] = []
    for k, problem in enumerate(gsm8k_problems(path)):
        if len(groups) >= n:
            break
        question = problem["question"]
        bases = [s["text"] for s in problem["solutions"]] + [problem["reference_solution"]]
        candidates = list(bases)
        rng = random.Random(f"{seed}-{k}")
        for kind in VARIANT_KINDS:
            planted = getattr(judge_variants, kind)
            for base in bases:
                try:
                    candidates.append(planted(base, question, rng))
                except judge_variants.VariantRefused:
                    pass
        texts: list[str] = []
        for text in candidates:
            text = remove_final_answer_line(strip(text))
            if text.strip() and text not in texts:
                texts.append(text)
        if len(texts) >= group_size:
            groups.append({"prompt": question, "reference": str(problem["reference_answer"]),
                           "texts": texts[:group_size]})
    if len(groups) < n:
        raise ValueError(f"{path} gives only {len(groups)} groups of {group_size} traces, not {n}")
    return groups


# --------------------------------------------------------------------------------------------
# Quality: tau against calls on the pure simulator


def _budgets(design: str, order: str, n: int, live_calls: int) -> list[int | None]:
    if design == "live":
        return sorted({max(1, round(f * live_calls)) for f in BUDGET_FRACTIONS if f < 1}) + [None]
    cap = n * (n - 1) if design == "round_robin" and order == "both" else None
    budgets = {max(1, round(f * live_calls)) for f in BUDGET_FRACTIONS}
    kept: list[int | None] = [b for b in sorted(budgets) if cap is None or b <= cap]
    return kept


def quality(n: int, *, trials: int, position_bias: float, soft: bool, seed: int,
            progress: bool = False) -> dict:
    """Tau against calls for every design (module docstring); the target is live's tau."""
    from scipy.stats import kendalltau  # noqa: F401 - play needs scipy; fail early

    live_calls = make_tournament("live", n, order="random").budget
    plans = [(label, design, order, b) for label, design, order in DESIGNS
             for b in _budgets(design, order, n, live_calls)]
    taus = np.zeros((len(plans), trials))
    calls = np.zeros((len(plans), trials))
    for t in range(trials):
        truth = np.random.default_rng([seed, n, t]).normal(0.0, 1.0, n)
        judge = SimulatedJudge(truth, position_bias=position_bias, soft=soft)
        for k, (_, design, order, budget) in enumerate(plans):
            outcome = play(design, judge, n, rng=np.random.default_rng([seed, n, t, k]),
                           budget=budget, order=order)
            taus[k, t], calls[k, t] = outcome.tau, outcome.calls
        if progress and (t + 1) % max(1, trials // 10) == 0:
            print(f"  quality G={n}: {t + 1}/{trials} trials", file=sys.stderr)
    se = taus.std(axis=1, ddof=1) / math.sqrt(trials) if trials > 1 else np.zeros(len(plans))
    curves: dict[str, list[dict]] = {label: [] for label, _, _ in DESIGNS}
    for k, (label, _, _, budget) in enumerate(plans):
        curves[label].append({"budget": budget, "calls": float(calls[k].mean()),
                              "tau": float(taus[k].mean()), "tau_se": float(se[k])})
    live = curves[DESIGNS[0][0]][-1]
    target = live["tau"]
    needed = {label: reach(points, target) for label, points in curves.items()}
    needed[DESIGNS[0][0]] = {"calls": live["calls"], "budget": None, "reached": True}
    return {"target_tau": target, "live_calls": live_calls, "curves": curves,
            "needed": needed}


def reach(points: Sequence[dict], target: float) -> dict:
    """Calls (and budget) at which a curve first reaches ``target``, linearly interpolated
    between the two budgets around it; the largest budget, ``reached`` false, if none does."""
    points = sorted(points, key=lambda p: p["calls"])
    for k, p in enumerate(points):
        if p["tau"] >= target:
            if k == 0:
                return {"calls": p["calls"], "budget": p["budget"], "reached": True}
            q = points[k - 1]
            w = (target - q["tau"]) / (p["tau"] - q["tau"])
            budget = None
            if p["budget"] is not None and q["budget"] is not None:
                budget = math.ceil(q["budget"] + w * (p["budget"] - q["budget"]))
            return {"calls": q["calls"] + w * (p["calls"] - q["calls"]), "budget": budget,
                    "reached": True}
    last = points[-1]
    return {"calls": last["calls"], "budget": last["budget"], "reached": False}


# --------------------------------------------------------------------------------------------
# Cost: the prompt stream on a real engine


class EngineCost(Comparator):
    """Sends every batch to ``engine`` (what is measured) and answers with ``verdicts``
    (the simulated judge); the engine's own verdicts are ignored."""

    def __init__(self, engine: Comparator, verdicts: Comparator) -> None:
        self.engine = engine
        self.verdicts = verdicts
        self.name = engine.name
        self.batches: list[list[Comparison]] = []

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        self.batches.append(list(comparisons))
        await self.engine.compare(comparisons)
        return await self.verdicts.compare(comparisons)


def ideal_uncached(prompts: Sequence[Sequence[int]], block: int) -> int:
    """Uncached tokens of ``prompts`` under an infinite prefix cache of ``block``-token blocks
    (whole blocks only, and never a prompt's last token, as vLLM)."""
    seen: set[int] = set()
    uncached = 0
    for tokens in prompts:
        keys, h = [], 0
        for end in range(block, len(tokens) + 1, block):
            h = hash((h, tuple(tokens[end - block:end])))
            keys.append((end, h))
        cached = 0
        for end, key in keys:
            if end > len(tokens) - 1 or key not in seen:
                break
            cached = end
        uncached += len(tokens) - cached
        seen.update(key for _, key in keys)
    return uncached


def hub_oriented(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The same comparisons, each group's presentations turned so that as few traces as
    possible come first (a greedy vertex cover: the trace in most of the group's unturned
    pairs goes first in all of them, and so on). What orientation alone could save; it gives
    up the balance of positions, so it is a diagnostic, not a design."""
    by_group: dict[tuple, list[int]] = {}
    for k, c in enumerate(comparisons):
        by_group.setdefault((c.prompt, c.reference, c.run_id), []).append(k)
    out = list(comparisons)
    for members in by_group.values():
        left = set(members)
        while left:
            counts: dict[str, int] = {}
            for k in left:
                for text in (comparisons[k].first, comparisons[k].second):
                    counts[text] = counts.get(text, 0) + 1
            hub = max(counts, key=counts.__getitem__)
            for k in [k for k in left if hub in (comparisons[k].first, comparisons[k].second)]:
                c = comparisons[k]
                if c.first != hub:
                    out[k] = Comparison(c.prompt, c.second, c.first, c.reference, c.run_id,
                                        c.cache_salt)
                left.discard(k)
    return out


def _kendall(fitted: Sequence[float], truth: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(fitted, truth).statistic
    return 0.0 if np.isnan(tau) else float(tau)


async def _cost_of(judge: Any, groups: list[dict], strengths: dict[str, float], *, label: str,
                   design: str, order: str, budget: int | None, position_bias: float,
                   soft: bool, seed: int) -> dict:
    from trainer_client.types import RunSettings

    from ..app import build_service
    from ..settings import ServerSettings
    from ..store.memory import MemoryStore

    verdicts = SimulatedComparator(strength_of=strengths.__getitem__,
                                   position_bias=position_bias, soft=soft, seed=seed)
    measured = EngineCost(judge, verdicts)
    service = build_service(ServerSettings(store="memory", judge_cache_entries=0),
                            comparator=measured, store=MemoryStore())
    run_id = f"cost-{design}-{order}-{len(groups[0]['texts'])}"
    await service.create_run(RunSettings(run_id=run_id, design=design, order=order,
                                         budget=budget or 0, anchors_per_group=0))
    from trainer_client import make_group

    bodies = [make_group(f"g{k}", g["texts"], [1.0] * len(g["texts"]), prompt_id=f"p{k}",
                         prompt=g["prompt"], reference=g["reference"])
              for k, g in enumerate(groups)]
    await judge.reset_prefix_cache()
    before = judge.stats.snapshot()
    try:
        results = await service.rank(run_id, bodies)
    finally:
        await service.aclose()
    after = judge.stats.snapshot()
    failed = [r.error for r in results if r.status != "ok"]
    if failed:
        raise RuntimeError(f"{label}: {len(failed)} groups failed: {failed[0]}")
    comparisons = [c for batch in measured.batches for c in batch]
    inputs = judge.render(comparisons)
    tokens = [x.token_ids for x in inputs]
    n = len(comparisons)
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    uncached = prompt - (after["cached_prompt_tokens"] - before["cached_prompt_tokens"])
    block = judge.engine.vllm_config.cache_config.block_size
    firsts = {(c.prompt, c.first) for c in comparisons}
    hubs = hub_oriented(comparisons) if order != "both" else comparisons
    taus = [_kendall(r.strengths, [strengths[t] for t in g["texts"]])
            for r, g in zip(results, groups)]
    return {
        "label": label, "design": design, "order": order, "budget": budget,
        "groups": len(groups), "comparisons": n, "calls_per_group": n / len(groups),
        "batches": len(measured.batches), "mean_batch": n / max(1, len(measured.batches)),
        "first_traces_per_group": len(firsts) / len(groups),
        "prompt_tokens": prompt / n,
        "uncached_tokens": uncached / n,
        "bound_tokens": sum(judge.prompt.own_tokens(x) for x in inputs) / n,
        "ideal_uncached_block": ideal_uncached(tokens, block) / n,
        "ideal_uncached_token": ideal_uncached(tokens, 1) / n,
        "hub_first_traces_per_group": len({(c.prompt, c.first) for c in hubs}) / len(groups),
        "hub_ideal_uncached_block":
            ideal_uncached([x.token_ids for x in judge.render(hubs)], block) / n,
        "uncached_per_group": uncached / len(groups),
        "tau": float(np.mean(taus)),
    }


async def _costs(settings: Any, sizes: Sequence[dict], *, position_bias: float, soft: bool,
                 seed: int, progress: bool) -> dict:
    from ..app import build_model_comparator

    judge = build_model_comparator(settings)
    judge.check_installed()
    try:
        await judge.start()
        await judge.compare([Comparison("warm-up", "1 + 1 = 2", "1 + 1 = 3", "2")])
        for size in sizes:
            rng = np.random.default_rng([seed, size["n_traces"], 1 << 20])
            strengths = {t: float(rng.normal()) for g in size["groups"] for t in g["texts"]}
            size["designs"] = []
            for label, design, order in DESIGNS:
                needed = size["quality"]["needed"][label]
                if progress:
                    print(f"  engine G={size['n_traces']}: {label}, budget "
                          f"{needed['budget'] or 'natural'}", file=sys.stderr)
                cost = await _cost_of(judge, size["groups"], strengths, label=label,
                                      design=design, order=order, budget=needed["budget"],
                                      position_bias=position_bias, soft=soft, seed=seed)
                size["designs"].append({**cost, "calls_needed": needed["calls"],
                                        "reached": needed["reached"]})
            # the default design where it operates: its default budget, not live's tau
            label = f"{DEFAULT_DESIGN} at its default budget"
            cost = await _cost_of(judge, size["groups"], strengths, label=label,
                                  design=DEFAULT_DESIGN, order="random", budget=None,
                                  position_bias=position_bias, soft=soft, seed=seed)
            size["default_budget"] = cost
        config = cast("VLLMComparator", judge).engine.vllm_config  # the vllm judge's
        return {"block_size": config.cache_config.block_size,
                "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens}
    finally:
        await judge.aclose()


def run(
    sizes: Sequence[int] = (8, 16),
    *,
    settings: Any = None,
    groups: int = 8,
    trials: int = 500,
    position_bias: float = 0.3,
    soft: bool = False,
    seed: int = 0,
    data: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """The benchmark (module docstring); a JSON-able dict (see :func:`format_table`).

    ``settings`` (:class:`~judge_server.settings.ServerSettings`) choose the engine; by default
    vLLM in-process on the tiny model with :data:`~.backend.TINY_ENGINE_ARGS`."""
    from judge_server.settings import ServerSettings

    from . import backend

    if groups < 1 or trials < 2:
        raise ValueError("groups must be at least 1 and trials at least 2")
    settings = settings or ServerSettings(comparator="vllm", judge_model=backend.TINY)
    out: dict = {
        "settings": {"trials": trials, "groups": groups, "position_bias": position_bias,
                     "verdicts": "soft" if soft else "bernoulli", "seed": seed},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "sizes": [],
    }
    for n in sizes:
        if progress:
            print(f"quality on the simulator, G = {n}", file=sys.stderr)
        out["sizes"].append({
            "n_traces": n,
            "groups": gsm8k_like_groups(groups, n, path=data or DEFAULT_GSM8K_PATH, seed=seed),
            "quality": quality(n, trials=trials, position_bias=position_bias, soft=soft,
                               seed=seed, progress=progress),
        })
    with contextlib.ExitStack() as stack:
        settings, model = backend.tiny_judge(settings, stack)
        engine = asyncio.run(_costs(settings, out["sizes"], position_bias=position_bias,
                                    soft=soft, seed=seed, progress=progress))
    out["engine"] = {"comparator": settings.comparator, "model": model, **engine}
    for size in out["sizes"]:
        size["groups"] = len(size.pop("groups"))
        by_design = {d["design"]: d for d in size["designs"]}
        default, live = by_design[DEFAULT_DESIGN], by_design["live"]
        size["checks"] = {
            "default_over_live": default["uncached_per_group"] / live["uncached_per_group"],
            "uncached_over_bound": default["uncached_tokens"] / default["bound_tokens"],
            "uncached_over_bound_at_default_budget":
                size["default_budget"]["uncached_tokens"] / size["default_budget"]["bound_tokens"],
            "targets": TARGETS,
        }
    return out


def format_table(result: dict) -> str:
    s, e = result["settings"], result["engine"]
    lines = [
        f"Judge cost at a fixed Kendall tau: GSM8K-like dead groups, simulated judge "
        f"({s['verdicts']} verdicts, position bias {s['position_bias']}); tau against calls "
        f"on the pure simulator ({s['trials']} trials per point), prompt tokens on "
        f"{e['comparator']} ({e['model']}, CPU, prefix caching, block size {e['block_size']}), "
        f"{s['groups']} groups per design ranked through the service, the engine's verdicts "
        "ignored",
    ]
    for size in result["sizes"]:
        q = size["quality"]
        lines += ["", f"G = {size['n_traces']}: target tau {q['target_tau']:.3f} "
                      f"(live at its natural {q['live_calls']} calls)",
                  "  tau against calls (simulator): " + "; ".join(
                      f"{label}: " + ", ".join(f"{p['calls']:.0f}:{p['tau']:.2f}" for p in pts)
                      for label, pts in q["curves"].items()),
                  f"  {'design':<27}{'calls':>7}{'prompt':>8}{'uncached':>9}{'bound':>7}"
                  f"{'unc/bd':>7}{'ideal':>7}{'ideal1':>7}{'firsts':>7}{'hub':>6}"
                  f"{'unc/group':>10}{'tau':>6}"]
        for d in size["designs"]:
            mark = "" if d["reached"] else "*"
            lines.append(
                f"  {d['label']:<27}{d['calls_needed']:>6.1f}{mark:1}{d['prompt_tokens']:>8.0f}"
                f"{d['uncached_tokens']:>9.0f}{d['bound_tokens']:>7.0f}"
                f"{d['uncached_tokens'] / d['bound_tokens']:>7.2f}"
                f"{d['ideal_uncached_block']:>7.0f}{d['ideal_uncached_token']:>7.0f}"
                f"{d['first_traces_per_group']:>7.1f}{d['hub_ideal_uncached_block']:>6.0f}"
                f"{d['uncached_per_group']:>10.0f}{d['tau']:>6.2f}")
        c = size["checks"]
        lines.append(
            f"  default / live uncached per group {c['default_over_live']:.2f} (target <= "
            f"{c['targets']['default_over_live']}); default uncached / bound "
            f"{c['uncached_over_bound']:.2f} (target <= {c['targets']['uncached_over_bound']}), "
            f"{c['uncached_over_bound_at_default_budget']:.2f} at its default budget "
            f"({size['default_budget']['calls_per_group']:.0f} calls per group)")
    lines += [
        "",
        "calls: needed to reach the target tau (simulator; * not reached on the budget grid); "
        "prompt, uncached, bound, ideal: tokens per comparison measured on the engine at that "
        "budget (bound: second trace onwards; ideal / ideal1: an infinite cache with the "
        "engine's blocks / per token, same prompts; hub: ideal with the same pairs turned so "
        "that the fewest traces come first, positions unbalanced, a diagnostic); firsts: "
        "distinct first traces per group; tau: mean over the engine's groups (a check, few "
        "groups). CPU, tiny random model.",
    ]
    return "\n".join(lines)


__all__ = ["DESIGNS", "EngineCost", "format_table", "gsm8k_like_groups", "hub_oriented",
           "ideal_uncached", "quality", "reach", "run"]
