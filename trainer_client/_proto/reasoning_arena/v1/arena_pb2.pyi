from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Trace(_message.Message):
    __slots__ = ("text", "reward")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    text: str
    reward: float
    def __init__(self, text: _Optional[str] = ..., reward: _Optional[float] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("group_id", "prompt_id", "prompt", "reference", "traces", "step", "request_id", "texts", "rewards")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    TRACES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    prompt_id: str
    prompt: str
    reference: str
    traces: _containers.RepeatedCompositeFieldContainer[Trace]
    step: int
    request_id: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, group_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., reference: _Optional[str] = ..., traces: _Optional[_Iterable[_Union[Trace, _Mapping]]] = ..., step: _Optional[int] = ..., request_id: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., rewards: _Optional[_Iterable[float]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("run_id", "groups")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, run_id: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GroupResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GroupResult, _Mapping]]] = ...) -> None: ...

class RankStreamRequest(_message.Message):
    __slots__ = ("run_id", "group")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group: Group
    def __init__(self, run_id: _Optional[str] = ..., group: _Optional[_Union[Group, _Mapping]] = ...) -> None: ...

class GroupResult(_message.Message):
    __slots__ = ("group_id", "advantages", "routed", "strengths", "stderr", "judge_calls", "rounds", "anchors_used", "status", "error", "latency_ms", "retry_after_s", "tied", "comparisons", "cached_comparisons", "judge_requests")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGES_FIELD_NUMBER: _ClassVar[int]
    ROUTED_FIELD_NUMBER: _ClassVar[int]
    STRENGTHS_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    JUDGE_CALLS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_USED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    TIED_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    CACHED_COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    advantages: _containers.RepeatedScalarFieldContainer[float]
    routed: bool
    strengths: _containers.RepeatedScalarFieldContainer[float]
    stderr: _containers.RepeatedScalarFieldContainer[float]
    judge_calls: int
    rounds: int
    anchors_used: int
    status: str
    error: str
    latency_ms: float
    retry_after_s: float
    tied: bool
    comparisons: int
    cached_comparisons: int
    judge_requests: int
    def __init__(self, group_id: _Optional[str] = ..., advantages: _Optional[_Iterable[float]] = ..., routed: _Optional[bool] = ..., strengths: _Optional[_Iterable[float]] = ..., stderr: _Optional[_Iterable[float]] = ..., judge_calls: _Optional[int] = ..., rounds: _Optional[int] = ..., anchors_used: _Optional[int] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., latency_ms: _Optional[float] = ..., retry_after_s: _Optional[float] = ..., tied: _Optional[bool] = ..., comparisons: _Optional[int] = ..., cached_comparisons: _Optional[int] = ..., judge_requests: _Optional[int] = ...) -> None: ...

class RunSettings(_message.Message):
    __slots__ = ("run_id", "design", "budget", "order", "normalisation", "scale", "lam", "dead_eps", "divide_by_std", "anchors_per_group", "anchor_mode", "pool_per_prompt", "pool_per_run", "pool_max_age", "judge_template", "weight", "max_calls_in_flight", "isolate_prefix_cache", "min_tau_gain")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DESIGN_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    NORMALISATION_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    DEAD_EPS_FIELD_NUMBER: _ClassVar[int]
    DIVIDE_BY_STD_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_PER_GROUP_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_MODE_FIELD_NUMBER: _ClassVar[int]
    POOL_PER_PROMPT_FIELD_NUMBER: _ClassVar[int]
    POOL_PER_RUN_FIELD_NUMBER: _ClassVar[int]
    POOL_MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_PREFIX_CACHE_FIELD_NUMBER: _ClassVar[int]
    MIN_TAU_GAIN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    design: str
    budget: int
    order: str
    normalisation: str
    scale: float
    lam: float
    dead_eps: float
    divide_by_std: bool
    anchors_per_group: int
    anchor_mode: str
    pool_per_prompt: int
    pool_per_run: int
    pool_max_age: int
    judge_template: str
    weight: float
    max_calls_in_flight: int
    isolate_prefix_cache: bool
    min_tau_gain: float
    def __init__(self, run_id: _Optional[str] = ..., design: _Optional[str] = ..., budget: _Optional[int] = ..., order: _Optional[str] = ..., normalisation: _Optional[str] = ..., scale: _Optional[float] = ..., lam: _Optional[float] = ..., dead_eps: _Optional[float] = ..., divide_by_std: _Optional[bool] = ..., anchors_per_group: _Optional[int] = ..., anchor_mode: _Optional[str] = ..., pool_per_prompt: _Optional[int] = ..., pool_per_run: _Optional[int] = ..., pool_max_age: _Optional[int] = ..., judge_template: _Optional[str] = ..., weight: _Optional[float] = ..., max_calls_in_flight: _Optional[int] = ..., isolate_prefix_cache: _Optional[bool] = ..., min_tau_gain: _Optional[float] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: RunSettings
    def __init__(self, settings: _Optional[_Union[RunSettings, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class DeleteRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class DeleteRunResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class RunStats(_message.Message):
    __slots__ = ("run_id", "groups", "dead_groups", "dead_fraction", "judged", "judge_failed", "refused", "judge_calls", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "groups_in_flight", "pool_prompts", "pool_anchors", "tied", "unread_verdicts", "comparisons", "cached_comparisons", "judge_requests")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEAD_GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEAD_FRACTION_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FAILED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_CALLS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P90_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    POOL_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    POOL_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    TIED_FIELD_NUMBER: _ClassVar[int]
    UNREAD_VERDICTS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    CACHED_COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    groups: int
    dead_groups: int
    dead_fraction: float
    judged: int
    judge_failed: int
    refused: int
    judge_calls: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    groups_in_flight: int
    pool_prompts: int
    pool_anchors: int
    tied: int
    unread_verdicts: int
    comparisons: int
    cached_comparisons: int
    judge_requests: int
    def __init__(self, run_id: _Optional[str] = ..., groups: _Optional[int] = ..., dead_groups: _Optional[int] = ..., dead_fraction: _Optional[float] = ..., judged: _Optional[int] = ..., judge_failed: _Optional[int] = ..., refused: _Optional[int] = ..., judge_calls: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p90_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., groups_in_flight: _Optional[int] = ..., pool_prompts: _Optional[int] = ..., pool_anchors: _Optional[int] = ..., tied: _Optional[int] = ..., unread_verdicts: _Optional[int] = ..., comparisons: _Optional[int] = ..., cached_comparisons: _Optional[int] = ..., judge_requests: _Optional[int] = ...) -> None: ...
