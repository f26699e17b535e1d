"""``arena-judge bench tournaments``: tournament designs on the simulated judge.

For each group size G, every trial draws latent strengths ``b ~ N(0, spread^2)`` for G traces
and plays every design on the same strengths (common random numbers, so differences between
designs are measured paired). For each design it reports the mean Kendall tau between fitted
and true strengths with its standard error, the mean judge calls per group and the rounds.

The issue's checks are computed at G = 16 (when measured): the default design's tau as a
fraction of round-robin in both orders, its calls as a fraction of round-robin's, and its tau
minus ``live``'s at ``live``'s number of calls (paired difference with its standard error).

Tau against calls (``curves``): the designs again, on the same strengths, with budgets of
``CURVE_FRACTIONS`` of round-robin's calls in both orders (a design that is done before its
budget stops there: ``live`` has a natural size), and the anytime stop of the default design
at several thresholds (``min_tau_gain``, expected tau per call) under a cap of two thirds of
round-robin, which gives points (mean calls, tau). ``selection_ms``: the time the default
design takes to choose one greedy round (fit included), by group size.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arena.simulator import SimulatedJudge, play
from ..arena.tournaments import Verdict, make_tournament

DEFAULT_DESIGN = "adaptive"
CURVE_FRACTIONS = (1 / 12, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)
CURVE_DESIGNS = {
    "adaptive (default)": ("adaptive", {"order": "random"}),
    "round_robin (both orders)": ("round_robin", {"order": "both"}),
    "round_robin": ("round_robin", {"order": "random"}),
    "live (paper)": ("live", {"order": "random"}),
}
MIN_TAU_GAINS = (0.004, 0.002, 0.001)
SELECTION_SIZES = (16, 64, 256, 1024)


@dataclass(frozen=True)
class Entry:
    """One line of the benchmark: a design with its options."""

    label: str
    design: str
    options: dict = field(default_factory=dict)


def entries(n_traces: int) -> list[Entry]:
    live_calls = make_tournament("live", n_traces, order="random").budget
    return [
        Entry("round_robin (both orders)", "round_robin", {"order": "both"}),
        Entry("round_robin", "round_robin", {"order": "random"}),
        Entry("live (paper)", "live", {"order": "random"}),
        Entry("single_anchor", "single_anchor", {"order": "random"}),
        Entry("swiss", "swiss", {"order": "random"}),
        Entry("adaptive (default)", "adaptive", {"order": "random"}),
        Entry("adaptive @ live's calls", "adaptive", {"order": "random", "budget": live_calls}),
    ]


def run(
    sizes: tuple[int, ...] = (8, 16, 32),
    *,
    trials: int = 300,
    position_bias: float = 0.3,
    noise: float = 0.0,
    spread: float = 1.0,
    soft: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure every design; returns a JSON-able dict (see :func:`format_table`)."""
    from tqdm import tqdm

    out: dict = {
        "settings": {
            "trials": trials, "position_bias": position_bias, "noise": noise,
            "spread": spread, "verdicts": "soft" if soft else "bernoulli", "seed": seed,
        },
        "machine": {"python": platform.python_version(), "numpy": np.__version__},
        "sizes": [],
    }
    bar = tqdm(total=len(sizes) * trials, desc="tournaments", disable=not progress, file=sys.stderr)
    for n in sizes:
        lines = entries(n)
        taus = np.zeros((len(lines), trials))
        calls = np.zeros((len(lines), trials))
        rounds = np.zeros((len(lines), trials))
        for t in range(trials):
            truth = np.random.default_rng([seed, n, t]).normal(0.0, spread, n)
            judge = SimulatedJudge(truth, position_bias=position_bias, noise=noise, soft=soft)
            for k, entry in enumerate(lines):
                rng = np.random.default_rng([seed, n, t, k])
                o = play(entry.design, judge, n, rng=rng, **entry.options)
                taus[k, t], calls[k, t], rounds[k, t] = o.tau, o.calls, o.rounds
            bar.update()
        designs: list[dict[str, Any]] = [
            {
                "label": e.label, "design": e.design, "options": e.options,
                "tau": float(taus[k].mean()),
                "tau_se": float(taus[k].std(ddof=1) / math.sqrt(trials)) if trials > 1 else 0.0,
                "calls": float(calls[k].mean()),
                "rounds": float(rounds[k].mean()),
            }
            for k, e in enumerate(lines)
        ]
        by_label = {d["label"]: k for k, d in enumerate(designs)}
        ceiling = by_label["round_robin (both orders)"]
        default = by_label["adaptive (default)"]
        at_live, live = by_label["adaptive @ live's calls"], by_label["live (paper)"]
        diff = taus[at_live] - taus[live]
        checks = {
            "default_design": DEFAULT_DESIGN,
            "tau_fraction_of_round_robin_both": designs[default]["tau"] / designs[ceiling]["tau"],
            "calls_fraction_of_round_robin_both": designs[default]["calls"]
            / designs[ceiling]["calls"],
            "tau_gain_over_live_at_equal_calls": float(diff.mean()),
            "tau_gain_over_live_se": float(diff.std(ddof=1) / math.sqrt(trials))
            if trials > 1 else 0.0,
        }
        curve = curves(n, trials=max(2, trials // 2), seed=seed, judge_options={
            "position_bias": position_bias, "noise": noise, "soft": soft}, spread=spread)
        out["sizes"].append(
            {"n_traces": n, "designs": designs, "checks": checks, "curves": curve}
        )
    bar.close()
    out["selection_ms"] = selection_ms()
    return out


