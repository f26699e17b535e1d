"""``arena-judge bench learn``: every arm, every seed, from the same warm start.

Runs go seed by seed (all arms of seed 0, then of seed 1, ...), so that a benchmark stopped
early still has paired seeds; the JSON is rewritten after every run. The arms that use the
judge share one ``arena-judge serve`` process (its defaults), one run id per arm and seed.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from . import arms, rl, summary, task
from .judge import judge_server
from .warm_start import CHECKPOINT, load

DEFAULT_SEEDS = 5


def judge_commit() -> str:
    """The last commit of the embedded judge and of the advantage mapping (what was run)."""
    try:
        return subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "judge_server/comparators/builtin.py",
             "judge_server/arena/advantages.py"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parents[3]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def result_of(runs: list[dict], config: rl.Config, seeds: list[int], *, target: float,
              checkpoint: str, commit: str) -> dict:
    summaries = [summary.run_summary(r, target) for r in runs]
    return {
        "target": target,
        "config": dataclasses.asdict(config),
        "seeds": seeds,
        "checkpoint": checkpoint,
        "judge_commit": commit,
        "per_arm": summary.per_arm(summaries),
        "claims": {arm: summary.claims(summaries, arm) for arm in ("arena", "arena_zscore")
                   if any(s["arm"] == arm for s in summaries)},
        "summaries": summaries,
        "runs": runs,
    }


def _job(arm: str, seed: int, config: rl.Config, checkpoint: str, options: dict | None,
         log) -> dict:
    """One run, in this process or a worker's (one BLAS thread each)."""
    import torch

    torch.set_num_threads(1)
    warm = load(Path(checkpoint))
    heldout = task.problems(config.heldout_seed, config.heldout)
    start = time.perf_counter()
    result = rl.run(arm, seed, warm, config, client_options=options, heldout=heldout,
                    progress=_progress(log))
    if log:
        log(f"{arm} seed {seed}: {time.perf_counter() - start:.0f} s, "
            f"{config.steps / (time.perf_counter() - start):.2f} steps/s")
    return result


def run(*, seeds: int = DEFAULT_SEEDS, arm_names: tuple[str, ...] = arms.ARMS,
        config: rl.Config = rl.DEFAULT_CONFIG, target: float = summary.TARGET,
        checkpoint: Path = CHECKPOINT, json_path: str | None = None,
        plot_path: str | None = None, transport: str = "grpc", workers: int = 1,
        first_seed: int = 0, log=None) -> dict:
    """Every arm for seeds ``first_seed .. first_seed + seeds - 1``; ``workers`` runs at once
    (processes)."""
    unknown = set(arm_names) - set(arms.ARMS + arms.EXTRA_ARMS)
    if unknown:
        raise ValueError(f"arms: unknown {sorted(unknown)}; choose from "
                         f"{arms.ARMS + arms.EXTRA_ARMS}")
    commit = judge_commit()
    seed_list = list(range(first_seed, first_seed + seeds))
    jobs = [(arm, seed) for seed in seed_list for arm in arm_names]
    if not jobs:
        raise ValueError("seeds, arms: nothing to run")
    done: dict[tuple[str, int], dict] = {}
    result: dict | None = None
    with ExitStack() as stack:
        options = None
        if set(arm_names) & set(arms.JUDGED):
            options = stack.enter_context(judge_server(transport=transport))
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")))
            futures = {pool.submit(_job, arm, seed, config, str(checkpoint), options,
                                   main_log if log else None): (arm, seed)
                       for arm, seed in jobs}
            finished = (f.result() for f in as_completed(futures))
        else:
            finished = (_job(arm, seed, config, str(checkpoint), options, log)
                        for arm, seed in jobs)
        for one in finished:
            done[one["arm"], one["seed"]] = one
            runs = [done[j] for j in jobs if j in done]
            complete = [s for s in seed_list if all((a, s) in done for a in arm_names)]
            result = result_of(runs, config, complete, target=target,
                               checkpoint=str(checkpoint), commit=commit)
            if json_path:
                Path(json_path).write_text(json.dumps(result, indent=1))
    if plot_path and result is not None:
        from .plot import plot

        plot(result, plot_path)
    assert result is not None  # every job ran
    return result


def _progress(log):
    if log is None:
        return None

    def report(arm: str, seed: int, e: dict) -> None:
        log(f"  {arm} seed {seed} step {e['step']}: accuracy {e['accuracy']:.3f} "
            f"well-formed {e['well_formed']:.3f} steps {e['steps_ratio']:.2f} "
            f"answered {e['answered']:.2f} judge auc {e['judge_auc']}")

    return report


def main_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
