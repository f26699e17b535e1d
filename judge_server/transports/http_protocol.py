"""The HTTP API's request and response bodies (pydantic), importable by clients.

Every route and its bodies (the OpenAPI page at ``/docs`` shows the same):

    POST   /v1/rank            RankRequest -> GroupResultOut (for "group") or RankResponse
                               (for "groups", results in the order of the groups)
    POST   /v1/runs            CreateRunRequest -> RunSettingsOut (201; 409 if the run exists)
    GET    /v1/runs            -> RunList
    GET    /v1/runs/{run_id}   -> RunSettingsOut (404 if none)
    DELETE /v1/runs/{run_id}   -> DeleteRunResponse
    GET    /v1/runs/{run_id}/stats  -> RunStatsOut
    GET    /v1/stats           -> ServerStatsOut (every run the caller may see)
    GET    /                   the status page (HTML; the figures of /v1/stats)
    GET    /healthz, /readyz   -> Status (readyz: 503 when the judge is down or the server drains)
    GET    /metrics            Prometheus text
    POST   /v1/openrlhf/{run_id}[?group_size=8&timeout_s=120]
                               OpenRLHFRewardRequest -> OpenRLHFRewardResponse: samples scored
                               one at a time, judged as groups
                               (:mod:`judge_server.transports.assembly`)

Every error, whatever its status, has one body, :class:`ErrorBody`::

    {"error": {"code": "invalid_argument", "field": "group.traces[2].reward",
               "message": "group.traces[2].reward: must be finite, got nan"}}

``field`` is the path of the field at fault (as the gRPC API's messages name it), or null;
``message`` starts with it. Rewards are JSON numbers; Python's ``NaN`` and ``Infinity`` literals
parse but are refused as not finite. These models hold only the wire format: the server
checks the contents (sizes, counts, finiteness) and refuses bad values with a 400.

The bodies of run settings and group results are derived from the dataclasses of
:mod:`trainer_client.types` (:func:`fields_of`): a new run setting is one field of
:class:`~trainer_client.types.RunSettings` (its description a line of the class's docstring)
and of the proto, and these bodies follow.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from trainer_client.protocol import GroupResult, RunSettings

ErrorCode = Literal[
    "invalid_argument",
    "unauthenticated",
    "permission_denied",
    "resource_exhausted",
    "not_found",
    "already_exists",
    "unavailable",
    "internal",
    "method_not_allowed",
    "too_large",
    "error",
]


def setting_descriptions() -> dict[str, str]:
    """Each run setting's description, from the table in :class:`RunSettings`' docstring."""
    found: dict[str, str] = {"run_id": "The run's id."}
    name = None
    for line in inspect.cleandoc(RunSettings.__doc__ or "").splitlines():
        entry = re.match(r"(\w+)\s+(\S.*)", line)
        if entry and entry.group(1) in RunSettings.__dataclass_fields__:
            name = entry.group(1)
            found[name] = entry.group(2)
        elif name is not None and line.startswith(" "):
            found[name] += " " + line.strip()
        else:
            name = None
    return found


def fields_of(
    cls: type, descriptions: dict[str, str],
    given: Literal["defaults", "required", "optional"] = "defaults",
) -> dict[str, Any]:
    """``create_model`` field definitions for the dataclass ``cls``: its fields and types
    (tuples as lists), with ``given``: ``"defaults"``, the dataclass's defaults; ``"required"``,
    none; ``"optional"``, a field that has a default may be left out or null (None)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if typing.get_origin(kind) is tuple:
            kind = list[typing.get_args(kind)[0]]  # type: ignore[misc]
        description = descriptions.get(f.name)
        if f.default is dataclasses.MISSING or given == "required":
            fields[f.name] = (kind, Field(description=description))
        elif given == "optional":
            fields[f.name] = (kind | None, Field(None, description=description))
        else:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            fields[f.name] = (kind, Field(default, description=description))
    return fields


class TraceIn(BaseModel):
    """One sampled reasoning trace and the verifier's reward for it."""

    text: str = Field(description="The trace (at most the server's max_trace_bytes of UTF-8).")
    reward: float = Field(description="The verifier's reward; must be finite.")


class GroupIn(BaseModel):
    """The traces sampled for one prompt: ``traces``, or the columns ``texts`` + ``rewards``."""

    group_id: str = Field(description="Names the group in its result.")
    prompt_id: str = Field("", description="Keys the anchor pool across steps; default group_id.")
    prompt: str = Field("", description="The problem shown to the judge.")
    reference: str | None = Field(None, description="A reference answer shown to the judge.")
    traces: list[TraceIn] | None = Field(None, description="At least two traces.")
    texts: list[str] | None = Field(None, description="Columnar alternative to traces.")
    rewards: list[float] | None = Field(None, description="rewards[i] is texts[i]'s reward.")
    step: int | None = Field(None, description="The trainer's step; anchors remember it.")
    request_id: str = Field("", description="A client-made id that makes a retry idempotent.")


class RankRequest(BaseModel):
    """Groups of one run: exactly one of ``group`` and ``groups``."""

    run_id: str = Field(description="The run (created with defaults on first use if allowed).")
    group: GroupIn | None = Field(None, description="One group; the answer is its result.")
    groups: list[GroupIn] | None = Field(None, description="Several groups; answer: results.")


RESULT_DESCRIPTIONS = {
    "advantages": "One advantage per trace.",
    "routed": "Whether the group was dead and went to the judge.",
    "strengths": "Bradley-Terry strengths.",
    "stderr": "Their standard errors.",
    "comparisons": "Comparisons the group's tournament needed (judge_failed: those asked up "
    "to the failure): cached_comparisons + judge_requests without retries.",
    "cached_comparisons": "Of which the verdict cache answered (no request to the judge).",
    "judge_requests": "Requests the judge received for them, retries included.",
    "status": '"ok"; "judge_failed" (advantages: the no-judge ones); "overloaded" (refused '
    "for load: send again after retry_after_s).",
    "tied": 'status "ok", but the judge told the traces apart in nothing: all advantages are '
    "zero (the dead group was not rescued).",
}


