"""The attacks of issue 14 against a live server, and what held while each ran.

:func:`run` starts ``arena-judge serve`` in a subprocess on free loopback ports, with API keys
and a memory store: one server on the builtin judge for the request attacks, and, for the
judge-fault attacks, one whose judge (``--comparator openai``) is a fake OpenAI-compatible
server in this process (:mod:`judge_server.bench.fake_judge`). While each attack runs, a thread
with its own event loop watches the server:

``bystander``
    a dead group of G = 4 ranked over HTTP about every 100 ms, with a valid key, in a run of
    its own (latency from sending to its result);
``/healthz``
    polled every 50 ms (the worst latency), and the server's RSS sampled with it.

Each row says the attack's own outcome (its status codes), the worst ``/healthz`` latency, the
bystander's p99 and max, the server's RSS growth (the peak during the attack, and after it,
over the RSS before), and whether the issue's targets held: ``/healthz`` within 0.5 s and the
bystander within 2 s, no 5xx and no non-finite number in any answer, refusals a 4xx, no attack
without a key growing RSS by more than 150 MB, a 0.1% malformed-response judge failing at most
the groups whose comparisons got those answers, and a hung judge failing its batch of 640
requests within 3 times its timeout. The numbers are measured, never asserted in a test.

Run it as ``arena-judge bench abuse [--attacks a,b] [--scale small|full] [--json]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from .fake_judge import fake_server
from .process import ServeProcess, serve_process

API_KEY = "abuse-bench-key"
BEARER = {"authorization": f"Bearer {API_KEY}"}
HEALTHZ_TARGET_S = 0.5
BYSTANDER_TARGET_S = 2.0
RSS_TARGET_MB = 150.0
HUNG_TIMEOUT_S = 1.0
HUNG_REQUESTS = 640
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
# gRPC codes that are the server's fault (HTTP's 5xx).
SERVER_FAULTS = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}


def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` (psutil if installed, else ``/proc``)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
    return int(psutil.Process(pid).memory_info().rss)


def non_finite(value: Any) -> bool:
    """Whether a decoded JSON answer holds a non-finite number (or a null advantage)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) or (k == "advantages" and isinstance(v, list) and None in v)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(map(non_finite, value))
    return False


def _decode(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_constant=lambda name: float(name))
    except ValueError:
        return None


def dead_group(group_id: str, size: int = 4, *, prompt: str = "What is 2 + 2?") -> dict:
    """A dead group (every reward equal) as a JSON body."""
    return {"group_id": group_id, "prompt": prompt, "traces": [
        {"text": f"{group_id}: 2 + 2 = {4 + k % 3}. The answer is {4 + k % 3}.", "reward": 1.0}
        for k in range(size)]}


# -- the server ----------------------------------------------------------------------------------


@contextlib.contextmanager
def server_process(**options: Any) -> Iterator[ServeProcess]:
    """``arena-judge serve`` on free loopback ports, keys on, memory store; ``options`` are
    settings (``ARENA_`` variables)."""
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    env = {"ARENA_LOG_LEVEL": "warning", "ARENA_API_KEYS": json.dumps({"bench": [digest]})}
    env.update({f"ARENA_{k.upper()}": str(v) for k, v in options.items()})
    with serve_process(env) as server:
        yield server


# -- the watchers --------------------------------------------------------------------------------


@dataclass
class Watch:
    health: list[float] = field(default_factory=list)
    bystander: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # 5xx, non-finite answers, failures
    non_finite: bool = False


