"""Group assembly: samples that arrive one at a time are judged as one group.

Some trainers score one sample at a time: OpenRLHF POSTs each sample to its remote reward URL
as soon as it is generated, verl's reward loop calls its reward manager once per sample. The
judge needs the whole group. :class:`GroupAssembler` buffers the samples of one group, keyed by
``(run_id, group key)`` (the group key is the prompt unless the caller names the group), until
``group_size`` of them are there; then it ranks the group ONCE through the service, and every
caller waiting on the group gets its own value. A caller waits at most ``timeout_s``.

The value of a sample::

    value = verifiable reward + judge value

where the judge value is the sample's zero-mean, judge-derived advantage when its group was
dead (every verifiable reward equal) and the judge answered, and 0 otherwise (a live group, a
judge failure, a sample judged alone). Within a dead group the values sum to the common
verifiable reward times the group size, so a trainer that subtracts the group mean and does
not divide by the group's standard deviation (OpenRLHF ``dr_grpo``, verl GRPO with
``norm_adv_by_std_in_grpo=False``, TRL ``scale_rewards="none"``) turns them into exactly the
judge's advantages, and leaves live groups as they were.

The verifiable reward is the caller's when it gives one, else :func:`math_verifier`'s: 1.0 when
the response's final answer equals the label's (:func:`trainer_client.verifier.verify_answer`,
the one verifier, which the client's OpenRLHF ``.py`` route uses too: math-verify's
equivalence; ``\\boxed``, ``####``, ``Answer:`` and ``The answer is`` recognised), else 0.0; a
sample without a label gets 0.0, so that the judge alone ranks its group.

Partial groups. A group that is not complete ``timeout_s`` after its first sample arrived is
closed as it stands:

- two or more samples: they are judged as a group (dead or not is decided on these samples),
  and each gets its value;
- one sample: it gets its verifiable reward only.

Bounds. A caller's ``timeout_s`` is at most ``max_timeout_s`` (option
``assembly_max_timeout_s``, 180 s: OpenRLHF's HTTP timeout; a longer wait outlives its
caller, and the samples it holds stay buffered for nothing), and at most ``max_samples``
samples wait on the server (``assembly_max_samples``) and ``max_run_samples`` of one run
(``assembly_max_run_samples``), holding at most ``max_bytes`` (``assembly_max_bytes``) and
``max_run_bytes`` (``assembly_max_run_bytes``) of text: a sample's :class:`Places` are one
sample and the UTF-8 bytes of its texts (response, prompt, label, group key), counted once
when it is checked. Past any cap, a request is refused whole with
:class:`~judge_server.errors.Overloaded` (429 and a retry-after hint, naming the caps that are
full) before anything of it is buffered; a request larger than a cap still gets in when
nothing waits. A sample holds its places from its request's check until its group closes
(with replicas: until it is answered). With the redis store the caps are the replicas'
together (counted in Redis, :meth:`~judge_server.store.redis_shared.RedisGroups.hold`): they
bound what waits in the shared Redis, and one run's share of it, however many replicas serve
it.

Samples of a closed group that arrive later (for ``timeout_s`` after the close) get their
verifiable reward at once instead of waiting for a group that will never fill. A sample that
arrives when its group is already complete (a prompt that appears twice in one batch) starts
the next group of that key.

The rank itself never blocks a caller beyond ``timeout_s`` plus the judge's time, and a judge
failure is not an error: the group's callers get their verifiable rewards
(``status="judge_failed"``). A store failure, or a run that does not exist on a server that
does not create runs, fails every caller of the group with that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from trainer_client import MAX_ABS_REWARD
from trainer_client.integrations.openrlhf import response_of
from trainer_client.types import Group, GroupResult, Trace
from trainer_client.verifier import verify_answer

from ..core.runs import run_key, run_name
from ..core.service import ArenaService
from ..core.validation import _utf8_size, check_id
from ..errors import InvalidRequest, Overloaded, StoreError
from ..store.redis_shared import POLL_S, decode_error, encode_error, shared_state

logger = logging.getLogger(__name__)

DEFAULT_GROUP_SIZE = 8
"""Samples per group when the caller does not say (OpenRLHF ``--rollout.n_samples_per_prompt``)."""
DEFAULT_TIMEOUT_S = 120.0
"""How long a group waits for its samples: below OpenRLHF's 180 s HTTP timeout, so that a
waiting request is answered before the trainer gives up on it and sends it again."""
DEFAULT_MAX_TIMEOUT_S = 180.0
"""The longest ``timeout_s`` a caller may ask for: OpenRLHF's HTTP timeout."""
DEFAULT_MAX_SAMPLES = 65_536
"""Samples waiting on the server, all runs (each holds its response, prompt and label)."""
DEFAULT_MAX_RUN_SAMPLES = 16_384
"""Samples waiting for one run: two OpenRLHF rollout batches of 1024 prompts x 8 samples."""
DEFAULT_MAX_BYTES = 1 << 30
"""Bytes of text waiting on the server, all runs (1 GiB): the whole ``DEFAULT_MAX_SAMPLES`` of
samples of 16 KiB each (a response of about 4k tokens with its prompt and label), where the
count cap alone, at the largest accepted sample (256 KiB of response, of prompt and of label),
would let 48 GiB wait."""
DEFAULT_MAX_RUN_BYTES = 256 << 20
"""Bytes of text waiting for one run (256 MiB): ``DEFAULT_MAX_RUN_SAMPLES`` samples of 16 KiB,
a quarter of the server's, so that one run cannot take the whole buffer."""
SHARED_RANK_WAIT_S = 600.0
"""Replicas: how long past its group's timeout a sample waits for its group's scores (a
replica that dies ranking it is taken over within its lease; when Redis cannot be read that
long, the sample gets its verifiable reward, ``judge_failed``)."""

