"""Checks on what clients send: every failure names the field at fault.

The transports turn wire groups into :mod:`trainer_client.types` objects with one function,
:func:`group_from_wire` (which checks only the encoding), and the service calls these checks
once, before it accepts anything, so both transports (and in-process callers) refuse the same
input with the same message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from trainer_client import MAX_ABS_REWARD
from trainer_client.protocol import Group, RunSettings, Trace

from ..arena.advantages import NORMALISATIONS
from ..arena.bradley_terry import MAX_LAM, MIN_LAM
from ..arena.tournaments import DESIGNS, ORDERS
from ..errors import InvalidRequest
from .scheduling import MIN_WEIGHT

MAX_ID_CHARS = 256
MAX_TEMPLATE_CHARS = 64 * 1024
INT32_MAX = 2**31 - 1  # the proto's int32 fields: a larger value could not be sent back
MIN_RUN_WEIGHT = MIN_WEIGHT  # the fair queue's (a denormal weight made a finish tag infinite)
MAX_SCALE = 1e6  # |scale|: judge advantages stay far from overflow (|a| <= scale under evidence)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits on requests (configured in :mod:`judge_server.settings`)."""

    max_trace_bytes: int = 256 * 1024
    max_traces_per_group: int = 1024
    max_groups_per_request: int = 1024
    max_prompt_bytes: int = 256 * 1024
    max_run_weight: float = 8.0
    max_budget: int = 16_384


