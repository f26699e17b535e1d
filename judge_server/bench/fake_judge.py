"""A fake model server on loopback: real HTTP (uvicorn), answers from a plain function.

``bench abuse`` runs its judge faults (malformed answers, a hung judge) against one in its own
process, and the tests run the HTTP judges (``openai``, ``sglang``) against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Seen:
    """What a fake server received: ``(method, path, headers, JSON body)`` per request."""

    requests: list[tuple[str, str, dict, Any]] = field(default_factory=list)

    @property
    def bodies(self) -> list[Any]:
        return [body for method, _, _, body in self.requests if method == "POST"]


Handler = Callable[[str, str, Any], Awaitable[tuple[int, Any]] | tuple[int, Any]]


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave the caller's signal handlers alone
        yield


@contextlib.asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[tuple[str, Seen]]:
    """``async with fake_server(handler) as (url, seen)``: ``handler(method, path, body)``
    returns ``(status, body)``; a ``str``/``bytes`` body is sent as is, anything else as
    JSON. It may be a coroutine function (to sleep, for timeouts)."""
    seen = Seen()

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen.requests.append(
            (request.method, request.url.path, dict(request.headers), body)
        )
        answer = handler(request.method, request.url.path, body)
        if inspect.isawaitable(answer):
            answer = await answer
        status, payload = answer
        if isinstance(payload, (str, bytes)):
            return Response(payload, status_code=status, media_type="application/json")
        return Response(json.dumps(payload), status_code=status, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Uvicorn(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.should_exit = True
        await task
        sock.close()


__all__ = ["Handler", "Seen", "fake_server"]
