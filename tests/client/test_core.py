"""The client's no-I/O core: checks, local advantages, the retry plan, counters, the surface."""

from __future__ import annotations

import asyncio
import email.utils
import math
import pickle
import subprocess
import sys
from typing import Any

import grpc
import numpy as np
import pytest

import trainer_client
from judge_server.arena.advantages import group_relative as server_group_relative
from trainer_client import (
    ArenaClient,
    AsyncArenaClient,
    BatchStats,
    ClientConfig,
    Group,
    InvalidConfig,
    InvalidGroup,
    RunSettings,
    Trace,
    group_relative,
    is_dead,
    make_group,
)
from trainer_client._core import ClientCore
from trainer_client._transports import grpc_error, parse_retry_after
from trainer_client.errors import (
    ArenaClientError,
    ClientClosed,
    MalformedResponse,
    RequestRejected,
    ServerOverloaded,
    ServerUnavailable,
    TransportError,
)
from trainer_client.types import GroupResult

from ..ports import free_port
from .conftest import dead, diverse


def test_public_surface():
    assert set(trainer_client.__all__) == {
        "ArenaClient", "ArenaClientError", "AsyncArenaClient", "BatchResult", "BatchStats",
        "ClientClosed", "ClientConfig", "Group", "GroupOutcome", "GroupResult", "InvalidConfig",
        "InvalidGroup", "MAX_ABS_REWARD", "RunSettings", "STD_EPS", "Trace", "group_relative",
        "is_dead", "make_group",
    }
    for name in trainer_client.__all__:
        assert getattr(trainer_client, name) is not None
    assert issubclass(InvalidGroup, ValueError) and issubclass(InvalidGroup, ArenaClientError)
    assert issubclass(InvalidConfig, ValueError) and issubclass(ClientClosed, RuntimeError)
    assert issubclass(ServerOverloaded, TransportError) and ServerOverloaded.retryable
    assert not RequestRejected.retryable and not MalformedResponse.retryable


def test_import_pulls_in_no_heavy_dependency():
    code = (
        "import sys, trainer_client\n"
        "from trainer_client import ArenaClient, AsyncArenaClient\n"
        "ArenaClient(target='127.0.0.1:1'); AsyncArenaClient(target='127.0.0.1:1')\n"
        "heavy = ('numpy', 'torch', 'vllm', 'fastapi', 'pydantic', 'judge_server', 'scipy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("rewards", [[1.0, 0.0, 0.5, 0.25], [3.0, -2.0], [0.1] * 7 + [0.2],
                                     list(np.random.default_rng(0).normal(size=16))])
@pytest.mark.parametrize("divide_by_std", [True, False])
def test_local_advantages_are_the_servers(rewards, divide_by_std):
    ours = group_relative(rewards, divide_by_std=divide_by_std)
    theirs = server_group_relative(rewards, divide_by_std=divide_by_std)
    assert ours == pytest.approx(theirs.tolist(), abs=1e-12)
    assert math.fsum(ours) == pytest.approx(0.0, abs=1e-9)


def test_dead_groups():
    assert is_dead([1.0, 1.0, 1.0]) and is_dead([0.0, 1e-7], eps=1e-6)
    assert not is_dead([1.0]) and not is_dead([0.0, 1.0]) and not is_dead([0.0, 1e-5], eps=1e-6)


def test_config_defaults_and_checks():
    config = ClientConfig()
    assert (config.target, config.transport, config.run_id, config.deadline_s, config.retries) == (
        "localhost:50051", "grpc", "default", 60.0, 2)
    with pytest.raises(TypeError):
        ClientConfig("localhost:1")  # type: ignore[call-arg]  # keyword-only
    bad: list[tuple[dict[str, Any], str]] = [
        ({"transport": "udp"}, "transport"),
        ({"transport": "http"}, "http_url"),
        ({"http_url": "localhost:8000"}, "http_url"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"deadline_s": float("inf")}, "deadline_s"),
        ({"retries": -1}, "retries"),
        ({"backoff_s": -0.1}, "backoff_s"),
        ({"dead_eps": float("nan")}, "dead_eps"),
        ({"run_id": ""}, "run_id"),
        ({"run_id": "a", "run_settings": RunSettings(run_id="b")}, "run_settings.run_id"),
    ]
    for options, field in bad:
        with pytest.raises(InvalidConfig) as info:
            ClientConfig(**options)
        assert info.value.field == field, options
    with pytest.raises(InvalidConfig, match="deadline"):
        ArenaClient(deadlin_s=3)  # a misspelt option is an error
    adopted = ClientConfig(run_settings=RunSettings(run_id="exp", design="live"))
    assert adopted.run_id == "exp"
    client = ArenaClient(ClientConfig(deadline_s=5), retries=0)
    assert (client.config.deadline_s, client.config.retries) == (5, 0)


