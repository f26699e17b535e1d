"""gRPC and HTTP give the same answer for the same groups.

The run draws no pool anchors (anchors_per_group 0), so every ranking of a group plays the same
tournament (its random draws are seeded by the run, the group id and the texts).
"""

from __future__ import annotations

import pytest

from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb

from .groups import dead, live, to_proto

FIELDS = ("group_id", "advantages", "routed", "strengths", "stderr", "judge_calls", "comparisons",
          "cached_comparisons", "judge_requests", "rounds", "anchors_used", "status", "error")

GROUPS = [
    dead("d1", (0.5, -1.0, 2.0, 0.0, 1.2, -0.3), prompt_id="p1"),
    dead("d2", (1.0, 1.0, -2.0), prompt_id="p2", reward=0.0),
    live("l1", (1.0, 0.0, 0.5, 0.0)),
    {"group_id": "c1", "texts": ["a strength=0.2", "b strength=-0.7"], "rewards": [1.0, 1.0]},
]


def from_proto(result: pb.GroupResult) -> dict:
    return {f: list(v) if f in ("advantages", "strengths", "stderr") else v
            for f in FIELDS for v in [getattr(result, f)]}


def from_json(result: dict) -> dict:
    return {f: result[f] for f in FIELDS}


@pytest.fixture
async def run_id(stub):
    await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(
        run_id="same", anchors_per_group=0,
    )))
    return "same"


async def test_rank_over_grpc_and_http_agree(stub, http, run_id):
    grpc_results = (await stub.Rank(pb.RankRequest(
        run_id=run_id, groups=[to_proto(g) for g in GROUPS]
    ))).results
    response = await http.post("/v1/rank", json={"run_id": run_id, "groups": GROUPS})
    assert response.status_code == 200, response.text
    http_results = response.json()["results"]

    assert [from_proto(r) for r in grpc_results] == [from_json(r) for r in http_results]
    assert sum(r.routed for r in grpc_results) == 3


async def test_one_group_and_the_stream_agree_with_rank(stub, http, run_id):
    by_rank = (await stub.Rank(pb.RankRequest(
        run_id=run_id, groups=[to_proto(g) for g in GROUPS]
    ))).results
    requests = [pb.RankStreamRequest(run_id=run_id, group=to_proto(g)) for g in GROUPS]
    by_stream = {r.group_id: from_proto(r) async for r in stub.RankStream(iter(requests))}
    one_by_one = {}
    for group in GROUPS:
        response = await http.post("/v1/rank", json={"run_id": run_id, "group": group})
        one_by_one[group["group_id"]] = from_json(response.json())

    for result in by_rank:
        assert by_stream[result.group_id] == from_proto(result)
        assert one_by_one[result.group_id] == from_proto(result)
