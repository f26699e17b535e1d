"""Real servers for the client tests, each in an event loop of its own thread.

A sync client blocks its caller, so the servers do not run in the test's event loop: they run
in :class:`BackgroundLoop` threads (a real :class:`JudgeServer` with the memory store, or the
tiny scripted servers of :mod:`tests.client.servers`), on free loopback ports.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from judge_server.app import build_service
from judge_server.comparators.base import Comparator, Comparison
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.errors import JudgeError
from judge_server.server import JudgeServer
from judge_server.settings import ServerSettings
from trainer_client import Group, Trace

START_TIMEOUT_S = 30.0


class BackgroundLoop:
    """An event loop in a daemon thread; :meth:`run` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = START_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class ServerThread:
    """A started :class:`JudgeServer` (memory store) in a thread of its own."""

    def __init__(self, comparator: Comparator | None = None, /, **options: Any) -> None:
        self.background = BackgroundLoop()
        options = {"comparator": "simulated", "store": "memory", **options}
        settings = ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, **options)

        async def start() -> JudgeServer:
            server = JudgeServer(build_service(settings, comparator=comparator))
            await server.start()
            return server

        self.comparator = comparator
        self.server: JudgeServer = self.background.run(start())
        self.service = self.server.service

    @property
    def grpc_address(self) -> str:
        return self.server.grpc_address

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def address(self, transport: str) -> dict[str, str]:
        """The client options that reach this server over ``transport``."""
        return {"transport": transport, "target": self.grpc_address, "http_url": self.http_url}

    def groups_seen(self, run_id: str, outcome: str) -> int:
        """Groups the server answered for ``run_id`` with ``outcome`` (live, judged, ...)."""
        value = self.service.metrics.registry.get_sample_value(
            "arena_groups_total", {"run": run_id, "outcome": outcome}
        )
        return int(value or 0)

    def stop(self) -> None:
        if isinstance(self.comparator, HangingComparator):
            self.comparator.release()
        try:
            self.background.run(self.server.stop(grace=0.5), timeout=15)
        finally:
            self.background.close()


class CountingComparator(SimulatedComparator):
    """The simulated judge (strengths from ``strength=X`` tags), counting every comparison;
    ``delay`` seconds per batch. ``started`` is set when the first batch arrives."""

    def __init__(self, delay: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay
        self.asked: list[tuple[str, str]] = []
        self.started = threading.Event()

    async def compare(self, comparisons: list[Comparison]) -> list[float]:
        self.asked.extend((c.first, c.second) for c in comparisons)
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().compare(comparisons)


class HangingComparator(Comparator):
    """A judge that never answers, until :meth:`release` makes it fail (the server's stop
    does not cancel a batch the judge holds: see the report on ``RoundBatcher.aclose``)."""

    name = "hanging"

    def __init__(self) -> None:
        self.started = threading.Event()
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def compare(self, comparisons: list[Comparison]) -> list[float]:
        if self._released is None:
            self._released, self._loop = asyncio.Event(), asyncio.get_running_loop()
        self.started.set()
        await self._released.wait()
        raise JudgeError("hanging judge released")

    def release(self) -> None:
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)


@pytest.fixture
def start_judge():
    """``start_judge(comparator, **server_options)`` -> a started :class:`ServerThread`;
    all are stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(comparator: Comparator | None = None, /, **options: Any) -> ServerThread:
        server = ServerThread(comparator, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def judge(start_judge) -> ServerThread:
    return start_judge()


@pytest.fixture
def background():
    loop = BackgroundLoop()
    yield loop
    loop.close()


def free_port() -> int:
    """A loopback port with nothing listening on it (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead(group_id: str, strengths=(0.5, -1.0, 2.0, 0.0), *, prompt_id: str | None = None,
         reward: float = 1.0) -> Group:
    """A dead group: every reward equal; the simulated judge reads the strengths."""
    return Group(
        group_id=group_id,
        prompt_id=prompt_id if prompt_id is not None else group_id,
        prompt="What is 2 + 2?",
        traces=tuple(Trace(text=f"{group_id} trace {k} strength={s}", reward=reward)
                     for k, s in enumerate(strengths)),
    )


def diverse(group_id: str, rewards=(1.0, 0.0, 1.0, 0.0)) -> Group:
    return Group(
        group_id=group_id,
        prompt_id=group_id,
        traces=tuple(Trace(text=f"{group_id} trace {k}", reward=r) for k, r in enumerate(rewards)),
    )
