"""Runs stored before the settings had bounds (issue 14): a run written by an older server with
settings the server now refuses is loaded with each one brought back into range (a number to
its bound, NaN or an unknown name to the default), with a warning naming the fields; GetRun
(gRPC and HTTP), the list of runs and ranking answer instead of INTERNAL. The store is left as
it was.

The runs are written straight into a real SQLite file, as a server from before the columns
``tenant`` and ``last_used`` left it, and into a real Redis.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3

import grpc
import httpx
import pytest

from judge_server.store.redis import RedisStore
from judge_server.store.sqlite import SqliteStore
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from .conftest import CHANNEL_OPTIONS
from .groups import dead

STORED: dict[str, object] = {
    "run_id": "old", "design": "adaptive", "budget": 2**40, "min_tau_gain": 2.0,
    "order": "random", "normalisation": "evidence", "scale": 1e300, "lam": 1e-300,
    "dead_eps": math.nan, "anchors_per_group": 2**20, "pool_per_run": 2**40,
    "pool_max_age": -3, "weight": 1e-320, "max_calls_in_flight": 2**31,
}
IN_RANGE: dict[str, float] = {
    "budget": 16_384, "min_tau_gain": 1.0, "scale": 1e6, "lam": 1e-6, "dead_eps": 1e-6,
    "anchors_per_group": 1024, "pool_per_run": 2**31 - 1, "pool_max_age": 0, "weight": 0.001,
    "max_calls_in_flight": 2**31 - 1,
}
UNKNOWN: dict[str, object] = {"run_id": "older", "design": "knockout", "order": "sideways",
           "normalisation": "rank", "anchor_mode": "floating", "judge_template": "x" * 70_000}
DEFAULTS: dict[str, str] = {"design": "adaptive", "order": "random", "normalisation": "evidence",
            "anchor_mode": "prior", "judge_template": ""}


def write_sqlite(path, runs: list[dict]) -> None:
    """A state file as a server from before the bounds (and the tenant column) left it."""
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE runs (run_id TEXT PRIMARY KEY, settings TEXT NOT NULL);")
    old.executemany("INSERT INTO runs VALUES (?, ?)",
                    [(run["run_id"], json.dumps(run)) for run in runs])  # NaN as NaN
    old.commit()
    old.close()


async def write_redis(url: str, runs: list[dict]) -> None:
    from redis import asyncio as aioredis

    redis = aioredis.from_url(url, decode_responses=True)
    for run in runs:
        await redis.set(f"arena:run:{run['run_id']}", json.dumps({"settings": run, "tenant": ""}))
        await redis.sadd("arena:run-ids", run["run_id"])
    await redis.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def old_store(request, tmp_path):
    """A store holding the runs ``old`` and ``older`` as an older server wrote them."""
    runs = [STORED, UNKNOWN]
    if request.param == "sqlite":
        path = tmp_path / "arena.sqlite3"
        write_sqlite(path, runs)
        return SqliteStore(path)
    url = request.getfixturevalue("redis_url")
    await write_redis(url, runs)
    return RedisStore(url)


async def test_a_run_stored_out_of_range_is_loaded_in_range(start_server, old_store, caplog):
    server = await start_server(store=old_store)
    with caplog.at_level(logging.WARNING, logger="judge_server.core.runs"):
        async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
            stub = pb_grpc.ArenaStub(ch)
            got = await stub.GetRun(pb.GetRunRequest(run_id="old"))
            older = await stub.GetRun(pb.GetRunRequest(run_id="older"))
    for name, bound in IN_RANGE.items():
        assert getattr(got, name) == pytest.approx(bound), name
    for name, default in DEFAULTS.items():
        assert getattr(older, name) == default, name
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for name in (*IN_RANGE, *DEFAULTS):
        assert f"settings.{name}" in warned, name

    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=60) as http:
        response = await http.get("/v1/runs/old")
        assert response.status_code == 200, response.text
        assert {k: response.json()[k] for k in IN_RANGE} == pytest.approx(IN_RANGE)
        listed = await http.get("/v1/runs")
        assert listed.status_code == 200, listed.text
        assert [r["budget"] for r in listed.json()["runs"]] == [16_384, 0]
        for run_id in ("old", "older"):
            ranked = await http.post("/v1/rank", json={"run_id": run_id, "group": dead("d")})
            assert ranked.status_code == 200, ranked.text
            result = ranked.json()
            assert result["status"] == "ok" and result["routed"]
            assert all(map(math.isfinite, result["advantages"] + result["strengths"]))

    stored = await old_store.get_run("old")  # loading changed nothing in the store
    assert stored is not None and stored.settings.budget == 2**40
