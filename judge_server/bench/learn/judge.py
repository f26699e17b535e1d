"""The product under test: ``arena-judge serve`` in a process of its own, on loopback.

Its judge and run settings are the server's defaults (the embedded builtin judge); only the
ports, the address and the store (memory: nothing left on disk) are set. The arms reach it
through :class:`trainer_client.ArenaClient`, as a trainer would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..process import serve_process


@contextmanager
def judge_server(*, transport: str = "grpc") -> Iterator[dict]:
    """Start ``arena-judge serve``; yield the :class:`ArenaClient` options that reach it."""
    with serve_process(ready_path="/readyz", start_timeout_s=60.0) as server:
        yield {"target": server.grpc_address, "http_url": server.http_url,
               "transport": transport}
