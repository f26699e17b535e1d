"""A judge server whose judge takes its time, run as a subprocess by the kill tests.

    python -m tests.client.slow_server [--grpc-port P] [--http-port Q] [--delay S]

Prints ``{"grpc_port": P, "http_port": Q}`` when it listens, then one line per batch the
judge gets: ``comparing <the group ids of its comparisons>``. It runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from judge_server.app import build_service
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.server import JudgeServer
from judge_server.settings import ServerSettings


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
