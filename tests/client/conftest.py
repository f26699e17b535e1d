"""Real servers for the client tests, each in an event loop of its own thread.

A sync client blocks its caller, so the servers do not run in the test's event loop: they run
in :class:`BackgroundLoop` threads (a real :class:`JudgeServer` with the memory store, or the
tiny scripted servers of :mod:`tests.client.servers`), on free loopback ports.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from judge_server.comparators.base import Comparator, Comparison
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.errors import JudgeError
from trainer_client import Group, Trace

from ..background import BackgroundLoop, ServerThread


class CountingComparator(SimulatedComparator):
    """The simulated judge (strengths from ``strength=X`` tags), counting every comparison;
    ``delay`` seconds per batch. ``started`` is set when the first batch arrives."""

    def __init__(self, delay: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay
        self.asked: list[tuple[str, str]] = []
        self.started = threading.Event()

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        self.asked.extend((c.first, c.second) for c in comparisons)
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().compare(comparisons)


class HangingComparator(Comparator):
    """A judge that never answers, until :meth:`release` makes it fail."""

    name = "hanging"

    def __init__(self) -> None:
        self.started = threading.Event()
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
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
