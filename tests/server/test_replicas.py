"""Two judge server processes share one Redis: either replica serves any run, and the pool
stays consistent, with no lost or duplicated entries, whether they take turns or race; a
group, whichever replicas its samples or retries reach, is judged once, and a replica that
fails or dies leaves its work to the other within a bounded time."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import pytest

from judge_server.store.redis import RedisStore
from judge_server.store.redis_shared import LEASE_S
from trainer_client import ArenaClient, RunSettings
from trainer_client.types import Group, Trace

from ..background import make_server
from ..ports import free_port

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = RunSettings(run_id="shared", anchor_mode="fixed", anchors_per_group=3,
                       pool_per_prompt=8)
TAKE_OVER_S = 45.0
"""How soon the other replica must answer after one died holding a claim or a group: its
lease (LEASE_S) with a wide margin, far below the claim's 15 minutes it waited before."""


class Replica:
    """``arena-judge serve`` on the redis store, in a process of its own; with ``delay``, the
    same server around a judge that takes ``delay`` seconds per batch and logs ``comparing``
    for each (``tests/client/slow_server.py``)."""

    def __init__(self, redis_url: str, log: Path, *, delay: float | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = log
        env = {**os.environ, "ARENA_STORE": "redis", "ARENA_REDIS_URL": redis_url,
               "ARENA_COMPARATOR": "simulated", "ARENA_HOST": "127.0.0.1", **(env or {}),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        ports = ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        command = ["judge_server.cli", "serve"] if delay is None else [
            "tests.client.slow_server", "--serve", "--delay", str(delay)]
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command, *ports],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
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

    def wait_for_judging(self, timeout: float = 30) -> None:
        """Until the (slow) judge has got comparisons."""
        deadline = time.monotonic() + timeout
        while "comparing" not in self.log_path.read_text():
            assert time.monotonic() < deadline, "the judge got nothing"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def start_replica(redis_url, tmp_path):
    """``start_replica(**options)`` -> a started :class:`Replica` (stopped at the end)."""
    started: list[Replica] = []

    def start(url: str = redis_url, **options) -> Replica:
        started.append(Replica(url, tmp_path / f"replica{len(started)}.log", **options))
        return started[-1]

    yield start
    for replica in started:
        replica.stop()


@pytest.fixture
def replicas(start_replica):
    return [start_replica() for _ in range(2)]


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


def score(replica: Replica, *answers: str, prompt: str = "what is it?", run_id: str = "shared",
          group_size: int = 4, timeout_s: float = 60) -> httpx.Response:
    """POST ``answers`` (samples of ``prompt``, label 7) to the replica's per-sample route."""
    return httpx.post(
        f"{replica.url}/v1/openrlhf/{run_id}",
        params={"group_size": group_size, "timeout_s": timeout_s},
        json={"query": list(answers), "prompts": [prompt] * len(answers),
              "labels": ["7"] * len(answers)},
        timeout=timeout_s + 60,
    )


def scores(response: httpx.Response) -> list[tuple[float, float, float]]:
    """Each sample's (group size, judged, judge value) from a 200 answer."""
    assert response.status_code == 200, response.text
    logs = response.json()["extra_logs"]
    return list(zip(logs["arena_group_size"], logs["arena_judged"], logs["arena_judge"]))


def test_a_shared_group_closed_by_its_timeout_is_ranked_once_then_late_samples_are_late(
    replicas,
):
    """Three of six samples reach the two replicas: the timeout closes the group on whichever
    replica's timer fires first, it is ranked once, and every caller gets its value; the
    three samples still expected are answered at once as late on either replica (their
    verifiable reward, not grouped together); the next one starts a new group."""
    timeout_s = 5.0  # the late window lasts as long after the close
    answers = [f"answer {k} strength={k - 1}" for k in range(3)]

    def send(k: int, group: list[str] = answers) -> httpx.Response:
        return score(replicas[k % 2], group[k], group_size=6, timeout_s=timeout_s)

    with ThreadPoolExecutor(3) as pool:
        first = [scores(r)[0] for r in pool.map(send, range(3))]  # two on one, one on the other
    assert [(size, judged) for size, judged, _ in first] == [(3.0, 1.0)] * 3
    judge = [value for _, _, value in first]
    assert abs(sum(judge)) < 1e-6 and judge == sorted(judge)  # zero-mean, by strength
    assert sum(stats(r)["judged"] for r in replicas) == 1

    late = [f"late {k} strength={k}" for k in range(3)]
    with ThreadPoolExecutor(3) as pool:  # grouped, they would be ranked as a group of three
        answered = [scores(r)[0] for r in pool.map(lambda k: send(k, late), range(3))]
    assert answered == [(1.0, 0.0, 0.0)] * 3  # late: alone, their verifiable reward

    after = [f"after {k} strength={k}" for k in range(2)]
    with ThreadPoolExecutor(2) as pool:  # no sample expected any more: a new group of two
        again = [scores(r)[0] for r in pool.map(lambda k: send(k, after), range(2))]
    assert [(size, judged) for size, judged, _ in again] == [(2.0, 1.0)] * 2
    assert sum(stats(r)["judged"] for r in replicas) == 2


def kill_while_judging(
    dying: Replica, lost: Future[httpx.Response], waiting: Future[httpx.Response]
) -> tuple[httpx.Response, float]:
    """Kill ``dying`` (kill -9) once its judge has work: ``waiting``'s answer and how long
    after the kill it came; ``lost``, the dead replica's caller, gets no answer."""
    dying.wait_for_judging()
    dying.kill()
    killed = time.monotonic()
    answer = waiting.result()
    took = time.monotonic() - killed
    with pytest.raises(httpx.HTTPError):
        lost.result()
    return answer, took


def test_a_shared_group_whose_ranking_replica_is_killed_is_ranked_by_the_other(
    start_replica, redis_url
):
    """The replica whose sample fills a group is killed (kill -9) while its judge ranks it: the
    other replica, whose callers wait for the group, ranks it once the dead one's lease lapses,
    and they get their values; they do not wait out the group's rank wait (10 minutes)."""
    import redis

    other, dying = start_replica(), start_replica(delay=600)
    answers = [f"answer {k} strength={k - 1.5}" for k in range(4)]
    buffered = redis.Redis.from_url(redis_url)
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(score, other, *answers[:3])
        deadline = time.monotonic() + 30
        while sum(buffered.llen(k) for k in buffered.scan_iter("arena:asm-group:*:samples")) < 3:
            assert time.monotonic() < deadline, "the three samples were not buffered"
            time.sleep(0.05)
        lost = pool.submit(score, dying, answers[3])  # it fills the group: its replica ranks
        answer, took = kill_while_judging(dying, lost, waiting)
    buffered.close()
    assert scores(answer) == [(4.0, 1.0, value) for _, _, value in scores(answer)]
    judge = [value for _, _, value in scores(answer)]
    assert judge == sorted(judge) and judge[0] < 0  # by strength, the fourth (best) not here
    assert took < TAKE_OVER_S, f"waited {took:.1f} s after the kill (lease {LEASE_S} s)"
    assert stats(other)["judged"] == 1


def rank_body(request_id: str) -> dict:
    return {"run_id": "shared", "groups": [{
        "group_id": "g", "request_id": request_id, "prompt_id": "p",
        "traces": [{"text": f"t{k} strength={k}", "reward": 1.0} for k in range(4)],
    }]}


def rank(replica: Replica, body: dict, timeout: float = 90) -> httpx.Response:
    return httpx.post(f"{replica.url}/v1/rank", json=body, timeout=timeout)


@pytest.fixture
def pool_writes_refused(redis_server, redis_url):
    """The URL of a Redis user that reads everything and writes everything but pools: a
    replica using it fails every group it ranks when it writes the group's anchors (a
    StoreError, as when Redis refuses or loses that write)."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    admin.execute_command(
        "ACL", "SETUSER", "no-pools", "on", ">secret", "resetkeys", "%R~*",
        *(f"%RW~arena:{k}" for k in ("run*", "flight:*", "replica:*", "asm*", "health")),
        "+@all")
    yield redis_url.replace("redis://", "redis://no-pools:secret@")
    admin.execute_command("ACL", "DELUSER", "no-pools")
    admin.close()


def test_a_request_id_whose_ranking_failed_is_ranked_by_the_other_replica(
    start_replica, pool_writes_refused
):
    """The first replica claims the request id and its ranking fails: it deletes its claim,
    and the trainer's retry on the other replica ranks the group instead of waiting on the
    claim of a replica that is alive and well."""
    healthy = start_replica()
    failing = start_replica(pool_writes_refused, env={"ARENA_RUN_IDLE_TTL_S": "0"})  # no touch
    created = httpx.post(f"{healthy.url}/v1/runs", json={"settings": {
        "run_id": "shared", "anchor_mode": "fixed", "anchors_per_group": 3}})
    assert created.status_code == 201, created.text
    body = rank_body("req-fails")

    failed = rank(failing, body)
    # it failed writing the anchors: after it claimed the request id and the judge answered
    assert failed.status_code == 503 and "HSET arena:pool:shared" in failed.text, failed.text
    retried = rank(healthy, body, timeout=60)  # not the claim's 15 minutes
    assert retried.status_code == 200, retried.text
    assert retried.json()["results"][0]["status"] == "ok"
    assert stats(healthy)["judged"] == 1 and stats(failing)["judged"] == 0


def test_a_claim_of_a_killed_replica_is_taken_over_within_its_lease(start_replica):
    """The replica ranking a request id is killed (kill -9) while its judge works: a retry
    waiting on the other replica takes the claim over once the dead replica's lease lapses,
    and ranks the group; it does not wait for the claim to expire."""
    dying, other = start_replica(delay=600), start_replica()
    body = rank_body("req-killed")
    with ThreadPoolExecutor(2) as pool:
        lost = pool.submit(rank, dying, body)
        dying.wait_for_judging()  # the claim is held: the judge has the group
        waiting = pool.submit(rank, other, body, TAKE_OVER_S + 30)
        answer, took = kill_while_judging(dying, lost, waiting)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["status"] == "ok"
    assert took < TAKE_OVER_S, f"the retry waited {took:.1f} s after the kill (lease {LEASE_S} s)"
    assert stats(other)["judged"] == 1
    again = rank(other, body)  # the result is stored: a later retry gets it
    assert again.json()["results"][0]["advantages"] == answer.json()["results"][0]["advantages"]
    assert stats(other)["judged"] == 1


def test_the_sample_caps_hold_across_replicas(start_replica):
    """The per-sample caps count the samples waiting on every replica: two requests that each
    fit a cap but not together are admitted once between two replicas (each alone would have
    admitted both); places are given back when their samples are answered, and a killed
    replica's places stop counting within its lease."""
    caps = {"ARENA_ASSEMBLY_MAX_RUN_SAMPLES": "4", "ARENA_ASSEMBLY_MAX_SAMPLES": "6"}
    replicas = [start_replica(env=caps) for _ in range(2)]
    prompts = itertools.count()  # a group of its own for each request

    def send(k: int, run_id: str, n: int, timeout_s: float = 3) -> httpx.Response:
        """``n`` samples of a new group of ``run_id`` to replica ``k``."""
        prompt = f"prompt {next(prompts)}"
        return score(replicas[k], *(f"{prompt} answer {i} strength={i}" for i in range(n)),
                     prompt=prompt, run_id=run_id, group_size=8, timeout_s=timeout_s)

    def race(first: tuple[str, int], second: tuple[str, int]) -> list[int]:
        """``(run id, samples)`` to each replica at once: the answers' statuses."""
        with ThreadPoolExecutor(2) as pool:
            return [r.status_code for r in pool.map(send, (0, 1), *zip(first, second))]

    assert sorted(race(("a", 3), ("a", 3))) == [200, 429]  # one run: over its cap of 4
    assert sorted(race(("a", 4), ("b", 3))) == [200, 429]  # two runs: over the cap of 6
    assert race(("a", 2), ("b", 2)) == [200, 200]  # the places came back: 2 + 2 fit

    with ThreadPoolExecutor(2) as pool:  # one replica holds three samples, and is killed
        sent = [pool.submit(send, k, "a", 3, 120) for k in (0, 1)]
        refused = next(as_completed(sent))
        assert refused.result().status_code == 429, refused.result().text
        k = sent.index(refused)
        replicas[1 - k].kill()
        killed = time.monotonic()
        while (answer := send(k, "a", 3, 1)).status_code == 429:
            assert time.monotonic() - killed < TAKE_OVER_S, answer.text
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        with pytest.raises(httpx.HTTPError):
            sent[1 - k].result()


def test_the_sample_byte_caps_hold_across_replicas(start_replica):
    """The per-sample byte caps count the bytes waiting on every replica, as the count caps
    count samples: two requests of samples of about 1,000 bytes that each fit a byte cap but
    not together are admitted once between two replicas, far below the count caps; the bytes
    are given back when their samples are answered."""
    caps = {"ARENA_ASSEMBLY_MAX_RUN_BYTES": "4500", "ARENA_ASSEMBLY_MAX_BYTES": "6500"}
    replicas = [start_replica(env=caps) for _ in range(2)]
    prompts = itertools.count()
    refusals: list[str] = []

    def send(k: int, run_id: str, n: int) -> int:
        """``n`` samples of about 1,000 bytes each, of a new group of ``run_id``, to replica
        ``k``: the answer's status."""
        prompt = f"prompt {next(prompts)}"
        answer = score(replicas[k], *("x" * 970 + f" strength={i}" for i in range(n)),
                       prompt=prompt, run_id=run_id, group_size=8, timeout_s=3)
        if answer.status_code == 429:
            refusals.append(answer.text)
        return answer.status_code

    def race(first: tuple[str, int], second: tuple[str, int]) -> list[int]:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(send, (0, 1), *zip(first, second)))

    assert sorted(race(("a", 3), ("a", 3))) == [200, 429]  # one run: 6,000 over 4,500
    assert "bytes of this run waiting on every replica, limit 4500" in refusals[-1]
    assert sorted(race(("a", 4), ("b", 3))) == [200, 429]  # two runs: 7,000 over 6,500
    assert "bytes waiting in all on every replica, limit 6500" in refusals[-1]
    assert "samples of this run" not in refusals[-1]  # 7 samples: far below the counts
    assert "samples waiting" not in refusals[-1]
    assert race(("a", 2), ("b", 2)) == [200, 200]  # the bytes came back: 2,000 + 2,000 fit


