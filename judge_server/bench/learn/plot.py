"""Learning curves to a PNG: held-out accuracy, dead fraction and well-formed share against
steps, one line per arm (median over seeds) with its seed band (min to max).

Needs ``matplotlib`` (``pip install 'reasoning-arena[test]'``); the Agg backend, no display.
"""

from __future__ import annotations

import numpy as np

COLOURS = {"grpo": "#1f77b4", "dapo": "#ff7f0e", "dapo_resample": "#bcbd22",
           "arena": "#d62728", "random": "#7f7f7f", "judge_scores": "#9467bd",
           "reference_shaping": "#2ca02c", "arena_zscore": "#8c564b"}


#: The arms drawn with their seed band (the others as lines only, to stay readable).
BANDS = ("grpo", "dapo", "arena")


def _curves(runs: list[dict], arm: str, records: str, key: str):
    mine = [r for r in runs if r["arm"] == arm]
    if not mine:
        return None
    n = min(len(r[records]) for r in mine)
    steps = np.array([r[records][k]["step"] for k in range(n) for r in mine[:1]])
    values = np.array([[r[records][k][key] for k in range(n)] for r in mine], dtype=float)
    return steps, values


def _smooth(steps: np.ndarray, values: np.ndarray, width: int):
    """Trailing means over ``width`` steps, from the first step that has ``width`` before it."""
    if width <= 1 or values.shape[1] < width:
        return steps, values
    kernel = np.ones(width) / width
    return steps[width - 1:], np.array([np.convolve(v, kernel, "valid") for v in values])


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    panels = [("evals", "accuracy", "held-out accuracy (T=1)", 1),
              ("steps", "dead", "dead fraction of groups (mean of 10 steps)", 10),
              ("evals", "well_formed", "well-formed share of step lines", 1)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (records, key, title, width) in zip(axes, panels):
        for arm in dict.fromkeys(r["arm"] for r in runs):
            curves = _curves(runs, arm, records, key)
            if curves is None:
                continue
            steps, values = curves
            steps, values = _smooth(steps, values, width)
            colour = COLOURS.get(arm)
            ax.plot(steps, np.median(values, axis=0), label=arm, color=colour,
                    lw=2.2 if arm == "arena" else 1.3)
            if values.shape[0] > 1 and arm in BANDS:
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=colour,
                                alpha=0.12)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].axhline(result["target"], color="black", ls=":", lw=1)
    axes[2].axhline(0.95, color="black", ls=":", lw=1)
    axes[0].legend(fontsize=8, loc="lower right")
    seeds = len(result["seeds"])
    fig.suptitle(f"RL on addition chains from a warm start: median over {seeds} seed(s), band "
                 f"min-max (grpo, dapo, arena); judge {result.get('judge_commit', '?')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
