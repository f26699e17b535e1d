"""What a group cost the judge, on real servers: the comparisons its tournament needed, those
the verdict cache answered and the requests that reached the judge, per group and per run,
over gRPC and HTTP, in the run's stats and in ``/metrics``."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from judge_server.comparators.cached import CachedComparator
from judge_server.comparators.simulated import SimulatedComparator
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead, to_proto

TIMEOUT = 30  # seconds; a hang fails the test instead of the suite
# Every ordered pair of the group once (round robin, both orders, no anchors): 4 traces, 12
# comparisons, the same ones each time the group is ranked.
SETTINGS: dict[str, Any] = {
    "run_id": "r", "design": "round_robin", "order": "both", "anchors_per_group": 0}
GROUP = dead("g", (0.5, -1.0, 2.0, 0.0))
NEEDED = 12


def cost(result) -> tuple[int, int, int]:
    if isinstance(result, dict):
        return result["comparisons"], result["cached_comparisons"], result["judge_requests"]
    return result.comparisons, result.cached_comparisons, result.judge_requests


@pytest.fixture
async def judge_and_server(start_server):
    judge = SimulatedComparator()
    return judge, await start_server(comparator=CachedComparator(judge))


async def test_grpc_results_and_run_stats_count_cached_comparisons_apart(judge_and_server):
    judge, server = judge_and_server
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.ArenaStub(ch)
        await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(**SETTINGS)))
        request = pb.RankRequest(run_id="r", groups=[to_proto(GROUP)])
        (first,) = (await stub.Rank(request, timeout=TIMEOUT)).results
        (again,) = (await stub.Rank(request, timeout=TIMEOUT)).results  # no request id
        stats = await stub.GetRunStats(pb.GetRunRequest(run_id="r"), timeout=TIMEOUT)
    assert cost(first) == (NEEDED, 0, NEEDED) and cost(again) == (NEEDED, NEEDED, 0)
    assert first.judge_calls == again.judge_calls == NEEDED  # the deprecated name, still sent
    assert judge.calls == NEEDED
    assert cost(stats) == (2 * NEEDED, NEEDED, NEEDED) and stats.judge_calls == 2 * NEEDED


async def test_http_results_stats_and_metrics_count_cached_comparisons_apart(judge_and_server):
    judge, server = judge_and_server
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as http:
        assert (await http.post("/v1/runs", json={"settings": SETTINGS})).status_code == 201
        results = []
        for _ in range(2):
            response = await http.post("/v1/rank", json={"run_id": "r", "group": GROUP})
            assert response.status_code == 200, response.text
            results.append(response.json())
        run = (await http.get("/v1/runs/r/stats")).json()
        (listed,) = (await http.get("/v1/stats")).json()["runs"]
        metrics = (await http.get("/metrics")).text
    first, again = results
    assert cost(first) == (NEEDED, 0, NEEDED) and cost(again) == (NEEDED, NEEDED, 0)
    assert first["judge_calls"] == again["judge_calls"] == NEEDED
    assert judge.calls == NEEDED
    assert cost(run) == cost(listed) == (2 * NEEDED, NEEDED, NEEDED)
    assert run["judge_calls"] == 2 * NEEDED
    for name, value in (("comparisons", 2 * NEEDED), ("cached_comparisons", NEEDED),
                        ("judge_requests", NEEDED), ("judge_calls", 2 * NEEDED)):
        assert f'arena_{name}_total{{run="r"}} {float(value)}' in metrics, name
