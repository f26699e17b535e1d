"""``arena-judge bench learn``: every arm, every seed, from the same warm start.

Runs go seed by seed (all arms of seed 0, then of seed 1, ...), so that a benchmark stopped
early still has paired seeds; the JSON is rewritten after every run. The arms that use the
judge share one ``arena-judge serve`` process (its defaults), one run id per arm and seed.
"""

from __future__ import annotations

import copy
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
        "claims": summary.claims(summaries) if any(s["arm"] == "arena" for s in summaries)
        else {},
        "summaries": summaries,
        "runs": runs,
    }


def run(*, seeds: int = DEFAULT_SEEDS, arm_names: tuple[str, ...] = arms.ARMS,
        config: rl.Config = rl.DEFAULT_CONFIG, target: float = summary.TARGET,
        checkpoint: Path = CHECKPOINT, json_path: str | None = None,
        plot_path: str | None = None, transport: str = "grpc", log=None) -> dict:
    import torch

    torch.set_num_threads(1)
    unknown = set(arm_names) - set(arms.ARMS)
    if unknown:
        raise ValueError(f"arms: unknown {sorted(unknown)}; choose from {arms.ARMS}")
    warm = load(checkpoint)
    heldout = task.problems(config.heldout_seed, config.heldout)
    commit = judge_commit()
    runs: list[dict] = []
    seed_list = list(range(seeds))
    with ExitStack() as stack:
        options = None
        if set(arm_names) & set(arms.JUDGED):
            options = stack.enter_context(judge_server(transport=transport))
        for seed in seed_list:
            for arm in arm_names:
                start = time.perf_counter()
                runs.append(rl.run(arm, seed, copy.deepcopy(warm), config,
                                   client_options=options, heldout=heldout,
                                   progress=_progress(log)))
                if log:
                    log(f"{arm} seed {seed}: {time.perf_counter() - start:.0f} s, "
                        f"{config.steps / (time.perf_counter() - start):.2f} steps/s")
                result = result_of(runs, config, seed_list[: seed + 1], target=target,
                                   checkpoint=str(checkpoint), commit=commit)
                if json_path:
                    Path(json_path).write_text(json.dumps(result, indent=1))
    if plot_path:
        from .plot import plot

        plot(result, plot_path)
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
