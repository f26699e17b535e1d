"""Checks on what clients send: every failure names the field at fault.

The transports turn wire groups into :mod:`trainer_client.types` objects with one function,
:func:`group_from_wire` (which checks only the encoding), and the service calls these checks
once, before it accepts anything, so both transports (and in-process callers) refuse the same
input with the same message.

A run's settings are checked when it is created (:func:`check_settings`); a run stored before a
bound existed (or under a server with lower limits) is brought into range when it is loaded
(:func:`settings_in_range`, from the same table of ranges).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from trainer_client import MAX_ABS_REWARD
from trainer_client.protocol import Group, RunSettings, Trace

from ..arena.advantages import NORMALISATIONS
from ..arena.bradley_terry import MAX_LAM, MIN_LAM
from ..arena.tournament import ANCHOR_MODES
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


@dataclass(frozen=True, slots=True)
class _Range:
    """A numeric setting's accepted values, ``low <= value <= high``, and how to say so."""

    low: float
    high: float
    says: str

    def holds(self, value: object) -> bool:
        """Whether ``value`` is a number in range (NaN and what is no number are not)."""
        return isinstance(value, numbers.Real) and self.low <= cast(float, value) <= self.high

    def nearest(self, value: object, default: float) -> float:
        """The value in range nearest to ``value``; ``default`` for NaN and what is no number."""
        number = cast(float, value)
        if not isinstance(value, numbers.Real) or number != number:
            return default
        return type(default)(min(max(number, self.low), self.high))


def _ranges(limits: Limits) -> dict[str, _Range]:
    """Every numeric run setting's range. The proto's fields are int32 (a larger value stored
    over HTTP could not be read back over gRPC); the budget and the anchors also bound a
    group's work; lam is the fitter's range (a tiny lam is singular); |scale| keeps judge
    advantages far from overflow; a denormal weight made a finish tag infinite."""
    def at_most(most: int, what: str) -> _Range:
        return _Range(0, most, f"must be between 0 and {what} ({most})")

    return {
        "scale": _Range(-MAX_SCALE, MAX_SCALE, f"must be within +-{MAX_SCALE:g}"),
        "lam": _Range(MIN_LAM, MAX_LAM, f"must be in [{MIN_LAM:g}, {MAX_LAM:g}]"),
        "dead_eps": _Range(0.0, sys.float_info.max, "must be finite and >= 0"),
        "min_tau_gain": _Range(0.0, 1.0, "must be in [0, 1]"),
        "budget": at_most(limits.max_budget, "the server's max_budget"),
        "anchors_per_group": at_most(
            limits.max_traces_per_group, "the server's max_traces_per_group"
        ),
        **{name: at_most(INT32_MAX, "2**31 - 1")
           for name in ("pool_per_prompt", "pool_per_run", "pool_max_age",
                        "max_calls_in_flight")},
        "weight": _Range(
            MIN_RUN_WEIGHT, limits.max_run_weight,
            f"must be between {MIN_RUN_WEIGHT:g} and the server's max_run_weight "
            f"({limits.max_run_weight:g})",
        ),
    }


_CHOICES: dict[str, Sequence[str]] = {
    "design": sorted(DESIGNS), "order": ORDERS, "normalisation": NORMALISATIONS,
    "anchor_mode": ANCHOR_MODES,
}


def check_settings(settings: RunSettings, limits: Limits | None = None) -> None:
    """Raise :class:`InvalidRequest` naming the first bad field of ``settings``."""
    limits = limits or Limits()
    f = "settings"
    check_id(settings.run_id, f"{f}.run_id")
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            raise InvalidRequest(f"{f}.{name}", f"must be one of {list(choices)}")
    if len(settings.judge_template) > MAX_TEMPLATE_CHARS:
        raise InvalidRequest(
            f"{f}.judge_template", f"longer than {MAX_TEMPLATE_CHARS} characters"
        )
    for name, accepted in _ranges(limits).items():
        value = getattr(settings, name)
        if not accepted.holds(value):
            raise InvalidRequest(f"{f}.{name}", f"{accepted.says}, got {value}")
    if settings.min_tau_gain and not DESIGNS[settings.design].stops_early:
        raise InvalidRequest(
            f"{f}.min_tau_gain", f"the {settings.design} design has no early stop: leave it 0"
        )


def settings_in_range(
    settings: RunSettings, limits: Limits | None = None
) -> tuple[RunSettings, list[str]]:
    """``settings`` with every value :func:`check_settings` refuses replaced by the nearest it
    accepts, and what was replaced (``"settings.budget: 1099511627776 -> 16384"``): for a run
    stored before the bounds, or under a server with lower limits. A number goes to its bound;
    NaN, what is no number, a name the server does not know and a judge template too long go
    to :class:`RunSettings`' default; a ``min_tau_gain`` without an early stop to 0."""
    limits = limits or Limits()
    default = RunSettings(run_id=settings.run_id)
    fixed: dict[str, Any] = {}
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            fixed[name] = getattr(default, name)
    if len(settings.judge_template) > MAX_TEMPLATE_CHARS:
        fixed["judge_template"] = default.judge_template
    for name, accepted in _ranges(limits).items():
        value = getattr(settings, name)
        if not accepted.holds(value):
            fixed[name] = accepted.nearest(value, getattr(default, name))
    design = fixed.get("design", settings.design)
    if fixed.get("min_tau_gain", settings.min_tau_gain) and not DESIGNS[design].stops_early:
        fixed["min_tau_gain"] = 0.0
    changes = [
        f"settings.{name}: {_shown(getattr(settings, name))} -> {_shown(value)}"
        for name, value in fixed.items()
    ]
    return replace(settings, **fixed), changes


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


__all__ = [
    "Limits", "WireGroup", "check_group", "check_groups", "check_id", "check_settings",
    "group_from_wire", "settings_in_range",
]
