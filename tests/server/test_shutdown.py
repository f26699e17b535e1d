"""SIGTERM to a real server process (``serve()``, its signal handlers) with groups in flight.

The server says NOT_SERVING, takes no new groups, answers every group in flight within the
grace period, flushes its store and exits 0; a stream in flight gets its groups' results and
then ends with UNAVAILABLE, so that its client resends the rest elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from judge_server.comparators.simulated import SimulatedComparator
from judge_server.store.sqlite import SqliteStore
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead, live, to_proto

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
DELAY_S = 2.0  # per batch at the judge: a group is in flight this long after its "comparing"
GRACE_S = 40.0  # exiting well before it says the groups drained; wide for a loaded machine
START_S = 60.0  # a loaded machine imports slowly
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServeProcess:
    """``python -m tests.client.slow_server --serve``: the real ``serve()``, a sqlite store."""

    def __init__(self, tmp_path: Path) -> None:
        self.sqlite_path = tmp_path / "arena.sqlite3"
        self.log_path = tmp_path / "server.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "ARENA_STORE": "sqlite",
            "ARENA_SQLITE_PATH": str(self.sqlite_path),
            "ARENA_SHUTDOWN_GRACE_S": str(GRACE_S),
            "ARENA_ANCHORS_PER_GROUP": "3",  # a pool to flush (off by default)
            # every batch at the judge at once, so that all groups are in flight together
            "ARENA_JUDGE_BATCHES_IN_FLIGHT": "8",
        }
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.client.slow_server", "--serve",
                 "--delay", str(DELAY_S)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.judged: set[str] = set()  # group ids the judge has had comparisons of
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        ports = json.loads(self.next_line(START_S))
        self.grpc_port = ports["grpc_port"]
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.http_url = f"http://127.0.0.1:{ports['http_port']}"

    def _read(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def log(self) -> str:
        return self.log_path.read_text()

    def next_line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the server process said nothing in time; its log:\n"
                                 f"{self.log()}") from None

    async def wait_for_judging(self, *group_ids: str, timeout: float = 30) -> None:
        """Until the judge has got comparisons of each of ``group_ids``."""
        until = time.monotonic() + timeout
        while not set(group_ids) <= self.judged:
            line = await asyncio.to_thread(self.next_line, max(0.1, until - time.monotonic()))
            if line.startswith("comparing "):
                self.judged.update(line.split()[1:])

    def terminate(self) -> float:
        """Send SIGTERM; returns when it was sent (time.monotonic)."""
        self.process.send_signal(signal.SIGTERM)
        return time.monotonic()

    async def wait_exit(self, timeout: float) -> int:
        """The exit status; every line the process printed has been read (``judged``)."""
        try:
            returncode = await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit within {timeout} s; its log:\n"
                                 f"{self.log()}") from None
        await asyncio.to_thread(self.reader.join, 10)
        while not self.lines.empty():
            line = self.lines.get()
            if line.startswith("comparing "):
                self.judged.update(line.split()[1:])
        return returncode


@pytest.fixture
def serve_process(tmp_path):
    started: list[ServeProcess] = []

    def start() -> ServeProcess:
        started.append(ServeProcess(tmp_path))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


async def watch_health(channel: grpc.aio.Channel):
    """A Health.Watch stream on the server (""), after its first answer: SERVING."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
    return watch


async def wait_refused(port: int, timeout: float = 15) -> None:
    """Until a new TCP connection to ``port`` is refused: the listener closed."""
    started = time.monotonic()
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        assert time.monotonic() - started < timeout, f"port {port} still accepts connections"
        await asyncio.sleep(0.01)


