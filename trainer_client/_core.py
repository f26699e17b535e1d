"""Everything the trainer client does that needs no I/O; the clients only send.

:class:`ClientCore` checks a batch of groups, computes the advantages that need no judge
(diverse groups: group-relative; groups of one: zero), gives each dead group a request id, and
returns a :class:`Plan`: the dead groups to send. The client's driver (one, async, in
:mod:`trainer_client.client`) sends them through a transport and reports back to the plan:
each result (:meth:`Plan.record`) and each failed send (:meth:`Plan.fail`). The plan decides
what is retried and when (:meth:`Plan.retry_delay`: bounded retries, exponential backoff with
jitter, the server's retry-after hint, never past the deadline). :meth:`ClientCore.finish`
turns the plan into a :class:`BatchResult`, one outcome per group in input order, with a
fallback for every dead group that got no judged result, and adds it to the client's counters.

Plans are thread-safe: the sync client records results on its event-loop thread and may finish
a plan on the caller's thread when the deadline has passed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .errors import InvalidConfig, InvalidGroup, ServerOverloaded, TransportError
from .types import Group, GroupResult, RunSettings, Trace

logger = logging.getLogger("trainer_client")

DEFAULT_TARGET = "localhost:50051"
TRANSPORTS = ("grpc", "http")
STD_EPS = 1e-4  # TRL's guard against a zero standard deviation (the server uses this one)
MAX_ABS_REWARD = 1e30
"""Largest ``|reward|`` accepted, here and by the server (which imports it). Far beyond any
real reward (a larger one is a bug upstream), and small enough that every advantage stays
finite, ``r - mean`` included (at most ``2e30``, inside even float32's ``3.4e38``), and that
sums of squares stay far from float64's overflow: ``[1.7e308, 1.7e308, 0]`` overflowed into
NaN advantages. Refusing is the only way to keep ``r - mean`` finite for every float; scaling
before subtracting would keep the std-divided advantages finite, not the others."""
MAX_ID_CHARS = 256  # the server's limit on ids
# rank() returns at most this long after its deadline (time to cancel the sends in flight).
DEADLINE_SLACK_S = 0.25

# Why a dead group fell back to zero advantages (GroupOutcome.reason):
#   judge_failed  the server answered, but its judge could not (status "judge_failed")
#   deadline      the deadline passed while waiting for the server
#   unavailable   the server could not be reached or the connection broke (after retries)
#   overloaded    the server refused for load: RESOURCE_EXHAUSTED / 429 (after retries)
#   server_error  the server failed: INTERNAL / 500 (after retries)
#   invalid       the server refused the group (status "invalid", INVALID_ARGUMENT, 400)
#   rejected      the server refused the request: no valid API key, another tenant's run
#                 (UNAUTHENTICATED / PERMISSION_DENIED, 401 / 403)
#   malformed     the server's answer was not a valid result for the group
#   closed        the client was closed while the group was in flight
#   error         an unexpected error in the client (logged with its traceback)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """How the client reaches the judge and what it does when the judge does not answer.

    target        gRPC ``host:port`` of the judge server
    http_url      base URL of its HTTP API (``http://host:8000``); needed for transport "http"
    transport     "grpc" (one stream per batch; the default) or "http" (``POST /v1/rank``)
    run_id        the training run the groups belong to
    run_settings  created on the server on first use when given (an existing run is fine);
                  when ``run_id`` is left at "default", the settings' run id is used
    deadline_s    rank() returns by then (plus at most a quarter second), whatever happens
    retries       sends after the first for groups still without a result (0: no retry)
    backoff_s     wait before the first retry; doubled each retry, jittered, never shorter
                  than the server's retry-after hint
    dead_eps      a group is dead when max(reward) - min(reward) <= dead_eps
    divide_by_std diverse groups get (r - mean) / (std + 1e-4) when True, r - mean when False
    api_key       the judge's API key, sent as a bearer token (default: the environment
                  variable ARENA_API_KEY; none: the server must be open)
    tls           gRPC over TLS: True trusts the system's roots, a path trusts that PEM CA
                  bundle (a private CA); for HTTP, an https:// http_url uses TLS and the path,
                  when given, is the CA bundle
    """

    target: str = DEFAULT_TARGET
    http_url: str | None = None
    transport: str = "grpc"
    run_id: str = "default"
    run_settings: RunSettings | None = None
    deadline_s: float = 60.0
    retries: int = 2
    backoff_s: float = 0.2
    dead_eps: float = 1e-6
    divide_by_std: bool = True
    api_key: str | None = field(default=None, repr=False)
    tls: bool | str = False

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise InvalidConfig("target", "give the gRPC server as host:port")
        if self.transport not in TRANSPORTS:
            raise InvalidConfig("transport", f"must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.http_url is not None and not (
            isinstance(self.http_url, str) and self.http_url.startswith(("http://", "https://"))
        ):
            raise InvalidConfig("http_url", f"must start with http:// or https://, got "
                                            f"{self.http_url!r}")
        if self.transport == "http" and self.http_url is None:
            raise InvalidConfig("http_url", 'transport "http" needs the server\'s http_url')
        if self.run_settings is not None:
            if not isinstance(self.run_settings, RunSettings):
                raise InvalidConfig("run_settings", "must be a trainer_client.RunSettings")
            if self.run_id == "default":
                object.__setattr__(self, "run_id", self.run_settings.run_id)
            elif self.run_settings.run_id != self.run_id:
                raise InvalidConfig(
                    "run_settings.run_id",
                    f"{self.run_settings.run_id!r} is not the config's run_id {self.run_id!r}",
                )
        if not isinstance(self.run_id, str) or not self.run_id or len(self.run_id) > MAX_ID_CHARS:
            raise InvalidConfig("run_id", f"must be a non-empty string of at most {MAX_ID_CHARS} "
                                          "characters")
        for name, low in (("deadline_s", None), ("backoff_s", 0.0), ("dead_eps", 0.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidConfig(name, f"must be a finite number, got {value!r}")
            if (value <= 0) if low is None else (value < low):
                raise InvalidConfig(name, f"must be {'> 0' if low is None else '>= 0'}, "
                                          f"got {value}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise InvalidConfig("retries", f"must be an integer >= 0, got {self.retries!r}")
        if not isinstance(self.divide_by_std, bool):
            raise InvalidConfig("divide_by_std", f"must be True or False, got "
                                                 f"{self.divide_by_std!r}")
        if self.api_key is None:
            object.__setattr__(self, "api_key", os.environ.get("ARENA_API_KEY") or None)
        if self.api_key is not None and (
            not isinstance(self.api_key, str) or not self.api_key.strip()
            or any(c.isspace() for c in self.api_key.strip())
        ):
            raise InvalidConfig("api_key", "must be a non-empty string without spaces")
        if not isinstance(self.tls, (bool, str)) or self.tls == "":
            raise InvalidConfig("tls", "must be True, False or the path of a PEM CA bundle")
        if isinstance(self.tls, str) and not os.path.isfile(self.tls):
            raise InvalidConfig("tls", f"no such file: {self.tls}")


DEFAULT_CONFIG = ClientConfig()


def configure(config: ClientConfig | None, overrides: Mapping[str, Any]) -> ClientConfig:
    """``config`` (or the defaults) with ``overrides`` (ClientConfig fields) applied; the
    values are the caller's keyword arguments, checked by ClientConfig itself."""
    names = {f.name for f in dataclasses.fields(ClientConfig)}
    for name in overrides:
        if name not in names:
            raise InvalidConfig(name, f"not a ClientConfig option (options: {sorted(names)})")
    if config is None:
        return ClientConfig(**overrides)
    if not isinstance(config, ClientConfig):
        raise InvalidConfig("config", f"must be a ClientConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


# -- results -------------------------------------------------------------------------------


# What a group cost the judge, as GroupResult, GroupOutcome and BatchStats name it.
JUDGE_COST = ("comparisons", "cached_comparisons", "judge_requests")


class _JudgeCost(TypedDict):
    comparisons: int
    cached_comparisons: int
    judge_requests: int


def _judge_cost(result: GroupResult | None) -> _JudgeCost:
    """The ``JUDGE_COST`` fields of ``result`` (zeros without one)."""
    if result is None:
        return _JudgeCost(comparisons=0, cached_comparisons=0, judge_requests=0)
    return _JudgeCost(
        comparisons=int(result.comparisons), cached_comparisons=int(result.cached_comparisons),
        judge_requests=int(result.judge_requests),
    )


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """What a group got.

    ``advantages`` has one value per trace, always. ``routed``: the group was dead (all rewards
    equal) and went to the judge. ``judged``: the judge answered it. ``fell_back``: it was
    routed but got no judged result, so its advantages are the zeros it would have had without
    the judge; ``reason`` says why (see the reasons in this module). ``tied``: judged, but the
    judge told the traces apart in nothing, so its advantages are zeros too. ``strengths`` are
    the traces' Bradley-Terry strengths (judged groups only); ``comparisons`` the comparisons
    the server's tournament needed for it (also for a judge failure: those made before it), of
    which ``cached_comparisons`` its verdict cache answered and ``judge_requests`` reached the
    judge (see :class:`~trainer_client.types.GroupResult`; ``judge_calls``: the deprecated name
    of ``comparisons``); ``latency_s`` the time from the batch's start to its outcome;
    ``attempts`` how many times it was sent.
    """

    group_id: str
    advantages: tuple[float, ...]
    routed: bool = False
    judged: bool = False
    tied: bool = False
    fell_back: bool = False
    reason: str = ""
    strengths: tuple[float, ...] = ()
    comparisons: int = 0
    cached_comparisons: int = 0
    judge_requests: int = 0
    latency_s: float = 0.0
    attempts: int = 0

    @property
    def judge_calls(self) -> int:
        """Deprecated: ``comparisons`` (it counted cached comparisons too)."""
        return self.comparisons


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counts for one batch (or, added up, for many); :meth:`as_metrics` to log them."""

    groups: int = 0
    dead: int = 0
    judged: int = 0
    tied: int = 0
    fell_back: int = 0
    comparisons: int = 0
    cached_comparisons: int = 0
    judge_requests: int = 0
    latency_s: float = 0.0
    retries: int = 0
    fallback_reasons: Mapping[str, int] = field(default_factory=dict, hash=False)

    @property
    def judge_calls(self) -> int:
        """Deprecated: ``comparisons`` (it counted cached comparisons too)."""
        return self.comparisons

    @property
    def dead_fraction(self) -> float:
        """Share of the groups that were dead (and went to the judge)."""
        return self.dead / self.groups if self.groups else 0.0

    def as_metrics(self, prefix: str = "arena/") -> dict[str, float]:
        """A flat dict a trainer can log: ``{"arena/dead_fraction": 0.25, ...}``.

        Keys: groups, dead, dead_fraction, judged, tied (judged, but told apart in nothing:
        ``judged - tied`` dead groups were rescued), fell_back, comparisons (the tournaments
        needed), cached_comparisons (the server's verdict cache answered), judge_requests
        (reached the judge), judge_calls (deprecated: comparisons, kept so that charts of it
        go on), latency_s, retries, and ``fell_back/<reason>`` for each reason that occurred.
        """
        metrics = {
            "groups": float(self.groups),
            "dead": float(self.dead),
            "dead_fraction": self.dead_fraction,
            "judged": float(self.judged),
            "tied": float(self.tied),
            "fell_back": float(self.fell_back),
            "comparisons": float(self.comparisons),
            "cached_comparisons": float(self.cached_comparisons),
            "judge_requests": float(self.judge_requests),
            "judge_calls": float(self.comparisons),
            "latency_s": float(self.latency_s),
            "retries": float(self.retries),
        }
        for reason, count in sorted(self.fallback_reasons.items()):
            metrics[f"fell_back/{reason}"] = float(count)
        return {prefix + key: value for key, value in metrics.items()}


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One outcome per group, in the order the groups were given, and the batch's counts."""

    outcomes: list[GroupOutcome]
    stats: BatchStats

    @property
    def advantages(self) -> list[list[float]]:
        """One advantage vector per group, in input order."""
        return [list(o.advantages) for o in self.outcomes]


# -- groups and local advantages -----------------------------------------------------------


def is_dead(rewards: Sequence[float], *, eps: float = 1e-6) -> bool:
    """True when a group goes to the judge: two or more traces, all rewards within ``eps``."""
    return len(rewards) >= 2 and max(rewards) - min(rewards) <= eps


def group_relative(rewards: Sequence[float], *, divide_by_std: bool = True) -> tuple[float, ...]:
    """Standard GRPO advantages ``(r - mean) / (std + 1e-4)`` (population std), or ``r - mean``.

    Pure Python, the one definition: the server's ``judge_server.arena.advantages`` calls it
    (and :func:`is_dead`) on its checked rewards. Raises ``ValueError`` naming
    ``rewards[i]`` for a reward that is not finite or beyond ``+-MAX_ABS_REWARD``: within
    the bound every advantage is finite.
    """
    for i, r in enumerate(rewards):
        if not abs(r) <= MAX_ABS_REWARD:  # also refuses nan
            raise ValueError(f"rewards[{i}]: must be finite and within +-{MAX_ABS_REWARD:g}, "
                             f"got {r}")
    n = len(rewards)
    mean = math.fsum(rewards) / n
    centred = [r - mean for r in rewards]
    if not divide_by_std:
        return tuple(centred)
    std = math.sqrt(math.fsum(c * c for c in centred) / n)
    return tuple(c / (std + STD_EPS) for c in centred)


def _check_id(value: object, field: str, *, required: bool) -> None:
    if not isinstance(value, str):
        raise InvalidGroup(field, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidGroup(field, "must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidGroup(field, f"must be at most {MAX_ID_CHARS} characters")


def _reward(value: object, field: str) -> float:
    if isinstance(value, (str, bytes)):
        raise InvalidGroup(field, f"must be a number, got {type(value).__name__}")
    try:
        reward = float(value)  # type: ignore[arg-type]  # numpy and torch scalars too
    except (TypeError, ValueError):
        raise InvalidGroup(field, f"must be a number, got {type(value).__name__}") from None
    if not math.isfinite(reward):
        raise InvalidGroup(field, f"must be finite, got {reward}")
    if abs(reward) > MAX_ABS_REWARD:
        raise InvalidGroup(field, f"must be within +-{MAX_ABS_REWARD:g}, got {reward:g}")
    return reward


def check_group(group: object, field: str = "group") -> tuple[float, ...]:
    """Raise :class:`InvalidGroup` naming the first bad field of ``group``; its rewards."""
    if not isinstance(group, Group):
        raise InvalidGroup(field, f"must be a trainer_client.Group, got {type(group).__name__}")
    _check_id(group.group_id, f"{field}.group_id", required=True)
    _check_id(group.prompt_id, f"{field}.prompt_id", required=False)
    _check_id(group.request_id, f"{field}.request_id", required=False)
    if not isinstance(group.prompt, str):
        raise InvalidGroup(f"{field}.prompt", "must be a string, got "
                                              f"{type(group.prompt).__name__}")
    if group.reference is not None and not isinstance(group.reference, str):
        raise InvalidGroup(f"{field}.reference", "must be a string or None")
    if group.step is not None and (
        not isinstance(group.step, int) or isinstance(group.step, bool) or group.step < 0
    ):
        raise InvalidGroup(f"{field}.step", f"must be an integer >= 0 or None, got {group.step!r}")
    try:
        traces = list(group.traces)
    except TypeError:
        raise InvalidGroup(f"{field}.traces", "must be a sequence of Trace") from None
    if not traces:
        raise InvalidGroup(f"{field}.traces", "the group is empty")
    rewards = []
    for i, trace in enumerate(traces):
        if not isinstance(trace, Trace):
            raise InvalidGroup(f"{field}.traces[{i}]", f"must be a trainer_client.Trace, got "
                                                       f"{type(trace).__name__}")
        if not isinstance(trace.text, str):
            raise InvalidGroup(f"{field}.traces[{i}].text", f"must be a string, got "
                                                            f"{type(trace.text).__name__}")
        rewards.append(_reward(trace.reward, f"{field}.traces[{i}].reward"))
    return tuple(rewards)


def _check_utf8(group: Group, field: str) -> None:
    """Strings must encode as UTF-8 (no lone surrogates) to be sent."""
    strings = [("group_id", group.group_id), ("prompt_id", group.prompt_id),
               ("prompt", group.prompt), ("request_id", group.request_id)]
    if group.reference is not None:
        strings.append(("reference", group.reference))
    strings += [(f"traces[{i}].text", t.text) for i, t in enumerate(group.traces)]
    for name, text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidGroup(f"{field}.{name}", f"invalid UTF-8 at character {exc.start}"
                               ) from None


def make_group(
    group_id: str,
    texts: Sequence[str],
    rewards: Sequence[float],
    *,
    prompt_id: str = "",
    prompt: str = "",
    reference: str | None = None,
    step: int | None = None,
    request_id: str = "",
) -> Group:
    """A :class:`Group` from columns as trainers hold them: ``texts[i]`` got ``rewards[i]``.

    Raises :class:`InvalidGroup` naming the field (``rewards``, ``rewards[3]``, ``texts[1]``)
    when the lengths differ, a reward is not a finite number or a text is not a string.
    """
    texts, rewards = list(texts), list(rewards)
    if len(texts) != len(rewards):
        raise InvalidGroup("rewards", f"{len(rewards)} rewards for {len(texts)} texts: "
                                      "lengths differ")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidGroup(f"texts[{i}]", f"must be a string, got {type(text).__name__}")
    traces = tuple(
        Trace(text=t, reward=_reward(r, f"rewards[{i}]"))
        for i, (t, r) in enumerate(zip(texts, rewards))
    )
    group = Group(group_id=group_id, traces=traces, prompt_id=prompt_id, prompt=prompt,
                  reference=reference, step=step, request_id=request_id)
    check_group(group, "group")
    return group


# -- a batch in flight ---------------------------------------------------------------------


@dataclass(slots=True)
class _Dead:
    """A dead group of a plan: what is sent, and what it got."""

    index: int
    group: Group  # as sent: with its request id
    outcome: GroupOutcome | None = None
    attempts: int = 0
    refused: ServerOverloaded | None = None  # this attempt: refused for load, send again


def _finite(values: Sequence[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


class Plan:
    """One batch: its local outcomes, and its dead groups until each has an outcome.

    The driver loop (``trainer_client.client._Runner``), without its logging::

        while plan.pending:
            groups = plan.begin_attempt()
            try:
                async for result in transport.rank(run_id, groups, timeout=plan.remaining()):
                    plan.record(result)
                plan.end_attempt()
            except TransportError as exc:
                plan.fail(exc)
            delay = plan.retry_delay()
            if delay is None:
                break
            await asyncio.sleep(delay)

    and around it, the deadline: when it comes, the driver is cancelled and the plan
    :meth:`cut`; :meth:`ClientCore.finish` then gives every group still pending its fallback.
    """

    def __init__(self, config: ClientConfig, outcomes: list[GroupOutcome | None],
                 dead: list[_Dead], started: float) -> None:
        self.config = config
        self.started = started
        self.deadline = started + config.deadline_s
        self._outcomes = outcomes
        self._dead = dead
        self.pending: dict[str, _Dead] = {d.group.group_id: d for d in dead}
        self.attempts = 0  # sends
        self.failures = 0  # failed sends (what the retry budget counts)
        self.last_error: TransportError | None = None
        self.cut_reason: str | None = None
        self._resend_now = False  # the last send named one bad group: send the rest at once
        self.last_message = ""  # why the last group fell back, for the log
        self._lock = threading.Lock()
        self.result: BatchResult | None = None

    def remaining(self, now: float | None = None) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    def begin_attempt(self) -> list[Group]:
        """The groups to send now (those still without an outcome); counts the attempt."""
        with self._lock:
            self.attempts += 1
            self._resend_now = False
            for entry in self.pending.values():
                entry.attempts += 1
                entry.refused = None
            return [entry.group for entry in self.pending.values()]

    def record(self, result: GroupResult) -> None:
        """A result from the server; one for a group not pending is ignored."""
        with self._lock:
            entry = self.pending.get(result.group_id) if self.result is None else None
            if entry is None:
                logger.debug("ignoring a result for group %r: not pending", result.group_id)
                return
            n = len(entry.group.traces)
            if result.status == "overloaded":  # not accepted: stays pending, sent again later
                entry.refused = ServerOverloaded(
                    result.error or "the server is at capacity",
                    retry_after=result.retry_after_s or None,
                )
                return
            if result.status == "ok":
                advantages, strengths = tuple(result.advantages), tuple(result.strengths)
                if len(advantages) != n or not _finite(advantages) or (
                    strengths and (len(strengths) != n or not _finite(strengths))
                ):
                    self._fall_back(
                        entry, "malformed", result=result,
                        message=f"a result of {len(advantages)} advantages (finite: "
                        f"{_finite(advantages)}) for {n} traces",
                    )
                    return
                entry.outcome = GroupOutcome(
                    group_id=result.group_id, advantages=tuple(float(a) for a in advantages),
                    routed=True, judged=True, tied=bool(result.tied),
                    strengths=tuple(float(s) for s in strengths),
                    **_judge_cost(result), latency_s=self._elapsed(), attempts=entry.attempts,
                )
                del self.pending[result.group_id]
                return
            reason = result.status if result.status in ("judge_failed", "invalid") else "malformed"
            self._fall_back(entry, reason, result=result,
                            message=result.error or f"status {result.status!r}")

    def end_attempt(self) -> None:
        """The send ended without error; a group it left without a result is the server's
        fault (it must answer each group), so it falls back as malformed."""
        with self._lock:
            if not self.pending or self.result is not None:
                return
            refused = [e.refused for e in self.pending.values() if e.refused is not None]
            if refused:  # a failed send for these groups: retried within the retry budget
                self.failures += 1
                self.last_error = max(refused, key=lambda e: e.retry_after or 0.0)
                self.last_message = str(self.last_error)
            silent = [e for e in self.pending.values() if e.refused is None]
            if silent:
                message = (f"the server ended the batch without results for "
                           f"{len(silent)} groups")
                for entry in silent:
                    self._fall_back(entry, "malformed", message=message)

    def fail(self, error: TransportError) -> None:
        """A send failed. One that names a group fails only that group (the others are sent
        again at once); any other counts against the retry budget."""
        with self._lock:
            if self.result is not None:
                return
            if error.group_id is not None and error.group_id in self.pending:
                self._fall_back(self.pending[error.group_id], error.reason, message=str(error))
                self._resend_now = True
                return
            self.failures += 1
            self.last_error = error
            self.last_message = str(error)
            if not error.retryable:
                for entry in list(self.pending.values()):
                    self._fall_back(entry, error.reason, message=str(error))

    def retry_delay(self, now: float | None = None) -> float | None:
        """Seconds to wait before sending the pending groups again, or None: no more sends
        (nothing pending, the error is final, the retries are spent, or the wait would reach
        the deadline)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self.pending or self.result is not None or self.cut_reason is not None:
                return None
            if self._resend_now:
                return 0.0
            error = self.last_error
            if error is None or not error.retryable or self.failures > self.config.retries:
                return None
            delay = self.config.backoff_s * 2 ** (self.failures - 1) * (0.5 + random.random() / 2)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if now + delay >= self.deadline:
                return None
            logger.debug("retrying %d groups in %.3f s after %s", len(self.pending), delay, error)
            return delay

    def cut(self, reason: str) -> None:
        """Stop waiting (the deadline passed, or the client closes): pending groups will fall
        back with ``reason``."""
        with self._lock:
            if self.cut_reason is None:
                self.cut_reason = reason

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _fall_back(self, entry: _Dead, reason: str, *, result: GroupResult | None = None,
                   message: str = "") -> None:
        """``entry`` gets the zeros it would have had without the judge; ``result``: the
        server's result, whose judge cost the outcome keeps."""
        logger.debug("group %r falls back (%s): %s", entry.group.group_id, reason, message)
        if message:
            self.last_message = message
        entry.outcome = GroupOutcome(
            group_id=entry.group.group_id, advantages=(0.0,) * len(entry.group.traces),
            routed=True, fell_back=True, reason=reason,
            **_judge_cost(result),
            latency_s=self._elapsed(), attempts=entry.attempts,
        )
        self.pending.pop(entry.group.group_id, None)


# -- the core ------------------------------------------------------------------------------


class ClientCore:
    """Planning, local advantages, request ids, fallbacks and counters for one client."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.run_ready = config.run_settings is None  # CreateRun still to be sent?
        self._lock = threading.Lock()
        self._totals = Counter[str]()
        self._latency_s = 0.0

    def plan(self, groups: Sequence[Group], *, one: bool = False) -> Plan:
        """Check every group (raising :class:`InvalidGroup` before anything is sent), compute
        the advantages that need no judge, and give each dead group its request id.

        ``one``: ``groups`` holds the single group of ``rank_group``; errors name ``group``.
        """
        started = time.monotonic()
        if isinstance(groups, Group):
            raise InvalidGroup("groups", "give a sequence of groups (rank_group for one)")
        try:
            groups = list(groups)
        except TypeError:
            raise InvalidGroup("groups", "give a sequence of groups") from None
        config = self.config
        outcomes: list[GroupOutcome | None] = []
        dead: list[_Dead] = []
        seen: set[str] = set()
        for k, group in enumerate(groups):
            field = "group" if one else f"groups[{k}]"
            rewards = check_group(group, field)
            if group.group_id in seen:
                raise InvalidGroup(f"{field}.group_id", f"duplicate id {group.group_id!r}")
            seen.add(group.group_id)
            if len(rewards) == 1:
                outcomes.append(GroupOutcome(group_id=group.group_id, advantages=(0.0,)))
            elif not is_dead(rewards, eps=config.dead_eps):
                advantages = group_relative(rewards, divide_by_std=config.divide_by_std)
                outcomes.append(GroupOutcome(group_id=group.group_id, advantages=advantages))
            else:
                _check_utf8(group, field)
                sent = dataclasses.replace(
                    group,
                    traces=tuple(Trace(text=t.text, reward=r)
                                 for t, r in zip(group.traces, rewards)),
                    request_id=group.request_id or uuid.uuid4().hex,
                )
                dead.append(_Dead(index=k, group=sent))
                outcomes.append(None)
        return Plan(config, outcomes, dead, started)

    def finish(self, plan: Plan) -> BatchResult:
        """The plan's result (the same on a second call): pending groups fall back with the
        reason the plan was cut for, else the last send's error, else "deadline"."""
        with plan._lock:
            if plan.result is not None:
                return plan.result
            reason = plan.cut_reason or (
                plan.last_error.reason if plan.last_error is not None else "deadline"
            )
            for entry in list(plan.pending.values()):
                plan._fall_back(entry, reason)
            outcomes = list(plan._outcomes)
            for entry in plan._dead:
                outcomes[entry.index] = entry.outcome
            done: list[GroupOutcome] = [o for o in outcomes if o is not None]
            assert len(done) == len(outcomes), "every group has exactly one outcome"
            reasons = Counter(o.reason for o in done if o.fell_back)
            stats = BatchStats(
                groups=len(done),
                dead=sum(o.routed for o in done),
                judged=sum(o.judged for o in done),
                tied=sum(o.tied for o in done),
                fell_back=sum(o.fell_back for o in done),
                **{k: sum(getattr(o, k) for o in done) for k in JUDGE_COST},
                latency_s=plan._elapsed(),
                retries=max(0, plan.attempts - 1),
                fallback_reasons=dict(reasons),
            )
            plan.result = BatchResult(outcomes=done, stats=stats)
        if stats.fell_back:
            logger.warning("%d of %d dead groups fell back to zero advantages (%s); last: %s",
                           stats.fell_back, stats.dead,
                           ", ".join(f"{r}: {c}" for r, c in sorted(reasons.items())),
                           plan.last_message or "no answer in time")
        with self._lock:
            self._totals.update(
                batches=1, groups=stats.groups, dead=stats.dead, judged=stats.judged,
                tied=stats.tied, fell_back=stats.fell_back, retries=stats.retries,
                **{k: getattr(stats, k) for k in JUDGE_COST},
            )
            self._totals.update({f"fell_back/{r}": c for r, c in reasons.items()})
            self._latency_s += stats.latency_s
        return plan.result

    def stats(self) -> dict[str, float]:
        """Counters since the client was made: batches, groups, dead, dead_fraction, judged,
        tied, fell_back, comparisons, cached_comparisons, judge_requests, judge_calls
        (deprecated: comparisons), retries, latency_s (summed over batches),
        fell_back/<reason>."""
        with self._lock:
            totals = dict(self._totals)
            latency = self._latency_s
        out = {key: float(totals.get(key, 0)) for key in (
            "batches", "groups", "dead", "judged", "tied", "fell_back", *JUDGE_COST, "retries")}
        out["judge_calls"] = out["comparisons"]
        out["dead_fraction"] = out["dead"] / out["groups"] if out["groups"] else 0.0
        out["latency_s"] = latency
        out.update({k: float(v) for k, v in sorted(totals.items()) if k.startswith("fell_back/")})
        return out


__all__ = [
    "DEADLINE_SLACK_S",
    "DEFAULT_CONFIG",
    "BatchResult",
    "BatchStats",
    "ClientConfig",
    "ClientCore",
    "GroupOutcome",
    "MAX_ABS_REWARD",
    "Plan",
    "check_group",
    "configure",
    "group_relative",
    "is_dead",
    "make_group",
]
