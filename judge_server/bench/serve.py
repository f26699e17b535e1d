"""Server throughput and latency: groups/s and p50/p99 per group, over gRPC and HTTP.

Without a target, :func:`run` starts a judge server in a subprocess (the ``instant`` judge, which
costs nothing, so the figures are the server's own: transport, validation, tournament, fit,
anchor pool; and the memory store) on free loopback ports, and drives it from this process
with dead groups (every reward equal, so every group plays a tournament) of ``group_size``
traces of about ``trace_bytes`` each, spread over 100 prompts (so pool anchors join from the
second round of prompts on):

``grpc_stream``
    one ``RankStream`` with ``concurrency`` groups in flight;
``http``
    ``POST /v1/rank``, one group per request, ``concurrency`` requests in flight (on
    ``httpx.AsyncClient`` s of at most 16 connections each).

Latency is measured by the client, from sending a group to receiving its result. Each phase
starts with an untimed warm-up of ``concurrency`` groups. Run it as ``arena-judge bench
serve``; ``--target HOST:GRPC_PORT,HTTP_URL`` measures a running server instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROMPTS = 100
DEFAULT_GRPC_PORT = 50051
DEFAULT_HTTP_PORT = 8000
# One httpx.AsyncClient slows down badly with many requests in flight on its pool (latency
# tails of seconds at 64; encode/httpx#3215), so the HTTP phase shares the requests in
# flight among clients of at most this many connections: the figures are the server's.
CONNECTIONS_PER_HTTP_CLIENT = 16
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 512 * 1024 * 1024),
]


def make_groups(n: int, group_size: int, trace_bytes: int, tag: str) -> list[dict]:
    """``n`` dead groups as JSON bodies (columnar), each trace about ``trace_bytes`` long."""
    filler = "Let x be the unknown; then 2x + 3 = 11, so x = 4. " * (trace_bytes // 50 + 1)
    groups = []
    for k in range(n):
        texts = []
        for i in range(group_size):
            head = f"{tag} group {k} trace {i}: "
            texts.append(head + filler[: max(0, trace_bytes - len(head))])
        groups.append({
            "group_id": f"{tag}-{k}",
            "prompt_id": f"prompt-{k % PROMPTS}",
            "prompt": f"Problem {k % PROMPTS}: solve 2x + 3 = 11.",
            "texts": texts,
            "rewards": [0.0] * group_size,
        })
    return groups


def parse_target(target: str) -> tuple[str, str]:
    """``"HOST:GRPC_PORT,HTTP_URL"`` (or just ``"HOST"``: default ports) -> both addresses."""
    if "," in target:
        grpc_address, http_url = (part.strip() for part in target.split(",", 1))
    else:
        host = target.strip()
        grpc_address, http_url = f"{host}:{DEFAULT_GRPC_PORT}", f"http://{host}:{DEFAULT_HTTP_PORT}"
    if not http_url.startswith(("http://", "https://")):
        http_url = "http://" + http_url
    return grpc_address, http_url


def _summary(latencies: Sequence[float], wall_s: float, failed: int) -> dict:
    ms = np.asarray(latencies) * 1e3
    return {
        "groups_per_s": len(latencies) / wall_s,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "groups": len(latencies),
        "failed": failed,
        "wall_s": wall_s,
    }


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="group", file=sys.stderr, disable=not enabled)


async def _grpc_stream(stub, run_id: str, groups: list[dict], concurrency: int,
                       bar) -> tuple[list[float], float, int]:
    from trainer_client.protocol import arena_pb2 as pb

    messages = [pb.RankStreamRequest(run_id=run_id, group=pb.Group(**g)) for g in groups]
    slots = asyncio.Semaphore(concurrency)
    sent: dict[str, float] = {}

    async def requests():
        for message in messages:
            await slots.acquire()
            sent[message.group.group_id] = time.perf_counter()
            yield message

    latencies, failed = [], 0
    started = time.perf_counter()
    async for result in stub.RankStream(requests()):
        latencies.append(time.perf_counter() - sent.pop(result.group_id))
        failed += result.status != "ok"
        slots.release()
        bar.update()
    return latencies, time.perf_counter() - started, failed


async def _http(clients, run_id: str, groups: list[dict], concurrency: int,
                bar) -> tuple[list[float], float, int]:
    bodies = iter([json.dumps({"run_id": run_id, "group": g}).encode() for g in groups])
    headers = {"content-type": "application/json"}
    latencies, failed = [], 0

    async def worker(client) -> None:
        nonlocal failed
        for body in bodies:  # shared by the workers
            t0 = time.perf_counter()
            response = await client.post("/v1/rank", content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            failed += response.status_code != 200 or response.json()["status"] != "ok"
            bar.update()

    started = time.perf_counter()
    await asyncio.gather(*(worker(clients[k % len(clients)]) for k in range(concurrency)))
    return latencies, time.perf_counter() - started, failed


@contextlib.asynccontextmanager
async def _client(name: str, address: str, concurrency: int):
    """The client of a phase, shared by its warm-up and its measurement: a gRPC stub, or
    HTTP clients with at most :data:`CONNECTIONS_PER_HTTP_CLIENT` connections each."""
    if name == "grpc_stream":
        import grpc

        from trainer_client.protocol import arena_pb2_grpc as pb_grpc

        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            yield pb_grpc.ArenaStub(channel)
        return
    import httpx

    n = -(-concurrency // CONNECTIONS_PER_HTTP_CLIENT)
    per_client = -(-concurrency // n)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=address, limits=limits, timeout=120, trust_env=False)
            )
            for _ in range(n)
        ]


async def _measure(grpc_address: str, http_url: str, *, groups: int, group_size: int,
                   trace_bytes: int, concurrency: int, progress: bool) -> dict:
    run_tag = f"bench-{os.getpid()}-{int(time.time())}"  # fresh runs on a long-lived target
    result: dict = {}
    for name, drive, address in (
        ("grpc_stream", _grpc_stream, grpc_address), ("http", _http, http_url)
    ):
        run_id = f"{run_tag}-{name}"
        warm = make_groups(min(concurrency, groups), group_size, trace_bytes, f"warm-{name}")
        timed = make_groups(groups, group_size, trace_bytes, name)
        async with _client(name, address, concurrency) as client:
            with _progress(len(warm), f"{name} warm-up", False) as bar:
                await drive(client, run_id, warm, concurrency, bar)
            with _progress(len(timed), name, progress) as bar:
                latencies, wall, failed = await drive(client, run_id, timed, concurrency, bar)
        result[name] = _summary(latencies, wall, failed)
    return result


@contextlib.contextmanager
def _server_process() -> Iterator[tuple[str, str]]:
    """A judge server in a subprocess (instant judge, memory store, free ports)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "judge_server.bench.serve", "--server"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )
    assert process.stdin is not None and process.stdout is not None  # both pipes
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark's server exited with {process.wait()}")
        addresses = json.loads(line)
        yield addresses["grpc"], addresses["http"]
    finally:
        process.stdin.close()  # the server stops at the end of its stdin
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def run(
    *,
    target: str | None = None,
    groups: int = 2000,
    group_size: int = 16,
    trace_bytes: int = 1024,
    concurrency: int = 64,
    progress: bool = True,
) -> dict:
    """Measure a server (``target``) or one started for the purpose; see the module doc."""
    if groups < 1 or group_size < 2 or concurrency < 1 or trace_bytes < 1:
        raise ValueError("groups, concurrency and trace_bytes must be >= 1, group_size >= 2")
    options: dict[str, Any] = dict(groups=groups, group_size=group_size, trace_bytes=trace_bytes,
                   concurrency=concurrency, progress=progress)
    if target is None:
        with _server_process() as (grpc_address, http_url):
            figures = asyncio.run(_measure(grpc_address, http_url, **options))
        server = "subprocess (instant judge, memory store)"
    else:
        grpc_address, http_url = parse_target(target)
        figures = asyncio.run(_measure(grpc_address, http_url, **options))
        server = f"{grpc_address}, {http_url}"
    return {
        **figures,
        "groups": groups,
        "group_size": group_size,
        "trace_bytes": trace_bytes,
        "concurrency": concurrency,
        "server": server,
        "cpus": os.cpu_count(),
    }


