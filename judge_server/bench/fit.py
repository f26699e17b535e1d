"""How fast is the Bradley-Terry fitter? Timings against ``choix`` on the same graphs.

For each size ``n`` the benchmark draws ``graphs_per_size`` random comparison graphs with
``comparisons_per_item * n`` comparisons (a random cycle, so that the graph is connected,
plus random pairs) and hard outcomes drawn from a Bradley-Terry model with standard normal
true strengths. On every graph it times, in the same run and interleaved:

``ours``
    :func:`judge_server.arena.bradley_terry.fit` (``method="auto"``: dense Newton up to
    ``NEWTON_MAX_FREE`` items, sparse Newton-CG above);
``opt_pairwise``
    ``choix.opt_pairwise(n, data, alpha=lam / 2)``: the same MAP estimate (choix's penalty
    ``alpha ||theta||^2`` is our ``lam / 2 ||beta||^2``), with choix's default solver
    (Newton-CG) and tolerance;
``ilsr_pairwise``
    ``choix.ilsr_pairwise(n, data, alpha=lam / 2)``: iterative Luce spectral ranking; its
    ``alpha`` regularises a Markov chain, so its estimate is close to but not the MAP one.

Each call is timed as the minimum over ``repeats`` runs (``time.perf_counter``); a size
reports the median over its graphs, the speedups as ratios of medians, and the largest
difference between our strengths and ``opt_pairwise``'s (both centred). Inputs are given to
each library in its own format
(arrays for ours, a list of ``(winner, loser)`` tuples for choix), prepared outside the timing.

``choix`` is a test dependency: ``pip install 'reasoning-arena[test]'``.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib import metadata
from typing import Any

import numpy as np

from judge_server.arena.bradley_terry import fit

DEFAULT_SIZES = (16, 32, 64)
DEFAULT_REPEATS = 3


def random_graph(
    rng: np.random.Generator, n_items: int, comparisons_per_item: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A connected random comparison graph with hard Bradley-Terry outcomes.

    Returns ``first, second, p`` with ``comparisons_per_item * n_items`` comparisons: a random
    cycle over all items plus random pairs of distinct items; ``p`` is 1.0 where ``first`` won.
    """
    m = comparisons_per_item * n_items
    cycle = rng.permutation(n_items)
    extra = max(m - n_items, 0)
    first = np.concatenate([cycle, rng.integers(0, n_items, extra)])[:m]
    offset = rng.integers(1, n_items, extra)  # never 0: no self-comparisons
    second = np.concatenate([np.roll(cycle, 1), (first[n_items:] + offset) % n_items])[:m]
    strengths = rng.standard_normal(n_items)
    win_prob = 1.0 / (1.0 + np.exp(strengths[second] - strengths[first]))
    p = (rng.random(m) < win_prob).astype(np.float64)
    return first, second, p


def _min_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _ms(seconds: float) -> float:
    return float(seconds) * 1e3


