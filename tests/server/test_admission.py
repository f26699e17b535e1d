"""Backpressure on a real server: over capacity, new groups are refused at once with
RESOURCE_EXHAUSTED / 429 and a retry-after hint; every group accepted is answered."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from judge_server.comparators.simulated import SimulatedComparator
from trainer_client import AsyncArenaClient
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc
from trainer_client._transports import grpc_error
from trainer_client.types import Group, Trace

from .conftest import CHANNEL_OPTIONS
from .groups import dead, live, to_proto

TIMEOUT = 30


class SlowComparator(SimulatedComparator):
    """Takes 5 ms per batch, as a (very fast) model would."""

    async def compare(self, comparisons):
        await asyncio.sleep(0.005)
        return await super().compare(comparisons)


class GateComparator(SimulatedComparator):
    """Answers nothing until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def compare(self, comparisons):
        await self.gate.wait()
        return await super().compare(comparisons)


@pytest.fixture
async def full(start_server):
    """A server whose run "r" holds its 3 slots with groups the judge is holding."""
    comparator = GateComparator()
    server = await start_server(comparator=comparator, max_run_groups_in_flight=3,
                                max_groups_in_flight=5)
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.ArenaStub(ch)
        held = asyncio.ensure_future(stub.Rank(pb.RankRequest(
            run_id="r", groups=[to_proto(dead(f"held{k}")) for k in range(3)]), timeout=TIMEOUT))
        for _ in range(100):
            if server.service.admission.groups_in_flight == 3:
                break
            await asyncio.sleep(0.01)
        yield server, comparator, stub, held


async def test_grpc_refuses_a_group_over_the_runs_capacity_then_answers_every_accepted(full):
    server, comparator, stub, held = full
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Rank(pb.RankRequest(run_id="r", groups=[to_proto(dead("more"))]),
                        timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "run 'r'" in caught.value.details()
    trailer = dict(caught.value.trailing_metadata())
    hint = trailer["grpc-retry-pushback-ms"]  # gRPC's standard pushback, whole milliseconds
    assert hint.isdigit() and 50 <= int(hint) <= 10_000 and "retry-after" not in trailer
    assert grpc_error(caught.value).retry_after == int(hint) / 1e3  # what the client waits
    # A live group needs no judge: never refused.
    reply = await stub.Rank(pb.RankRequest(run_id="r", groups=[to_proto(live("l"))]),
                            timeout=TIMEOUT)
    assert reply.results[0].status == "ok"
    # Another run still has room (the per-run cap), until the server-wide cap.
    other = asyncio.ensure_future(stub.Rank(pb.RankRequest(
        run_id="other", groups=[to_proto(dead(f"o{k}")) for k in range(2)]), timeout=TIMEOUT))
    await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Rank(pb.RankRequest(run_id="third", groups=[to_proto(dead("t"))]),
                        timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    comparator.gate.set()
    for reply in (await held, await other):
        assert all(r.status == "ok" and r.routed for r in reply.results)
    stats = await stub.GetRunStats(pb.GetRunRequest(run_id="r"), timeout=TIMEOUT)
    assert (stats.judged, stats.refused, stats.groups_in_flight) == (3, 1, 0)
    assert server.service.admission.groups_in_flight == 0


async def test_a_request_is_refused_whole_and_a_large_one_gets_in_when_the_run_is_idle(full):
    server, comparator, stub, held = full
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Rank(pb.RankRequest(
            run_id="r", groups=[to_proto(dead(f"x{k}")) for k in range(4)]), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    comparator.gate.set()
    await held
    stats = await stub.GetRunStats(pb.GetRunRequest(run_id="r"), timeout=TIMEOUT)
    assert (stats.groups, stats.refused) == (3, 4)  # nothing of it was ranked
    reply = await stub.Rank(pb.RankRequest(  # 4 dead groups > 3 slots, but the run is idle
        run_id="r", groups=[to_proto(dead(f"x{k}")) for k in range(4)]), timeout=TIMEOUT)
    assert all(r.status == "ok" for r in reply.results)


async def test_http_answers_429_with_retry_after_and_streams_say_overloaded(full):
    server, comparator, stub, held = full
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as http:
        response = await http.post("/v1/rank", json={"run_id": "r", "group": dead("h")})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "resource_exhausted"
    stream = stub.RankStream(iter([
        pb.RankStreamRequest(run_id="r", group=to_proto(dead("s"))),
        pb.RankStreamRequest(run_id="r", group=to_proto(live("sl"))),
    ]), timeout=TIMEOUT)
    results = {r.group_id: r async for r in stream}
    assert results["s"].status == "overloaded" and results["s"].retry_after_s > 0
    assert results["sl"].status == "ok"
    comparator.gate.set()
    assert all(r.status == "ok" for r in (await held).results)


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_a_client_flooding_a_small_server_gets_every_group_judged(start_server, transport):
    """64 dead groups at a server that takes 4 at a time: refused groups are sent again after
    the server's hint, and every group ends judged, none dropped."""
    server = await start_server(comparator=SlowComparator(), max_run_groups_in_flight=4)
    groups = [Group(f"g{k}", tuple(Trace(f"g{k} t{i} strength={i}", 1.0) for i in range(4)))
              for k in range(64)]
    async with AsyncArenaClient(target=server.grpc_address, http_url=server.http_url,
                                transport=transport, run_id="flood", retries=50,
                                backoff_s=0.01, deadline_s=60) as client:
        result = await client.rank(groups)
    assert all(o.judged for o in result.outcomes)
    stats = await server.service.run_stats("flood")
    assert stats["judged"] == 64 and stats["refused"] > 0
