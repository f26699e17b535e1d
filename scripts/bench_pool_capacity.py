"""How long one pool update takes below and at a run's anchor capacity, on each store.

    python scripts/bench_pool_capacity.py [--prompts 5000] [--updates 200] [--redis URL]

Fills one run with ``--prompts`` prompts of 8 anchors, then times ``--updates`` updates of
new prompts twice: with room to spare (no eviction) and at capacity (``pool_per_run`` equal
to the pool's size: every update evicts the run's oldest anchors). Before eviction was
incremental, the second reloaded the whole pool under the store's lock. Prints the median
and 99th percentile per update, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from judge_server.arena.pools import Anchor
from judge_server.store.base import PoolUpdate, Store, StoredRun
from judge_server.store.memory import MemoryStore
from judge_server.store.sqlite import SqliteStore
from trainer_client.types import RunSettings

PER_PROMPT = 8


def anchors(prompt: int, step: int) -> list[Anchor]:
    return [Anchor(f"trace {prompt}.{k} " + "x" * 200, float(k), step) for k in range(PER_PROMPT)]


def replace_with(new: list[Anchor]) -> PoolUpdate:
    return lambda _: new


async def timed(store: Store, first: int, n: int, per_run: int) -> list[float]:
    times = []
    for prompt in range(first, first + n):
        new = anchors(prompt, prompt)
        started = time.perf_counter()
        await store.update_anchors("r", f"p{prompt}", replace_with(new), per_run=per_run)
        times.append((time.perf_counter() - started) * 1e3)
    return times


async def measure(name: str, store: Store, prompts: int, updates: int) -> None:
    await store.create_run(StoredRun(RunSettings(run_id="r")))
    for prompt in range(prompts):
        new = anchors(prompt, prompt)
        await store.update_anchors("r", f"p{prompt}", replace_with(new), per_run=10**9)
    below = await timed(store, prompts, updates, 10**9)
    capacity = (prompts + updates) * PER_PROMPT
    at = await timed(store, prompts + updates, updates, capacity)
    assert (await store.pool_size("r"))[1] == capacity
    for label, times in (("below capacity", below), ("at capacity", at)):
        p99 = statistics.quantiles(times, n=100)[98]
        print(f"{name:7} {capacity:7d} anchors, {label:15}: median "
              f"{statistics.median(times):8.3f} ms, p99 {p99:8.3f} ms per update")
    await store.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--redis", help="a Redis URL to measure the redis store too")
    args = parser.parse_args()
    await measure("memory", MemoryStore(), args.prompts, args.updates)
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "arena.sqlite3")
        await measure("sqlite", store, args.prompts, args.updates)
    if args.redis:
        from judge_server.store.redis import RedisStore

        await measure("redis", RedisStore(args.redis, prefix="bench-pool:"), args.prompts,
                      args.updates)


if __name__ == "__main__":
    asyncio.run(main())
