"""Both clients against a real judge server, over both transports."""

from __future__ import annotations

import asyncio
import math
import random
from concurrent.futures import wait
from typing import Any

import pytest

from judge_server.comparators.base import Comparator
from judge_server.comparators.cached import CachedComparator
from trainer_client import ArenaClient, AsyncArenaClient, Group, RunSettings, Trace, group_relative

from .conftest import CountingComparator, dead, diverse

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ["grpc", "http"]
DEADLINE_S = 30.0  # generous: these tests are about answers, not faults


def batch(tag: str) -> list[Group]:
    """Dead and diverse groups, and a group of one, shuffled."""
    groups = [
        dead(f"{tag}-dead-0", (0.5, -1.0, 2.0, 0.0)),
        diverse(f"{tag}-diverse-0", (1.0, 0.0, 1.0, 0.0)),
        dead(f"{tag}-dead-1", (1.5, 0.5, -0.5)),
        diverse(f"{tag}-diverse-1", (0.2, 0.9, 0.4)),
        Group(group_id=f"{tag}-single", traces=(Trace("alone", 1.0),)),
        dead(f"{tag}-dead-2", (0.0, 3.0), reward=0.0),
    ]
    random.Random(tag).shuffle(groups)
    return groups


def check_batch(groups: list[Group], result, *, divide_by_std: bool = True) -> None:
    assert [o.group_id for o in result.outcomes] == [g.group_id for g in groups]
    for group, outcome, advantages in zip(groups, result.outcomes, result.advantages):
        rewards = [t.reward for t in group.traces]
        assert list(outcome.advantages) == advantages and len(advantages) == len(rewards)
        if "dead" in group.group_id:
            assert outcome.routed and outcome.judged and not outcome.fell_back, outcome
            assert outcome.reason == "" and outcome.judge_calls > 0 and outcome.attempts == 1
            assert outcome.comparisons == outcome.cached_comparisons + outcome.judge_requests
            assert math.fsum(advantages) == pytest.approx(0.0, abs=1e-9)
            assert max(map(abs, advantages)) > 0.1
            # the simulated judge reads the strengths: the strongest trace leads
            strengths = [float(t.text.split("strength=")[1]) for t in group.traces]
            assert advantages.index(max(advantages)) == strengths.index(max(strengths))
            assert len(outcome.strengths) == len(rewards)
        elif len(rewards) == 1:
            assert advantages == [0.0] and not outcome.routed
        else:
            assert not outcome.routed and not outcome.fell_back
            assert advantages == list(group_relative(rewards, divide_by_std=divide_by_std))
    stats = result.stats
    assert (stats.groups, stats.dead, stats.judged, stats.fell_back) == (6, 3, 3, 0)
    assert stats.tied == 0 and not any(o.tied for o in result.outcomes)
    assert stats.judge_calls == sum(o.judge_calls for o in result.outcomes)
    metrics = stats.as_metrics()
    assert metrics["arena/dead_fraction"] == 0.5 and metrics["arena/judged"] == 3.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_batch_gets_advantages_and_only_dead_groups_reach_the_server(judge, transport):
    with ArenaClient(**judge.address(transport), run_id="exp", deadline_s=DEADLINE_S) as client:
        groups = batch("sync")
        check_batch(groups, client.rank(groups))
        groups = batch("again")
        check_batch(groups, client.rank(groups))
        totals = client.stats()
    assert judge.groups_seen("exp", "judged") == 6
    assert judge.groups_seen("exp", "live") == 0  # diverse groups were never sent
    assert (totals["batches"], totals["groups"], totals["dead"], totals["judged"]) == (
        2, 12, 6, 6)
    assert totals["dead_fraction"] == 0.5 and totals["fell_back"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_async_client(judge, transport):
    async with AsyncArenaClient(**judge.address(transport), run_id="exp",
                                divide_by_std=False, deadline_s=DEADLINE_S) as client:
        groups = batch("async")
        check_batch(groups, await client.rank(groups), divide_by_std=False)
        outcome = await client.rank_group(dead("one", (1.0, -1.0)))
        assert outcome.judged and outcome.advantages[0] > outcome.advantages[1]
        futures = [client.submit(g) for g in batch("submitted")]
        assert all(isinstance(f, asyncio.Future) for f in futures)
        outcomes = await asyncio.gather(*futures)
        assert sum(o.judged for o in outcomes) == 3
    assert judge.groups_seen("exp", "live") == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_and_async_clients_agree(start_judge, transport):
    judge = start_judge()
    settings: dict[str, Any] = dict(design="round_robin", anchors_per_group=0)  # no randomness
    groups = batch("same")
    with ArenaClient(**judge.address(transport), deadline_s=DEADLINE_S,
                     run_settings=RunSettings(run_id="sync", **settings)) as client:
        sync = client.rank(groups)

    async def main():
        async with AsyncArenaClient(**judge.address(transport), deadline_s=DEADLINE_S,
                                    run_settings=RunSettings(run_id="async", **settings)) as c:
            return await c.rank(groups)

    other = asyncio.run(main())
    check_batch(groups, sync)
    for a, b in zip(sync.outcomes, other.outcomes):
        assert a.advantages == pytest.approx(b.advantages, abs=1e-9)
        assert a.judge_calls == b.judge_calls
    # round robin: every pair of a group once, as the run's settings say
    n = {g.group_id: len(g.traces) for g in groups}
    assert all(o.judge_calls == n[o.group_id] * (n[o.group_id] - 1) // 2
               for o in sync.outcomes if o.routed)
    assert asyncio.run(judge.service.get_run("sync")).design == "round_robin"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_outcomes_and_stats_say_what_the_servers_verdict_cache_answered(start_judge, transport):
    comparator = CountingComparator()
    judge = start_judge(CachedComparator(comparator))
    settings = RunSettings(run_id="exp", design="round_robin", anchors_per_group=0)
    groups = batch("cached")
    with ArenaClient(**judge.address(transport), deadline_s=DEADLINE_S,
                     run_settings=settings) as client:
        first = client.rank(groups)
        again = client.rank(groups)  # new request ids: ranked again, from the cache
        totals = client.stats()
    needed = first.stats.comparisons
    assert needed == first.stats.judge_requests == len(comparator.asked) > 0
    assert first.stats.cached_comparisons == 0
    assert [(o.comparisons, o.cached_comparisons, o.judge_requests) for o in again.outcomes] == [
        (o.comparisons, o.comparisons, 0) for o in first.outcomes]
    metrics = again.stats.as_metrics()
    assert [metrics[f"arena/{k}"] for k in (
        "comparisons", "cached_comparisons", "judge_requests", "judge_calls")] == [
        needed, needed, 0, needed]
    assert [totals[k] for k in ("comparisons", "cached_comparisons", "judge_requests")] == [
        2 * needed, needed, needed]


class IndifferentJudge(Comparator):
    """A judge that prefers neither trace of any pair."""

    name = "indifferent"

    async def compare(self, comparisons):
        return [0.5] * len(comparisons)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dead_groups_the_judge_told_apart_in_nothing_are_counted_tied(start_judge, transport):
    judge = start_judge(IndifferentJudge())
    groups = [dead("a"), diverse("b"), dead("c", (1.0, 2.0))]
    with ArenaClient(**judge.address(transport), run_id="exp", deadline_s=DEADLINE_S) as client:
        result = client.rank(groups)
        totals = client.stats()
    a, b, c = result.outcomes
    assert a.judged and a.tied and not a.fell_back and a.advantages == (0.0,) * 4
    assert c.judged and c.tied and c.advantages == (0.0, 0.0)
    assert not b.tied and not b.routed
    assert (result.stats.dead, result.stats.judged, result.stats.tied) == (2, 2, 2)
    metrics = result.stats.as_metrics()
    assert metrics["arena/tied"] == 2.0 and metrics["arena/judged"] == 2.0
    assert metrics["arena/fell_back"] == 0.0  # the judge answered: nothing fell back
    assert totals["tied"] == 2.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_submit_overlaps_and_every_future_resolves(start_judge, transport):
    comparator = CountingComparator(delay=0.2)
    judge = start_judge(comparator)
    with ArenaClient(**judge.address(transport), deadline_s=DEADLINE_S) as client:
        groups = [dead(f"g{k}", (k, -k, 0.5)) for k in range(1, 9)] + [diverse("d")]
        futures = [client.submit(g) for g in groups]
        assert not all(f.done() for f in futures)  # submit returned before the judge answered
        done, _ = wait(futures, timeout=DEADLINE_S)
        assert len(done) == len(futures)
        outcomes = [f.result() for f in futures]
    assert [o.group_id for o in outcomes] == [g.group_id for g in groups]
    assert all(o.judged for o in outcomes[:-1]) and not outcomes[-1].routed
    assert len(comparator.asked) == sum(o.judge_calls for o in outcomes)


def test_an_async_client_follows_its_caller_to_a_new_event_loop(judge):
    client = AsyncArenaClient(target=judge.grpc_address, deadline_s=DEADLINE_S)

    async def step(k: int):
        return await client.rank_group(dead(f"step-{k}", (1.0, 0.0)))

    assert asyncio.run(step(0)).judged
    assert asyncio.run(step(1)).judged  # the first loop, and its channel, are gone
    asyncio.run(client.aclose())


def test_the_builtin_judge_prefers_the_right_arithmetic(start_judge):
    judge = start_judge(None, comparator="builtin")
    group = Group(
        group_id="eggs", prompt="Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest "
        "at $2. How much does she make?", reference="18",
        traces=(Trace("16 - 3 - 4 = 9 eggs. 9 * 2 = 18 dollars.", 1.0),
                Trace("16 - 3 - 4 = 8 eggs. 8 * 2 = 18 dollars.", 1.0)),
    )
    with ArenaClient(target=judge.grpc_address, deadline_s=DEADLINE_S) as client:
        outcome = client.rank_group(group)
    assert outcome.judged and outcome.advantages[0] > 0 > outcome.advantages[1]
