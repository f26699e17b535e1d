"""The last line of :func:`rank_dead_group`: an answer never carries a number that is not finite.

Checked input keeps every number finite (the service refuses a ``scale`` beyond 1e6 and loads a
stored one within it), so the guard is shown here on the pure function, with input the service
would refuse: a real tournament, a real fit and a real simulated judge whose verdicts, times a
``scale`` of 1e308, overflow the advantages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from judge_server.arena.pools import Anchor
from judge_server.arena.ranking import NOT_FINITE, non_finite, rank_dead_group
from judge_server.comparators.simulated import SimulatedComparator
from trainer_client.types import Group, GroupResult, RunSettings, Trace

GROUP = Group(
    group_id="g", prompt="2+2?",
    traces=tuple(Trace(f"trace {k} strength={s}", 1.0) for k, s in enumerate((2, -2, 1, -1))),
)


def rank(settings: RunSettings, anchors: list[Anchor] | None = None):
    judge = SimulatedComparator()
    return asyncio.run(rank_dead_group(GROUP, settings, anchors or [], judge.compare_with_hits))


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_advantages_that_overflow_make_a_judge_failure_not_an_answer_with_inf():
    overflow = RunSettings(run_id="r", design="round_robin", normalisation="raw", scale=1e308,
                           lam=1e-6)  # strengths about +-2, times 1e308
    ranked = rank(overflow)
    result = ranked.result
    assert (result.status, result.advantages, result.strengths, result.stderr) == (
        "judge_failed", (0.0,) * 4, (), ())
    assert result.error.startswith(f"{NOT_FINITE}: advantages[")
    assert (result.comparisons, result.judge_requests, result.rounds) == (6, 6, 1)  # its cost
    assert not ranked.preferred and ranked.strengths.size == 0  # the pool takes nothing
    finite = rank(dataclasses.replace(overflow, scale=1e6))
    assert finite.result.status == "ok" and non_finite(finite.result) is None


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_anchors_whose_mean_overflows_still_give_a_finite_answer():
    """Strengths this large come only from a store written by hand: their mean (the traces'
    prior centre) overflowed, and the fit refused it with a ValueError (INTERNAL)."""
    anchors = [Anchor(f"anchor {k}", s, 0) for k, s in enumerate((1.7e308, 1.6e308))]
    result = rank(RunSettings(run_id="r", anchors_per_group=2), anchors).result
    assert result.status == "ok" and result.anchors_used == 2
    assert non_finite(result) is None


def test_non_finite_names_the_first_number_that_is_not():
    result = GroupResult(group_id="g", advantages=(0.0, 0.0), routed=True,
                         strengths=(1.0, math.nan), stderr=(math.inf, 0.0))
    assert non_finite(result) == "strengths[1] = nan"
    assert non_finite(GroupResult(group_id="g", advantages=(1.0, -1.0), routed=True)) is None
