"""Builds the service core from settings; the transports and the CLI start from here."""

from __future__ import annotations

from typing import Any, Literal

from .comparators.base import Comparator
from .comparators.model import ModelComparator
from .core.scheduler import JudgeScheduler
from .core.service import ArenaService
from .metrics import Metrics
from .settings import ServerSettings
from .store.base import Store

LLM_JUDGES = ("vllm", "openai", "sglang", "transformers")


def build_comparator(settings: ServerSettings) -> Comparator:
    """The judge of ``settings``; an LLM judge behind its verdict cache (when on).

    Builds, imports nothing heavy and does no I/O: a model-backed judge starts on first use
    (or on the first readiness check). Raises ``MissingDependency`` when the judge's extra
    is not installed.
    """
    if settings.comparator == "builtin":
        from .comparators.builtin import BuiltinComparator

        return BuiltinComparator()
    if settings.comparator in LLM_JUDGES:
        judge = build_model_comparator(settings)
        judge.check_installed()
        if settings.judge_cache_entries:
            from .comparators.cached import CachedComparator

            return CachedComparator(judge, settings.judge_cache_entries)
        return judge
    from .comparators.simulated import SimulatedComparator, instant_comparator

    if settings.comparator == "instant":
        return instant_comparator()
    return SimulatedComparator()


def build_model_comparator(settings: ServerSettings) -> ModelComparator:
    """The LLM judge of ``settings`` without its cache (benchmarks call it directly)."""
    from .comparators.prompt import PromptTemplate

    prompt: dict[str, Any] = {
        "template": PromptTemplate.load(settings.judge_template)
        if settings.judge_template
        else None,
        "prompt_format": settings.judge_prompt_format,
        # every LLM judge's options
        "malformed_retries": settings.judge_malformed_retries,
        "timeout_s": settings.judge_timeout_s,  # in-process too: the watch on a hung judge
    }
    engine_args = dict(settings.judge_engine_args)
    if settings.judge_dtype != "auto":
        engine_args.setdefault("dtype", settings.judge_dtype)
    api_key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else None
    tokenizer: str | Literal[False] | None = settings.judge_tokenizer
    tokenizer = False if tokenizer in ("none", "") else tokenizer
    http = {
        "api_key": api_key,
        "max_concurrency": settings.judge_max_concurrency,
        "retries": settings.judge_retries,
    }
    if settings.comparator == "vllm":
        from .comparators.vllm import VLLMComparator

        return VLLMComparator(
            _required(settings.judge_model), engine_args=engine_args,
            top_logprobs=settings.judge_top_logprobs, **prompt,
        )
    if settings.comparator == "openai":
        from .comparators.openai import OpenAIComparator

        return OpenAIComparator(
            _required(settings.judge_base_url), _required(settings.judge_model),
            endpoint=settings.judge_endpoint,
            tokenizer=tokenizer, logprob_token_ids=settings.judge_logprob_token_ids,
            top_logprobs=settings.judge_top_logprobs, **http, **prompt,
        )
    if settings.comparator == "sglang":
        from .comparators.sglang import SGLangComparator, SGLangEngineComparator

        if settings.judge_base_url:
            return SGLangComparator(
                settings.judge_base_url, model=settings.judge_model, tokenizer=tokenizer,
                top_logprobs=settings.judge_top_logprobs, **http, **prompt,
            )
        return SGLangEngineComparator(
            _required(settings.judge_model), engine_args=engine_args, **prompt
        )
    from .comparators.transformers import TransformersComparator

    return TransformersComparator(
        _required(settings.judge_model), device=settings.judge_device, dtype=settings.judge_dtype,
        batch_size=settings.judge_batch_size, **prompt,
    )


def _required(value: str | None) -> str:
    """A setting that :class:`ServerSettings`' check requires of this comparator."""
    assert value is not None
    return value


def build_store(settings: ServerSettings) -> Store:
    if settings.store == "memory":
        from .store.memory import MemoryStore

        return MemoryStore(idle_ttl_s=settings.run_idle_ttl_s)
    if settings.store == "redis":
        from .store.redis import RedisStore

        return RedisStore(settings.redis_url, idle_ttl_s=settings.run_idle_ttl_s)
    from .store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, idle_ttl_s=settings.run_idle_ttl_s)


def build_service(
    settings: ServerSettings,
    *,
    comparator: Comparator | None = None,
    store: Store | None = None,
) -> ArenaService:
    """The service core for ``settings``; tests pass their own comparator or store."""
    if comparator is None:  # not ``or``: a verdict cache is falsy while empty (it has a len)
        comparator = build_comparator(settings)
    return ArenaService(
        comparator=comparator,
        store=store or build_store(settings),
        scheduler=JudgeScheduler(
            comparator,
            max_batch=settings.max_batch,
            window_s=settings.batch_window_ms / 1e3,
            batches_in_flight=settings.judge_batches_in_flight,
            policy=settings.scheduler,
            stall_s=settings.judge_timeout_s,
        ),
        limits=settings.limits(),
        defaults=settings.run_defaults(),
        auto_create_runs=settings.auto_create_runs,
        max_groups_in_flight=settings.max_groups_in_flight,
        max_run_groups_in_flight=settings.max_run_groups_in_flight,
        metrics=Metrics(max_runs=settings.max_metric_runs),
    )


__all__ = [
    "LLM_JUDGES",
    "build_comparator",
    "build_model_comparator",
    "build_service",
    "build_store",
]
