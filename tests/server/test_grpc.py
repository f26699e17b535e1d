"""The gRPC API on a real server: ranking, streaming, runs, health, reflection, stopping."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from judge_server.comparators.simulated import SimulatedComparator
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead, live, to_proto

TIMEOUT = 30  # seconds; a hang fails the test instead of the suite


class GatedComparator(SimulatedComparator):
    """Holds back every batch with a "slow" trace in it until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()  # set once a slow batch waits
        self.held: set[str] = set()  # the groups (trace-text prefixes) held back

    async def compare(self, comparisons):
        slow = {t.split()[0] for c in comparisons for t in (c.first, c.second) if "slow" in t}
        if slow:
            self.held |= slow
            self.holding.set()
            await self.release.wait()
        return await super().compare(comparisons)


@pytest.fixture
async def gated(start_server):
    """A server whose judge holds back slow groups; each round is its own batch."""
    comparator = GatedComparator()
    server = await start_server(comparator=comparator, max_batch=1)
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        yield server, comparator, pb_grpc.ArenaStub(ch), ch


async def test_rank_judges_a_dead_group_and_centres_a_live_one(stub):
    strengths = [0.5, -1.0, 2.0, 0.0, 1.2]
    request = pb.RankRequest(
        run_id="r", groups=[to_proto(dead("d", strengths)), to_proto(live("l", (1, 0, 0, 1)))]
    )
    response = await stub.Rank(request, timeout=TIMEOUT)
    d, lv = response.results
    assert (d.group_id, lv.group_id) == ("d", "l")

    assert d.routed and d.status == "ok" and d.judge_calls > 0
    assert sum(d.advantages) == pytest.approx(0.0, abs=1e-9)
    assert max(d.advantages) > 0 > min(d.advantages)
    assert np.argmax(d.advantages) == np.argmax(strengths)
    assert np.argmin(d.advantages) == np.argmin(strengths)
    assert len(d.strengths) == len(d.stderr) == len(strengths)

    rewards = np.array([1.0, 0.0, 0.0, 1.0])
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    assert not lv.routed and lv.status == "ok" and lv.judge_calls == 0
    assert list(lv.advantages) == pytest.approx(expected.tolist())
    assert len(lv.strengths) == 0


async def test_rank_takes_columnar_groups(stub):
    group = to_proto(dead("d"))
    columnar = pb.Group(
        group_id="c", prompt_id="q", texts=[t.text for t in group.traces],
        rewards=[t.reward for t in group.traces],
    )
    (result,) = (await stub.Rank(pb.RankRequest(run_id="r", groups=[columnar]))).results
    assert result.routed and len(result.advantages) == len(group.traces)


async def test_stream_answers_each_group_once_as_it_finishes(gated):
    server, comparator, stub, _ = gated
    sent = ["slow", "fast-1", "fast-2", "fast-3", "fast-4"]
    call = stub.RankStream(timeout=TIMEOUT)
    for group_id in sent:
        body = dead(group_id, prompt_id=group_id)
        await call.write(pb.RankStreamRequest(run_id="r", group=to_proto(body)))
    await call.done_writing()

    received = [(await call.read()).group_id for _ in range(4)]  # the slow group is held back
    comparator.release.set()
    received.append((await call.read()).group_id)
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK

    assert sorted(received) == sorted(sent)  # each group exactly once
    assert received != sent and received[-1] == "slow"  # out of order: a later group first


async def test_stream_answers_a_bad_group_and_goes_on(stub):
    requests = [
        pb.RankStreamRequest(run_id="r", group=to_proto(dead("a"))),
        pb.RankStreamRequest(run_id="r", group=pb.Group(group_id="empty")),
        pb.RankStreamRequest(run_id="", group=to_proto(dead("no-run"))),
        pb.RankStreamRequest(run_id="r", group=to_proto(live("b"))),
        pb.RankStreamRequest(run_id="r", group=pb.Group(
            group_id="both", traces=[pb.Trace(text="x", reward=1)] * 2, texts=["y"],
            rewards=[1.0],
        )),
    ]
    results = {r.group_id: r async for r in stub.RankStream(iter(requests), timeout=TIMEOUT)}
    assert sorted(results) == ["a", "b", "both", "empty", "no-run"]
    assert results["a"].status == results["b"].status == "ok"
    assert results["empty"].status == "invalid"
    assert results["empty"].error == "group.traces: the group is empty"
    assert results["no-run"].error == "run_id: must not be empty"
    assert results["both"].error.startswith("group.texts: ")


async def test_runs_create_get_delete(stub):
    created = await stub.CreateRun(pb.CreateRunRequest(
        settings=pb.RunSettings(
            run_id="exp-1", design="round_robin", scale=2.0, anchors_per_group=2
        )
    ))
    assert (created.run_id, created.design, created.scale) == ("exp-1", "round_robin", 2.0)
    assert created.anchors_per_group == 2  # set explicitly: not the default (0)
    assert created.order == "random" and created.lam == 1.0 and created.divide_by_std  # defaults
    assert await stub.GetRun(pb.GetRunRequest(run_id="exp-1")) == created

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(run_id="exp-1")))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert info.value.details() == "run_id: run 'exp-1' exists already"

    assert (await stub.DeleteRun(pb.DeleteRunRequest(run_id="exp-1"))).deleted
    assert not (await stub.DeleteRun(pb.DeleteRunRequest(run_id="exp-1"))).deleted
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetRun(pb.GetRunRequest(run_id="exp-1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "run_id: run 'exp-1' does not exist"


async def test_bad_run_settings_are_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateRun(pb.CreateRunRequest(
            settings=pb.RunSettings(run_id="x", design="knockout")
        ))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("settings.design: must be one of")


async def test_health_service_says_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "reasoning_arena.v1.Arena"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_arena_service(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in reflection.ServerReflectionInfo(iter([request]), timeout=TIMEOUT):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {"reasoning_arena.v1.Arena", "grpc.health.v1.Health"} <= names


async def test_stop_lets_groups_in_flight_finish(gated):
    server, comparator, stub, channel = gated
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    request = pb.RankRequest(run_id="r", groups=[to_proto(dead("slow-1"))])
    unary = stub.Rank(request, timeout=TIMEOUT)
    stream = stub.RankStream(timeout=TIMEOUT)
    await stream.write(pb.RankStreamRequest(run_id="r", group=to_proto(dead("slow-2"))))
    async def both_in_flight() -> None:
        while not {"slow-1", "slow-2"} <= comparator.held:
            await asyncio.sleep(0.01)

    # both groups are in flight before the server stops (asyncio.timeout: Python 3.11)
    await asyncio.wait_for(both_in_flight(), TIMEOUT)

    stopping = asyncio.create_task(server.stop(grace=TIMEOUT))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    assert server.draining and not stopping.done()

    comparator.release.set()
    (result,) = (await unary).results
    assert result.group_id == "slow-1" and result.status == "ok"
    assert (await stream.read()).group_id == "slow-2"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()  # the draining server takes no more groups on the stream
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(stopping, TIMEOUT)
