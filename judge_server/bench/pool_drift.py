"""Anchor pools under a drifting policy: ``arena-judge bench tournaments --drift``.

One prompt over ``steps`` training steps. At step ``t`` the policy samples G traces whose latent
strengths are ``N(drift * t, 1)``: it improves by ``drift`` per step. Each step's group plays the
default design (``adaptive``) against the simulated judge; the prompt's anchor pool is carried
from step to step by the pool's own functions (:func:`~judge_server.arena.pools.select` to draw
anchors, :func:`~judge_server.arena.pools.after_group` to update the pool, as the service does),
and every arm spends the same number of judge calls per group. The arms:

* ``no pool``: no anchors;
* ``before, prior`` and ``before, fixed``: the pool as it was before anchors had standard
  errors: the traces' prior pinned to the anchors' centre (``level_sd = 0``), anchors with a
  new trace's prior precision, and in ``prior`` mode the refitted anchor strengths written back
  to the pool (:func:`~judge_server.arena.pools.refit`, the ratchet);
* ``after, prior`` and ``after, fixed``: anchors keep the strength and standard error of the
  fit they came from, the traces' prior is hierarchical around a free level
  (:mod:`judge_server.arena.tournament`), nothing is written back.

Reported per arm and group size: the within-group Kendall tau between fitted and true strengths
(and its paired difference from ``no pool``), the judge calls and the calls spent on anchors
per group, and the Pearson correlation between the fitted step means (mean fitted strength of
step t's traces) and the true step means, per run of ``steps`` steps, averaged over runs. Without
a pool every fit is centred, so the step means carry no information (reported as ``None``).
"""

from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

from ..arena import pools
from ..arena.simulator import SimulatedJudge
from ..arena.tournament import Verdict
from ..arena.tournaments import make_tournament

DESIGN = "adaptive"


@dataclass(frozen=True)
class Arm:
    """One way of keeping (or not keeping) the pool."""

    label: str
    pool: bool
    anchor_mode: str = "prior"
    calibrated: bool = True
    """Anchors with standard errors, a free level, no write-back; else the rule before them."""


ARMS = (
    Arm("no pool", pool=False),
    Arm("before, prior (ratchet)", pool=True, anchor_mode="prior", calibrated=False),
    Arm("before, fixed", pool=True, anchor_mode="fixed", calibrated=False),
    Arm("after, prior", pool=True, anchor_mode="prior"),
    Arm("after, fixed", pool=True, anchor_mode="fixed"),
)


@dataclass(frozen=True)
class _Group:
    tau: float
    calls: int
    anchor_calls: int
    mean: float


def _play_step(
    arm: Arm,
    truth: np.ndarray,
    texts: list[str],
    pool: list[pools.Anchor],
    true_of: dict[str, float],
    policy: pools.PoolPolicy,
    *,
    step: int,
    position_bias: float,
    rng: np.random.Generator,
) -> tuple[_Group, list[pools.Anchor]]:
    """One step's group: its tournament, and the prompt's pool after it."""
    n = truth.size
    drawn = pools.select(pool, policy.anchors_per_group) if arm.pool else []
    options: dict = {"anchor_mode": arm.anchor_mode}
    if arm.calibrated:
        options["anchor_stderr"] = [a.stderr for a in drawn]
    else:
        options["level_sd"] = 0.0
    tournament = make_tournament(
        DESIGN, n, order="random", anchor_strengths=[a.strength for a in drawn], rng=rng,
        **options,
    )
    strengths = np.concatenate([truth, [true_of[a.trace_id] for a in drawn]])
    judge = SimulatedJudge(strengths, position_bias=position_bias)
    anchor_calls = 0
    while pairs := tournament.next_round():
        anchor_calls += sum(max(i, j) >= n for i, j in pairs)
        ps = judge.judge(pairs, rng)
        tournament.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, ps))
    fit = tournament.fit()
    fitted = fit.strengths[:n]
    tau = kendalltau(fitted, truth).statistic
    group = _Group(
        tau=0.0 if np.isnan(tau) else float(tau), calls=tournament.calls,
        anchor_calls=anchor_calls, mean=float(fitted.mean()),
    )
    if not arm.pool:
        return group, pool
    if arm.calibrated:
        return group, pools.after_group(pool, texts, fitted, fit.stderr[:n], policy, step=step)
    if arm.anchor_mode == "prior" and drawn:  # the ratchet
        moved = {a.trace_id: a for a in pools.refit(drawn, fit.strengths[n:])}
        pool = [moved.get(a.trace_id, a) for a in pool]
    candidates = [pools.Anchor(t, float(s), step) for t, s in zip(texts, fitted)]
    return group, pools.admit(pool, candidates, policy, step=step)


