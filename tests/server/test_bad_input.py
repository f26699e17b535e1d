"""Bad input is refused on both transports with the same message naming the field at fault.

HTTP answers 400 (or 422 for what does not fit the JSON schema) with the one error body; gRPC
answers INVALID_ARGUMENT (NOT_FOUND for an unknown run) with the same message. The server goes
on serving afterwards.
"""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead, to_proto

MAX_TRACE_BYTES = 64
MAX_TRACES = 4
PLACEHOLDER = "XXXX"  # replaced by invalid UTF-8 in the raw request bytes
INVALID_UTF8 = b"\xff\xfeXX"


def traces(*rewards, text="t"):
    return [{"text": f"{text}{k}", "reward": r} for k, r in enumerate(rewards)]


# (case, group body, field at fault, message after "field: ")
BAD_GROUPS = [
    ("empty group", {"group_id": "g"}, "groups[0].traces", "the group is empty"),
    ("group of one", {"group_id": "g", "traces": traces(1.0)}, "groups[0].traces",
     "a group needs at least 2 traces, got 1"),
    ("columns of different lengths", {"group_id": "g", "texts": ["a", "b"], "rewards": [1.0]},
     "groups[0].rewards", "1 rewards for 2 texts: lengths differ"),
    ("traces and columns", {"group_id": "g", "traces": traces(1, 1), "texts": ["a", "b"],
                            "rewards": [1, 1]}, "groups[0].texts",
     "give either traces or texts and rewards, not both"),
    ("NaN reward", {"group_id": "g", "traces": traces(1.0, float("nan"))},
     "groups[0].traces[1].reward", "must be finite, got nan"),
    ("infinite reward", {"group_id": "g", "traces": traces(float("-inf"), 1.0)},
     "groups[0].traces[0].reward", "must be finite, got -inf"),
    ("trace over the size limit", {"group_id": "g", "traces": traces(1, 1, text="é" * 50)},
     "groups[0].traces[0].text", "101 bytes, more than the limit of 64"),
    ("too many traces", {"group_id": "g", "traces": traces(*[1.0] * (MAX_TRACES + 1))},
     "groups[0].traces", f"{MAX_TRACES + 1} traces, more than the limit of {MAX_TRACES}"),
    ("invalid UTF-8", {"group_id": "g", "traces": traces(1, 1, text=PLACEHOLDER)},
     "groups[0].traces[0].text", "invalid UTF-8 at character 0"),
    ("no group id", {"group_id": "", "traces": traces(1, 1)}, "groups[0].group_id",
     "must not be empty"),
]


def json_bytes(body: dict) -> bytes:
    """JSON as Python writes it (NaN and Infinity literals), then the invalid UTF-8 swapped in."""
    return json.dumps(body).encode().replace(PLACEHOLDER.encode(), INVALID_UTF8)


def proto_bytes(message) -> bytes:
    return message.SerializeToString().replace(PLACEHOLDER.encode(), INVALID_UTF8)


@pytest.fixture
async def strict(start_server):
    return await start_server(
        max_trace_bytes=MAX_TRACE_BYTES, max_traces_per_group=MAX_TRACES, auto_create_runs=False,
    )


@pytest.fixture
async def clients(strict):
    async with (
        grpc.aio.insecure_channel(strict.grpc_address, options=CHANNEL_OPTIONS) as channel,
        httpx.AsyncClient(base_url=strict.http_url, trust_env=False, timeout=30) as http,
    ):
        stub = pb_grpc.ArenaStub(channel)
        await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(run_id="r")))
        yield channel, http


def raw_method(channel, name: str, response):
    return channel.unary_unary(
        f"/reasoning_arena.v1.Arena/{name}",
        request_serializer=lambda data: data,
        response_deserializer=response.FromString,
    )


async def http_rank(http, data: bytes) -> httpx.Response:
    response = await http.post(
        "/v1/rank", content=data, headers={"content-type": "application/json"}
    )
    assert "Traceback" not in response.text
    return response