BAD_GROUPS = [
    (Group(group_id="g", traces=()), "groups[0].traces", "empty"),
    (Group(group_id="g", traces=(Trace("a", 1.0), Trace("b", float("nan")))),
     "groups[0].traces[1].reward", "finite"),
    (Group(group_id="g", traces=(Trace("a", float("inf")), Trace("b", 1.0))),
     "groups[0].traces[0].reward", "finite"),
    (Group(group_id="", traces=(Trace("a", 1.0), Trace("b", 1.0))), "groups[0].group_id",
     "empty"),
    (Group(group_id="g", traces=(Trace("a", 1.0), ("b", 1.0))),  # type: ignore[arg-type]
     "groups[0].traces[1]", "Trace"),
    (Group(group_id="g", traces=(Trace("a", 1.0), Trace(None, 1.0))),  # type: ignore[arg-type]
     "groups[0].traces[1].text", "string"),
    (Group(group_id="g", traces=(Trace("a", "1"), Trace("b", 1.0))),  # type: ignore[arg-type]
     "groups[0].traces[0].reward", "number"),
    (Group(group_id="g", traces=(Trace("a", 1.0), Trace("b", 1.0)), step=-1),
     "groups[0].step", ">= 0"),
    (Group(group_id="g", traces=(Trace("a\udc80", 1.0), Trace("b", 1.0))),
     "groups[0].traces[0].text", "UTF-8"),
    ("not a group", "groups[0]", "Group"),
]


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("group,field,words", BAD_GROUPS, ids=[b[1] for b in BAD_GROUPS])
def test_bad_groups_are_refused_before_anything_is_sent(transport, group, field, words):
    port = free_port()  # nothing listens: a send would fail with a connection error
    options = {"target": f"127.0.0.1:{port}", "http_url": f"http://127.0.0.1:{port}",
               "transport": transport, "retries": 0}
    with ArenaClient(**options) as client:
        with pytest.raises(InvalidGroup, match=words) as info:
            client.rank([group])
        assert info.value.field == field
        with pytest.raises(InvalidGroup):
            client.submit(group)
        assert client._loop_thread is None  # nothing was started, let alone sent

    async def main():
        async with AsyncArenaClient(**options) as client:
            with pytest.raises(InvalidGroup) as info:
                await client.rank([dead("ok"), group])
            assert info.value.field == field.replace("groups[0]", "groups[1]")
            with pytest.raises(InvalidGroup) as info:
                await client.rank_group(group)
            assert info.value.field == field.replace("groups[0]", "group")
            assert client._runner is None or not client._runner._drives

    asyncio.run(main())


def test_duplicate_group_ids_are_refused():
    with ArenaClient(target=f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidGroup, match="duplicate") as info:
            client.rank([dead("g"), diverse("h"), dead("g")])
        assert info.value.field == "groups[2].group_id"


def test_make_group_checks_the_columns():
    group = make_group("g", ["a", "b"], [1, np.float64(0.5)], prompt="p", step=3)
    assert group.traces == (Trace("a", 1.0), Trace("b", 0.5)) and group.step == 3
    with pytest.raises(InvalidGroup, match="lengths differ") as info:
        make_group("g", ["a", "b", "c"], [1.0, 0.0])
    assert info.value.field == "rewards"
    with pytest.raises(InvalidGroup, match="finite") as info:
        make_group("g", ["a", "b"], [1.0, float("nan")])
    assert info.value.field == "rewards[1]"
    with pytest.raises(InvalidGroup) as info:
        make_group("g", ["a", 7], [1.0, 0.0])  # type: ignore[list-item]
    assert info.value.field == "texts[1]"
    with pytest.raises(InvalidGroup) as info:
        make_group("g", [], [])
    assert info.value.field == "group.traces"


def test_local_groups_need_no_server():
    port = free_port()
    with ArenaClient(target=f"127.0.0.1:{port}") as client:
        single = Group(group_id="one", traces=(Trace("a", 1.0),))
        result = client.rank([diverse("d", (1.0, 0.0)), single])
        assert client._loop_thread is None  # nothing to send, nothing started
        assert result.advantages == [list(group_relative([1.0, 0.0])), [0.0]]
        assert not any(o.routed or o.fell_back for o in result.outcomes)
        assert client.submit(single).result(0) == result.outcomes[1]
        assert result.stats == BatchStats(groups=2, latency_s=result.stats.latency_s)


# -- the plan: what is retried and when ------------------------------------------------------


