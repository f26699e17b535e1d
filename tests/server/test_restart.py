"""A server on the SQLite store keeps runs and anchor pools across a restart."""

from __future__ import annotations

import grpc

from judge_server.store.sqlite import SqliteStore
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead, to_proto


async def rank(server, group: dict) -> pb.GroupResult:
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        request = pb.RankRequest(run_id="exp", groups=[to_proto(group)])
        (result,) = (await pb_grpc.ArenaStub(ch).Rank(request, timeout=30)).results
        return result


async def test_runs_and_pools_survive_a_restart(start_server, tmp_path):
    path = tmp_path / "arena.sqlite3"
    first = await start_server(store=SqliteStore(path))
    async with grpc.aio.insecure_channel(first.grpc_address, options=CHANNEL_OPTIONS) as ch:
        created = await pb_grpc.ArenaStub(ch).CreateRun(pb.CreateRunRequest(
            settings=pb.RunSettings(run_id="exp", design="round_robin", scale=3.0,
                                    anchors_per_group=2)
        ))
    before = await rank(first, dead("step-0", (1.0, -1.0, 0.5, 0.0), prompt_id="p"))
    assert before.routed and before.anchors_used == 0  # nothing in the pool yet
    pool = await first.service.pool_snapshot("exp")
    await first.stop(grace=1.0)

    second = await start_server(store=SqliteStore(path))
    async with grpc.aio.insecure_channel(second.grpc_address, options=CHANNEL_OPTIONS) as ch:
        assert await pb_grpc.ArenaStub(ch).GetRun(pb.GetRunRequest(run_id="exp")) == created
    assert await second.service.pool_snapshot("exp") == pool and pool["p"]
    after = await rank(second, dead("step-1", (0.3, 0.2, -0.4, 1.1), prompt_id="p"))
    assert after.routed and after.status == "ok" and after.anchors_used == 2
