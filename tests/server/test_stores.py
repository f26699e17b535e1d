import asyncio
import multiprocessing
import sqlite3

import pytest

from judge_server.arena.pools import Anchor, RunPool
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


def add(anchor):
    return lambda current: [*current, anchor]


def write_old_sqlite(path, script: str) -> None:
    """A state file as an older server left it: ``script`` makes its tables and rows."""
    old = sqlite3.connect(path)
    old.executescript(script)
    old.commit()
    old.close()


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
            await store.update_anchors("r", "p", add(anchor), per_run=10**6)
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
    write_old_sqlite(
        path,
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, settings TEXT NOT NULL);"
        """INSERT INTO runs VALUES ('r', '{"run_id": "r", "design": "live"}');"""
    )
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


async def test_over_capacity_the_stores_evict_as_the_pure_rule_does(make_store):
    """Many prompts, steps out of order, a capacity that shrinks and grows: each store's pool
    is what :class:`RunPool` keeps."""
    import random

    store, reference = make_store(), RunPool()
    await store.create_run(run("r"))
    rng = random.Random(3)
    for k in range(150):
        pid = f"p{rng.randrange(20)}"
        new = [Anchor(f"t{k}-{j}", float(j), rng.randrange(k, k + 20)) for j in
               range(rng.randrange(0, 5))]
        per_run = rng.choice([8, 20, 40, 1000])
        reference.put(pid, new, per_run)
        anchors, size = await store.update_anchors("r", pid, put(new), per_run=per_run)
        assert (anchors, size) == (reference.get(pid), reference.size()), k
    assert (await store.load_pool("r")).prompts == reference.prompts
    assert await store.pool_size("r") == (len(reference.prompts), reference.size())
    await store.aclose()


async def test_sqlite_evicts_from_a_pool_written_before_the_oldest_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    write_old_sqlite(
        path,
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, settings TEXT NOT NULL);"
        "CREATE TABLE pools (run_id TEXT NOT NULL, prompt_id TEXT NOT NULL, "
        "anchors TEXT NOT NULL, PRIMARY KEY (run_id, prompt_id));"
        """INSERT INTO runs VALUES ('r', '{"run_id": "r"}');"""
        """INSERT INTO pools VALUES ('r', 'new', '[{"text": "n", "strength": 0, "step": 9}]');"""
        """INSERT INTO pools VALUES ('r', 'old', '[{"text": "o", "strength": 0, "step": 1}]');"""
    )
    store = SqliteStore(path)
    await store.update_anchors("r", "p", put([Anchor("a", 0.0, 5)]), per_run=2)
    assert (await store.load_pool("r")).prompts == {
        "new": [Anchor("n", 0.0, 9)], "p": [Anchor("a", 0.0, 5)]}
    await store.aclose()


async def test_redis_evicts_from_a_pool_written_before_its_index(redis_url):
    store = RedisStore(redis_url)
    await store.create_run(run("r"))
    for pid, step in (("new", 9), ("old", 1)):
        await store.update_anchors("r", pid, put([Anchor(pid, 0.0, step)]), per_run=100)
    await store.client.delete("arena:pool-oldest:r")  # as a server before the index left it
    await store.update_anchors("r", "p", put([Anchor("a", 0.0, 5)]), per_run=2)
    assert (await store.load_pool("r")).prompts == {
        "new": [Anchor("new", 0.0, 9)], "p": [Anchor("a", 0.0, 5)]}
    assert await store.client.zrange("arena:pool-oldest:r", 0, -1) == ["p", "new"]
    await store.aclose()


