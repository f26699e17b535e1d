"""Choosing and configuring an LLM judge: settings, the factory, the command line."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import ValidationError

from judge_server.app import build_comparator
from judge_server.cli import build_parser, main
from judge_server.comparators.cached import CachedComparator
from judge_server.comparators.model import (
    MALFORMED_RETRIES,
    MissingDependency,
    ModelComparator,
)
from judge_server.comparators.openai import OpenAIComparator
from judge_server.comparators.sglang import SGLangComparator, SGLangEngineComparator
from judge_server.comparators.transformers import TransformersComparator
from judge_server.comparators.vllm import VLLMComparator
from judge_server.settings import ServerSettings, options_table


def settings(**options) -> ServerSettings:
    return ServerSettings(store="memory", **options)


@pytest.mark.parametrize("options, missing", [
    ({"comparator": "vllm"}, "judge_model"),
    ({"comparator": "transformers"}, "judge_model"),
    ({"comparator": "openai", "judge_model": "m"}, "judge_base_url"),
    ({"comparator": "openai", "judge_base_url": "http://x"}, "judge_model"),
    ({"comparator": "sglang"}, "judge_base_url"),
])
def test_a_judge_without_its_model_or_server_is_refused(options, missing):
    with pytest.raises(ValidationError, match=missing):
        settings(**options)


def test_a_bad_template_is_refused_at_start_up(tmp_path):
    with pytest.raises(ValidationError, match="missing slot"):
        settings(judge_template="{problem} {first}")
    path = tmp_path / "t.txt"
    path.write_text("{problem}\n{first}\n{second}")
    assert settings(judge_template=f"@{path}").judge_template == f"@{path}"


def test_engine_args_come_as_json():
    assert settings(judge_engine_args='{"max_model_len": 4096}').judge_engine_args == {
        "max_model_len": 4096}
    with pytest.raises(ValidationError, match="not JSON"):
        settings(judge_engine_args="{max_model_len: 4096}")


def test_the_api_key_comes_from_the_environment_only(monkeypatch, capsys):
    monkeypatch.setenv("ARENA_JUDGE_API_KEY", "sk-very-secret")
    s = settings(comparator="openai", judge_base_url="http://judge", judge_model="m")
    assert s.judge_api_key is not None
    assert s.judge_api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(s) and "sk-very-secret" not in str(s.model_dump())
    judge = build_comparator(s)
    assert "sk-very-secret" not in repr(judge)
    assert isinstance(judge, CachedComparator) and isinstance(judge.inner, OpenAIComparator)
    assert judge.inner._api_key == "sk-very-secret"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--judge-api-key", "x"])
    assert "| (environment only) | `ARENA_JUDGE_API_KEY` |" in options_table()


def test_the_factory_builds_each_judge_behind_its_cache(tmp_path):
    openai = build_comparator(settings(
        comparator="openai", judge_base_url="http://judge:8000/v1", judge_model="m",
        judge_endpoint="chat", judge_max_concurrency=7, judge_timeout_s=3, judge_retries=5,
        judge_cache_entries=10))
    assert isinstance(openai, CachedComparator) and openai.max_entries == 10
    inner = openai.inner
    assert isinstance(inner, OpenAIComparator)
    assert (inner.base_url, inner.endpoint, inner.max_concurrency, inner.timeout_s,
            inner.retries) == ("http://judge:8000", "chat", 7, 3, 5)
    bare = build_comparator(settings(comparator="sglang", judge_base_url="http://s",
                                     judge_cache_entries=0, judge_tokenizer="none"))
    assert isinstance(bare, SGLangComparator) and bare.tokenizer_name is False
    if importlib.util.find_spec("vllm"):
        vllm = build_comparator(settings(comparator="vllm", judge_model="m",
                                         judge_dtype="float32",
                                         judge_engine_args='{"max_model_len": 512}'))
        assert isinstance(vllm, CachedComparator) and isinstance(vllm.inner, VLLMComparator)
        assert vllm.inner.engine_args["dtype"] == "float32"
        assert vllm.inner.engine_args["enable_prefix_caching"] is True
        assert vllm.inner.engine_args["max_model_len"] == 512
    local = build_comparator(settings(comparator="transformers", judge_model="m",
                                      judge_batch_size=3, judge_device="cpu"))
    assert isinstance(local, CachedComparator)
    assert isinstance(local.inner, TransformersComparator) and local.inner.batch_size == 3


def test_malformed_retries_are_a_bounded_server_option(monkeypatch):
    """Every LLM judge asks a malformed answer again ``judge_malformed_retries`` times (the
    comparators' own default unless set), from a flag or the environment; 0 to 10."""
    assert settings().judge_malformed_retries == MALFORMED_RETRIES
    flag = vars(build_parser().parse_args(["serve", "--judge-malformed-retries", "5"]))
    assert settings(judge_malformed_retries=flag["judge_malformed_retries"]
                    ).judge_malformed_retries == 5
    monkeypatch.setenv("ARENA_JUDGE_MALFORMED_RETRIES", "0")
    assert settings().judge_malformed_retries == 0
    for outside in (-1, 11):
        with pytest.raises(ValidationError, match="judge_malformed_retries"):
            settings(judge_malformed_retries=outside)
    for options in ({"comparator": "openai", "judge_base_url": "http://j", "judge_model": "m"},
                    {"comparator": "sglang", "judge_base_url": "http://s"},
                    {"comparator": "transformers", "judge_model": "m"}):
        judge = build_comparator(settings(judge_malformed_retries=7, **options))
        assert isinstance(judge, CachedComparator)
        assert isinstance(judge.inner, ModelComparator)
        assert judge.inner.malformed_retries == 7, options


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang installed")
def test_a_missing_extra_is_named(capsys):
    with pytest.raises(MissingDependency, match=r"reasoning-arena\[sglang\]"):
        build_comparator(settings(comparator="sglang", judge_model="m"))
    assert isinstance(SGLangEngineComparator("m"), SGLangEngineComparator)  # builds, no import
    assert main(["serve", "--comparator", "sglang", "--judge-model", "m", "--store", "memory",
                 "--grpc-port", "0", "--http-port", "0"]) == 2
    assert "reasoning-arena[sglang]" in capsys.readouterr().err


def test_bench_judge_reports_a_failing_judge_without_a_traceback(tmp_path, capsys):
    from ..ports import free_port

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "2+2?", "trace_a": "4", "trace_b": "5", "better": "a"}\n')
    code = main(["bench", "judge", "--pairs", str(pairs), "--json", "--comparator", "openai",
                 "--judge-base-url", f"http://127.0.0.1:{free_port()}", "--judge-model", "m",
                 "--judge-retries", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ConnectError" in err and "Traceback" not in err