def _run_steps(
    arm: Arm, n: int, steps: int, drift: float, position_bias: float, seed: list[int]
) -> list[_Group]:
    """One run of ``steps`` steps of one prompt; the truths depend on ``seed`` only."""
    policy = pools.PoolPolicy()
    pool: list[pools.Anchor] = []
    true_of: dict[str, float] = {}
    out = []
    for step in range(steps):
        truth = np.random.default_rng([*seed, step]).normal(drift * step, 1.0, n)
        texts = [f"step {step} trace {i}" for i in range(n)]
        true_of.update({pools.trace_id(t): float(b) for t, b in zip(texts, truth)})
        group, pool = _play_step(
            arm, truth, texts, pool, true_of, policy, step=step,
            position_bias=position_bias, rng=np.random.default_rng([*seed, step, 1]),
        )
        out.append(group)
    return out


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def run(
    sizes: tuple[int, ...] = (8, 16),
    *,
    runs: int = 30,
    steps: int = 20,
    drift: float = 0.3,
    position_bias: float = 0.3,
    seed: int = 0,
    arms: tuple[Arm, ...] = ARMS,
    progress: bool = True,
) -> dict:
    """Measure every arm; returns a JSON-able dict (see :func:`format_table`)."""
    from tqdm import tqdm

    out: dict = {
        "settings": {
            "design": DESIGN, "runs": runs, "steps": steps, "drift": drift,
            "position_bias": position_bias, "verdicts": "bernoulli", "seed": seed,
            "pool": {"anchors_per_group": pools.PoolPolicy().anchors_per_group,
                     "per_prompt": pools.PoolPolicy().per_prompt},
        },
        "machine": {"python": platform.python_version(), "numpy": np.__version__},
        "sizes": [],
    }
    bar = tqdm(total=len(sizes) * runs * len(arms), desc="pool drift", disable=not progress,
               file=sys.stderr)
    for n in sizes:
        tau = np.zeros((len(arms), runs))
        calls = np.zeros((len(arms), runs))
        anchor_calls = np.zeros((len(arms), runs))
        corr = np.full((len(arms), runs), np.nan)
        slope = np.zeros((len(arms), runs))
        t = np.arange(steps)
        for r in range(runs):
            true_means = np.array([
                np.random.default_rng([seed, n, r, step]).normal(drift * step, 1.0, n).mean()
                for step in range(steps)
            ])
            for k, arm in enumerate(arms):
                groups = _run_steps(arm, n, steps, drift, position_bias, [seed, n, r])
                tau[k, r] = np.mean([g.tau for g in groups])
                calls[k, r] = np.mean([g.calls for g in groups])
                anchor_calls[k, r] = np.mean([g.anchor_calls for g in groups])
                means = np.array([g.mean for g in groups])
                if arm.pool and steps > 2 and means.std() > 1e-9:
                    corr[k, r] = np.corrcoef(means, true_means)[0, 1]
                slope[k, r] = np.polyfit(t, means, 1)[0] if steps > 1 else 0.0
                bar.update()
        baseline = next((k for k, a in enumerate(arms) if not a.pool), None)
        rows = []
        for k, arm in enumerate(arms):
            row = {"label": arm.label, "pool": arm.pool, "anchor_mode": arm.anchor_mode,
                   "calibrated": arm.calibrated}
            row["tau"], row["tau_se"] = _mean_se(tau[k])
            if baseline is not None:
                row["tau_minus_no_pool"], row["tau_minus_no_pool_se"] = _mean_se(
                    tau[k] - tau[baseline]
                )
            row["calls"] = float(calls[k].mean())
            row["anchor_calls"] = float(anchor_calls[k].mean())
            if arm.pool:
                row["step_mean_corr"], row["step_mean_corr_se"] = _mean_se(corr[k])
            else:
                row["step_mean_corr"] = row["step_mean_corr_se"] = None
            row["fitted_drift_per_step"] = float(slope[k].mean())
            rows.append(row)
        out["sizes"].append({"n_traces": n, "arms": rows})
    bar.close()
    return out


def format_table(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"Anchor pools under a drifting policy ({s['design']}, equal calls): strengths of step "
        f"t's traces ~ N({s['drift']} t, 1), {s['steps']} steps, {s['runs']} runs, position "
        f"bias {s['position_bias']}, {s['pool']['anchors_per_group']} anchors per group",
    ]
    for size in result["sizes"]:
        lines += [
            "",
            f"G = {size['n_traces']}",
            f"  {'pool':<26}{'Kendall tau':>16}{'vs no pool':>18}{'calls':>7}{'anchor':>8}"
            f"{'step-mean corr':>17}{'drift/step':>12}",
        ]
        for a in size["arms"]:
            tau = f"{a['tau']:.3f} ± {a['tau_se']:.3f}"
            diff = ""
            if "tau_minus_no_pool" in a and a["pool"]:
                diff = f"{a['tau_minus_no_pool']:+.3f} ± {a['tau_minus_no_pool_se']:.3f}"
            corr = "-"
            if a["step_mean_corr"] is not None:
                corr = f"{a['step_mean_corr']:+.2f} ± {a['step_mean_corr_se']:.2f}"
            lines.append(
                f"  {a['label']:<26}{tau:>16}{diff:>18}{a['calls']:>7.1f}{a['anchor_calls']:>8.1f}"
                f"{corr:>17}{a['fitted_drift_per_step']:>+12.3f}"
            )
    lines.append(f"  (true drift per step: {s['drift']:+.3f})")
    return "\n".join(lines)


__all__ = ["ARMS", "Arm", "format_table", "run"]
