"""``arena-judge bench tournaments``: tournament designs on the simulated judge.

For each group size G, every trial draws latent strengths ``b ~ N(0, spread^2)`` for G traces
and plays every design on the same strengths (common random numbers, so differences between
designs are measured paired). For each design it reports the mean Kendall tau between fitted
and true strengths with its standard error, the mean judge calls per group and the rounds.

The issue's checks are computed at G = 16 (when measured): the default design's tau as a
fraction of round-robin in both orders, its calls as a fraction of round-robin's, and its tau
minus ``live``'s at ``live``'s number of calls (paired difference with its standard error).
"""

from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass, field

import numpy as np

from ..arena.simulator import SimulatedJudge, play
from ..arena.tournaments import make_tournament

DEFAULT_DESIGN = "adaptive"


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
        designs = [
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
        out["sizes"].append({"n_traces": n, "designs": designs, "checks": checks})
    bar.close()
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
            f"  default design ({c['default_design']}): "
            f"{c['tau_fraction_of_round_robin_both']:.3f} of round-robin's tau (both orders) "
            f"with {c['calls_fraction_of_round_robin_both']:.3f} of its calls; "
            f"tau gain over live at live's calls: {c['tau_gain_over_live_at_equal_calls']:+.3f}"
            f" ± {c['tau_gain_over_live_se']:.3f}",
        ]
    return "\n".join(lines)


__all__ = ["entries", "format_table", "run"]