class Watcher:
    """The bystander and the ``/healthz`` poller, on an event loop of their own (a thread), so
    that the attack's own work in this process does not delay them."""

    def __init__(self, server: ServeProcess, tag: str) -> None:
        self.server, self.tag, self.watch = server, tag, Watch()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def __aenter__(self) -> Watch:
        self._thread.start()
        return self.watch

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        # Not a blocking join: the bystander's last group may wait for the fake judge, which
        # this event loop serves (it read as a hung judge, failing the group after 15 s).
        await asyncio.to_thread(self._thread.join)

    async def _main(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.http_url, trust_env=False,
                                     timeout=30) as http:
            await asyncio.gather(self._poll(http), self._bystand(http))

    async def _poll(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                response = await http.get("/healthz")
                if response.status_code != 200:
                    self.watch.faults.append(f"/healthz {response.status_code}")
            except httpx.HTTPError as exc:
                self.watch.faults.append(f"/healthz {type(exc).__name__}")
            self.watch.health.append(time.perf_counter() - started)
            with contextlib.suppress(Exception):
                self.watch.rss.append(rss_bytes(self.server.pid))
            await asyncio.sleep(0.05)

    async def _bystand(self, http: httpx.AsyncClient) -> None:
        k = 0
        while not self._stop.is_set():
            k += 1
            body = {"run_id": "bystander", "group": dead_group(f"{self.tag}-b{k}")}
            started = time.perf_counter()
            try:
                response = await http.post("/v1/rank", json=body, headers=BEARER)
                took = time.perf_counter() - started
                answer = _decode(response)
                if response.status_code != 200 or not isinstance(answer, dict):
                    self.watch.faults.append(f"bystander {response.status_code}")
                elif answer.get("status") != "ok":
                    self.watch.faults.append(f"bystander {answer.get('status')}")
                if non_finite(answer):
                    self.watch.non_finite = True
            except httpx.HTTPError as exc:
                took = time.perf_counter() - started
                self.watch.faults.append(f"bystander {type(exc).__name__}")
            self.watch.bystander.append(took)
            await asyncio.sleep(max(0.0, 0.1 - took))


# -- the attacks -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """An attack's own result: what it saw, whether that is what the issue asks, any 5xx."""

    text: str
    expected: bool
    codes: list[str] = field(default_factory=list)
    keyed: bool = False
    non_finite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _is_4xx(code: str) -> bool:
    return code.isdigit() and 400 <= int(code) < 500


def _grpc_refused(code: str) -> bool:
    return code not in SERVER_FAULTS and code != "OK"


async def _post(http: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[str, Any]:
    response = await http.post(path, **kwargs)
    return str(response.status_code), _decode(response)


async def _raw_unary(address: str, data: bytes, *, keyed: bool) -> str:
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary("/reasoning_arena.v1.Arena/Rank",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        try:
            await call(data, metadata=tuple(BEARER.items()) if keyed else None, timeout=120)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return "OK"


def bad_utf8_message(size: int) -> bytes:
    """A RankRequest of ``size`` bytes: short string fields of invalid UTF-8 (``run_id``)."""
    return b"\x0a\x02\xff\xfe" * (size // 4)


async def _raw_http(url: str, path: str, length: int, first: bytes) -> str:
    """A POST announcing ``length`` bytes that sends only ``first`` of them: the status."""
    target = httpx.URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode() + first)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        return line.split()[1].decode() if line else "closed"
    except (asyncio.TimeoutError, ConnectionError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


Attack = Callable[["Context"], Awaitable[Outcome]]


@dataclass
class Context:
    server: ServeProcess
    http: httpx.AsyncClient  # with the key
    scale: str
    judge: Any = None  # the fake judge's state, for the judge-fault attacks


async def dead_group_1024(ctx: Context) -> Outcome:
    code, answer = await _post(ctx.http, "/v1/rank", json={
        "run_id": "big-run", "group": dead_group("big", 1024)}, timeout=600)
    ok = code == "200" and isinstance(answer, dict) and len(answer.get("advantages", [])) == 1024
    return Outcome(f"{code} {answer.get('status') if isinstance(answer, dict) else ''}", ok,
                   [code], keyed=True, non_finite=non_finite(answer))


async def query_120kb(ctx: Context) -> Outcome:
    query = "2 + 2 = 4" + " \t\n" * 40_000 + "<|im_end|>"
    code, answer = await _post(ctx.http, "/v1/openrlhf/q120", json={
        "query": [query], "prompts": ["2 + 2 = "], "labels": ["4"]},
        params={"group_size": 2, "timeout_s": 0.1})
    scores = answer.get("scores") if isinstance(answer, dict) else None
    return Outcome(f"{code} scores={scores}", code == "200", [code], keyed=True,
                   non_finite=non_finite(answer))


def _grpc_utf8(keyed: bool, expect: str) -> Attack:
    async def attack(ctx: Context) -> Outcome:
        data = bad_utf8_message(32 * 1024 * 1024)
        code = await _raw_unary(ctx.server.grpc_address, data, keyed=keyed)
        return Outcome(code, code == expect, [code], keyed=keyed)
    return attack


def _mb(ctx: Context) -> int:
    return 200 if ctx.scale == "full" else 20


async def grpc_3x_huge_no_key(ctx: Context) -> Outcome:
    data = b"\x0a\x01a" * (_mb(ctx) * 1024 * 1024 // 3)
    codes = list(await asyncio.gather(*(_raw_unary(ctx.server.grpc_address, data, keyed=False)
                                        for _ in range(3))))
    return Outcome(f"3 x {_mb(ctx)} MB: {','.join(codes)}",
                   all(_grpc_refused(c) for c in codes), codes)


async def http_3x_huge_no_key(ctx: Context) -> Outcome:
    size = _mb(ctx) * 1024 * 1024
    first = b'{"run_id": "r", "group": {"traces": ["' + b"x" * 65536
    codes = list(await asyncio.gather(*(_raw_http(ctx.server.http_url, "/v1/rank", size, first)
                                        for _ in range(3))))
    return Outcome(f"3 x {_mb(ctx)} MB: {','.join(codes)}", all(map(_is_4xx, codes)), codes)


async def settings(ctx: Context) -> Outcome:
    cases: dict[str, dict[str, float]] = {
        "budget=1e9": {"budget": 10**9}, "budget=2^40": {"budget": 2**40},
        "weight=1e-320": {"weight": 1e-320}, "lam=1e-300": {"lam": 1e-300}}
    codes, seen = [], []
    for name, value in cases.items():
        code, _ = await _post(ctx.http, "/v1/runs", json={"settings": {"run_id": "s", **value}})
        codes.append(code)
        seen.append(f"{name}:{code}")
    code, _ = await _post(ctx.http, "/v1/openrlhf/s", json={
        "query": ["2 + 2 = 4"], "prompts": ["2 + 2 = "], "labels": ["4"]},
        params={"timeout_s": 1e9, "group_size": 2})
    codes.append(code)
    seen.append(f"timeout_s=1e9:{code}")
    return Outcome(" ".join(seen), all(map(_is_4xx, codes)), codes, keyed=True)


async def huge_rewards(ctx: Context) -> Outcome:
    group = {"group_id": "huge", "traces": [{"text": f"t{k}", "reward": r} for k, r in
                                            enumerate((1.7e308, 1.7e308, 0.0))]}
    code, answer = await _post(ctx.http, "/v1/rank", json={"run_id": "r", "group": group})
    bad = non_finite(answer)
    return Outcome(f"{code}", (_is_4xx(code) or code == "200") and not bad, [code], keyed=True,
                   non_finite=bad)


async def request_id_reuse(ctx: Context) -> Outcome:
    first = {**dead_group("g8", 8), "request_id": "reused"}
    other = {**dead_group("g3", 3), "request_id": "reused"}
    a, _ = await _post(ctx.http, "/v1/rank", json={"run_id": "rid", "group": first})
    b, _ = await _post(ctx.http, "/v1/rank", json={"run_id": "rid", "group": other})
    return Outcome(f"first {a}, reused {b}", a == "200" and _is_4xx(b), [a, b], keyed=True)


def _verdict() -> dict:
    top = {" A": math.log(0.6), " B": math.log(0.3)}
    return {"choices": [{"index": 0, "text": "", "logprobs": {
        "tokens": [" A"], "token_logprobs": [top[" A"]], "top_logprobs": [top],
        "text_offset": [0]}}], "usage": {"prompt_tokens": 10}}


@dataclass
class FakeJudge:
    """What the fake judge answers: every ``malformed_every``-th request malformed (0: none);
    while ``hanging``, every request hangs until ``release`` (or the end): the judge is fully
    hung, the bystander's requests too."""

    malformed_every: int = 0
    sent: int = 0
    malformed: int = 0
    hung: int = 0
    hanging: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 200, {"data": [{"id": "judge"}]}
        if self.hanging:
            self.hung += 1
            await self.release.wait()
            return 200, _verdict()
        self.sent += 1
        if self.malformed_every and self.sent % self.malformed_every == 1:
            self.malformed += 1
            return 200, {"choices": [{}]}
        return 200, _verdict()


async def malformed_judge(ctx: Context) -> Outcome:
    judge: FakeJudge = ctx.judge
    judge.malformed_every, judge.sent, judge.malformed = 1000, 0, 0
    groups = [dead_group(f"m{k}", prompt=f"problem {k}") for k in range(200)]
    try:
        code, answer = await _post(ctx.http, "/v1/rank", json={"run_id": "malformed",
                                                               "groups": groups}, timeout=600)
    finally:
        judge.malformed_every = 0
    results = answer.get("results", []) if isinstance(answer, dict) else []
    failed = sum(1 for r in results if r.get("status") != "ok")
    ok = code == "200" and len(results) == 200 and failed <= judge.malformed
    return Outcome(f"{code}: {failed}/200 groups failed, {judge.malformed} of {judge.sent} "
                   "answers malformed", ok, [code], keyed=True, non_finite=non_finite(answer),
                   extra={"groups_failed": failed, "malformed_answers": judge.malformed})


async def hung_judge(ctx: Context) -> Outcome:
    judge: FakeJudge = ctx.judge
    judge.hung, judge.hanging = 0, True
    judge.release = asyncio.Event()
    # G = 2 dead groups: one comparison each in their first round, 640 in all.
    groups = [dead_group(f"h{k}", 2) for k in range(HUNG_REQUESTS)]
    started = time.perf_counter()
    try:
        code, answer = await _post(ctx.http, "/v1/rank", json={"run_id": "hung",
                                                               "groups": groups}, timeout=600)
    finally:
        judge.hanging = False
        judge.release.set()
    took = time.perf_counter() - started
    results = answer.get("results", []) if isinstance(answer, dict) else []
    failed = sum(1 for r in results if r.get("status") == "judge_failed")
    bound = 3 * HUNG_TIMEOUT_S
    ok = code == "200" and failed == HUNG_REQUESTS and took < bound
    return Outcome(f"{code}: {failed}/{HUNG_REQUESTS} failed in {took:.2f} s "
                   f"(bound {bound:.0f} s; {judge.hung} requests reached the judge)", ok, [code],
                   keyed=True, non_finite=non_finite(answer),
                   extra={"time_to_fail_s": round(took, 3), "bound_s": bound})


ATTACKS: dict[str, Attack] = {
    "dead_group_1024": dead_group_1024,
    "query_120kb": query_120kb,
    "grpc_32mb_bad_utf8_no_key": _grpc_utf8(False, "UNAUTHENTICATED"),
    "grpc_32mb_bad_utf8_key": _grpc_utf8(True, "INVALID_ARGUMENT"),
    "grpc_3x_huge_no_key": grpc_3x_huge_no_key,
    "http_3x_huge_no_key": http_3x_huge_no_key,
    "settings": settings,
    "huge_rewards": huge_rewards,
    "request_id_reuse": request_id_reuse,
    "malformed_judge": malformed_judge,
    "hung_judge": hung_judge,
}
JUDGE_ATTACKS = ("malformed_judge", "hung_judge")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0.0


async def _run_one(name: str, ctx: Context) -> dict:
    before = rss_bytes(ctx.server.pid)
    async with Watcher(ctx.server, name) as watch:
        await asyncio.sleep(0.3)  # the watchers' first answers, before the attack
        try:
            outcome = await ATTACKS[name](ctx)
        except Exception as exc:  # noqa: BLE001 - reported in its row
            outcome = Outcome(f"error: {type(exc).__name__}: {exc}"[:160], False)
        await asyncio.sleep(0.2)
    after = rss_bytes(ctx.server.pid)
    peak = max([after, *watch.rss])
    growth_mb = (peak - before) / 2**20
    faults = [c for c in outcome.codes if c.startswith("5") or c in SERVER_FAULTS]
    faults += [f for f in watch.faults if " 5" in f]
    health = max(watch.health, default=0.0)
    bystander_max = max(watch.bystander, default=0.0)
    held = {
        "healthz": health < HEALTHZ_TARGET_S,
        "bystander": bool(watch.bystander) and bystander_max < BYSTANDER_TARGET_S,
        "no_5xx": not faults,
        "finite": not (outcome.non_finite or watch.non_finite),
        "outcome": outcome.expected,
        "rss": outcome.keyed or growth_mb <= RSS_TARGET_MB,
    }
    row: dict[str, Any] = {
        "attack": name, "outcome": outcome.text, "codes": outcome.codes, "keyed": outcome.keyed,
        "healthz_worst_s": round(health, 4), "healthz_polls": len(watch.health),
        "bystander_p99_s": round(_p99(watch.bystander), 4),
        "bystander_max_s": round(bystander_max, 4), "bystander_groups": len(watch.bystander),
        "bystander_faults": sorted(set(watch.faults)),
        "rss_before_mb": round(before / 2**20, 1), "rss_growth_mb": round(growth_mb, 1),
        "rss_growth_after_mb": round((after - before) / 2**20, 1),
        "held": held, "target_met": all(held.values()),
    }
    row.update(outcome.extra)
    return row


async def _run_on(
    server: ServeProcess, names: list[str], scale: str, judge: Any = None
) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=120,
                                 headers=BEARER) as http:
        ctx = Context(server, http, scale, judge)
        return [await _run_one(name, ctx) for name in names]


def run(attacks: list[str] | None = None, scale: str = "small", progress: bool = True) -> dict:
    """Run ``attacks`` (default: all) at ``scale`` (``small``: 3 x 20 MB bodies; ``full``:
    the issue's 3 x 200 MB) and return the rows."""
    names = list(ATTACKS) if attacks is None else attacks
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    if scale not in ("small", "full"):
        raise ValueError(f"scale: small or full, not {scale!r}")
    plain = [n for n in names if n not in JUDGE_ATTACKS]
    faults = [n for n in names if n in JUDGE_ATTACKS]
    rows: list[dict] = []
    if plain:
        with server_process(comparator="builtin") as server:
            if progress:
                print(f"server on the builtin judge (pid {server.pid}): {', '.join(plain)}",
                      file=sys.stderr)
            rows += asyncio.run(_run_on(server, plain, scale))
    if faults:
        rows += asyncio.run(_judge_faults(faults, scale, progress))
    order = {n: k for k, n in enumerate(names)}
    rows.sort(key=lambda row: order[row["attack"]])
    return {"scale": scale, "targets": {
        "healthz_s": HEALTHZ_TARGET_S, "bystander_s": BYSTANDER_TARGET_S,
        "rss_growth_mb_without_key": RSS_TARGET_MB, "hung_judge_s": 3 * HUNG_TIMEOUT_S},
        "psutil": importlib.util.find_spec("psutil") is not None, "attacks": rows}


async def _judge_faults(names: list[str], scale: str, progress: bool) -> list[dict]:
    """Each judge-fault attack on a server of its own whose judge is the fake one: the hung
    judge's timeout is 1 s; the malformed judge's 10 s (this process's fake judge, busy with
    800 requests, takes about a second to answer all, which must not read as a timeout)."""
    judge = FakeJudge()
    rows: list[dict] = []
    async with fake_server(judge) as (url, _):
        for name in names:
            options = {"comparator": "openai", "judge_base_url": url, "judge_model": "judge",
                       "judge_timeout_s": HUNG_TIMEOUT_S if name == "hung_judge" else 10.0,
                       "judge_retries": 2, "judge_max_concurrency": 64}
            # The server runs in a subprocess while this loop serves its judge.
            with server_process(**options) as server:
                if progress:
                    print(f"server on a fake judge (pid {server.pid}): {name}", file=sys.stderr)
                try:
                    rows += await _run_on(server, [name], scale, judge)
                finally:
                    judge.release.set()
    return rows


def format_table(result: dict) -> str:
    lines = [f"arena-judge bench abuse (scale {result['scale']}; targets: /healthz < "
             f"{HEALTHZ_TARGET_S} s, bystander < {BYSTANDER_TARGET_S} s, RSS growth <= "
             f"{RSS_TARGET_MB:.0f} MB without a key, no 5xx, all finite)",
             f"{'attack':<27} {'healthz':>8} {'byst p99':>8} {'RSS +MB':>8} {'met':>4}  outcome"]
    for row in result["attacks"]:
        missed = [k for k, v in row["held"].items() if not v]
        lines.append(
            f"{row['attack']:<27} {row['healthz_worst_s']:>8.3f} {row['bystander_p99_s']:>8.3f}"
            f" {row['rss_growth_mb']:>8.1f} {'yes' if row['target_met'] else 'no':>4}  "
            f"{row['outcome']}" + (f" [missed: {', '.join(missed)}]" if missed else ""))
    return "\n".join(lines)