async def wait_http_refused(url: str, timeout: float = 15) -> None:
    """Until a new HTTP connection is refused; until then /readyz answers 503."""
    started = time.monotonic()
    while True:
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as client:
            try:
                response = await client.get("/readyz")
            except httpx.ConnectError:
                return
            except (httpx.ReadError, httpx.RemoteProtocolError):
                return  # accepted as the listener closed, then dropped unanswered: closed too
        assert response.status_code == 503 and response.json() == {"status": "draining"}
        assert time.monotonic() - started < timeout, "the HTTP port still accepts connections"
        await asyncio.sleep(0.02)


async def stored_pool(path: Path, run_id: str):
    """The run's settings and pool as the stopped server left them in its sqlite file."""
    store = SqliteStore(path)
    try:
        return await store.get_run(run_id), await store.load_pool(run_id), \
            await store.pool_size(run_id)
    finally:
        await store.aclose()


async def test_sigterm_answers_the_groups_in_flight_refuses_new_ones_and_exits_0(
    serve_process,
):
    server = serve_process()
    groups = [dead(f"unary-{k}", prompt_id="p") for k in range(6)]
    http_groups = [dead(f"http-{k}", prompt_id="q") for k in range(2)] + [live("http-live")]
    async with (
        grpc.aio.insecure_channel(server.grpc_target, options=CHANNEL_OPTIONS) as channel,
        httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=60) as http,
    ):
        stub = pb_grpc.ArenaStub(channel)
        watch = await watch_health(channel)
        rank = stub.Rank(
            pb.RankRequest(run_id="grpc-run", groups=[to_proto(g) for g in groups]), timeout=60
        )
        http_rank = asyncio.create_task(
            http.post("/v1/rank", json={"run_id": "http-run", "groups": http_groups})
        )
        await server.wait_for_judging(*(g["group_id"] for g in groups + http_groups[:2]))
        assert not rank.done() and not http_rank.done()  # in flight at the judge

        sent = server.terminate()
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        not_serving = time.monotonic() - sent
        watch.cancel()  # an open Watch would hold the server for the whole grace
        # From NOT_SERVING on, a group sent on a connection opened before is refused: the
        # draining server answers UNAVAILABLE (or gRPC has cancelled the call: CANCELLED; the
        # client retries both)...
        late = pb.RankRequest(run_id="grpc-run", groups=[to_proto(dead("late", prompt_id="p"))])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(late, timeout=10)
        assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), \
            info.value
        # ...then both listeners close: new connections are refused (HTTP's /readyz answers
        # 503 until then).
        await wait_refused(server.grpc_port)
        grpc_closed = time.monotonic() - sent
        await wait_http_refused(server.http_url)
        http_closed = time.monotonic() - sent
        # A new channel gets UNAVAILABLE (connection refused).
        async with grpc.aio.insecure_channel(server.grpc_target, options=CHANNEL_OPTIONS) as new:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.ArenaStub(new).Rank(late, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
        refused = time.monotonic() - sent
        assert not rank.done() and not http_rank.done()  # still in flight while refusing

        results = (await rank).results
        answered = time.monotonic() - sent
        assert [r.group_id for r in results] == [g["group_id"] for g in groups]
        for result in results:
            assert result.status == "ok" and result.routed, result
            assert result.judge_calls > 0 and len(result.advantages) == 4
        response = await http_rank
        assert response.status_code == 200, response.text
        http_results = response.json()["results"]
        assert [r["status"] for r in http_results] == ["ok"] * 3
        assert [r["routed"] for r in http_results] == [True, True, False]

    returncode = await server.wait_exit(GRACE_S + 10)
    exited = time.monotonic() - sent
    print(f"\nSIGTERM -> NOT_SERVING {not_serving:.3f} s, gRPC port closed {grpc_closed:.3f} s, "
          f"HTTP port closed {http_closed:.3f} s, late groups refused {refused:.3f} s, "
          f"groups answered {answered:.2f} s, exit {exited:.2f} s (grace {GRACE_S} s)")
    log = server.log()
    assert returncode == 0, log
    assert exited < GRACE_S, log
    assert f"SIGTERM: stopping (grace {GRACE_S:.1f} s)" in log, log  # serve()'s handler
    assert "judge_server.server: stopped" in log, log
    assert "late" not in server.judged  # the group sent after SIGTERM never reached the judge

    # The state was flushed: the runs and their pools are in the sqlite file.
    for run_id, prompt_id in (("grpc-run", "p"), ("http-run", "q")):
        stored, pool, (prompts, anchors) = await stored_pool(server.sqlite_path, run_id)
        assert stored is not None and stored.run_id == run_id
        assert list(pool.prompts) == [prompt_id] and pool.get(prompt_id), (run_id, pool)
        assert (prompts, anchors) == (1, pool.size()), (run_id, pool)


async def test_a_stream_in_flight_gets_its_results_then_ends_unavailable(serve_process):
    server = serve_process()
    async with grpc.aio.insecure_channel(server.grpc_target, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ArenaStub(channel)
        watch = await watch_health(channel)
        stream = stub.RankStream(timeout=60)
        ids = [f"stream-{k}" for k in range(3)]
        for group_id in ids:
            group = to_proto(dead(group_id, prompt_id="s"))
            await stream.write(pb.RankStreamRequest(run_id="stream-run", group=group))
        await server.wait_for_judging(*ids)

        sent = server.terminate()
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        watch.cancel()
        # The stream is still open (its groups are in flight) but takes no more groups.
        late = to_proto(dead("stream-late", prompt_id="s"))
        await stream.write(pb.RankStreamRequest(run_id="stream-run", group=late))

        results = {}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                result = await stream.read()
                assert result is not grpc.aio.EOF, "the stream ended OK, not UNAVAILABLE"
                results[result.group_id] = result
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
        assert sorted(results) == ids  # every group in flight, and not the late one
        assert all(r.status == "ok" and r.routed for r in results.values()), results

    returncode = await server.wait_exit(GRACE_S + 10)
    exited = time.monotonic() - sent
    print(f"\nstream: SIGTERM -> exit {exited:.2f} s (grace {GRACE_S} s)")
    assert returncode == 0 and exited < GRACE_S, server.log()
    assert "stream-late" not in server.judged
    stored, pool, (prompts, anchors) = await stored_pool(server.sqlite_path, "stream-run")
    assert stored is not None and list(pool.prompts) == ["s"] and pool.get("s"), pool
    assert (prompts, anchors) == (1, pool.size())


async def test_a_draining_server_refuses_new_groups_on_open_connections(start_server):
    """From the moment health says NOT_SERVING, Rank (gRPC) and /v1/rank (HTTP) refuse new
    groups with UNAVAILABLE / 503, even on connections opened before."""

    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch, \
            httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        stub = pb_grpc.ArenaStub(ch)
        request = pb.RankRequest(run_id="r", groups=[to_proto(dead("g", prompt_id="p"))])
        assert (await stub.Rank(request, timeout=10)).results[0].status == "ok"
        server._draining.set()
        server.app.state.draining = True
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in info.value.details()
        response = await http.post("/v1/rank", json={"run_id": "r", "group": dead("h")})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
    assert (await server.service.run_stats("r"))["groups"] == 1


class HungComparator(SimulatedComparator):
    """A judge that never answers: its groups are in flight when the drain ends."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()

    async def compare(self, comparisons):
        self.asked.set()
        await asyncio.Event().wait()
        return []


async def test_an_http_request_in_flight_when_the_drain_ends_gets_the_error_body(start_server):
    """Uvicorn cancels what is still running when the grace is over; the request gets a 503
    with the JSON error body every refusal has, not a plain-text 500."""
    judge = HungComparator()
    server = await start_server(comparator=judge)
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=60) as http:
        pending = asyncio.create_task(
            http.post("/v1/rank", json={"run_id": "r", "group": dead("g", prompt_id="p")})
        )
        await asyncio.wait_for(judge.asked.wait(), 30)
        await server.stop(grace=0.5)
        response = await pending
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "unavailable"
