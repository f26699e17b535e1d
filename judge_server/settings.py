"""Every option of the judge server, in one place.

Values come, highest priority first, from command-line flags, environment variables
(``ARENA_`` + the option's name in capitals, e.g. ``ARENA_HTTP_PORT=9000``), a TOML config file
(``arena-judge serve --config FILE`` or ``ARENA_CONFIG_FILE``), and the defaults below.
``arena-judge config`` prints the table of options with their defaults (it is in the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from trainer_client.types import RunSettings

from .assembly import DEFAULT_GROUP_SIZE, DEFAULT_TIMEOUT_S, AssemblyOptions
from .validation import Limits


class ServerSettings(BaseSettings):
    """Options of ``arena-judge serve``."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", extra="forbid")

    config_file: Path | None = Field(None, description="TOML file with any of these options.")
    host: str = Field("0.0.0.0", description="Address both transports listen on.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one).")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: pick a free one).")
    comparator: Literal["builtin", "simulated", "instant"] = Field(
        "builtin",
        description="The judge: builtin (embedded rule-based judge, no model), simulated "
        "(latent strengths read from the traces, for tests), instant (p = 0.5, for load tests).",
    )
    store: Literal["sqlite", "memory"] = Field(
        "sqlite", description="Where run settings and anchor pools live."
    )
    sqlite_path: Path = Field(
        Path("arena-state/arena.sqlite3"), description="SQLite file of the sqlite store."
    )
    auto_create_runs: bool = Field(
        True, description="Create an unknown run with the default settings on first use."
    )
    max_trace_bytes: int = Field(256 * 1024, gt=0, description="Largest trace accepted (UTF-8).")
    max_prompt_bytes: int = Field(
        256 * 1024, gt=0, description="Largest prompt or reference accepted."
    )
    max_traces_per_group: int = Field(1024, ge=2, description="Most traces in one group.")
    max_groups_per_request: int = Field(1024, ge=1, description="Most groups in one request.")
    max_batch: int = Field(
        1024, ge=1, description="Most comparisons sent to the judge in one batch."
    )
    batch_window_ms: float = Field(
        0.0, ge=0, description="How long a round waits for others to join its batch."
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, time given to groups in flight."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logging.")
    # Defaults of new runs (a run may override each when it is created).
    design: str = Field("adaptive", description="Default tournament design of new runs.")
    budget: int = Field(0, ge=0, description="Default judge-call budget per group (0: design's).")
    order: str = Field("random", description="Default order policy: random or both.")
    normalisation: str = Field("minmax", description="Default strengths-to-advantages mapping.")
    scale: float = Field(1.0, description="Default scale of judge-derived advantages.")
    lam: float = Field(1.0, gt=0, description="Default Bradley-Terry prior precision.")
    anchors_per_group: int = Field(3, ge=0, description="Default pool anchors per tournament.")
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

    @model_validator(mode="after")
    def _check_run_defaults(self) -> ServerSettings:
        from .validation import check_settings

        check_settings(self.run_defaults())  # a bad default design fails at start-up, not later
        return self

    def limits(self) -> Limits:
        return Limits(
            max_trace_bytes=self.max_trace_bytes,
            max_traces_per_group=self.max_traces_per_group,
            max_groups_per_request=self.max_groups_per_request,
            max_prompt_bytes=self.max_prompt_bytes,
        )

    def assembly_options(self) -> AssemblyOptions:
        return AssemblyOptions(
            group_size=self.assembly_group_size, timeout_s=self.assembly_timeout_s
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


def options_table() -> str:
    """A Markdown table of every option: name, environment variable, default, meaning."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in ServerSettings.model_fields.items():
        default = field.default
        rows.append(
            f"| `--{name.replace('_', '-')}` | `ARENA_{name.upper()}` | `{default}` "
            f"| {field.description} |"
        )
    return "\n".join(rows)


__all__ = ["ServerSettings", "options_table"]