Verifier = Callable[[str, "str | None"], float]
"""``verifier(response, label) -> reward``."""


def _report_lost(run_id: str, places: Places, giving: asyncio.Future) -> None:
    """Log places of Redis's count that could not be given back (they count until this
    replica's lease lapses)."""
    if not giving.cancelled() and giving.exception() is not None:
        logger.warning("run %s: %d held samples (%d bytes) could not be given back: %s",
                       run_id, places.samples, places.bytes, giving.exception())


def math_verifier(response: str, label: str | None) -> float:
    """1.0 when the final answer of ``response`` equals that of ``label``, else 0.0; no label:
    0.0. :func:`trainer_client.verifier.verify_answer`, the client's ``.py`` route's verifier
    too (the last marked answer, ``\\boxed{}``, ``####``, ``Answer:``, ``The answer is``, or
    else the last number or expression; compared by math-verify: ``$1,200`` equals ``1200``,
    ``2/4`` equals ``0.5``, ``50%`` equals ``0.5``). Thread-safe: the assembler runs it in a
    worker thread.
    """
    return verify_answer(response, label)


@dataclasses.dataclass(frozen=True, slots=True)
class AssemblyOptions:
    """Defaults and bounds of the group buffer (options ``assembly_group_size``,
    ``assembly_timeout_s``, ``assembly_max_timeout_s``, ``assembly_max_samples``,
    ``assembly_max_run_samples``, ``assembly_max_bytes``, ``assembly_max_run_bytes``)."""

    group_size: int = DEFAULT_GROUP_SIZE
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_run_samples: int = DEFAULT_MAX_RUN_SAMPLES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_run_bytes: int = DEFAULT_MAX_RUN_BYTES


class Places(NamedTuple):
    """What waiting samples take of the buffer: their number, and the UTF-8 bytes of their
    texts."""

    samples: int
    bytes: int

    def plus(self, other: Places) -> Places:
        return Places(self.samples + other.samples, self.bytes + other.bytes)

    def less(self, other: Places) -> Places:
        return Places(self.samples - other.samples, self.bytes - other.bytes)

    @staticmethod
    def sum(places: Iterable[Places]) -> Places:
        return functools.reduce(Places.plus, places, NO_PLACES)