def _utf8_size(text: str, field: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequest(field, f"invalid UTF-8 at character {exc.start}") from None


def check_id(value: str, field: str, *, required: bool = True) -> None:
    if required and not value:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(field, f"must be at most {MAX_ID_CHARS} characters")
    _utf8_size(value, field)


def check_group(group: Group, limits: Limits, field: str = "group") -> None:
    """Raise :class:`InvalidRequest` naming the first bad field of ``group``."""
    check_id(group.group_id, f"{field}.group_id")
    check_id(group.prompt_id, f"{field}.prompt_id", required=False)
    check_id(group.request_id, f"{field}.request_id", required=False)
    if _utf8_size(group.prompt, f"{field}.prompt") > limits.max_prompt_bytes:
        raise InvalidRequest(f"{field}.prompt", f"longer than {limits.max_prompt_bytes} bytes")
    if group.reference is not None:
        size = _utf8_size(group.reference, f"{field}.reference")
        if size > limits.max_prompt_bytes:
            raise InvalidRequest(
                f"{field}.reference", f"longer than {limits.max_prompt_bytes} bytes"
            )
    n = len(group.traces)
    if n == 0:
        raise InvalidRequest(f"{field}.traces", "the group is empty")
    if n == 1:
        raise InvalidRequest(f"{field}.traces", "a group needs at least 2 traces, got 1")
    if n > limits.max_traces_per_group:
        raise InvalidRequest(
            f"{field}.traces", f"{n} traces, more than the limit of {limits.max_traces_per_group}"
        )
    for i, trace in enumerate(group.traces):
        if not math.isfinite(trace.reward):
            raise InvalidRequest(
                f"{field}.traces[{i}].reward", f"must be finite, got {trace.reward}"
            )
        if abs(trace.reward) > MAX_ABS_REWARD:  # the client's bound: advantages stay finite
            raise InvalidRequest(
                f"{field}.traces[{i}].reward",
                f"must be within +-{MAX_ABS_REWARD:g}, got {trace.reward:g}",
            )
        size = _utf8_size(trace.text, f"{field}.traces[{i}].text")
        if size > limits.max_trace_bytes:
            raise InvalidRequest(
                f"{field}.traces[{i}].text",
                f"{size} bytes, more than the limit of {limits.max_trace_bytes}",
            )
    if group.step is not None and group.step < 0:
        raise InvalidRequest(f"{field}.step", f"must be >= 0, got {group.step}")


def check_groups(groups: list[Group], limits: Limits) -> None:
    if not groups:
        raise InvalidRequest("groups", "no groups given")
    if len(groups) > limits.max_groups_per_request:
        raise InvalidRequest(
            "groups",
            f"{len(groups)} groups, more than the limit of {limits.max_groups_per_request}",
        )
    seen: set[str] = set()
    for k, group in enumerate(groups):
        check_group(group, limits, f"groups[{k}]")
        if group.group_id in seen:
            raise InvalidRequest(f"groups[{k}].group_id", f"duplicate id {group.group_id!r}")
        seen.add(group.group_id)


class WireTrace(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def reward(self) -> float: ...


class WireGroup(Protocol):
    """A group as it comes in: the proto's ``Group`` or the HTTP body's ``GroupIn`` (the same
    field names)."""

    @property
    def group_id(self) -> str: ...
    @property
    def prompt_id(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def traces(self) -> Sequence[WireTrace] | None: ...
    @property
    def texts(self) -> Sequence[str] | None: ...
    @property
    def rewards(self) -> Sequence[float] | None: ...


def group_from_wire(
    message: WireGroup, field: str, *, reference: str | None, step: int | None
) -> Group:
    """The :class:`Group` of a wire group, for both transports: its traces come as rows
    (``traces``) or as the columns ``texts`` + ``rewards`` (what the trainer client sends),
    never both, and the columns must match in length. ``reference`` and ``step`` are passed
    by the caller (their absence is spelt differently in proto and JSON). Only the encoding is
    checked here: the contents are checked once, by the service (:func:`check_group`)."""
    texts, rewards = list(message.texts or ()), list(message.rewards or ())
    if message.traces and (texts or rewards):
        raise InvalidRequest(f"{field}.texts", "give either traces or texts and rewards, not both")
    if len(texts) != len(rewards):
        raise InvalidRequest(
            f"{field}.rewards", f"{len(rewards)} rewards for {len(texts)} texts: lengths differ"
        )
    if texts:
        traces = tuple(Trace(text=t, reward=float(r)) for t, r in zip(texts, rewards))
    else:
        traces = tuple(Trace(text=t.text, reward=t.reward) for t in message.traces or ())
    return Group(
        group_id=message.group_id,
        traces=traces,
        prompt_id=message.prompt_id,
        prompt=message.prompt,
        reference=reference,
        step=step,
        request_id=message.request_id,
    )


def check_settings(settings: RunSettings, limits: Limits | None = None) -> None:
    """Raise :class:`InvalidRequest` naming the first bad field of ``settings``."""
    limits = limits or Limits()
    f = "settings"
    check_id(settings.run_id, f"{f}.run_id")
    if settings.design not in DESIGNS:
        raise InvalidRequest(f"{f}.design", f"must be one of {sorted(DESIGNS)}")
    if settings.order not in ORDERS:
        raise InvalidRequest(f"{f}.order", f"must be one of {list(ORDERS)}")
    if settings.normalisation not in NORMALISATIONS:
        raise InvalidRequest(f"{f}.normalisation", f"must be one of {list(NORMALISATIONS)}")
    if settings.anchor_mode not in ("prior", "fixed"):
        raise InvalidRequest(f"{f}.anchor_mode", "must be 'prior' or 'fixed'")
    for name in ("scale", "lam", "dead_eps", "min_tau_gain"):
        value = getattr(settings, name)
        if not math.isfinite(value):
            raise InvalidRequest(f"{f}.{name}", f"must be finite, got {value}")
    if not MIN_LAM <= settings.lam <= MAX_LAM:  # the fitter's range: a tiny lam is singular
        raise InvalidRequest(
            f"{f}.lam", f"must be in [{MIN_LAM:g}, {MAX_LAM:g}], got {settings.lam}"
        )
    if abs(settings.scale) > MAX_SCALE:
        raise InvalidRequest(f"{f}.scale", f"must be within +-{MAX_SCALE:g}, got {settings.scale}")
    if len(settings.judge_template) > MAX_TEMPLATE_CHARS:
        raise InvalidRequest(
            f"{f}.judge_template", f"longer than {MAX_TEMPLATE_CHARS} characters"
        )
    if not 0 <= settings.min_tau_gain <= 1:
        raise InvalidRequest(
            f"{f}.min_tau_gain", f"must be in [0, 1], got {settings.min_tau_gain}"
        )
    if settings.min_tau_gain and not DESIGNS[settings.design].stops_early:
        raise InvalidRequest(
            f"{f}.min_tau_gain", f"the {settings.design} design has no early stop: leave it 0"
        )
    if settings.dead_eps < 0:
        raise InvalidRequest(f"{f}.dead_eps", f"must be >= 0, got {settings.dead_eps}")
    # the proto's fields are int32 (a larger value stored over HTTP could not be read back
    # over gRPC); the budget and the anchors also bound a group's work
    highest = {
        "budget": (limits.max_budget, "the server's max_budget"),
        "anchors_per_group": (limits.max_traces_per_group, "the server's max_traces_per_group"),
    }
    for name in ("budget", "anchors_per_group", "pool_per_prompt", "pool_per_run", "pool_max_age",
                 "max_calls_in_flight"):
        value = getattr(settings, name)
        if value < 0:
            raise InvalidRequest(f"{f}.{name}", f"must be >= 0, got {value}")
        most, what = highest.get(name, (INT32_MAX, "2**31 - 1"))
        if value > most:
            raise InvalidRequest(f"{f}.{name}", f"must be at most {what} ({most}), got {value}")
    if not (MIN_RUN_WEIGHT <= settings.weight <= limits.max_run_weight):  # also refuses nan
        raise InvalidRequest(
            f"{f}.weight",
            f"must be between {MIN_RUN_WEIGHT:g} and the server's max_run_weight "
            f"({limits.max_run_weight:g}), got {settings.weight}",
        )


__all__ = [
    "Limits", "WireGroup", "check_group", "check_groups", "check_id", "check_settings",
    "group_from_wire",
]