def curves(n: int, *, trials: int, seed: int, judge_options: dict, spread: float) -> dict:
    """Tau against calls for :data:`CURVE_DESIGNS` and the default design's anytime stop."""
    ceiling = n * (n - 1)
    budgets = sorted({max(1, round(f * ceiling)) for f in CURVE_FRACTIONS})
    runs: dict[str, list[tuple[float, str, dict[str, Any]]]] = {
        label: [(budget, design, {**options, "budget": budget}) for budget in budgets]
        for label, (design, options) in CURVE_DESIGNS.items()
    }
    cap = max(1, round(2 / 3 * ceiling))
    runs["adaptive, anytime stop"] = [
        (g, "adaptive", {"order": "random", "budget": cap, "min_tau_gain": g})
        for g in MIN_TAU_GAINS
    ]
    out: dict = {"budgets": budgets, "anytime_cap": cap, "lines": {}}
    for label, points in runs.items():
        line = []
        for k, (key, design, options) in enumerate(points):
            taus, calls = np.zeros(trials), np.zeros(trials)
            for t in range(trials):
                truth = np.random.default_rng([seed, n, t]).normal(0.0, spread, n)
                judge = SimulatedJudge(truth, **judge_options)
                o = play(design, judge, n, rng=np.random.default_rng([seed, n, t, 99, k]),
                         **options)
                taus[t], calls[t] = o.tau, o.calls
            line.append({"key": key, "calls": float(calls.mean()), "tau": float(taus.mean())})
        out["lines"][label] = line
    return out


def selection_ms(sizes: tuple[int, ...] = SELECTION_SIZES, seed: int = 0) -> dict[str, float]:
    """Median milliseconds for the default design to fit and choose one greedy round."""
    out = {}
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        judge = SimulatedJudge(rng.normal(0.0, 1.0, n))
        t = make_tournament(DEFAULT_DESIGN, n, order="random", rng=rng)
        times = []
        while True:
            started = time.perf_counter()
            pairs = t.next_round()
            if t.calls:  # the first round is a cycle: no choice to time
                times.append(time.perf_counter() - started)
            if not pairs:
                break
            t.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, judge.judge(pairs, rng)))
        out[str(n)] = 1e3 * float(np.median(times))
    return out


def format_table(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"Tournament designs on the simulated judge: {s['verdicts']} verdicts, position bias "
        f"{s['position_bias']} (logit), noise {s['noise']}, strengths ~ N(0, {s['spread']}^2), "
        f"{s['trials']} trials per size",
    ]
    for size in result["sizes"]:
        lines += [
            "",
            f"G = {size['n_traces']}",
            f"  {'design':<28}{'Kendall tau':>16}{'calls/group':>13}{'rounds':>8}",
        ]
        for d in size["designs"]:
            tau = f"{d['tau']:.3f} ± {d['tau_se']:.3f}"
            lines.append(f"  {d['label']:<28}{tau:>16}{d['calls']:>13.1f}{d['rounds']:>8.1f}")
        c = size["checks"]
        lines += [
            *format_curves(size["curves"]),
            f"  default design ({c['default_design']}): "
            f"{c['tau_fraction_of_round_robin_both']:.3f} of round-robin's tau (both orders) "
            f"with {c['calls_fraction_of_round_robin_both']:.3f} of its calls; "
            f"tau gain over live at live's calls: {c['tau_gain_over_live_at_equal_calls']:+.3f}"
            f" ± {c['tau_gain_over_live_se']:.3f}",
        ]
    if "selection_ms" in result:
        times = ", ".join(f"G = {n}: {ms:.1f}" for n, ms in result["selection_ms"].items())
        lines += ["", f"Choosing a round of the default design (with its fit), median ms: {times}"]
    return "\n".join(lines)


def format_curves(curve: dict) -> list[str]:
    lines = ["  Kendall tau against calls per group (budget = calls cap):",
             "  " + f"{'':<28}" + "".join(f"{b:>8}" for b in curve["budgets"])]
    for label, line in curve["lines"].items():
        if label == "adaptive, anytime stop":
            continue
        lines.append("  " + f"{label:<28}" + "".join(
            f"{p['tau']:>8.3f}" if p["calls"] >= p["key"] - 0.5 else f"{p['tau']:>7.3f}*"
            for p in line))
    lines.append("  (* the design stopped before its budget: its natural size)")
    anytime = curve["lines"]["adaptive, anytime stop"]
    lines.append(f"  anytime stop (cap {curve['anytime_cap']}): " + "; ".join(
        f"min_tau_gain {p['key']}: tau {p['tau']:.3f} at {p['calls']:.1f} calls" for p in anytime))
    return lines


__all__ = ["curves", "entries", "format_curves", "format_table", "run", "selection_ms"]