def _check_positive_int(value: object, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def run(
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    comparisons_per_item: int = 4,
    graphs_per_size: int = 20,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    lam: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Time our fitter against ``choix`` on random graphs of each size.

    Parameters
    ----------
    sizes : sequence of int
        Numbers of items (traces) per graph, each at least 2.
    comparisons_per_item : int, optional
        Comparisons per graph divided by the number of items (default 4).
    graphs_per_size : int, optional
        Random graphs per size (default 20); timings are medians over them.
    repeats : int, optional
        Each call is timed as the fastest of this many runs (default 3).
    seed : int, optional
        Seed of the graphs and outcomes.
    lam : float, optional
        Prior precision of our fit; choix gets ``alpha = lam / 2``.
    progress : bool, optional
        Show a ``tqdm`` progress bar on stderr.

    Returns
    -------
    dict
        JSON-able: ``{"sizes": [row, ...], "config": {...}, "machine": {...}}`` with one row
        per size: ``n_items``, ``n_comparisons``, ``ours_median_ms``,
        ``ours_median_iterations``, ``opt_pairwise_median_ms``, ``ilsr_pairwise_median_ms``,
        ``speedup_vs_opt_pairwise``, ``speedup_vs_ilsr_pairwise``,
        ``max_abs_diff_vs_opt_pairwise``, ``all_converged``.

    Raises
    ------
    ImportError
        If ``choix`` is not installed.
    ValueError
        On bad arguments, naming the argument.
    """
    try:
        import choix
    except ImportError as exc:
        raise ImportError(
            "the fit benchmark compares against choix, a test dependency: "
            "pip install 'reasoning-arena[test]'"
        ) from exc
    from tqdm import tqdm

    sizes = [_check_positive_int(n, "sizes", minimum=2) for n in sizes]
    if not sizes:
        raise ValueError("sizes: must name at least one size")
    comparisons_per_item = _check_positive_int(comparisons_per_item, "comparisons_per_item")
    graphs_per_size = _check_positive_int(graphs_per_size, "graphs_per_size")
    repeats = _check_positive_int(repeats, "repeats")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam: must be a finite number > 0, got {lam!r}")
    alpha = lam / 2

    rng = np.random.default_rng(seed)
    rows = []
    bar = tqdm(
        total=len(sizes) * graphs_per_size,
        desc="bench fit",
        unit="graph",
        file=sys.stderr,
        disable=not progress,
    )
    try:
        for n in sizes:
            graphs = [random_graph(rng, n, comparisons_per_item) for _ in range(graphs_per_size)]
            ours_s, opt_s, ilsr_s, diffs, iterations = [], [], [], [], []
            all_converged = True
            for first, second, p in graphs:
                data = [
                    (int(i), int(j)) if won else (int(j), int(i))
                    for i, j, won in zip(first, second, p)
                ]
                ours = fit(n, first, second, p, lam=lam)
                theirs = choix.opt_pairwise(n, data, alpha=alpha)
                all_converged &= ours.converged
                iterations.append(ours.iterations)
                diff = (ours.strengths - ours.strengths.mean()) - (theirs - theirs.mean())
                diffs.append(float(np.max(np.abs(diff))))
                ours_s.append(_min_time(partial(fit, n, first, second, p, lam=lam), repeats))
                opt_s.append(_min_time(partial(choix.opt_pairwise, n, data, alpha=alpha), repeats))
                ilsr_s.append(
                    _min_time(partial(choix.ilsr_pairwise, n, data, alpha=alpha), repeats)
                )
                bar.update()

            ours_median = statistics.median(ours_s)
            opt_median = statistics.median(opt_s)
            ilsr_median = statistics.median(ilsr_s)
            rows.append(
                {
                    "n_items": n,
                    "n_comparisons": comparisons_per_item * n,
                    "ours_median_ms": _ms(ours_median),
                    "ours_median_iterations": float(statistics.median(iterations)),
                    "opt_pairwise_median_ms": _ms(opt_median),
                    "ilsr_pairwise_median_ms": _ms(ilsr_median),
                    "speedup_vs_opt_pairwise": opt_median / ours_median,
                    "speedup_vs_ilsr_pairwise": ilsr_median / ours_median,
                    "max_abs_diff_vs_opt_pairwise": max(diffs),
                    "all_converged": bool(all_converged),
                }
            )
    finally:
        bar.close()

    return {
        "sizes": rows,
        "config": {
            "comparisons_per_item": comparisons_per_item,
            "graphs_per_size": graphs_per_size,
            "repeats": repeats,
            "seed": seed,
            "lam": lam,
            "choix_alpha": alpha,
            "timing": "min over repeats per graph, median over graphs",
            "choix_settings": "defaults (opt_pairwise: Newton-CG, tol=1e-5; "
            "ilsr_pairwise: tol=1e-8, max_iter=100)",
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": _version("scipy"),
            "choix": _version("choix"),
        },
    }


_COLUMNS = (
    # header, key, format
    ("n_items", "n_items", "{:d}"),
    ("comps", "n_comparisons", "{:d}"),
    ("ours ms", "ours_median_ms", "{:.3f}"),
    ("opt_pairwise ms", "opt_pairwise_median_ms", "{:.2f}"),
    ("ilsr_pairwise ms", "ilsr_pairwise_median_ms", "{:.2f}"),
    ("x opt", "speedup_vs_opt_pairwise", "{:.1f}"),
    ("x ilsr", "speedup_vs_ilsr_pairwise", "{:.1f}"),
    ("max|diff| opt", "max_abs_diff_vs_opt_pairwise", "{:.1e}"),
)


def format_table(result: dict[str, Any]) -> str:
    """Render :func:`run`'s result as a fixed-width table with the speedups."""
    header = [title for title, _, _ in _COLUMNS]
    body = [[fmt.format(row[key]) for _, key, fmt in _COLUMNS] for row in result["sizes"]]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))

    config = result.get("config", {})
    machine = result.get("machine", {})
    lines = [
        "Bradley-Terry fit: ours vs choix (median over {} graphs of min-of-{} timings, "
        "{} comparisons/item, lam={}, choix alpha={})".format(
            config.get("graphs_per_size", "?"),
            config.get("repeats", "?"),
            config.get("comparisons_per_item", "?"),
            config.get("lam", "?"),
            config.get("choix_alpha", "?"),
        ),
        line(header),
        line(["-" * width for width in widths]),
        *(line(cells) for cells in body),
        "machine: {} CPUs, python {}, numpy {}, scipy {}, choix {}".format(
            machine.get("cpu_count", "?"),
            machine.get("python", "?"),
            machine.get("numpy", "?"),
            machine.get("scipy", "?"),
            machine.get("choix", "?"),
        ),
    ]
    return "\n".join(lines)


__all__ = ["DEFAULT_REPEATS", "DEFAULT_SIZES", "format_table", "random_graph", "run"]
