"""The product under test: ``arena-judge serve`` in a process of its own, on loopback.

Its judge and run settings are the server's defaults (the embedded builtin judge); only the
ports, the address and the store (memory: nothing left on disk) are set. The arms reach it
through :class:`trainer_client.ArenaClient`, as a trainer would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import httpx

START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def judge_server(*, transport: str = "grpc"):
    """Start ``arena-judge serve``; yield the :class:`ArenaClient` options that reach it."""
    grpc_port, http_port = _free_port(), _free_port()
    env = {**os.environ, "ARENA_HOST": "127.0.0.1", "ARENA_STORE": "memory"}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "judge_server.cli", "serve", "--grpc-port", str(grpc_port),
         "--http-port", str(http_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("arena-judge serve did not start: "
                                   + log.read().decode(errors="replace")[-2000:])
            time.sleep(0.1)
        yield {"target": f"127.0.0.1:{grpc_port}", "http_url": url, "transport": transport}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