def plan_for(*groups: Group, **options):
    core = ClientCore(ClientConfig(**{"deadline_s": 10.0, "retries": 2, **options}))
    return core, core.plan(list(groups))


def answer(group: Group, **fields) -> GroupResult:
    n = len(group.traces)
    return GroupResult(**{"group_id": group.group_id, "advantages": tuple(range(n)),
                          "routed": True, "comparisons": 3, "cached_comparisons": 1,
                          "judge_requests": 2, **fields})


def test_a_tied_result_is_judged_and_counted_tied():
    core, plan = plan_for(dead("a"), dead("b"))
    plan.begin_attempt()
    plan.record(answer(dead("a"), advantages=(0.0,) * 4, tied=True))
    plan.record(answer(dead("b")))
    plan.end_attempt()
    result = core.finish(plan)
    a, b = result.outcomes
    assert a.judged and a.tied and not a.fell_back and not b.tied
    assert (result.stats.judged, result.stats.tied) == (2, 1)
    assert result.stats.as_metrics()["arena/tied"] == 1.0 and core.stats()["tied"] == 1.0
    cost = (result.stats.comparisons, result.stats.cached_comparisons,
            result.stats.judge_requests)
    assert cost == (6, 2, 4) and result.stats.judge_calls == 6
    assert [core.stats()[k] for k in ("comparisons", "cached_comparisons", "judge_requests",
                                      "judge_calls")] == [6.0, 2.0, 4.0, 6.0]


def test_request_ids_are_made_once_per_group_and_kept_across_sends():
    _, plan = plan_for(dead("a"), diverse("b"), dead("c"))
    first = {g.group_id: g.request_id for g in plan.begin_attempt()}
    assert set(first) == {"a", "c"} and len(set(first.values())) == 2
    assert all(len(r) == 32 for r in first.values())
    plan.fail(ServerUnavailable("down"))
    assert {g.group_id: g.request_id for g in plan.begin_attempt()} == first
    given = Group(group_id="x", traces=dead("x").traces, request_id="mine")
    assert plan_for(given)[1].begin_attempt()[0].request_id == "mine"


def test_retries_are_bounded_and_back_off():
    core, plan = plan_for(dead("a"), retries=2, backoff_s=0.1)
    delays = []
    for _ in range(3):
        plan.begin_attempt()
        plan.fail(ServerUnavailable("down"))
        delays.append(plan.retry_delay())
    assert delays[2] is None  # three sends: the first and two retries
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2
    result = core.finish(plan)
    (outcome,) = result.outcomes
    assert outcome.fell_back and outcome.reason == "unavailable" and outcome.attempts == 3
    assert outcome.advantages == (0.0,) * 4
    assert result.stats.retries == 2 and result.stats.fallback_reasons == {"unavailable": 1}
    assert core.finish(plan) is result  # finishing twice changes nothing
    assert core.stats()["fell_back"] == 1 and core.stats()["fell_back/unavailable"] == 1


def test_the_servers_retry_after_hint_is_honoured_within_the_deadline():
    _, plan = plan_for(dead("a"), backoff_s=0.01, deadline_s=10.0)
    plan.begin_attempt()
    plan.fail(ServerOverloaded("busy", retry_after=2.0))
    assert plan.retry_delay() == 2.0
    plan.begin_attempt()
    plan.fail(ServerOverloaded("busy", retry_after=30.0))
    assert plan.retry_delay() is None  # it would pass the deadline: fall back now


def test_retry_after_hints_are_read_from_the_pushback_trailer_or_retry_after():
    def hint(*trailer: tuple[str, str]) -> float | None:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailer))
        return grpc_error(error).retry_after

    assert hint(("grpc-retry-pushback-ms", "250")) == 0.25
    assert hint(("retry-after", "9"), ("grpc-retry-pushback-ms", "250")) == 0.25
    assert hint(("retry-after", "1.5")) == 1.5  # a server before the standard trailer
    assert hint(("grpc-retry-pushback-ms", "-1")) is None  # "do not retry": no hint here
    assert hint(("grpc-retry-pushback-ms", "soon")) is None and hint() is None
    now = 1_800_000_000.0
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:05 GMT", now=now) == pytest.approx(
        email.utils.parsedate_to_datetime("Fri, 15 Jan 2027 08:00:05 GMT").timestamp() - now)
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=now) == 0.0  # past: now
    assert parse_retry_after(" 2 ") == 2.0 and parse_retry_after("later") is None


