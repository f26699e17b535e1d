"""A judge that says nothing: tied groups and unread verdicts, on real servers.

A dead group the judge tells apart in nothing comes back ``tied`` with zero advantages and is
counted per run; verdicts the judge gave but that could not be read are counted and logged.
Both over HTTP and gRPC, in the run's stats and in ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import pytest

from judge_server.comparators.base import UNREAD, Comparator, Comparison
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.core.stats import UNREAD_LOG_EVERY
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .groups import dead, to_proto


class SwitchingJudge(Comparator):
    """The simulated judge, until :attr:`answer` is set: then every verdict is that answer
    (``0.5``: no preference; :data:`UNREAD`: a verdict that could not be read)."""

    name = "switching"

    def __init__(self, answer: float | None = None) -> None:
        self.answer = answer
        self.inner = SimulatedComparator()

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        if self.answer is None:
            return await self.inner.compare(comparisons)
        return [self.answer] * len(comparisons)


def metric(text: str, name: str, run: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{run="{run}"}} '):
            return float(line.split()[-1])
    return 0.0


async def rank(http: httpx.AsyncClient, run_id: str, group: dict) -> dict:
    response = await http.post("/v1/rank", json={"run_id": run_id, "group": group})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def http_to(start_server):
    clients = []

    async def connect(judge: Comparator) -> httpx.AsyncClient:
        server = await start_server(comparator=judge)
        client = httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.aclose()


async def test_a_dead_group_judged_by_an_unreadable_judge_is_tied_and_counted(http_to, caplog):
    http = await http_to(SwitchingJudge(UNREAD))
    caplog.set_level(logging.WARNING, logger="judge_server.core.service")
    result = await rank(http, "r", dead("g", (0.5, -1.0, 2.0, 0.0)))
    assert result["status"] == "ok" and result["routed"] and result["tied"]
    assert result["advantages"] == [0.0] * 4
    calls = result["judge_calls"]
    assert calls > 0

    stats = (await http.get("/v1/runs/r/stats")).json()
    assert stats["judged"] == 1 and stats["tied"] == 1
    assert stats["unread_verdicts"] == calls
    (listed,) = (await http.get("/v1/stats")).json()["runs"]
    assert listed["tied"] == 1 and listed["unread_verdicts"] == calls

    metrics = (await http.get("/metrics")).text
    assert metric(metrics, "arena_tied_groups_total", "r") == 1.0
    assert metric(metrics, "arena_unread_verdicts_total", "r") == calls
    assert metric(metrics, "arena_groups_total", "r") == 0.0  # labelled by outcome too
    assert 'arena_groups_total{outcome="judged",run="r"} 1.0' in metrics

    warnings = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1  # the first time...
    for k in range(3):
        await rank(http, "r", dead(f"more{k}", (1.0, 2.0, 3.0)))
    warnings = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1  # ...then only every UNREAD_LOG_EVERY
    assert UNREAD_LOG_EVERY > (await http.get("/v1/runs/r/stats")).json()["unread_verdicts"]


async def test_an_abstaining_judge_ties_a_group_even_against_the_pools_anchors(http_to):
    judge = SwitchingJudge()
    http = await http_to(judge)
    # round robin compares each trace with a pool anchor: anchors of different strengths
    # would pull the traces apart on verdicts of 0.5 alone
    created = await http.post("/v1/runs", json={"settings": {"run_id": "r",
                                                              "design": "round_robin",
                                                              "anchors_per_group": 3}})
    assert created.status_code == 201, created.text
    first = await rank(http, "r", dead("g1", (0.5, -1.0, 2.0, 0.0), prompt_id="p"))
    assert not first["tied"] and max(map(abs, first["advantages"])) > 0.1
    pool = (await http.get("/v1/runs/r/stats")).json()["pool_anchors"]
    assert pool > 0

    judge.answer = 0.5  # read, but no preference: anchors alone would pull traces apart
    second = await rank(http, "r", dead("g2", (3.0, -3.0, 0.0), prompt_id="p"))
    assert second["anchors_used"] > 0 and second["status"] == "ok"
    assert second["tied"] and second["advantages"] == [0.0] * 3
    stats = (await http.get("/v1/runs/r/stats")).json()
    assert (stats["judged"], stats["tied"], stats["unread_verdicts"]) == (2, 1, 0)
    assert stats["pool_anchors"] == pool  # what the judge did not tell apart stays out


async def test_a_judge_with_preferences_ties_nothing(http_to):
    http = await http_to(SwitchingJudge())
    for k in range(3):
        result = await rank(http, "r", dead(f"g{k}"))
        assert not result["tied"]
    stats = (await http.get("/v1/runs/r/stats")).json()
    assert (stats["judged"], stats["tied"], stats["unread_verdicts"]) == (3, 0, 0)
    metrics = (await http.get("/metrics")).text
    assert metric(metrics, "arena_tied_groups_total", "r") == 0.0


async def test_grpc_says_tied_and_counts_it(start_server):
    import grpc

    from .conftest import CHANNEL_OPTIONS

    server = await start_server(comparator=SwitchingJudge(UNREAD))
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.ArenaStub(ch)
        response = await stub.Rank(pb.RankRequest(run_id="r", groups=[to_proto(dead("g"))]))
        (result,) = response.results
        assert result.status == "ok" and result.tied and list(result.advantages) == [0.0] * 4
        stats = await stub.GetRunStats(pb.GetRunRequest(run_id="r"))
        assert stats.tied == 1 and stats.unread_verdicts == result.judge_calls
