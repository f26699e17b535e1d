"""Judge servers for the integration tests: in the test's event loop, or in a thread of their
own (for trainers that call the reward function synchronously), with the memory store."""

from __future__ import annotations

import pytest

from judge_server.server import JudgeServer

from ..background import ServerThread, make_server


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a real trainer on a tiny model (tens of seconds); runs in CI"
    )


@pytest.fixture
async def start_server():
    """``await start_server(comparator=..., **settings)`` -> a started JudgeServer (builtin
    judge by default), in the test's event loop; stopped at the end of the test."""
    servers: list[JudgeServer] = []

    async def start(*, comparator=None, **options) -> JudgeServer:
        server = make_server(comparator, **{"comparator": "builtin", **options})
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=1.0)


@pytest.fixture
def threaded_judge():
    """``threaded_judge(comparator=..., **settings)`` -> a ServerThread (builtin judge by
    default), stopped at the end."""
    judges: list[ServerThread] = []

    def start(comparator=None, **options) -> ServerThread:
        judge = ServerThread(comparator, **{"comparator": "builtin", **options})
        judges.append(judge)
        return judge

    yield start
    for judge in judges:
        judge.stop()
