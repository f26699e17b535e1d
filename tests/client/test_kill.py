"""The judge server is killed (SIGKILL) while batches are in flight, then started again on
the same ports: every group gets an outcome, and the same clients judge again."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from trainer_client import ArenaClient, RunSettings

from .conftest import dead, diverse

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 8.0


class ServerProcess:
    """``python -m tests.client.slow_server`` with its output lines in a queue."""

    def __init__(self, *, delay: float, grpc_port: int = 0, http_port: int = 0) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            # every batch at the judge at once: the kill must find both clients' groups there
            "ARENA_JUDGE_BATCHES_IN_FLIGHT": "8"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.client.slow_server", "--delay", str(delay),
             "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ports = json.loads(self.next_line(30))
        self.grpc_port, self.http_port = ports["grpc_port"], ports["http_port"]

    def _read(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the server process said nothing in time") from None

    def wait_for_judging(self, *prefixes: str, timeout: float = 20) -> None:
        """Until the judge has got comparisons of groups with each of ``prefixes``."""
        seen: set[str] = set()
        until = time.monotonic() + timeout
        while not all(any(s.startswith(p) for s in seen) for p in prefixes):
            line = self.next_line(max(0.1, until - time.monotonic()))
            if line.startswith("comparing "):
                seen.update(line.split()[1:])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def processes():
    started: list[ServerProcess] = []

    def start(**options) -> ServerProcess:
        started.append(ServerProcess(**options))
        return started[-1]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill()


def batch(tag: str):
    return [dead(f"{tag}-{k}", (1.0, -1.0, 0.5, 0.0)) for k in range(3)] + [diverse(f"{tag}-d")]


def test_a_killed_server_costs_fallbacks_and_the_clients_reconnect_when_it_is_back(processes):
    first = processes(delay=30.0)  # the judge takes its time: the kill finds batches in flight
    settings = RunSettings(run_id="exp", design="round_robin", anchors_per_group=0)
    options: dict[str, Any] = dict(target=f"127.0.0.1:{first.grpc_port}", run_settings=settings,
                   http_url=f"http://127.0.0.1:{first.http_port}", deadline_s=DEADLINE_S,
                   retries=2, backoff_s=0.1)
    grpc_client = ArenaClient(**options)
    http_client = ArenaClient(**options, transport="http")
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        in_flight = [pool.submit(grpc_client.rank, batch("grpc")),
                     pool.submit(http_client.rank, batch("http"))]
        first.wait_for_judging("grpc-", "http-")
        first.kill()
        results = [f.result(3 * DEADLINE_S) for f in in_flight]
    # by the deadline, with a wide margin for a loaded machine (the judge's 30 s is what
    # waiting on the killed server would cost)
    assert time.monotonic() - started < 2 * DEADLINE_S
    for client, result in zip((grpc_client, http_client), results):
        *dead_outcomes, live = result.outcomes
        assert [o.reason for o in dead_outcomes] == ["unavailable"] * 3, dead_outcomes
        assert all(o.fell_back and o.advantages == (0.0,) * 4 for o in dead_outcomes)
        assert not live.routed and live.advantages != (0.0,) * 4
        assert result.stats.fell_back == 3 and result.stats.retries == 2
        assert client.stats()["fell_back/unavailable"] == 3

    second = processes(delay=0.01, grpc_port=first.grpc_port, http_port=first.http_port)
    for client in (grpc_client, http_client):
        result = client.rank(batch("back"))
        assert result.stats.judged == 3 and result.stats.fell_back == 0, result.outcomes
        # the run was created again on the new server: round robin, 6 calls for 4 traces
        assert [o.judge_calls for o in result.outcomes[:3]] == [6, 6, 6]
        client.close()
    assert second.process.poll() is None
