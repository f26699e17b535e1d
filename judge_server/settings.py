"""Every option of the judge server, in one place.

Values come, highest priority first, from command-line flags, environment variables
(``ARENA_`` + the option's name in capitals, e.g. ``ARENA_HTTP_PORT=9000``), a TOML config file
(``arena-judge serve --config FILE`` or ``ARENA_CONFIG_FILE``), and the defaults below.
``arena-judge config`` prints the table of options with their defaults (it is in the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from trainer_client.types import RunSettings

from .core.validation import Limits
from .transports.assembly import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_RUN_BYTES,
    DEFAULT_MAX_RUN_SAMPLES,
    DEFAULT_MAX_SAMPLES,
    DEFAULT_MAX_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    AssemblyOptions,
)


class ServerSettings(BaseSettings):
    """Options of ``arena-judge serve``."""

    # A validation error would show its input: keys (ARENA_JUDGE_API_KEY, ARENA_API_KEYS), never.
    model_config = SettingsConfigDict(env_prefix="ARENA_", extra="forbid",
                                      hide_input_in_errors=True)

    config_file: Path | None = Field(None, description="TOML file with any of these options.")
    host: str = Field("0.0.0.0", description="Address both transports listen on.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one).")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: pick a free one).")
    comparator: Literal[
        "builtin", "simulated", "instant", "vllm", "openai", "sglang", "transformers"
    ] = Field(
        "builtin",
        description="The judge: builtin (embedded rule-based judge, no model), simulated "
        "(latent strengths read from the traces, for tests), instant (p = 0.5, for load tests); "
        "LLM judges: vllm (in-process engine), openai (OpenAI-compatible server), sglang "
        "(SGLang's /generate, or its in-process engine without a base URL), transformers "
        "(local model, CPU or GPU).",
    )
    # LLM judges (comparator vllm, openai, sglang, transformers).
    judge_model: str | None = Field(
        None, description="LLM judge: model path or name (openai: the requests' model)."
    )
    judge_base_url: str | None = Field(
        None, description="openai, sglang: the model server's URL, e.g. http://judge:8000."
    )
    judge_api_key: SecretStr | None = Field(
        None,
        description="openai, sglang: bearer token of the model server; environment only, "
        "never logged.",
        json_schema_extra={"env_only": True},
    )
    judge_tokenizer: str | None = Field(
        None,
        description="openai, sglang: the served model's tokenizer (default: the model when "
        "it is a local directory; none: read verdicts by token text).",
    )
    judge_prompt_format: Literal["auto", "plain", "chat"] = Field(
        "auto",
        description="Judge prompt: plain text, or the tokenizer's chat template (auto: chat "
        "when the tokenizer has one).",
    )
    judge_endpoint: Literal["completions", "chat"] = Field(
        "completions", description="openai: /v1/completions or /v1/chat/completions."
    )
    judge_template: str | None = Field(
        None,
        description="Judge prompt template with slots {problem} {reference} {first} "
        "{second}, or @FILE (default: the built-in one).",
    )
    judge_logprob_token_ids: bool = Field(
        True,
        description="openai: ask for the verdict tokens' log-probabilities by id (vLLM's "
        "logprob_token_ids) when the tokenizer is known; else top-k.",
    )
    judge_top_logprobs: int = Field(
        20, ge=1, description="LLM judge: k of the top-k log-probabilities fallback."
    )
    judge_max_concurrency: int = Field(
        64,
        ge=1,
        description="openai, sglang: most requests in flight to the model server; the "
        "batches in flight share them (max_batch is capped at this / judge_batches_in_flight).",
    )
    judge_timeout_s: float = Field(
        60.0,
        gt=0,
        description="LLM judge: seconds one request to the model server may take, or an "
        "in-process engine may work without finishing a prompt (vllm), an engine call of at "
        "most 64 prompts (sglang) or a forward pass (transformers). A judge that owes answers "
        "and gives none for 1.5 x this is taken as hung: its batches fail, and new ones fail "
        "unsent for 1 x this.",
    )
    judge_retries: int = Field(
        2, ge=0, description="openai, sglang: retries of a failed request, with backoff."
    )
    judge_malformed_retries: int = Field(
        2, ge=0, le=10,
        description="LLM judge: times (0 to 10) a prompt whose answer was malformed is asked "
        "again before its comparison fails.",
    )
    judge_engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vllm, sglang (in-process): engine arguments as JSON, e.g. "
        '{"max_model_len": 4096, "gpu_memory_utilization": 0.5}.',
    )
    judge_dtype: str = Field("auto", description="vllm, transformers: weights' dtype.")
    judge_device: str = Field("auto", description="transformers: cpu, cuda, cuda:1, auto.")
    judge_batch_size: int = Field(
        8, ge=1, description="transformers: prompts per forward pass."
    )
    judge_cache_entries: int = Field(
        100_000,
        ge=0,
        description="LLM judge: verdicts cached (LRU, keyed per run); 0 turns the cache off.",
    )
    store: Literal["sqlite", "memory", "redis"] = Field(
        "sqlite",
        description="Where run settings and anchor pools live: sqlite (one node), memory "
        "(lost at exit), redis (shared by replicas).",
    )
    sqlite_path: Path = Field(
        Path("arena-state/arena.sqlite3"), description="SQLite file of the sqlite store."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="The redis store's server (redis://, rediss://)."
    )
    run_idle_ttl_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="A run unused this long (no group, no lookup, no pool write) is deleted "
        "with its anchor pool and metric series; 0 keeps runs for good.",
    )
    max_metric_runs: int = Field(
        300,
        ge=1,
        description="Most runs with Prometheus series (about 23 each); past it, the least "
        "recently active run's series are dropped.",
    )
    # Tenants and transport security.
    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description='API keys per tenant as SHA-256 digests, JSON: {"team-a": ["<64 hex>"]} '
        "(arena-judge hash-key makes one); none: the server is open to anyone who reaches it. "
        "Environment or config file only.",
        json_schema_extra={"env_only": True},
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain: serve gRPC and HTTP over TLS."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    auto_create_runs: bool = Field(
        True, description="Create an unknown run with the default settings on first use."
    )
    max_trace_bytes: int = Field(256 * 1024, gt=0, description="Largest trace accepted (UTF-8).")
    max_request_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest gRPC message or HTTP body accepted (bytes; larger: refused before "
        "it is read). Bodies of callers without a valid key are never read when the server has "
        "keys.",
    )
    max_prompt_bytes: int = Field(
        256 * 1024, gt=0, description="Largest prompt or reference accepted."
    )
    max_traces_per_group: int = Field(1024, ge=2, description="Most traces in one group.")
    max_groups_per_request: int = Field(1024, ge=1, description="Most groups in one request.")
    max_batch: int = Field(
        1024,
        ge=1,
        description="Most comparisons sent to the judge in one batch (for openai and sglang "
        "servers, at most judge_max_concurrency / judge_batches_in_flight: what is sent is then "
        "at the judge, not queued in arrival order).",
    )
    batch_window_ms: float = Field(
        0.0, ge=0, description="How long a round waits for others to join its batch."
    )
    # Sharing the judge between runs.
    scheduler: Literal["fair", "fifo"] = Field(
        "fair",
        description="Order of judge calls: fair (weighted fair queuing by run) or fifo.",
    )
    judge_batches_in_flight: int = Field(
        2,
        ge=1,
        description="Batches at the judge at once (the rest queue, fairly); 1 shares a judge "
        "that serves one batch at a time most fairly, but then one slow batch holds up all.",
    )
    max_groups_in_flight: int = Field(
        4096, ge=1, description="Dead groups being judged at once, all runs; more: refused (429)."
    )
    max_run_groups_in_flight: int = Field(
        1024, ge=1, description="Dead groups of one run being judged at once; more: refused."
    )
    max_run_weight: float = Field(
        8.0, ge=1, le=1e6, description="Largest fair-queuing weight a run may ask for "
        "(the smallest is 0.001)."
    )
    max_budget: int = Field(
        16_384,
        ge=1,
        le=2**31 - 1,
        description="Largest judge-call budget per group a run may ask for, and the cap on a "
        "design's default (round robin in both orders of 128 traces fits).",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, time given to groups in flight."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logging.")
    # Defaults of new runs (a run may override each when it is created).
    design: str = Field("adaptive", description="Default tournament design of new runs.")
    budget: int = Field(0, ge=0, description="Default judge-call budget per group (0: design's).")
    order: str = Field("random", description="Default order policy: random or both.")
    normalisation: str = Field(
        "evidence",
        description="Default strengths-to-advantages mapping: evidence, minmax, zscore, raw.",
    )
    scale: float = Field(1.0, description="Default scale of judge-derived advantages.")
    lam: float = Field(
        1.0, gt=0, description="Default Bradley-Terry prior precision (1e-06 to 1e+06)."
    )
    anchors_per_group: int = Field(
        0, ge=0, description="Default pool anchors per tournament (0: no anchor pool)."
    )
    # Group assembly: samples scored one at a time (POST /v1/openrlhf/{run_id}).
    assembly_group_size: int = Field(
        DEFAULT_GROUP_SIZE,
        ge=2,
        description="Samples per group of the per-sample route (?group_size= overrides).",
    )
    assembly_timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        description="Seconds a group of the per-sample route waits for its samples.",
    )
    assembly_max_timeout_s: float = Field(
        DEFAULT_MAX_TIMEOUT_S,
        gt=0,
        le=24 * 3600,
        description="Longest wait a caller of the per-sample route may ask for (?timeout_s=); "
        "default: OpenRLHF's HTTP timeout.",
    )
    assembly_max_samples: int = Field(
        DEFAULT_MAX_SAMPLES,
        ge=1,
        description="Samples of the per-sample route waiting for their groups, all runs; "
        "more: refused (429).",
    )
    assembly_max_run_samples: int = Field(
        DEFAULT_MAX_RUN_SAMPLES,
        ge=1,
        description="Samples of one run waiting for their groups; more: refused (429).",
    )
    assembly_max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1,
        description="Bytes of text (UTF-8 response, prompt, label, group key) of the "
        "per-sample route's samples waiting for their groups, all runs; more: refused (429). "
        "1 GiB: the whole assembly_max_samples of 16 KiB samples (a ~4k-token response with "
        "its prompt), where the count alone lets samples at the size limits hold 48 GiB.",
    )
    assembly_max_run_bytes: int = Field(
        DEFAULT_MAX_RUN_BYTES,
        ge=1,
        description="Bytes of text of one run's samples waiting for their groups; more: "
        "refused (429). 256 MiB: assembly_max_run_samples of 16 KiB, a quarter of the "
        "server's.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = init_settings().get("config_file") or env_settings().get("config_file")
        if config_file:
            if not Path(config_file).is_file():
                raise ValueError(f"config_file: no such file: {config_file}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("judge_engine_args", mode="before")
    @classmethod
    def _parse_engine_args(cls, value: Any) -> Any:
        if isinstance(value, str):  # a command-line flag
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _check_judge(self) -> ServerSettings:
        from .comparators.prompt import PromptTemplate

        if self.judge_template is not None:
            PromptTemplate.load(self.judge_template)  # a bad template fails at start-up
        needs = {
            "vllm": ("judge_model",),
            "transformers": ("judge_model",),
            "openai": ("judge_base_url", "judge_model"),
        }.get(self.comparator, ())
        if self.comparator == "sglang" and not (self.judge_base_url or self.judge_model):
            needs = ("judge_base_url",)
        for name in needs:
            if not getattr(self, name):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name}: the {self.comparator} judge needs {flag}")
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("not JSON (give {\"tenant\": [\"<sha256 hex>\"]})") from None
        return value

    @model_validator(mode="after")
    def _check_security(self) -> ServerSettings:
        from .transports.tenants import check_api_keys

        check_api_keys(self.api_keys)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file, tls_key_file: give both or neither")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self

    @model_validator(mode="after")
    def _check_assembly(self) -> ServerSettings:
        if self.assembly_timeout_s > self.assembly_max_timeout_s:
            raise ValueError(
                f"assembly_timeout_s: {self.assembly_timeout_s} is more than "
                f"assembly_max_timeout_s ({self.assembly_max_timeout_s})"
            )
        return self

    @model_validator(mode="after")
    def _check_run_defaults(self) -> ServerSettings:
        from .core.validation import check_settings

        check_settings(self.run_defaults(), self.limits())  # fails at start-up, not later
        return self

    def limits(self) -> Limits:
        return Limits(
            max_trace_bytes=self.max_trace_bytes,
            max_traces_per_group=self.max_traces_per_group,
            max_groups_per_request=self.max_groups_per_request,
            max_prompt_bytes=self.max_prompt_bytes,
            max_run_weight=self.max_run_weight,
            max_budget=self.max_budget,
        )

    def assembly_options(self) -> AssemblyOptions:
        return AssemblyOptions(
            group_size=self.assembly_group_size, timeout_s=self.assembly_timeout_s,
            max_timeout_s=self.assembly_max_timeout_s, max_samples=self.assembly_max_samples,
            max_run_samples=self.assembly_max_run_samples, max_bytes=self.assembly_max_bytes,
            max_run_bytes=self.assembly_max_run_bytes,
        )

    def run_defaults(self) -> RunSettings:
        return RunSettings(
            run_id="default",
            design=self.design,
            budget=self.budget,
            order=self.order,
            normalisation=self.normalisation,
            scale=self.scale,
            lam=self.lam,
            anchors_per_group=self.anchors_per_group,
        )


def env_only(name: str) -> bool:
    """True for options read from the environment (or the config file) only: secrets."""
    extra = ServerSettings.model_fields[name].json_schema_extra
    return bool(isinstance(extra, dict) and extra.get("env_only"))


def options_table() -> str:
    """A Markdown table of every option: name, environment variable, default, meaning."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in ServerSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        flag = "(environment only)" if env_only(name) else f"`--{name.replace('_', '-')}`"
        rows.append(
            f"| {flag} | `ARENA_{name.upper()}` | `{default}` | {field.description} |"
        )
    return "\n".join(rows)


__all__ = ["ServerSettings", "options_table"]