# -- retention and health ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_runs_idle_longer_than_the_ttl_expire_with_their_pools(kind, tmp_path):
    clock = Clock()
    store = (MemoryStore(idle_ttl_s=100, clock=clock) if kind == "memory" else
             SqliteStore(tmp_path / "arena.sqlite3", idle_ttl_s=100, clock=clock))
    for run_id in ("idle", "written", "touched"):
        await store.create_run(run(run_id))
    await store.update_anchors("idle", "p", put([Anchor("a", 0.0, 0)]), per_run=10)
    clock.now += 60
    await store.update_anchors("written", "p", put([Anchor("b", 0.0, 0)]), per_run=10)
    await store.touch_run("touched")
    assert await store.expire_idle_runs() == []
    clock.now += 50  # "idle" unused for 110 s, the others for 50 s
    assert await store.expire_idle_runs() == ["idle"]
    assert await store.get_run("idle") is None
    assert (await store.load_pool("idle")).prompts == {}
    assert await store.pool_size("idle") == (0, 0)
    assert [r.run_id for r in await store.list_runs()] == ["touched", "written"]
    assert await store.load_anchors("written", "p") == [Anchor("b", 0.0, 0)]
    clock.now += 1000
    assert await store.expire_idle_runs() == ["touched", "written"]
    assert await store.list_runs() == []
    await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_ttl_of_0_keeps_runs_for_good(kind, tmp_path):
    clock = Clock()
    store = (MemoryStore(clock=clock) if kind == "memory" else
             SqliteStore(tmp_path / "arena.sqlite3", clock=clock))
    await store.create_run(run("r"))
    clock.now += 10**9
    assert await store.expire_idle_runs() == []
    assert await store.get_run("r") is not None
    await store.aclose()


async def test_sqlite_runs_from_before_last_used_count_as_used_when_the_file_opens(tmp_path):
    path = tmp_path / "old.sqlite3"
    write_old_sqlite(
        path,
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, settings TEXT NOT NULL);"
        """INSERT INTO runs VALUES ('r', '{"run_id": "r"}');"""
    )
    clock = Clock()
    store = SqliteStore(path, idle_ttl_s=100, clock=clock)
    assert await store.expire_idle_runs() == []
    clock.now += 101
    assert await store.expire_idle_runs() == ["r"]
    await store.aclose()


