"""A judge server whose judge takes its time, run as a subprocess by the kill and shutdown tests.

    python -m tests.client.slow_server [--grpc-port P] [--http-port Q] [--delay S] [--serve]

Prints ``{"grpc_port": P, "http_port": Q}`` when it listens, then one line per batch the
judge gets: ``comparing <the group ids of its comparisons>``. It runs until killed.

``--serve`` runs the real :func:`judge_server.server.serve` (its SIGINT and SIGTERM handlers,
its graceful stop, its log lines on stderr) around the slow judge: the store and the shutdown
grace come from the environment (``ARENA_STORE``, ``ARENA_SQLITE_PATH``,
``ARENA_SHUTDOWN_GRACE_S``; the memory store when ``ARENA_STORE`` is unset). It prints the
ports line once ``/healthz`` answers and the signal handlers are in place, and exits when the
server has stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from typing import Any

import httpx

from judge_server.app import build_service
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.server import LOG_FORMAT, JudgeServer, serve
from judge_server.settings import ServerSettings

from ..ports import free_port


class SlowComparator(SimulatedComparator):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def compare(self, comparisons):
        groups = sorted({c.first.split(" ")[0] for c in comparisons})
        print("comparing", *groups, flush=True)
        await asyncio.sleep(self.delay)
        return await super().compare(comparisons)


async def main(args: argparse.Namespace) -> None:
    settings = ServerSettings(comparator="simulated", store="memory")
    server = JudgeServer(
        build_service(settings, comparator=SlowComparator(args.delay)),
        host="127.0.0.1", grpc_port=args.grpc_port, http_port=args.http_port,
    )
    await server.start()
    print(json.dumps({"grpc_port": server.grpc_port, "http_port": server.http_port}),
          flush=True)
    await asyncio.Event().wait()


async def announce_when_listening(grpc_port: int, http_port: int) -> None:
    """Print the ports line once the HTTP API answers and serve() handles SIGTERM."""
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while True:
            try:
                response = await client.get(f"http://127.0.0.1:{http_port}/healthz")
                if response.status_code == 200 and signal.getsignal(signal.SIGTERM) not in (
                    signal.SIG_DFL, signal.SIG_IGN
                ):
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    print(json.dumps({"grpc_port": grpc_port, "http_port": http_port}), flush=True)


async def main_serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level="INFO", format=LOG_FORMAT)
    grpc_port = args.grpc_port or free_port()
    http_port = args.http_port or free_port()
    # The store and the grace come from the environment: not init arguments, which win over it.
    defaults: dict[str, Any] = {} if "ARENA_STORE" in os.environ else {"store": "memory"}
    settings = ServerSettings(
        host="127.0.0.1", grpc_port=grpc_port, http_port=http_port, comparator="simulated",
        **defaults,
    )
    serving = asyncio.create_task(
        serve(settings, service=build_service(settings, comparator=SlowComparator(args.delay)))
    )
    announcing = asyncio.create_task(announce_when_listening(grpc_port, http_port))
    await asyncio.wait({serving, announcing}, return_when=asyncio.FIRST_COMPLETED)
    if not announcing.done():
        announcing.cancel()
    await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--serve", action="store_true", help="run serve(): SIGTERM stops it")
    arguments = parser.parse_args()
    asyncio.run(main_serve(arguments) if arguments.serve else main(arguments))
