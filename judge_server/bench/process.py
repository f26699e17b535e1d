"""``arena-judge serve`` in a process of its own, on free loopback ports: what the benchmarks
that measure the product from outside (``bench learn``, ``bench abuse``) start and stop.

The server runs from this checkout (its root is on ``PYTHONPATH``), with the memory store;
``env`` adds or overrides ``ARENA_`` settings. It is ready when ``ready_path`` answers 200;
its output goes to a log file whose tail is in the error when it exits or does not start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port with nothing listening on it (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop ``process``: SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class ServeProcess:
    process: subprocess.Popen
    http_url: str
    grpc_address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def serve_process(
    env: Mapping[str, str] | None = None,
    *,
    ready_path: str = "/healthz",
    start_timeout_s: float = 120.0,
) -> Iterator[ServeProcess]:
    """Start ``arena-judge serve`` (module doc), wait until it is ready, yield it; stop it."""
    http_port, grpc_port = free_port(), free_port()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "ARENA_HOST": "127.0.0.1",
                "ARENA_HTTP_PORT": str(http_port), "ARENA_GRPC_PORT": str(grpc_port),
                "ARENA_STORE": "memory", **(env or {})}
    log = Path(tempfile.mkstemp(prefix="arena-serve-", suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "judge_server", "serve"], cwd=ROOT,
                                   env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = ServeProcess(process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}",
                          log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"arena-judge serve exited: {server.log_tail()}")
            try:
                if httpx.get(server.http_url + ready_path, timeout=2,
                             trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"arena-judge serve did not start: {server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(process)
        log.unlink(missing_ok=True)


__all__ = ["ROOT", "ServeProcess", "free_port", "serve_process", "stop"]
