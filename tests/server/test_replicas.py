"""Two judge server processes share one Redis: either replica serves any run, and the pool
stays consistent, with no lost or duplicated entries, whether they take turns or race."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from judge_server.store.redis import RedisStore
from trainer_client import ArenaClient, RunSettings
from trainer_client.types import Group, Trace

from ..background import make_server
from ..ports import free_port

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = RunSettings(run_id="shared", anchor_mode="fixed", anchors_per_group=3,
                       pool_per_prompt=8)


class Replica:
    """``arena-judge serve`` on the redis store, in a process of its own."""

    def __init__(self, redis_url: str, log: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        env = {**os.environ, "ARENA_STORE": "redis", "ARENA_REDIS_URL": redis_url,
               "ARENA_COMPARATOR": "simulated", "ARENA_HOST": "127.0.0.1"}
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "judge_server.cli", "serve", "--grpc-port",
             str(self.grpc_port), "--http-port", str(self.http_port)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"replica did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def client(self) -> ArenaClient:
        return ArenaClient(target=f"127.0.0.1:{self.grpc_port}", run_settings=SETTINGS,
                           deadline_s=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def replicas(redis_url, tmp_path):
    started = [Replica(redis_url, tmp_path / f"replica{k}.log") for k in range(2)]
    yield started
    for replica in started:
        replica.stop()


def group(name: str, prompt_id: str, step: int | None = None) -> Group:
    """Four traces whose latent strengths (read by the simulated judge) are well apart."""
    return Group(name, tuple(Trace(f"{name} trace {k} strength={1.5 * k - 2.25}", 1.0)
                             for k in range(4)), prompt_id=prompt_id, step=step)


def read_pool(redis_url: str):
    async def read():
        store = RedisStore(redis_url)
        try:
            return await store.load_pool("shared"), await store.pool_size("shared")
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_replicas_taking_turns_build_the_pool_one_server_would(replicas, redis_url):
    sequence = [group(f"g{k}", "p", step=k) for k in range(8)]
    clients = [replica.client() for replica in replicas]
    try:
        for k, g in enumerate(sequence):
            (outcome,) = clients[k % 2].rank([g]).outcomes
            assert outcome.judged
    finally:
        for client in clients:
            client.close()
    pool, size = read_pool(redis_url)

    async def reference():  # the same groups through one in-process server, memory store
        server = make_server("simulated")
        service = server.service
        await service.create_run(SETTINGS)
        for g in sequence:
            await service.rank("shared", [g])
        snapshot = await service.pool_snapshot("shared")
        await service.aclose()
        return snapshot

    expected = asyncio.run(reference())
    assert pool.prompts == expected
    assert len(expected["p"]) > 4  # anchors of several steps: the turns built on each other
    assert size == (1, sum(len(v) for v in expected.values()))


def test_replicas_racing_on_one_run_lose_and_duplicate_no_anchor(replicas, redis_url):
    own = [group(f"own{k}", f"own-{k}", step=0) for k in range(24)]  # a prompt each
    shared = [group(f"sh{k}", "hot", step=k) for k in range(16)]  # one prompt for all

    def send(replica: Replica, groups: list[Group]) -> list:
        with replica.client() as client:
            return [o for g in groups for o in client.rank([g]).outcomes]

    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(send, replicas[k % 2], batch) for k, batch in
                enumerate((own[0::2], own[1::2], shared[0::2], shared[1::2]))]
        outcomes = [o for job in jobs for o in job.result()]
    assert len(outcomes) == 40 and all(o.judged for o in outcomes)

    stored, (prompts, anchors) = read_pool(redis_url)
    for g in own:  # alone on its prompt: all four traces are anchors, once each
        assert sorted(a.text for a in stored.get(g.prompt_id)) == sorted(
            t.text for t in g.traces)
    hot = stored.get("hot")
    ids = [a.trace_id for a in hot]
    assert len(ids) == len(set(ids)) and 2 <= len(hot) <= SETTINGS.pool_per_prompt
    sent = {t.text for g in shared for t in g.traces}
    assert {a.text for a in hot} <= sent
    assert prompts == 25 and anchors == sum(len(v) for v in stored.prompts.values())


def stats(replica: Replica, run_id: str = "shared") -> dict:
    response = httpx.get(f"http://127.0.0.1:{replica.http_port}/v1/runs/{run_id}/stats")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_group_split_across_replicas_is_judged_once(replicas):
    """The per-sample route: the samples of one group reach both replicas, one at a time; the
    group is ranked once, and every sample gets its value."""
    samples = [f"answer {k} strength={1.5 * k - 2.25}" for k in range(4)]

    def post(k: int) -> dict:
        response = httpx.post(
            f"http://127.0.0.1:{replicas[k % 2].http_port}/v1/openrlhf/shared",
            params={"group_size": 4, "timeout_s": 60},
            json={"query": [samples[k]], "prompts": ["what is it?"], "labels": ["7"]},
            timeout=90,
        )
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(post, range(4)))
    judge = [body["extra_logs"]["arena_judge"][0] for body in bodies]
    assert all(body["extra_logs"]["arena_judged"] == [1.0] for body in bodies)
    assert all(body["extra_logs"]["arena_group_size"] == [4.0] for body in bodies)
    assert abs(sum(judge)) < 1e-6 and judge == sorted(judge)  # zero-mean, by strength
    figures = [stats(r) for r in replicas]
    assert sum(f["judged"] for f in figures) == 1  # one replica ranked it, once
    assert sum(f["comparisons"] for f in figures) == max(f["comparisons"] for f in figures) > 0


def test_a_request_id_retried_on_the_other_replica_is_ranked_once(replicas):
    body: dict = {"run_id": "shared", "groups": [{
        "group_id": "g", "request_id": "req-1", "prompt_id": "p",
        "traces": [{"text": f"t{k} strength={k}", "reward": 1.0} for k in range(4)],
    }]}

    def post(k: int, payload: dict = body) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{replicas[k % 2].http_port}/v1/rank",
                          json=payload, timeout=90)

    with ThreadPoolExecutor(2) as pool:  # at once: one ranks, the other waits for it
        first, second = pool.map(post, range(2))
    again = post(1)  # later: the stored result
    assert first.status_code == second.status_code == again.status_code == 200, first.text
    results = [r.json()["results"][0] for r in (first, second, again)]
    assert results[0]["advantages"] == results[1]["advantages"] == results[2]["advantages"]
    assert sum(stats(r)["judged"] for r in replicas) == 1
    other = {**body, "groups": [{**body["groups"][0], "prompt_id": "q"}]}
    refused = post(0, other)  # the same request id for another group: refused on either
    assert refused.status_code == 400 and "request_id" in refused.text