async def wait_until(predicate, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the timeout")


async def test_redis_keys_of_an_idle_run_expire_and_the_sweep_drops_its_id(redis_url):
    store = RedisStore(redis_url, idle_ttl_s=1.0)
    await store.create_run(run("idle"))
    await store.create_run(run("busy"))
    await store.update_anchors("idle", "p", put([Anchor("a", 0.0, 0)]), per_run=1)
    for key in ("run", "pool", "pool-size", "pool-oldest"):
        assert 0 < await store.client.pttl(f"arena:{key}:idle") <= 1000, key
    assert await store.expire_idle_runs() == []

    async def idle_gone() -> bool:
        store._touched.clear()  # touch at every call (the test's ttl is short)
        await store.touch_run("busy")
        return await store.get_run("idle") is None

    await wait_until(idle_gone)
    assert await store.client.exists("arena:pool:idle", "arena:pool-size:idle") == 0
    assert await store.expire_idle_runs() == ["idle"]
    assert [r.run_id for r in await store.list_runs()] == ["busy"]
    assert await store.expire_idle_runs() == []
    await store.aclose()


async def test_redis_without_a_ttl_sets_no_expiry(redis_url):
    store = RedisStore(redis_url)
    await store.create_run(run("r"))
    await store.update_anchors("r", "p", put([Anchor("a", 0.0, 0)]), per_run=1)
    await store.touch_run("r")
    for key in ("run", "pool", "pool-size", "pool-oldest"):
        assert await store.client.pttl(f"arena:{key}:r") == -1, key
    await store.aclose()


async def test_health_checks_write_and_read(make_store):
    store = make_store()
    assert await store.check_health()
    await store.aclose()


async def test_sqlite_health_fails_where_the_file_cannot_be_written(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    store = SqliteStore(tmp_path / "not-a-directory" / "arena.sqlite3")
    with pytest.raises(StoreError, match="not-a-directory"):
        await store.check_health()
    await store.aclose()


async def test_redis_health_fails_when_redis_is_down():
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError):
        await store.check_health()
    await store.aclose()


def _dead_group(name: str, prompt: str = "p"):
    from trainer_client.types import Group, Trace

    return Group(name, tuple(Trace(f"{name} {k} strength={k}", 1.0) for k in range(4)),
                 prompt_id=prompt)


async def test_two_tenants_runs_of_one_name_side_by_side(make_store):
    """Each tenant's ``default`` is a run of its own in the store (under the tenant-qualified
    id), with its own settings and pool; answers show the plain id; a tenant's slash or
    percent sign cannot make its ids collide with another's."""
    from judge_server.comparators.simulated import SimulatedComparator
    from judge_server.core.runs import run_key, run_name
    from judge_server.core.service import ArenaService
    from judge_server.errors import RunExists, RunNotFound

    assert len({run_key("c", "a/b"), run_key("b/c", "a"), run_key("c", "a%2Fb")}) == 3
    assert run_name(run_key("c/d", "a/b"), "a/b") == "c/d" and run_key("x", None) == "x"
    store = make_store()
    service = ArenaService(comparator=SimulatedComparator(), store=store)
    await service.create_run(RunSettings("default", anchors_per_group=3), tenant="team-a")
    await service.create_run(RunSettings("default", anchors_per_group=2), tenant="team-b")
    with pytest.raises(RunExists):
        await service.create_run(RunSettings("default"), tenant="team-a")
    await service.rank("default", [_dead_group("a")], tenant="team-a")
    await service.rank("default", [_dead_group("b")], tenant="team-b")
    assert sorted(r.run_id for r in await store.list_runs()) == ["team-a/default",
                                                                 "team-b/default"]
    for tenant, per_group, text in (("team-a", 3, "a"), ("team-b", 2, "b")):
        got = await service.get_run("default", tenant=tenant)
        assert (got.run_id, got.anchors_per_group) == ("default", per_group)
        assert [r.run_id for r in await service.list_runs(tenant=tenant)] == ["default"]
        assert {a.text[0] for a in (await service.pool_snapshot(
            "default", tenant=tenant))["p"]} == {text}
        assert (await service.run_stats("default", tenant=tenant))["run_id"] == "default"
        assert [r["run_id"] for r in (await service.server_stats(tenant=tenant))["runs"]] \
            == ["default"]
    assert await service.delete_run("default", tenant="team-a")
    with pytest.raises(RunNotFound):
        await service.get_run("default", tenant="team-a")
    assert (await service.get_run("default", tenant="team-b")).anchors_per_group == 2
    await service.aclose()


async def test_runs_stored_before_namespaces_stay_their_tenants(make_store):
    """A run stored under its plain id with its tenant (before per-tenant namespaces) is that
    tenant's under the same id, and no other tenant's; another tenant's run of that name is
    a new run of its own."""
    from judge_server.comparators.simulated import SimulatedComparator
    from judge_server.core.service import ArenaService
    from judge_server.errors import RunExists, RunNotFound

    store = make_store()
    assert await store.create_run(run("default", "team-a", anchors_per_group=3))
    await store.update_anchors("default", "p", put([Anchor("old", 0.5, 1)]), per_run=100)
    service = ArenaService(comparator=SimulatedComparator(), store=store, auto_create_runs=False)
    assert (await service.get_run("default", tenant="team-a")).anchors_per_group == 3
    assert [r.run_id for r in await service.list_runs(tenant="team-a")] == ["default"]
    with pytest.raises(RunExists):
        await service.create_run(RunSettings("default"), tenant="team-a")
    (result,) = await service.rank("default", [_dead_group("a")], tenant="team-a")
    assert result.anchors_used == 1  # the old pool is the run's
    assert (await service.run_stats("default", tenant="team-a"))["groups"] == 1
    with pytest.raises(RunNotFound):
        await service.get_run("default", tenant="team-b")
    await service.create_run(RunSettings("default"), tenant="team-b")
    assert (await service.get_run("default", tenant="team-b")).anchors_per_group == 0
    assert await service.delete_run("default", tenant="team-a")
    assert await store.get_run("default") is None
    assert (await service.get_run("default", tenant="team-b")).run_id == "default"
    await service.aclose()
