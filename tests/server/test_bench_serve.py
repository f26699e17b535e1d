"""``arena-judge bench serve`` end to end, with tiny numbers: a server subprocess, both phases."""

from __future__ import annotations

import json

from judge_server.bench import serve


def test_bench_serve_measures_both_transports():
    result = serve.run(groups=40, group_size=8, trace_bytes=256, concurrency=8, progress=False)
    for name in ("grpc_stream", "http"):
        figures = result[name]
        assert figures["groups"] == 40 and figures["failed"] == 0
        assert figures["groups_per_s"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert (result["group_size"], result["trace_bytes"], result["concurrency"]) == (8, 256, 8)
    json.dumps(result)  # JSON-able
    table = serve.format_table(result)
    assert "gRPC RankStream" in table and "HTTP POST /v1/rank" in table


def test_make_groups_are_dead_groups_of_the_asked_size():
    (group,) = serve.make_groups(1, 16, 1024, "t")
    assert len(group["texts"]) == len(group["rewards"]) == 16
    assert len(set(group["rewards"])) == 1
    assert all(len(t.encode()) == 1024 for t in group["texts"])
    assert len(set(group["texts"])) == 16


def test_parse_target():
    assert serve.parse_target("judge:50051,http://judge:8000") == (
        "judge:50051", "http://judge:8000"
    )
    assert serve.parse_target("judge") == ("judge:50051", "http://judge:8000")
    assert serve.parse_target("a:1, b:2") == ("a:1", "http://b:2")
