"""Real servers on free loopback ports, in the test's event loop, with the memory store."""

from __future__ import annotations

import grpc
import httpx
import pytest

from judge_server.server import JudgeServer
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

from ..background import make_server

CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@pytest.fixture
async def start_server():
    """``await start_server(comparator=..., store=..., **settings)`` -> a started JudgeServer.

    Every server started is stopped at the end of the test.
    """
    servers: list[JudgeServer] = []

    async def start(*, comparator=None, store=None, **options) -> JudgeServer:
        server = make_server(comparator, store=store, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=1.0)


@pytest.fixture
async def server(start_server) -> JudgeServer:
    return await start_server()


@pytest.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        yield ch


@pytest.fixture
def stub(channel) -> pb_grpc.ArenaStub:
    return pb_grpc.ArenaStub(channel)


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session (see tests/redis_server.py)."""
    from ..redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url
