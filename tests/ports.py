"""Free loopback ports for the servers the tests start (the benchmarks' own helper)."""

from __future__ import annotations

from judge_server.bench.process import free_port

__all__ = ["free_port"]
