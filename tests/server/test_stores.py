import sqlite3

import pytest

from judge_server.arena.pools import Anchor
from judge_server.errors import StoreError
from judge_server.store.memory import MemoryStore
from judge_server.store.sqlite import SqliteStore
from trainer_client.types import RunSettings


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    path = tmp_path / "state" / "arena.sqlite3"
    return (lambda: MemoryStore()) if request.param == "memory" else (lambda: SqliteStore(path))


async def test_runs_and_pools_round_trip(make_store):
    store = make_store()
    assert await store.create_run(RunSettings(run_id="r", design="live", scale=2.0))
    assert not await store.create_run(RunSettings(run_id="r"))
    anchors = [Anchor("a", 0.5, 3), Anchor("b", -0.5, 4)]
    await store.save_pools("r", {"p": anchors, "q": [Anchor("c", 1.0, 1)]})
    await store.save_pools("r", {"q": []})
    assert (await store.get_run("r")).design == "live"
    assert (await store.load_pool("r")).prompts == {"p": anchors}
    assert [s.run_id for s in await store.list_runs()] == ["r"]
    assert await store.delete_run("r")
    assert await store.get_run("r") is None
    assert (await store.load_pool("r")).prompts == {}
    await store.aclose()


async def test_sqlite_survives_a_restart(tmp_path):
    path = tmp_path / "arena.sqlite3"
    first = SqliteStore(path)
    await first.create_run(RunSettings(run_id="r", order="both"))
    await first.save_pools("r", {"p": [Anchor("a", 0.25, 7)]})
    await first.aclose()
    second = SqliteStore(path)
    assert (await second.get_run("r")).order == "both"
    assert (await second.load_pool("r")).get("p") == [Anchor("a", 0.25, 7)]
    await second.aclose()


async def test_sqlite_write_failure_raises_store_error(tmp_path):
    path = tmp_path / "arena.sqlite3"
    store = SqliteStore(path)
    await store.create_run(RunSettings(run_id="r"))
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    store._connection().execute("PRAGMA busy_timeout = 50")
    with pytest.raises(StoreError, match="locked"):
        await store.save_pools("r", {"p": [Anchor("a", 0.0, 0)]})
    other.rollback()
    other.close()
    await store.save_pools("r", {"p": [Anchor("a", 0.0, 0)]})
    assert len((await store.load_pool("r")).get("p")) == 1
    await store.aclose()