async def held(redis) -> dict[str, int]:
    """Every asm-held hash in Redis (samples or bytes, of a run or in all) -> its sum."""
    counts = {name: sum(map(int, (await redis.hgetall(name)).values()))
              for name in await redis.keys("arena:asm-held*")}
    return {name: count for name, count in counts.items() if count}


async def given_back(redis) -> dict[str, int]:
    """What is still held once every place given back has reached Redis (a cancelled
    request ends with its first sample cancelled; the others give theirs back after)."""
    for _ in range(500):
        if not await held(redis):
            break
        await asyncio.sleep(0.01)
    return await held(redis)


async def test_a_cancelled_request_gives_its_places_and_bytes_back_in_redis(start_server,
                                                                            redis_url):
    """With the redis store, a caller gone (cancelled) at any step after its samples took
    their places loses none of them for good: each comes back, its bytes with it, when its
    sample is cancelled or, for a sample that reached its shared group, at the latest when
    the group is answered (here when the server closes). A request that waits counts its
    samples and their bytes there, for its run and in all."""
    from judge_server.transports.assembly import GroupAssembler, Sample

    server = await start_server(store=RedisStore(redis_url))
    assembler: GroupAssembler = server.app.state.assembler
    redis = server.service.store.client

    samples = [Sample(response=f"The answer is {k}.", prompt="2 + 2?", label="4")
               for k in range(3)]
    each = len("The answer is 0.") + len("2 + 2?") + len("4")
    for pause in range(10):  # cancelled at several steps once the places are taken
        task = asyncio.ensure_future(
            assembler.score_many("r9", samples, group_size=8, timeout_s=60))
        while not await held(redis) and not task.done():
            await asyncio.sleep(0)
        await asyncio.sleep(pause * 0.002)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await given_back(redis)  # settled: what is left waits in a shared group
    before = await held(redis)
    waiting = asyncio.ensure_future(
        assembler.score_many("r10", samples, group_size=8, timeout_s=60))
    while len(await held(redis)) <= len(before):  # r10's two hashes
        await asyncio.sleep(0.01)
    after = await held(redis)
    totals = ("arena:asm-held", "arena:asm-held-bytes")
    assert sorted(v for k, v in after.items() if k not in before and k not in totals) == [
        3, 3 * each]  # r10's own hashes
    assert after["arena:asm-held"] == before.get("arena:asm-held", 0) + 3
    assert after["arena:asm-held-bytes"] == before.get("arena:asm-held-bytes", 0) + 3 * each
    await assembler.aclose()  # answers the waiting samples
    assert len(await waiting) == 3
    assert await given_back(redis) == {}


