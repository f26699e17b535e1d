"""A real judge server on an event loop of its own thread, for tests whose callers block.

A sync client (or a trainer calling its reward function synchronously) blocks the thread it
runs in, so the server cannot share the test's event loop: :class:`ServerThread` runs a
started :class:`JudgeServer` (memory store, free loopback ports) in a :class:`BackgroundLoop`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from judge_server.app import build_service
from judge_server.comparators.base import Comparator
from judge_server.server import JudgeServer
from judge_server.settings import ServerSettings
from judge_server.store.base import Store
from judge_server.transports.tenants import Authenticator

START_TIMEOUT_S = 60.0


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


def make_server(
    comparator: Comparator | str | None = None, /, *, store: Store | None = None, **options: Any
) -> JudgeServer:
    """An unstarted server (memory store unless ``store``); ``options`` are
    :class:`ServerSettings`.

    ``comparator``: a :class:`Comparator`, or the name of a built-in judge (default: the
    ``comparator`` option, else ``simulated``).
    """
    if isinstance(comparator, str):
        options["comparator"], comparator = comparator, None
    options = {"comparator": "simulated", "store": "memory", **options}
    settings = ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, **options)
    return JudgeServer(
        build_service(settings, comparator=comparator, store=store),
        assembly=settings.assembly_options(),
        authenticator=Authenticator(settings.api_keys),
        tls=(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file and settings.tls_key_file  # both or neither (settings)
        else None,
        max_request_bytes=settings.max_request_bytes,
    )


class ServerThread:
    """A started :class:`JudgeServer` in a thread of its own; :meth:`stop` when done."""

    def __init__(self, comparator: Comparator | str | None = None, /, **options: Any) -> None:
        self.background = BackgroundLoop()
        self.comparator = comparator

        async def start() -> JudgeServer:
            server = make_server(comparator, **options)
            await server.start()
            return server

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
        try:
            self.background.run(self.server.stop(grace=0.5), timeout=15)
        finally:
            self.background.close()