NO_PLACES = Places(0, 0)


def _full(held: Places, more: Places, cap: Places, what: str) -> list[str]:
    """The caps that ``more`` would pass, ``held`` taken; none when nothing waits (a request
    larger than a cap still gets in then, as admission does)."""
    if not held.samples:
        return []
    return [f"{have} {unit} {what}, limit {limit}"
            for have, add, limit, unit in zip(held, more, cap, Places._fields)
            if have + add > limit]


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a group, as a trainer sends it.

    ``group_key`` names the group (default: the prompt); ``reward`` is the caller's verifiable
    reward (default: the assembler's verifier on ``response`` and ``label``).
    """

    response: str
    prompt: str = ""
    label: str | None = None
    group_key: str | None = None
    reward: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SampleScore:
    """What one sample gets back.

    ``value = verifiable + judge``. ``status``: ``judged`` (dead group, judge answered),
    ``live`` (the group's verifiable rewards differ), ``judge_failed``, ``alone`` (the group
    closed with this sample only), ``late`` (arrived after its group closed).
    ``group_size`` is the number of samples ranked together.
    """

    value: float
    verifiable: float
    judge: float
    status: str
    group_id: str
    group_size: int
    judge_calls: int = 0


@dataclasses.dataclass
class _Slot:
    sample: Sample
    reward: float
    future: asyncio.Future
    places: Places = NO_PLACES  # held from the check until the group closes


@dataclasses.dataclass
class _Buffer:
    run_id: str
    key: str
    group_id: str
    size: int
    timeout: float
    slots: list[_Slot]
    tenant: str | None = None  # authorised for the run when its first sample came
    timer: asyncio.TimerHandle | None = None


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class GroupAssembler:
    """Buffers samples into groups and ranks each group once (see the module docstring)."""

    def __init__(
        self,
        service: ArenaService,
        options: AssemblyOptions | None = None,
        *,
        verifier: Verifier = math_verifier,
    ) -> None:
        self.service = service
        self.options = options or AssemblyOptions()
        self.verifier = verifier
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        self._closed: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (missing, until)
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count()
        self._closing = False
        self._held: dict[str, Places] = {}  # run id -> its samples checked in, not yet ranked
        self._held_all = NO_PLACES
        # replicas (redis store): the groups are buffered in Redis (:meth:`_place_shared`)
        self._shared = shared_state(service.store)[1]
        self._waiting: dict[str, list[tuple[int, asyncio.Future]]] = {}  # group -> callers here
        self._keys: dict[str, tuple[str, str]] = {}  # group -> its key, while callers wait
        # shared group -> its timeout here, its key and timeout_s
        self._timers: dict[str, tuple[asyncio.TimerHandle, tuple[str, str], float]] = {}
        self._poller: asyncio.Task | None = None

    async def score(
        self,
        run_id: str,
        sample: Sample,
        *,
        group_size: int | None = None,
        timeout_s: float | None = None,
        field: str = "sample",
        tenant: str | None = None,
    ) -> SampleScore:
        """Add ``sample`` to its group and wait for the group's ranking; its value."""
        size, timeout = self._options(group_size, timeout_s)
        places = self._check(run_id, sample, size, timeout, lambda name: f"{field}.{name}")
        await self.service.open_run(run_id, tenant=tenant)
        await self._hold(run_id, places, tenant)
        return await self._score_checked(run_id, sample, places, size, timeout, tenant)

    async def score_many(
        self,
        run_id: str,
        samples: list[Sample],
        *,
        group_size: int | None = None,
        timeout_s: float | None = None,
        columns: dict[str, str] | None = None,
        tenant: str | None = None,
    ) -> list[SampleScore]:
        """:meth:`score` for each sample, all at once; nothing is buffered unless all are valid
        and ``tenant`` may use the run (created with the server's defaults when allowed).

        An error names the bad sample's field as ``samples[k].response``, or, with ``columns``
        (a :class:`Sample` field -> the name of the request's column), as ``column[k]``.
        """
        size, timeout = self._options(group_size, timeout_s)
        if not samples:
            raise InvalidRequest((columns or {}).get("response", "samples"), "no samples given")
        unstarted: dict[int, Places] = {}
        for k, sample in enumerate(samples):

            def name(attr: str, k: int = k) -> str:
                return f"{columns[attr]}[{k}]" if columns else f"samples[{k}].{attr}"

            unstarted[k] = self._check(run_id, sample, size, timeout, name)
        await self.service.open_run(run_id, tenant=tenant)
        await self._hold(run_id, Places.sum(unstarted.values()), tenant)

        async def one(k: int, sample: Sample) -> SampleScore:
            places = unstarted.pop(k)  # from here on, _score_checked gives its places back
            return await self._score_checked(run_id, sample, places, size, timeout, tenant)

        try:
            return list(await asyncio.gather(*(one(k, s) for k, s in enumerate(samples))))
        finally:  # a sample whose task never started (its caller went first) gives it here
            if unstarted:
                await self._unhold(run_id, Places.sum(unstarted.values()), tenant)

    def _options(self, group_size: int | None, timeout_s: float | None) -> tuple[int, float]:
        return (
            self.options.group_size if group_size is None else group_size,
            self.options.timeout_s if timeout_s is None else timeout_s,
        )

    async def _hold(self, run_id: str, places: Places, tenant: str | None) -> None:
        """Take ``places`` in the buffer for ``tenant``'s run's samples, or refuse them all;
        with replicas, the places of every replica count (:meth:`RedisGroups.hold`)."""
        held = run_key(run_id, tenant)
        options = self.options
        max_run = Places(options.max_run_samples, options.max_run_bytes)
        max_all = Places(options.max_samples, options.max_bytes)
        if self._shared is not None:  # its script takes them unless _full finds a cap full
            holding = asyncio.ensure_future(self._shared.hold(held, places, max_run, max_all))
            try:
                taken, run_held, all_held = await asyncio.shield(holding)
            except asyncio.CancelledError:  # the caller left: what the script takes comes back
                holding.add_done_callback(
                    functools.partial(self._give_back_if_taken, run_id, places, tenant))
                raise
            run, every, where = Places(*run_held), Places(*all_held), " on every replica"
        else:
            run, every, where = self._held.get(held, NO_PLACES), self._held_all, ""
        over = (_full(run, places, max_run, f"of this run waiting{where}")
                + _full(every, places, max_all, f"waiting in all{where}"))
        if self._shared is None:
            taken = not over
            if taken:
                self._held[held], self._held_all = run.plus(places), every.plus(places)
        if not taken:
            retry_after = min(10.0, options.timeout_s)
            raise Overloaded(
                f"run {run_id!r}: the per-sample buffer is full for {places.samples} more "
                f"samples of {places.bytes} bytes ({'; '.join(over)}); "
                f"try again in {retry_after:.2f} s",
                retry_after_s=retry_after,
            )

    async def _unhold(self, run_id: str, places: Places, tenant: str | None) -> None:
        """Give back places samples took and no buffer here gives back (:meth:`_hold`)."""
        if self._shared is None:
            self._release(run_id, places, tenant)
            return
        # In a task of its own: a caller cancelled meanwhile (it left) does not stop it halfway.
        giving = asyncio.ensure_future(self._shared.unhold(run_key(run_id, tenant), places))
        giving.add_done_callback(functools.partial(_report_lost, run_id, places))
        with contextlib.suppress(StoreError):  # reported: they count until the lease lapses
            await asyncio.shield(giving)

    def _give_back_if_taken(
        self, run_id: str, places: Places, tenant: str | None, hold: asyncio.Future
    ) -> None:
        """A hold whose caller left before it returned: its places back, if it took them."""
        if not hold.cancelled() and hold.exception() is None and hold.result()[0]:
            self._spawn(self._unhold(run_id, places, tenant))

    def _release(self, run_id: str, places: Places, tenant: str | None) -> None:
        held = run_key(run_id, tenant)
        left = self._held.get(held, NO_PLACES).less(places)
        if left.samples > 0:
            self._held[held] = left
        else:
            self._held.pop(held, None)
        self._held_all = self._held_all.less(places)

    async def _score_checked(
        self, run_id: str, sample: Sample, places: Places, size: int, timeout: float,
        tenant: str | None,
    ) -> SampleScore:
        """The sample holds ``places`` (:meth:`_hold`): given back here unless it joins a
        buffer here, whose close gives back its samples' places (a shared buffer's sample is
        answered by :meth:`_place`, and gives its places back here)."""
        try:
            placed = await self._place(run_id, sample, places, size, timeout, tenant)
        except BaseException:
            await self._unhold(run_id, places, tenant)
            raise
        if isinstance(placed, SampleScore):  # answered: it joined no buffer here
            await self._unhold(run_id, places, tenant)
            return placed
        # The group is ranked in a task of its own: a caller that goes away does not cancel it.
        return await asyncio.shield(placed)

    async def _place(
        self, run_id: str, sample: Sample, places: Places, size: int, timeout: float,
        tenant: str | None,
    ) -> SampleScore | asyncio.Future:
        """The sample's score when it is answered at once, else the future of its group."""
        reward = sample.reward
        if reward is None:
            reward = float(await asyncio.to_thread(self.verifier, sample.response, sample.label))
        if self._closing:  # shutting down: no new groups, the sample keeps its own reward
            return SampleScore(reward, reward, 0.0, "alone", "", 1)
        group_key = sample.group_key if sample.group_key is not None else sample.prompt
        key = (run_key(run_id, tenant), group_key)  # two tenants' runs of one id stay apart
        if self._shared is not None:
            return await self._place_shared(key, sample, reward, size, timeout, tenant)

        late = self._closed.get(key)
        if late is not None:
            missing, until = late
            if missing > 0 and time.monotonic() < until:
                self._closed[key] = (missing - 1, until)
                return SampleScore(reward, reward, 0.0, "late", "", 1)
            del self._closed[key]

        future: asyncio.Future = asyncio.get_running_loop().create_future()
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = _Buffer(run_id, key[1], self._group_id(key[1]), size, timeout, [], tenant)
            buffer.timer = asyncio.get_running_loop().call_later(
                timeout, self._timed_out, key, buffer
            )
            self._buffers[key] = buffer
        buffer.slots.append(_Slot(sample, reward, future, places))
        if len(buffer.slots) >= buffer.size:
            self._close(key, buffer)
        return future

    def _check(
        self, run_id: str, sample: Sample, size: int, timeout: float, name: Callable[[str], str]
    ) -> Places:
        """Refuse a bad sample (``name(field)`` names its fields); the places it takes."""
        limits = self.service.limits
        check_id(run_id, "run_id")
        if not 2 <= size <= limits.max_traces_per_group:
            raise InvalidRequest(
                "group_size", f"must be between 2 and {limits.max_traces_per_group}, got {size}"
            )
        if not 0 < timeout <= self.options.max_timeout_s:  # also refuses nan
            raise InvalidRequest(
                "timeout_s",
                f"must be > 0 and at most the server's assembly_max_timeout_s "
                f"({self.options.max_timeout_s:g}), got {timeout}",
            )
        size_of = _utf8_size(sample.response, name("response"))
        if size_of > limits.max_trace_bytes:
            raise InvalidRequest(
                name("response"),
                f"{size_of} bytes, more than the limit of {limits.max_trace_bytes}",
            )
        total = size_of
        for attr in ("prompt", "label", "group_key"):
            value = getattr(sample, attr)
            if value is None:
                continue
            size_of = _utf8_size(value, name(attr))
            if size_of > limits.max_prompt_bytes:
                raise InvalidRequest(name(attr), f"longer than {limits.max_prompt_bytes} bytes")
            total += size_of
        if sample.reward is not None and not abs(sample.reward) <= MAX_ABS_REWARD:
            raise InvalidRequest(
                name("reward"), f"must be finite and within +-{MAX_ABS_REWARD:g}, "
                f"got {sample.reward}"
            )
        return Places(1, total)

    def _group_id(self, key: str) -> str:
        return f"asm-{_digest(key)}-{next(self._ids)}"

    def _timed_out(self, key: tuple[str, str], buffer: _Buffer) -> None:
        if self._buffers.get(key) is not buffer:
            return
        now = time.monotonic()
        for old in [k for k, (_, until) in self._closed.items() if until <= now]:
            del self._closed[old]
        self._closed[key] = (buffer.size - len(buffer.slots), now + buffer.timeout)
        logger.info(
            "group %s of run %s closed by its timeout with %d of %d samples",
            buffer.group_id, buffer.run_id, len(buffer.slots), buffer.size,
        )
        self._close(key, buffer)

    def _close(self, key: tuple[str, str], buffer: _Buffer) -> None:
        """Take the buffer out of the table and rank it in a task of its own."""
        if self._buffers.get(key) is buffer:
            del self._buffers[key]
        if buffer.timer is not None:
            buffer.timer.cancel()
        self._release(buffer.run_id, Places.sum(s.places for s in buffer.slots), buffer.tenant)
        task = asyncio.get_running_loop().create_task(self._rank(buffer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rank(self, buffer: _Buffer) -> None:
        slots = buffer.slots
        try:
            if len(slots) == 1:
                result = None
            else:
                first = slots[0].sample
                group = Group(
                    group_id=buffer.group_id,
                    traces=tuple(Trace(text=s.sample.response, reward=s.reward) for s in slots),
                    prompt_id=f"p-{_digest(first.prompt or buffer.key)}",
                    prompt=first.prompt,
                    reference=first.label,
                )
                result = await self.service.rank_group(
                    buffer.run_id, group, tenant=buffer.tenant
                )
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the failure
            for slot in slots:
                if not slot.future.done():
                    slot.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for k, slot in enumerate(slots):
            if not slot.future.done():
                slot.future.set_result(self._score(buffer, slot, k, result))

    @staticmethod
    def _score(buffer: _Buffer, slot: _Slot, k: int, result: GroupResult | None) -> SampleScore:
        n = len(buffer.slots)
        if result is None:
            return SampleScore(slot.reward, slot.reward, 0.0, "alone", buffer.group_id, n)
        if not result.routed:
            status, judge = "live", 0.0
        elif result.status != "ok":
            status, judge = "judge_failed", 0.0
        else:
            status, judge = "judged", float(result.advantages[k])
        return SampleScore(
            slot.reward + judge, slot.reward, judge, status, buffer.group_id, n,
            judge_calls=result.judge_calls,
        )

    # -- replicas: the groups are buffered in Redis ----------------------------------------

    async def _place_shared(
        self, key: tuple[str, str], sample: Sample, reward: float, size: int, timeout: float,
        tenant: str | None,
    ) -> SampleScore:
        """Append the sample to its group's list in Redis, and wait for whichever replica
        ranks the group: the one that fills it, or whose timer claims it first."""
        assert self._shared is not None
        record = {"response": sample.response, "prompt": sample.prompt, "label": sample.label,
                  "reward": reward, "tenant": tenant}
        added = await self._shared.add(key[0], key[1], record, size, timeout)
        if added.status == "late":
            return SampleScore(reward, reward, 0.0, "late", "", 1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.setdefault(added.group, []).append((added.index, future))
        self._keys[added.group] = key
        if added.status == "close":
            self._spawn(self._rank_shared(key, added.group))
        elif added.group not in self._timers:
            handle = loop.call_later(
                added.left_s, lambda: self._spawn(self._shared_timed_out(key, added.group,
                                                                         timeout))
            )
            self._timers[added.group] = (handle, key, timeout)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll_shared())
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), added.left_s + SHARED_RANK_WAIT_S
            )
        except TimeoutError:
            logger.warning("shared group %s of run %s: no ranking came", added.group, key[0])
            return SampleScore(reward, reward, 0.0, "judge_failed", "", 1)

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shared_timed_out(self, key: tuple[str, str], group: str, timeout: float) -> None:
        self._timers.pop(group, None)
        assert self._shared is not None
        if await self._shared.time_out(key[0], key[1], group, timeout):
            logger.info("shared group %s of run %s closed by its timeout", group, key[0])
            await self._rank_shared(key, group)

    async def _rank_shared(self, key: tuple[str, str], group: str) -> None:
        """Rank a shared group this replica closed; every sample's score goes to Redis."""
        assert self._shared is not None
        loop = asyncio.get_running_loop()
        payload: dict
        try:
            records = await self._shared.samples(group)
            slots = [_Slot(Sample(r["response"], r["prompt"], r["label"]), float(r["reward"]),
                           loop.create_future()) for r in records]
            tenant = records[0]["tenant"] if records else None
            buffer = _Buffer(run_name(key[0], tenant), key[1], f"asm-{_digest(key[1])}-r{group}",
                             len(slots), 0.0, slots, tenant)
            await self._rank(buffer)
            failed = next((s.future.exception() for s in slots if s.future.exception()), None)
            payload = encode_error(failed) if failed is not None else {
                "scores": [dataclasses.asdict(s.future.result()) for s in slots]}
        except Exception as exc:  # noqa: BLE001 - the group's callers, on every replica
            payload = encode_error(exc)
        self._resolve(group, payload)  # this replica's callers, even when Redis fails now
        try:
            await self._shared.put_result(group, payload)
        except StoreError:
            logger.exception("shared group %s: its scores could not be stored", group)

    def _resolve(self, group: str, payload: dict) -> None:
        timer = self._timers.pop(group, None)
        if timer is not None:
            timer[0].cancel()
        self._keys.pop(group, None)
        for index, future in self._waiting.pop(group, []):
            if future.done():
                continue
            if "scores" in payload:
                future.set_result(SampleScore(**payload["scores"][index]))
            else:
                future.set_exception(decode_error(payload))

    async def _poll_shared(self) -> None:
        """Answer this replica's callers once their groups' scores are in Redis; rank the
        groups whose ranking replica died."""
        assert self._shared is not None
        while self._waiting:
            try:
                found, orphans = await self._shared.results(list(self._waiting))
            except StoreError:
                logger.exception("shared groups: their scores could not be read")
                found, orphans = {}, []
            for group, payload in found.items():
                self._resolve(group, payload)
            for group in orphans:
                logger.warning("shared group %s: the replica ranking it died; ranked here",
                               group)
                self._spawn(self._rank_shared(self._keys[group], group))
            for group in [g for g, w in self._waiting.items() if all(f.done() for _, f in w)]:
                self._resolve(group, {})  # every caller of it gave up
            await asyncio.sleep(POLL_S)

    @property
    def pending(self) -> int:
        """Samples waiting for their group."""
        return sum(len(b.slots) for b in self._buffers.values()) + sum(
            len(w) for w in self._waiting.values())

    async def aclose(self) -> None:
        """Close every waiting group as it stands (the timeout rule) and wait for the ranks."""
        self._closing = True
        for key, buffer in list(self._buffers.items()):
            self._close(key, buffer)
        for group, (handle, key, timeout) in list(self._timers.items()):  # callers here
            handle.cancel()
            self._spawn(self._shared_timed_out(key, group, timeout))  # its timeout, now
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._poller is not None:
            self._poller.cancel()
        self._closed.clear()
        if self._shared is not None:
            await self._shared.aclose()


__all__ = [
    "DEFAULT_GROUP_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RUN_BYTES",
    "DEFAULT_MAX_RUN_SAMPLES",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_MAX_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "AssemblyOptions",
    "GroupAssembler",
    "Places",
    "Sample",
    "SampleScore",
    "math_verifier",
    "response_of",
]
