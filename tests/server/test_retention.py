"""Issue 14: metric series bounded and removed with their run, idle runs expiring with their
pools and series, readiness that asks the store."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from judge_server.comparators.simulated import SimulatedComparator
from judge_server.core.service import ArenaService
from judge_server.metrics import Metrics
from judge_server.store.memory import MemoryStore
from judge_server.store.redis import RedisStore
from judge_server.store.sqlite import SqliteStore
from trainer_client.types import Group, RunSettings, Trace

from ..redis_server import RedisServer
from .conftest import CHANNEL_OPTIONS

POOL = RunSettings(run_id="default", anchors_per_group=3)


def dead(group_id: str, prompt_id: str = "p") -> Group:
    traces = tuple(Trace(f"{group_id} {k} strength={s}", 1.0) for k, s in enumerate((0, 1, 2)))
    return Group(group_id=group_id, prompt_id=prompt_id, prompt="2+2?", traces=traces)


def live(group_id: str) -> Group:
    traces = (Trace("a", 1.0), Trace("b", 0.0))
    return Group(group_id=group_id, prompt_id="p", prompt="2+2?", traces=traces)


def run_series(metrics: Metrics) -> dict[str, int]:
    """Series (samples of the exposition) per value of the ``run`` label."""
    counts: dict[str, int] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            run = sample.labels.get("run")
            if run is not None:
                counts[run] = counts.get(run, 0) + 1
    return counts


def make_service(store=None, **kw) -> ArenaService:
    return ArenaService(comparator=SimulatedComparator(), store=store or MemoryStore(),
                        defaults=POOL, **kw)


# -- metrics -----------------------------------------------------------------------------------


async def test_deleting_a_run_removes_every_series_it_had():
    service = make_service()
    await service.rank("gone", [dead("g1"), live("g2")])
    await service.rank("kept", [dead("g1")])
    series = run_series(service.metrics)
    assert series["gone"] >= 20 and series["kept"] >= 20  # counters, histogram, gauges
    assert await service.delete_run("gone")
    assert set(run_series(service.metrics)) == {"kept"}
    assert b'run="gone"' not in service.metrics.render()


async def test_3000_runs_ranked_leave_a_bounded_number_of_series():
    service = make_service(metrics=Metrics(max_runs=100))
    for k in range(3000):
        group = dead(f"g{k}") if k % 100 == 0 else live(f"g{k}")
        await service.rank(f"run-{k}", [group])
    series = run_series(service.metrics)
    assert len(series) == 100
    assert set(series) == {f"run-{k}" for k in range(2900, 3000)}  # the most recently active
    assert sum(series.values()) <= 100 * 30
    await service.rank("run-5", [live("again")])  # a dropped run active again: series anew
    assert "run-5" in run_series(service.metrics) and "run-2900" not in run_series(
        service.metrics)


def test_max_runs_must_be_positive():
    with pytest.raises(ValueError, match="max_runs"):
        Metrics(max_runs=0)


# -- retention ---------------------------------------------------------------------------------


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_idle_run_expires_with_its_pool_statistics_and_series():
    clock = Clock()
    service = make_service(MemoryStore(idle_ttl_s=100, clock=clock))
    await service.rank("idle", [dead("g1")])
    await service.rank("busy", [dead("g1")])
    assert (await service.pools.size("idle"))[1] > 0
    clock.now += 60
    await service.rank("busy", [live("g2")])
    assert await service.runs.expire_idle() == []
    clock.now += 60  # idle: 120 s unused; busy: 60 s
    assert await service.runs.expire_idle() == ["idle"]
    assert [r.run_id for r in await service.list_runs()] == ["busy"]
    assert await service.store.pool_size("idle") == (0, 0)
    assert set(run_series(service.metrics)) == {"busy"}
    assert "idle" not in service.stats.runs()
    # a later group of the same id starts a new run with the defaults
    await service.rank("idle", [live("g3")])
    assert (await service.run_stats("idle"))["groups"] == 1


async def test_a_run_only_looked_up_stays():
    clock = Clock()
    service = make_service(MemoryStore(idle_ttl_s=100, clock=clock))
    await service.rank("r", [live("g1")])
    for _ in range(5):
        clock.now += 60
        await service.run_stats("r")
        assert await service.runs.expire_idle() == []


async def test_a_replica_forgets_the_runs_another_replica_expired(redis_url):
    one = make_service(RedisStore(redis_url, idle_ttl_s=3600))
    two = make_service(RedisStore(redis_url, idle_ttl_s=3600))
    await one.rank("r", [dead("g1")])
    await two.rank("r", [live("g2")])
    assert "r" in run_series(two.metrics)
    await one.delete_run("r")  # as an expiry elsewhere would leave it
    assert await two.runs.expire_idle() == ["r"]
    assert run_series(two.metrics) == {}
    await one.aclose()
    await two.aclose()


async def test_the_server_sweeps_idle_runs_by_itself(start_server):
    server = await start_server(run_idle_ttl_s=0.3, anchors_per_group=3)
    service = server.service
    await service.rank("r", [dead("g1")])
    assert run_series(service.metrics)
    for _ in range(600):  # the sweep runs every 0.05 s; the run expires 0.3 s after its use
        if not await service.store.list_runs():
            break
        await asyncio.sleep(0.05)
    assert await service.store.list_runs() == []
    assert run_series(service.metrics) == {}


# -- readiness ---------------------------------------------------------------------------------


async def probes(server) -> tuple[int, str, int]:
    """(/readyz status, its body's status, the gRPC health Check's status)."""
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as http:
        ready = await http.get("/readyz")
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        check = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
    return ready.status_code, ready.json()["status"], check.status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_not_ready_while_redis_is_down(start_server, tmp_path):
    redis = RedisServer(tmp_path)
    try:
        server = await start_server(store=RedisStore(redis.url))
        assert await probes(server) == (200, "ready", SERVING)
    finally:
        redis.stop()
    assert await probes(server) == (503, "store unavailable", NOT_SERVING)
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        assert (await http.get("/healthz")).status_code == 200  # alive all the same


async def test_not_ready_where_the_sqlite_file_cannot_be_written(start_server, tmp_path):
    (tmp_path / "state").write_text("")  # the state "directory" is a file
    server = await start_server(store=SqliteStore(tmp_path / "state" / "arena.sqlite3"))
    assert await probes(server) == (503, "store unavailable", NOT_SERVING)


async def test_not_ready_in_a_read_only_state_directory(start_server, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes to read-only directories")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        server = await start_server(store=SqliteStore(state / "arena.sqlite3"))
        assert await probes(server) == (503, "store unavailable", NOT_SERVING)
    finally:
        state.chmod(0o755)


async def test_ready_with_a_writable_sqlite_store(start_server, tmp_path):
    server = await start_server(store=SqliteStore(tmp_path / "arena.sqlite3"))
    assert await probes(server) == (200, "ready", SERVING)
