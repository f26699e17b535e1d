"""A judge failure never stops training: hanging, overloaded, failing, lying and absent
servers, and a connection cut mid-batch (the retried groups are judged once)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from trainer_client import ArenaClient, AsyncArenaClient, RunSettings

from ..ports import free_port
from .conftest import CountingComparator, HangingComparator, dead, diverse
from .servers import CuttingProxy, ScriptedArena, ScriptedHttp, start_scripted_arena

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ["grpc", "http"]
LATE_S = 6.0  # how far past its deadline a test lets rank() return (a loaded machine)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def groups(tag: str, n: int = 3):
    return [dead(f"{tag}-{k}", (1.0, -1.0, 0.5)) for k in range(n)] + [diverse(f"{tag}-live")]


def check_fell_back(result, reason: str, n: int = 3) -> None:
    """The dead groups fell back with zeros for ``reason``; the diverse one is unharmed."""
    *dead_outcomes, live = result.outcomes
    assert len(dead_outcomes) == n
    for outcome in dead_outcomes:
        assert outcome.routed and outcome.fell_back and not outcome.judged, outcome
        assert outcome.reason == reason and outcome.advantages == (0.0, 0.0, 0.0)
    assert not live.routed and live.advantages[0] > 0
    assert result.stats.fell_back == n and result.stats.fallback_reasons == {reason: n}
    assert result.stats.as_metrics()[f"arena/fell_back/{reason}"] == n


@pytest.fixture
def scripted_arena(background):
    """``scripted_arena(script, trailer=None)`` -> (ScriptedArena, its address)."""
    servers = []

    def start(script, **options):
        arena = ScriptedArena(script, **options)
        server, address = background.run(start_scripted_arena(arena))
        servers.append(server)
        return arena, address

    yield start
    for server in servers:
        background.run(server.stop(None))


@pytest.fixture
def scripted_http():
    servers = []

    def start(script, **options):
        servers.append(ScriptedHttp(script, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# -- the server hangs ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_hanging_judge_costs_one_deadline(start_judge, transport):
    comparator = HangingComparator()
    judge = start_judge(comparator)
    options = dict(**judge.address(transport), deadline_s=2.0, retries=2, backoff_s=0.05)
    sync_client, async_client = ArenaClient(**options), AsyncArenaClient(**options)
    started = time.monotonic()
    sync, asynchronous = await asyncio.gather(  # both at once: one deadline's wait
        asyncio.to_thread(sync_client.rank, groups("sync")), async_client.rank(groups("async"))
    )
    assert time.monotonic() - started < 2.0 + LATE_S
    assert comparator.started.is_set()
    for result in (sync, asynchronous):
        check_fell_back(result, "deadline")
        assert result.stats.latency_s >= 1.9 and result.stats.retries == 0
    assert sync_client.stats()["fell_back/deadline"] == 3
    sync_client.close()
    await async_client.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_resolves_every_submitted_future(start_judge, transport):
    judge = start_judge(HangingComparator())
    client = ArenaClient(**judge.address(transport), deadline_s=30.0)
    futures = [client.submit(g) for g in groups("closing")]
    time.sleep(0.3)
    started = time.monotonic()
    client.close()
    outcomes = [f.result(timeout=15) for f in futures]
    assert time.monotonic() - started < 15  # not the 30 s deadline
    assert [o.reason for o in outcomes] == ["closed"] * 3 + [""]


# -- the server is absent --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nothing_listening_falls_back_after_bounded_retries(transport):
    port = free_port()
    with ArenaClient(target=f"127.0.0.1:{port}", http_url=f"http://127.0.0.1:{port}",
                     transport=transport, deadline_s=3.0, retries=2, backoff_s=0.05,
                     run_settings=RunSettings(run_id="exp")) as client:
        started = time.monotonic()
        result = client.rank(groups("absent"))
        assert time.monotonic() - started < 3.0 + LATE_S
    check_fell_back(result, "unavailable")
    assert [o.attempts for o in result.outcomes[:3]] == [3, 3, 3]
    assert result.stats.retries == 2


# -- the server is overloaded ----------------------------------------------------------------


@pytest.mark.parametrize("trailer", [("grpc-retry-pushback-ms", "300"), ("retry-after", "0.3")],
                         ids=["pushback", "older-server"])
def test_grpc_resource_exhausted_is_retried_after_the_hint_then_succeeds(scripted_arena,
                                                                         trailer):
    arena, address = scripted_arena(lambda n: "overloaded" if n <= 2 else "ok",
                                    trailer=trailer)
    with ArenaClient(target=address, deadline_s=10.0, retries=2, backoff_s=0.001) as client:
        started = time.monotonic()
        result = client.rank(groups("busy"))
        elapsed = time.monotonic() - started
    assert arena.calls == 3 and elapsed >= 0.6  # two waits of the server's 0.3 s
    assert result.stats.judged == 3 and result.stats.retries == 2
    assert all(o.judged and o.attempts == 3 for o in result.outcomes[:3])
    assert arena.groups_received == 9  # the diverse group was never sent


def test_grpc_resource_exhausted_forever_falls_back_after_the_retries(scripted_arena):
    arena, address = scripted_arena(lambda n: "overloaded")
    with ArenaClient(target=address, deadline_s=3.0, retries=3, backoff_s=0.01) as client:
        result = client.rank(groups("busy"))
    assert arena.calls == 4
    check_fell_back(result, "overloaded")


def test_a_retry_after_beyond_the_deadline_falls_back_at_once(scripted_arena):
    arena, address = scripted_arena(lambda n: "overloaded",
                                    trailer=("grpc-retry-pushback-ms", "120000"))
    with ArenaClient(target=address, deadline_s=30.0, retries=5) as client:
        result = client.rank(groups("busy"))
    assert arena.calls == 1 and result.stats.latency_s < 10  # not the 30 s deadline
    check_fell_back(result, "overloaded")


@pytest.mark.parametrize("status,reason", [("overloaded", "overloaded"),
                                           ("unavailable", "unavailable"),
                                           ("internal", "server_error")])
def test_http_errors_are_retried_then_fall_back(scripted_http, status, reason):
    server = scripted_http(lambda n: status if n <= 2 else "ok", retry_after="0.2")
    with ArenaClient(transport="http", http_url=server.url, deadline_s=10.0, retries=2,
                     backoff_s=0.001, run_settings=RunSettings(run_id="exp")) as client:
        started = time.monotonic()
        result = client.rank(groups("busy"))
        assert server.calls == 3 and time.monotonic() - started >= 0.4
        assert result.stats.judged == 3 and result.stats.retries == 2
        # the run is created once; again after each send that found the server unavailable
        # (a restarted server may have lost it)
        assert server.create_run_calls == (3 if status == "unavailable" else 1)
        server.script = lambda n: status
        check_fell_back(client.rank(groups("again")), reason)
    assert server.calls == 6


# -- the server's answers are wrong ----------------------------------------------------------


@pytest.mark.parametrize("script,reason", [("malformed", "malformed"),
                                           ("judge_failed", "judge_failed"),
                                           ("invalid", "invalid"), ("short", "malformed")])
def test_grpc_answers_that_are_not_results_fall_back(scripted_arena, script, reason):
    arena, address = scripted_arena(lambda n: script)
    with ArenaClient(target=address, deadline_s=5.0, retries=2) as client:
        result = client.rank(groups("odd"))
    check_fell_back(result, reason)
    assert arena.calls == 1  # a bad answer is final: sending again gets the same
    if script == "judge_failed":
        assert result.stats.judge_calls == 6


def test_http_answers_that_are_not_results_fall_back(scripted_http):
    server = scripted_http(lambda n: "malformed")
    with ArenaClient(transport="http", http_url=server.url, deadline_s=5.0) as client:
        check_fell_back(client.rank(groups("odd")), "malformed")
    assert server.calls == 1


def test_http_a_group_the_server_refuses_falls_back_alone(scripted_http):
    server = scripted_http(lambda n: "invalid_group")
    with ArenaClient(transport="http", http_url=server.url, deadline_s=5.0, retries=0) as client:
        result = client.rank(groups("odd"))
    assert [o.reason for o in result.outcomes] == ["", "invalid", "", ""]
    assert result.stats.judged == 2 and server.calls == 2  # all, then all but the bad one


# -- the connection breaks mid-batch ---------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_group_retried_after_a_cut_is_judged_once(start_judge, background, transport):
    comparator = CountingComparator(delay=0.5)
    judge = start_judge(comparator)
    upstream = judge.server.grpc_port if transport == "grpc" else judge.server.http_port
    proxy = background.run(CuttingProxy(upstream).start())
    via = f"127.0.0.1:{proxy.port}"
    settings = RunSettings(run_id="exp", design="round_robin", anchors_per_group=0)
    with ArenaClient(transport=transport, target=via, http_url=f"http://{via}",
                     run_settings=settings, deadline_s=15.0, retries=2, backoff_s=0.05
                     ) as client:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(client.rank, groups("cut", 4))
            assert comparator.started.wait(10)  # the server is judging the batch
            background.run(proxy.cut())
            result = future.result(15)
    background.run(proxy.close())
    assert proxy.connections >= 2  # the client came back on a new connection
    assert result.stats.judged == 4 and result.stats.retries >= 1
    assert all(o.attempts >= 2 for o in result.outcomes[:4])
    # every group judged once: each pair of its traces compared once, one judged result each
    assert len(comparator.asked) == len(set(comparator.asked)) == 4 * 3
    assert judge.groups_seen("exp", "judged") == 4


# -- the sync client's own event loop --------------------------------------------------------


def ok_after(seconds: float):
    """A script whose every answer is "ok", after ``seconds``."""

    def script(n: int) -> str:
        time.sleep(seconds)
        return "ok"

    return script


def test_a_busy_client_loop_still_returns_by_the_deadline(scripted_http):
    """A slow callback of a submitted future holds the client's event loop; another thread's
    rank() still returns by its deadline (every wait of the sync client is bounded)."""
    server = scripted_http(ok_after(0.2))
    with ArenaClient(transport="http", http_url=server.url, deadline_s=0.5) as client:
        callback_done = threading.Event()
        future = client.submit(dead("first"))
        def hold_the_loop(_: object) -> None:
            time.sleep(8.0)
            callback_done.set()

        future.add_done_callback(hold_the_loop)  # runs on the client's loop
        time.sleep(0.4)  # the answer came: the loop is in the callback
        result = client.rank([dead("second")])
        assert not callback_done.is_set()  # rank() returned while the loop was still busy
        assert future.result(0).judged
    [outcome] = result.outcomes
    assert outcome.fell_back and outcome.reason == "deadline"


def test_a_future_callback_may_submit_again(scripted_http):
    server = scripted_http(ok_after(0.1))
    with ArenaClient(transport="http", http_url=server.url, deadline_s=5.0) as client:
        chained = []
        client.submit(dead("first")).add_done_callback(  # runs on the client's loop
            lambda _: chained.append(client.submit(dead("second"))))
        deadline = time.monotonic() + 5.0
        while not chained and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chained[0].result(5.0).judged and server.calls == 2


FORKED = """
import os, sys, time
from tests.client.conftest import dead
from trainer_client import ArenaClient

client = ArenaClient(transport="http", http_url=sys.argv[1], deadline_s=5.0)
assert client.rank([dead("parent")]).outcomes[0].judged  # the loop thread runs
pid = os.fork()
if pid == 0:  # the child: its own loop thread and connections, the parent's left alone
    judged = client.rank([dead("child")]).outcomes[0].judged
    client.close()
    os._exit(0 if judged else 3)
_, status = os.waitpid(pid, 0)
assert client.rank([dead("parent-again")]).outcomes[0].judged
client.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_the_client_on_a_loop_of_its_own(scripted_http):
    server = scripted_http(lambda n: "ok")
    out = subprocess.run([sys.executable, "-c", FORKED, server.url], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert server.calls == 3