def test_final_errors_and_bad_answers_fall_back_at_once():
    core, plan = plan_for(dead("a"), dead("b"), dead("c"), dead("d"), dead("e"))
    plan.begin_attempt()
    plan.record(answer(dead("a")))
    plan.record(answer(dead("b"), status="judge_failed", error="judge down"))
    plan.record(answer(dead("c"), advantages=(1.0,)))  # one advantage for four traces
    plan.record(answer(dead("d"), advantages=(0.0, float("nan"), 0.0, 0.0)))
    plan.record(answer(dead("zz")))  # not sent: ignored
    plan.fail(RequestRejected("bad run id"))
    assert plan.retry_delay() is None
    outcomes = core.finish(plan).outcomes
    assert [o.reason for o in outcomes] == ["", "judge_failed", "malformed", "malformed",
                                            "invalid"]
    assert outcomes[0].judged and outcomes[0].advantages == (0.0, 1.0, 2.0, 3.0)
    assert outcomes[1].advantages == (0.0,) * 4
    # a judge failure keeps what the server spent before it; judge_calls: the old name
    assert (outcomes[1].comparisons, outcomes[1].cached_comparisons,
            outcomes[1].judge_requests, outcomes[1].judge_calls) == (3, 1, 2, 3)
    assert outcomes[4].comparisons == 0  # refused: nothing spent


def test_a_group_the_server_names_falls_back_alone_and_the_rest_is_sent_at_once():
    core, plan = plan_for(dead("a"), dead("b"), retries=0)
    plan.begin_attempt()
    plan.fail(RequestRejected("groups[1].traces[0].text: too long", group_id="b"))
    assert plan.retry_delay() == 0.0  # the budget is untouched: nothing failed but b
    assert [g.group_id for g in plan.begin_attempt()] == ["a"]
    plan.record(answer(dead("a")))
    outcomes = core.finish(plan).outcomes
    assert outcomes[0].judged and outcomes[0].attempts == 2
    assert outcomes[1].reason == "invalid" and outcomes[1].attempts == 1


def test_a_cut_plan_falls_back_with_the_cut_reason():
    core, plan = plan_for(dead("a"))
    plan.begin_attempt()
    plan.fail(ServerUnavailable("down"))
    plan.cut("deadline")
    assert plan.retry_delay() is None
    plan.record(answer(dead("a")))  # came in after the cut but before finish: it counts
    assert core.finish(plan).outcomes[0].judged
    core, plan = plan_for(dead("a"))
    plan.cut("closed")
    assert core.finish(plan).outcomes[0].reason == "closed"


def test_stats_and_metrics():
    stats = BatchStats(groups=8, dead=2, judged=1, tied=1, fell_back=1, comparisons=18,
                       cached_comparisons=5, judge_requests=13, latency_s=0.5,
                       fallback_reasons={"deadline": 1})
    assert stats.dead_fraction == 0.25 and BatchStats().dead_fraction == 0.0
    assert stats.as_metrics() == {
        "arena/groups": 8.0, "arena/dead": 2.0, "arena/dead_fraction": 0.25,
        "arena/judged": 1.0, "arena/tied": 1.0, "arena/fell_back": 1.0,
        "arena/comparisons": 18.0, "arena/cached_comparisons": 5.0, "arena/judge_requests": 13.0,
        "arena/judge_calls": 18.0,
        "arena/latency_s": 0.5, "arena/retries": 0.0, "arena/fell_back/deadline": 1.0,
    }
    assert set(stats.as_metrics(prefix="")) >= {"dead_fraction", "judged"}


def test_clients_pickle_as_their_config_and_close_for_good():
    config = ClientConfig(target=f"127.0.0.1:{free_port()}", run_id="exp", deadline_s=3)
    for cls in (ArenaClient, AsyncArenaClient):
        copy = pickle.loads(pickle.dumps(cls(config)))
        assert type(copy) is cls and copy.config == config
    client = ArenaClient(config)
    client.close()
    client.close()
    with pytest.raises(ClientClosed):
        client.rank([dead("a")])
    with pytest.raises(ClientClosed):
        client.submit(dead("a"))


def test_a_result_from_a_server_older_than_comparisons_is_read_by_judge_calls():
    from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
    from trainer_client._transports import result_from_body, result_from_proto

    old = pb.GroupResult(group_id="g", advantages=[0.0, 0.0], routed=True, judge_calls=5)
    body = {"group_id": "g", "advantages": [0.0, 0.0], "routed": True, "judge_calls": 5}
    for result in (result_from_proto(old), result_from_body(body)):
        assert (result.comparisons, result.cached_comparisons, result.judge_requests) == (5, 0, 0)
        assert result.judge_calls == 5
    new: dict[str, Any] = {**body, "comparisons": 5, "cached_comparisons": 2, "judge_requests": 3}
    for result in (result_from_proto(pb.GroupResult(**new)), result_from_body(new)):
        assert (result.comparisons, result.cached_comparisons, result.judge_requests) == (5, 2, 3)
