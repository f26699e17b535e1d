"""From runs to the claim: steps to target, paired ratios with a bootstrap interval, the table.

The target accuracy is fixed here, before any arena run was looked at (see the README): a run
reaches it at the first evaluation whose held-out accuracy is at least :data:`TARGET`. A run
that never reaches it is censored: its steps count as the run's last step, a lower bound, and
ratios that involve it are marked. Pure functions.
"""

from __future__ import annotations

import numpy as np

from . import monitors

#: Held-out accuracy (verifier, temperature 1) that counts as reached. Fixed before any arena
#: result was seen, from the warm start's accuracy (0.41-0.45 on 256 problems) and GRPO pilots
#: (seed 0, Adam 3e-4: about 0.50-0.55 after 30-60 steps of 64 groups, flat at 16 groups).
TARGET = 0.52
BOOTSTRAP = 4000
RNG_SEED = 0


def reached(evals: list[dict], target: float = TARGET) -> dict | None:
    """The first evaluation at or above ``target``, or None."""
    return next((e for e in evals if e["accuracy"] >= target), None)


def run_summary(run: dict, target: float = TARGET) -> dict:
    evals, steps = run["evals"], run["steps"]
    hit = reached(evals, target)
    last = evals[-1]
    judged_dead = [s["dead_with_signal"] for s in steps if s["dead_with_signal"] is not None]
    return {
        "arm": run["arm"],
        "seed": run["seed"],
        "steps_to_target": hit["step"] if hit else last["step"],
        "censored": hit is None,
        "samples_to_target": hit["samples"] if hit else last["samples"],
        "seconds_to_target": hit["seconds"] if hit else last["seconds"],
        "start_accuracy": evals[0]["accuracy"],
        "final_accuracy": last["accuracy"],
        "final_by_difficulty": last["by_difficulty"],
        "dead_start": float(np.mean([s["dead"] for s in steps[:5]])),
        "dead_all_wrong_start": float(np.mean([s["dead_all_wrong"] for s in steps[:5]])),
        "dead_all_correct_start": float(np.mean([s["dead_all_correct"] for s in steps[:5]])),
        "dead_end": float(np.mean([s["dead"] for s in steps[-5:]])),
        "dead_with_signal": float(np.mean(judged_dead)) if judged_dead else None,
        "dead_advantage_size": _mean(s["dead_advantage_size"] for s in steps),
        "live_advantage_size": _mean(s["live_advantage_size"] for s in steps),
        "samples": last["samples"],
        "seconds": last["seconds"],
        "min_well_formed": min(e["well_formed"] for e in evals),
        "min_steps_ratio": min(e["steps_ratio"] for e in evals),
        "min_answered": min(e["answered"] for e in evals),
        "final_judge_auc": last["judge_auc"],
        "gamed": any(monitors.is_gamed(e) for e in evals),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def paired_ratios(summaries: list[dict], arm: str, other: str) -> list[tuple[int, float, bool]]:
    """(seed, steps(arm) / steps(other), censored) for every seed both arms ran."""
    by = {(s["arm"], s["seed"]): s for s in summaries}
    out = []
    for (a, seed), mine in sorted(by.items()):
        theirs = by.get((other, seed))
        if a != arm or theirs is None:
            continue
        ratio = max(mine["steps_to_target"], 1) / max(theirs["steps_to_target"], 1)
        out.append((seed, ratio, mine["censored"] or theirs["censored"]))
    return out


def median_interval(values: list[float], *, level: float = 0.9) -> tuple[float, float, float]:
    """The median and a percentile-bootstrap ``level`` interval of the median over seeds."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(RNG_SEED)
    medians = np.median(x[rng.integers(0, x.size, size=(BOOTSTRAP, x.size))], axis=1)
    tail = (1 - level) / 2
    return float(np.median(x)), float(np.quantile(medians, tail)), float(
        np.quantile(medians, 1 - tail))


def claims(summaries: list[dict], arm: str = "arena") -> dict:
    """The median ratio of steps to target ``arm`` / each other arm, with its 90% interval."""
    out = {}
    arms_run = sorted({s["arm"] for s in summaries} - {arm})
    for other in arms_run:
        pairs = paired_ratios(summaries, arm, other)
        if not pairs:
            continue
        median, low, high = median_interval([r for _, r, _ in pairs])
        out[other] = {"median": median, "low": low, "high": high,
                      "per_seed": [{"seed": s, "ratio": r, "censored": c} for s, r, c in pairs],
                      "censored_pairs": sum(c for _, _, c in pairs)}
    return out


def per_arm(summaries: list[dict]) -> dict[str, dict]:
    """Medians over seeds per arm, and the runs that were gamed (named, not averaged)."""
    out = {}
    for arm in dict.fromkeys(s["arm"] for s in summaries):
        mine = [s for s in summaries if s["arm"] == arm]

        def med(key: str, mine=mine) -> float | None:
            values = [s[key] for s in mine if s[key] is not None]
            return float(np.median(values)) if values else None

        out[arm] = {
            "seeds": len(mine),
            "reached": sum(not s["censored"] for s in mine),
            **{k: med(k) for k in ("steps_to_target", "samples_to_target",
                                   "seconds_to_target", "final_accuracy", "dead_start",
                                   "dead_all_wrong_start", "dead_all_correct_start",
                                   "dead_end", "dead_with_signal", "dead_advantage_size",
                                   "live_advantage_size", "min_well_formed",
                                   "min_steps_ratio", "min_answered", "final_judge_auc")},
            "final_by_difficulty": {
                k: float(np.median([s["final_by_difficulty"].get(k, np.nan) for s in mine]))
                for k in sorted({k for s in mine for k in s["final_by_difficulty"]})},
            "gamed_seeds": [s["seed"] for s in mine if s["gamed"]],
        }
    return out


def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    arms_ = result["per_arm"]
    lines = [
        f"learning benchmark: target held-out accuracy {result['target']}, "
        f"{result['config']['steps']} steps, seeds {result['seeds']}",
        "",
        "| arm | seeds reached | steps to target | samples to target | s to target | "
        "final acc | dead at start (wrong/correct) | dead with signal | min well-formed | gamed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in arms_.items():
        lines.append(
            f"| {arm} | {a['reached']}/{a['seeds']} | {_f(a['steps_to_target'], '.0f')} | "
            f"{_f(a['samples_to_target'], '.0f')} | {_f(a['seconds_to_target'], '.0f')} | "
            f"{_f(a['final_accuracy'])} | {_f(a['dead_start'])} "
            f"({_f(a['dead_all_wrong_start'])}/{_f(a['dead_all_correct_start'])}) | "
            f"{_f(a['dead_with_signal'])} | {_f(a['min_well_formed'], '.3f')} | "
            f"{','.join(map(str, a['gamed_seeds'])) or 'none'} |")
    lines += ["", "| arm | final accuracy by additions 1 / 2 / 3 / 4 | mean abs advantage, dead / "
              "live groups | min lines/additions | min answered | judge AUC at the end |",
              "|---|---|---|---|---|---|"]
    for arm, a in arms_.items():
        by = a["final_by_difficulty"] or {}
        lines.append(
            f"| {arm} | {' / '.join(_f(by.get(k)) for k in ('1', '2', '3', '4'))} | "
            f"{_f(a['dead_advantage_size'], '.3f')} / {_f(a['live_advantage_size'], '.3f')} | "
            f"{_f(a['min_steps_ratio'])} | {_f(a['min_answered'])} | "
            f"{_f(a['final_judge_auc'], '.3f')} |")
    for arm, claims_ in result["claims"].items():
        lines += ["", f"steps to target, {arm} / other (median over seeds, bootstrap 90%; "
                  "* censored: a run never reached it, its last step is a lower bound):"]
        for other, c in claims_.items():
            per_seed = ", ".join(f"{p['ratio']:.2f}{'*' if p['censored'] else ''}"
                                 for p in c["per_seed"])
            lines.append(f"  {arm}/{other}: {c['median']:.2f} [{c['low']:.2f}, {c['high']:.2f}]"
                         f"  per seed: {per_seed}")
    return "\n".join(lines)