async def grpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert "Traceback" not in info.value.details()
    return info.value


def http_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "field", "message"}
    return body["error"]


@pytest.mark.parametrize("case, group, field, reason", BAD_GROUPS, ids=[c[0] for c in BAD_GROUPS])
async def test_bad_group_is_refused_alike_on_both_transports(clients, case, group, field, reason):
    channel, http = clients
    message = f"{field}: {reason}"

    response = await http_rank(http, json_bytes({"run_id": "r", "groups": [group]}))
    error = http_error(response, 400)
    assert error == {"code": "invalid_argument", "field": field, "message": message}

    request = pb.RankRequest(run_id="r", groups=[to_proto(group)])
    rpc = await grpc_error(raw_method(channel, "Rank", pb.RankResponse)(proto_bytes(request)))
    assert (rpc.code(), rpc.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_invalid_utf8_on_a_stream_ends_it_naming_the_field(clients):
    channel, http = clients
    group = {"group_id": "g", "traces": traces(1, 1, text="ok" + PLACEHOLDER)}
    message = "group.traces[0].text: invalid UTF-8 at character 2"

    error = http_error(await http_rank(http, json_bytes({"run_id": "r", "group": group})), 400)
    assert (error["field"], error["message"]) == ("group.traces[0].text", message)

    stream = channel.stream_stream(
        "/reasoning_arena.v1.Arena/RankStream",
        request_serializer=lambda data: data,
        response_deserializer=pb.GroupResult.FromString,
    )
    request = proto_bytes(pb.RankStreamRequest(run_id="r", group=to_proto(group)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream(iter([request])):
            pass
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_unknown_run_is_not_found_when_runs_must_be_created(clients):
    channel, http = clients
    message = "run_id: run 'nope' does not exist"
    error = http_error(await http_rank(http, json_bytes({"run_id": "nope", "group": dead("d")})),
                       404)
    assert error == {"code": "not_found", "field": "run_id", "message": message}
    rpc = await grpc_error(pb_grpc.ArenaStub(channel).Rank(
        pb.RankRequest(run_id="nope", groups=[to_proto(dead("d"))])
    ))
    assert (rpc.code(), rpc.details()) == (grpc.StatusCode.NOT_FOUND, message)


async def test_what_does_not_parse_is_refused_naming_the_body(clients):
    channel, http = clients
    for data in (b'{"run_id": "r", "group": ', b"\xff\xfe not json", b""):
        error = http_error(await http_rank(http, data), 422)
        assert error["field"] == "body" and error["message"].startswith("body: ")

    wrong_type = {"run_id": "r", "group": {"group_id": "g", "traces": traces(1, 1) + [
        {"text": "t", "reward": "high"}]}}
    error = http_error(await http_rank(http, json_bytes(wrong_type)), 422)
    assert error["field"] == "group.traces[2].reward"
    assert error["message"].startswith("group.traces[2].reward: ")

    rpc = await grpc_error(raw_method(channel, "Rank", pb.RankResponse)(b"\xff\xff\xff"))
    assert rpc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc.details() == "request: not a valid reasoning_arena.v1.RankRequest message"


async def test_the_server_still_serves_after_bad_input(clients, strict):
    channel, http = clients
    for data in (b"\xff", json_bytes({"run_id": "r", "groups": [BAD_GROUPS[0][1]]})):
        await http_rank(http, data)
        await grpc_error(raw_method(channel, "Rank", pb.RankResponse)(data))

    response = await http_rank(http, json_bytes({"run_id": "r", "group": dead("d")}))
    assert response.status_code == 200 and response.json()["routed"]
    (result,) = (await pb_grpc.ArenaStub(channel).Rank(
        pb.RankRequest(run_id="r", groups=[to_proto(dead("e"))])
    )).results
    assert result.routed and result.status == "ok"

    metrics = (await http.get("/metrics")).text
    assert 'arena_invalid_requests_total{transport="http"} 2.0' in metrics
    assert 'arena_invalid_requests_total{transport="grpc"} 2.0' in metrics
