import asyncio
import multiprocessing
import sqlite3

import pytest

from judge_server.arena.pools import Anchor
from judge_server.errors import StoreError
from judge_server.store.base import StoredRun
from judge_server.store.memory import MemoryStore
from judge_server.store.redis import RedisStore
from judge_server.store.sqlite import SqliteStore
from trainer_client.types import RunSettings


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "state" / "arena.sqlite3")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url)


def run(run_id: str, tenant: str = "", **settings) -> StoredRun:
    return StoredRun(RunSettings(run_id=run_id, **settings), tenant)


def put(anchors):
    return lambda current: list(anchors)


async def test_runs_and_pools_round_trip(make_store):
    store = make_store()
    assert await store.create_run(run("r", design="live", scale=2.0))
    assert not await store.create_run(run("r"))
    anchors = [Anchor("a", 0.5, 3), Anchor("b", -0.5, 4)]
    assert await store.update_anchors("r", "p", put(anchors), per_run=100) == (anchors, 2)
    await store.update_anchors("r", "q", put([Anchor("c", 1.0, 1)]), per_run=100)
    await store.update_anchors("r", "q", put([]), per_run=100)
    assert (await store.get_run("r")).settings.design == "live"
    assert await store.load_anchors("r", "p") == anchors
    assert (await store.load_pool("r")).prompts == {"p": anchors}
    assert await store.pool_size("r") == (1, 2)
    assert [s.run_id for s in await store.list_runs()] == ["r"]
    assert await store.delete_run("r")
    assert not await store.delete_run("r")
    assert await store.get_run("r") is None
    assert (await store.load_pool("r")).prompts == {}
    await store.aclose()


async def test_runs_keep_their_tenant_and_list_by_tenant(make_store):
    store = make_store()
    await store.create_run(run("b1", "team-b"))
    await store.create_run(run("a1", "team-a"))
    await store.create_run(run("a2", "team-a"))
    assert (await store.get_run("b1")).tenant == "team-b"
    assert [r.run_id for r in await store.list_runs("team-a")] == ["a1", "a2"]
    assert [r.run_id for r in await store.list_runs()] == ["a1", "a2", "b1"]
    await store.aclose()


async def test_an_update_of_a_deleted_run_writes_nothing(make_store):
    store = make_store()
    assert await store.update_anchors("gone", "p", put([Anchor("a", 0, 0)]), per_run=9) is None
    assert (await store.load_pool("gone")).prompts == {}
    await store.aclose()


async def test_the_run_capacity_evicts_the_oldest_anchors_of_any_prompt(make_store):
    store = make_store()
    await store.create_run(run("r"))
    await store.update_anchors("r", "old", put([Anchor("a", 0.0, 1), Anchor("b", 1.0, 2)]),
                               per_run=3)
    anchors, size = await store.update_anchors(
        "r", "new", put([Anchor("c", 0.0, 5), Anchor("d", 1.0, 6)]), per_run=3
    )
    assert size == 3 and len(anchors) == 2
    assert await store.load_anchors("r", "old") == [Anchor("b", 1.0, 2)]
    assert await store.pool_size("r") == (2, 3)
    await store.aclose()


async def test_concurrent_updates_of_one_pool_lose_nothing(make_store):
    store = make_store()
    await store.create_run(run("r"))

    def append(k):
        return lambda current: [*current, Anchor(f"t{k}", float(k), k)]

    await asyncio.gather(*(
        store.update_anchors("r", "p", append(k), per_run=10_000) for k in range(50)
    ))
    texts = sorted(a.text for a in await store.load_anchors("r", "p"))
    assert texts == sorted(f"t{k}" for k in range(50))
    await store.aclose()


def _append_from_a_process(url: str, name: str, count: int) -> None:
    async def main():
        store = RedisStore(url)
        for k in range(count):
            anchor = Anchor(f"{name}-{k}", 0.0, k)
            await store.update_anchors("r", "p", lambda cur, a=anchor: [*cur, a], per_run=10**6)
        await store.aclose()

    asyncio.run(main())


def test_two_processes_appending_to_one_redis_pool_lose_and_duplicate_nothing(redis_url):
    """Two replicas' worth of writers, in separate processes, on the same prompt's pool."""
    asyncio.run(RedisStore(redis_url).create_run(run("r")))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_from_a_process, args=(redis_url, name, 150))
        for name in ("one", "two")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0

    async def read():
        store = RedisStore(redis_url)
        try:
            return await store.load_anchors("r", "p"), await store.pool_size("r")
        finally:
            await store.aclose()

    anchors, size = asyncio.run(read())
    texts = [a.text for a in anchors]
    assert len(texts) == len(set(texts)) == 300
    assert set(texts) == {f"{n}-{k}" for n in ("one", "two") for k in range(150)}
    assert size == (1, 300)


async def test_sqlite_survives_a_restart(tmp_path):
    path = tmp_path / "arena.sqlite3"
    first = SqliteStore(path)
    await first.create_run(run("r", "team-a", order="both"))
    await first.update_anchors("r", "p", put([Anchor("a", 0.25, 7)]), per_run=10)
    await first.aclose()
    second = SqliteStore(path)
    assert (await second.get_run("r")) == run("r", "team-a", order="both")
    assert await second.load_anchors("r", "p") == [Anchor("a", 0.25, 7)]
    assert await second.pool_size("r") == (1, 1)
    await second.aclose()


async def test_sqlite_opens_a_file_from_before_tenants(tmp_path):
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, settings TEXT NOT NULL);"
        """INSERT INTO runs VALUES ('r', '{"run_id": "r", "design": "live"}');"""
    )
    old.commit()
    old.close()
    store = SqliteStore(path)
    assert await store.get_run("r") == run("r", design="live")
    await store.aclose()


async def test_sqlite_write_failure_raises_store_error(tmp_path):
    path = tmp_path / "arena.sqlite3"
    store = SqliteStore(path)
    await store.create_run(run("r"))
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    store._connection().execute("PRAGMA busy_timeout = 50")
    with pytest.raises(StoreError, match="locked"):
        await store.update_anchors("r", "p", put([Anchor("a", 0.0, 0)]), per_run=10)
    other.rollback()
    other.close()
    await store.update_anchors("r", "p", put([Anchor("a", 0.0, 0)]), per_run=10)
    assert len(await store.load_anchors("r", "p")) == 1
    await store.aclose()


async def test_redis_down_is_a_store_error_naming_the_server_without_its_password():
    store = RedisStore("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(StoreError) as caught:
        await store.get_run("r")
    assert "127.0.0.1:1" in str(caught.value) and "secret" not in str(caught.value)
    await store.aclose()
