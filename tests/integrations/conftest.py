"""Judge servers for the integration tests: in the test's event loop, or in a thread of their
own (for trainers that call the reward function synchronously), with the memory store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from judge_server.app import build_service
from judge_server.server import JudgeServer
from judge_server.settings import ServerSettings


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a real trainer on a tiny model (tens of seconds); runs in CI"
    )


def _server(comparator=None, **options) -> JudgeServer:
    """``comparator``: a Comparator, or the name of a built-in one (``builtin``, ...)."""
    if isinstance(comparator, str):
        options["comparator"], comparator = comparator, None
    options = {"comparator": "builtin", "store": "memory", **options}
    settings = ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, **options)
    server = JudgeServer(build_service(settings, comparator=comparator))
    server.app.state.assembler.options = settings.assembly_options()
    return server


async def _stop(server: JudgeServer) -> None:
    await server.app.state.assembler.aclose()
    await server.stop(grace=1.0)


@pytest.fixture
async def start_server():
    """``await start_server(comparator=..., **settings)`` -> a started JudgeServer (builtin
    judge by default), in the test's event loop; stopped at the end of the test."""
    servers: list[JudgeServer] = []

    async def start(*, comparator=None, **options) -> JudgeServer:
        server = _server(comparator, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await _stop(server)


class ThreadedJudge:
    """A judge server on an event loop in a daemon thread, for synchronous callers."""

    def __init__(self, comparator=None, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(self._start(comparator, options))

    async def _start(self, comparator, options) -> JudgeServer:
        server = _server(comparator, **options)
        await server.start()
        return server

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def grpc_address(self) -> str:
        return self.server.grpc_address

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def stop(self) -> None:
        try:
            self.call(_stop(self.server))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def threaded_judge():
    """``threaded_judge(comparator=..., **settings)`` -> a ThreadedJudge, stopped at the end."""
    judges: list[ThreadedJudge] = []

    def start(comparator=None, **options) -> ThreadedJudge:
        judge = ThreadedJudge(comparator, **options)
        judges.append(judge)
        return judge

    yield start
    for judge in judges:
        judge.stop()