def format_table(result: dict) -> str:
    lines = [
        f"{result['groups']} dead groups of {result['group_size']} traces of ~"
        f"{result['trace_bytes']} B, {result['concurrency']} in flight; server: "
        f"{result['server']}; {result['cpus']} CPUs",
        "",
        f"{'transport':<24}{'groups/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}",
    ]
    for name, label in (("grpc_stream", "gRPC RankStream"), ("http", "HTTP POST /v1/rank")):
        r = result[name]
        lines.append(f"{label:<24}{r['groups_per_s']:>10.1f}{r['p50_ms']:>10.1f}"
                     f"{r['p99_ms']:>10.1f}{r['failed']:>8}")
    return "\n".join(lines)


# -- the server side of the subprocess -----------------------------------------------------


async def _serve_until_stdin_closes() -> None:
    from judge_server.app import build_service
    from judge_server.server import JudgeServer
    from judge_server.settings import ServerSettings

    settings = ServerSettings(
        host="127.0.0.1", grpc_port=0, http_port=0, comparator="instant", store="memory",
        log_level="warning",
    )
    server = JudgeServer(build_service(settings), host=settings.host)
    await server.start()
    try:
        print(json.dumps({"grpc": server.grpc_address, "http": server.http_url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    finally:
        await server.stop(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    """``python -m judge_server.bench.serve --server``: the server side of :func:`run`.

    The benchmark itself is ``arena-judge bench serve``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="store_true", required=True)
    parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_until_stdin_closes())
    return 0


__all__ = ["format_table", "make_groups", "parse_target", "run"]


if __name__ == "__main__":
    sys.exit(main())