class GroupResultOut(  # a base made of GroupResult's fields
    create_model(  # type: ignore[misc]
        "GroupResultFields",
        **fields_of(GroupResult, RESULT_DESCRIPTIONS),
        judge_calls=(int, Field(0, description="Deprecated: the same count as comparisons.")),
    )
):
    """The judge's answer for one group (see :class:`trainer_client.types.GroupResult`)."""


class RankResponse(BaseModel):
    results: list[GroupResultOut] = Field(description="One per group, in the request's order.")


class RunSettingsIn(  # a base made of RunSettings' fields
    create_model(  # type: ignore[misc]
        "RunSettingsFieldsIn", **fields_of(RunSettings, setting_descriptions(), "optional")
    )
):
    """A new run's settings; a field left out (or null) takes the server's default."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not ignored


class CreateRunRequest(BaseModel):
    settings: RunSettingsIn


class RunSettingsOut(  # a base made of RunSettings' fields
    create_model(  # type: ignore[misc]
        "RunSettingsFieldsOut", **fields_of(RunSettings, setting_descriptions(), "required")
    )
):
    """A run's settings (see :class:`trainer_client.types.RunSettings`)."""


class RunList(BaseModel):
    runs: list[RunSettingsOut]


class DeleteRunResponse(BaseModel):
    deleted: bool = Field(description="Whether a run was deleted.")


class Status(BaseModel):
    status: str


class RunStatsOut(BaseModel):
    """A run's figures on the replica that answers (see ``RunStats`` in the proto)."""

    run_id: str
    groups: int = Field(description="Groups answered.")
    dead_groups: int = Field(description="Of which dead: routed to the judge.")
    dead_fraction: float
    judged: int = Field(description="Dead groups the judge ranked.")
    judge_failed: int = Field(description="Dead groups that got the fallback advantages.")
    refused: int = Field(description="Groups refused for load (429 / RESOURCE_EXHAUSTED).")
    judge_calls: int = Field(description="Deprecated: the same count as comparisons.")
    comparisons: int = Field(description="What the groups' tournaments needed: cached + requests.")
    cached_comparisons: int = Field(description="Comparisons the verdict cache answered.")
    judge_requests: int = Field(
        description="Requests the judge received for them, retries included."
    )
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    groups_in_flight: int
    pool_prompts: int
    pool_anchors: int
    tied: int = Field(description="Judged groups the judge told apart in nothing (zeros).")
    unread_verdicts: int = Field(
        description="Verdicts that could not be read (taken as no preference)."
    )


class ServerStatsOut(BaseModel):
    """Every visible run's figures and the judge queue's, for ``GET /v1/stats`` and ``/``."""

    runs: list[RunStatsOut]
    queued_calls: int = Field(description="Comparisons waiting for the judge.")
    calls_in_flight: int = Field(description="Comparisons at the judge.")
    groups_in_flight: int
    judge: str = Field(description="The comparator's name.")
    open: bool = Field(description="True when the server has no API keys.")


# -- per-sample rewards (OpenRLHF's remote reward protocol) ---------------------------------


class OpenRLHFRewardRequest(BaseModel):
    """What OpenRLHF POSTs to ``--reward.remote_url``: one sample per request in recent versions.

    ``query[i]`` is prompt + response as the trainer decoded them; the response is ``query[i]``
    minus its ``prompts[i]`` prefix. ``labels[i]`` is the dataset's label (the reference
    answer). ``group_ids`` and ``verifiable_rewards`` are extensions for other trainers (verl's
    reward manager sends both): a group key other than the prompt, and the trainer's own
    verifiable reward instead of the server's answer check.
    """

    query: list[str] = Field(description="Prompt + response, one per sample.")
    prompts: list[str] | None = Field(None, description="The prompt of each sample.")
    labels: list[str | int | float | None] | None = Field(
        None, description="The reference answer of each sample (OpenRLHF --data.label_key)."
    )
    group_ids: list[str] | None = Field(
        None, description="Extension: the group of each sample (default: its prompt)."
    )
    verifiable_rewards: list[float] | None = Field(
        None, description="Extension: each sample's verifiable reward (default: answer check)."
    )


class OpenRLHFRewardResponse(BaseModel):
    """What OpenRLHF reads back: ``rewards`` (the training signal), ``scores`` and logs."""

    rewards: list[float] = Field(
        description="Verifiable reward + the judge's zero-mean value inside dead groups."
    )
    scores: list[float] = Field(description="The verifiable rewards (OpenRLHF: filtering, logs).")
    extra_logs: dict[str, list[float]] = Field(
        description="arena_verifiable, arena_judge (the judge part), arena_judged (1.0 when the "
        "sample's group was dead and judged), arena_group_size (samples ranked together)."
    )


class ErrorDetail(BaseModel):
    code: ErrorCode
    field: str | None = Field(None, description="Path of the field at fault, if one is.")
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


__all__ = [
    "CreateRunRequest",
    "DeleteRunResponse",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "GroupIn",
    "GroupResultOut",
    "OpenRLHFRewardRequest",
    "OpenRLHFRewardResponse",
    "RankRequest",
    "RankResponse",
    "RunList",
    "RunSettingsIn",
    "RunSettingsOut",
    "RunStatsOut",
    "ServerStatsOut",
    "Status",
    "TraceIn",
    "fields_of",
    "setting_descriptions",
]