async def test_a_caller_that_leaves_while_its_places_go_back_does_not_stop_them(
        start_server, redis_url, monkeypatch):
    """With the redis store, samples answered (their group of 2 full) give their places back;
    a caller cancelled while that is on its way to Redis does not stop it halfway (before,
    the places stayed counted until the replica's lease lapsed)."""
    from judge_server.transports.assembly import GroupAssembler, Sample

    server = await start_server(store=RedisStore(redis_url))
    assembler: GroupAssembler = server.app.state.assembler
    redis = server.service.store.client
    shared = assembler._shared
    assert shared is not None  # the redis store's shared buffers
    unhold = shared.unhold
    giving = asyncio.Event()

    async def slow_unhold(*args):
        giving.set()
        await asyncio.sleep(0.2)  # on its way to Redis
        return await unhold(*args)

    monkeypatch.setattr(shared, "unhold", slow_unhold)
    samples = [Sample(response=f"The answer is {k}.", prompt="3 + 3?", label="6")
               for k in (6, 5)]
    task = asyncio.ensure_future(assembler.score_many("r11", samples, group_size=2,
                                                      timeout_s=60))
    await asyncio.wait_for(giving.wait(), 60)  # a hang guard, not a bound
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await given_back(redis) == {}
    await assembler.aclose()
