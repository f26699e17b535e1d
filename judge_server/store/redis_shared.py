"""What replicas share besides runs and pools, in Redis: request-id claims and the per-sample
route's group buffers. Used only with the redis store (:func:`shared_state`); one replica
(memory or sqlite) keeps both in its own memory.

Keys (``prefix`` is the store's, ``arena:`` by default)::

    {prefix}replica:{holder}              a replica's lease: expires LEASE_S after its last
                                          renewal (one for its claims, one for its samples)
    {prefix}flight:{run_id}:{request_id}  JSON {"digest": hex, "holder"} while a replica
                                          ranks the group, then {"digest", "result"}: expires
    {prefix}asm-gen                       counter: the number of the next buffered group
    {prefix}asm:{run_id}:{key digest}     the number of the group now filling for that key
    {prefix}asm-late:{...}                samples still expected by a group its timeout closed
    {prefix}asm-group:{n}:samples         list: the group's samples, in arrival order
    {prefix}asm-group:{n}:size            the group's size (its first sample's group_size)
    {prefix}asm-group:{n}:open            expires when the group's timeout fires
    {prefix}asm-group:{n}:ranker          the holder ranking the closed group
    {prefix}asm-group:{n}:result          JSON: every sample's score, or the group's error
    {prefix}asm-held:{run_id}             hash: holder -> samples of the run waiting there
    {prefix}asm-held                      hash: holder -> samples waiting there, all runs
    {prefix}asm-held-bytes:{run_id}       hash: holder -> bytes of those samples' texts
    {prefix}asm-held-bytes                hash: holder -> bytes of those samples' texts

Leases. Each replica renews its lease every ``LEASE_S / 3`` seconds while it has claimed or
held anything, and gives it back when it stops; a replica that dies (kill -9, a lost node)
stops renewing, and what it claimed or held stops counting within ``LEASE_S``.

Request ids (:class:`RedisFlights`): the first replica to claim ``(run, request id)`` (SET NX,
with the group's digest and its lease) ranks the group and stores the result; a replica
receiving the same request id polls for that result instead of ranking again, and takes the
claim itself when the first try failed (its replica deletes the claim) or its replica died
(its lease lapsed: the waiter deletes the claim, within ``LEASE_S`` of the death instead of
the claim's ``CLAIM_TTL_S``). A request id already claimed for another digest is refused as on
one replica. A judge failure is a result (``judge_failed``), kept as on one replica.

Group buffers (:class:`RedisGroups`): a sample is appended to its group's list by a script, so
that exactly one replica sees the group fill; that replica, or the first whose timer fires
(the timeout takes the group's number away atomically), ranks it and writes every sample's
score; every replica answers its own waiting callers from there. A group closed by a
replica that dies before it stores the scores is ranked by a replica whose callers wait for it,
once the dead one's lease lapses (:meth:`RedisGroups.results`). The buffer's caps
(``max_samples``, ``max_run_samples``, ``max_bytes``, ``max_run_bytes``) hold across
replicas: each replica counts the samples waiting on it, and their bytes, under its lease, and
a request is admitted by a script that sums the live replicas' counts (those of a dead one
stop counting with its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from trainer_client.types import GroupResult

from .. import errors
from ..errors import InvalidRequest, StoreError
from .base import Store

logger = logging.getLogger(__name__)

LEASE_S = 10.0
"""How long a replica's lease lasts unless renewed (every third of it): how soon the claims
and held samples of a replica that died stop counting."""
CLAIM_TTL_S = 900.0
"""How long a claim on a request id lasts without a result, whatever its replica's lease:
longer than any ranking takes (a claim nobody waits on goes with it)."""
RESULT_TTL_S = 3600.0
"""How long a request id's result, and a buffered group's scores, are kept."""
POLL_S = 0.02
"""How often a replica waiting on another's work reads Redis."""

_CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
"""

_WAIT = """
local text = redis.call('GET', KEYS[1])
if not text then return false end
local claim = cjson.decode(text)
if claim['result'] == nil and claim['holder'] ~= nil
    and redis.call('EXISTS', ARGV[1] .. claim['holder']) == 0 then
  redis.call('DEL', KEYS[1])
  return false
end
return text
"""

_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

_HOLD = """
redis.call('SET', ARGV[2] .. ARGV[1], '1', 'PX', ARGV[3])
local function live(key)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', ARGV[2] .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  return total
end
-- KEYS: (samples, bytes) of the run, then of all runs; ARGV[3 + i]: what KEYS[i] takes more,
-- ARGV[7 + i]: its cap. Nothing waits when no sample does: then a request larger than a cap
-- gets in.
local held, taken = {}, 1
for i = 1, 4 do held[i] = live(KEYS[i]) end
for i = 1, 4 do
  local waiting = held[i - (i + 1) % 2]
  if waiting > 0 and held[i] + tonumber(ARGV[3 + i]) > tonumber(ARGV[7 + i]) then taken = 0 end
end
if taken == 1 then
  for i = 1, 4 do redis.call('HINCRBY', KEYS[i], ARGV[1], ARGV[3 + i]) end
end
return {taken, held[1], held[2], held[3], held[4]}
"""

_UNHOLD = """
for i = 1, 4 do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -tonumber(ARGV[1 + i])) <= 0 then
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 0
"""

_ADD = """
local late = redis.call('GET', KEYS[2])
if late and tonumber(late) > 0 then
  redis.call('DECR', KEYS[2])
  return {'late', '0', 0, 0, 0}
end
local n = redis.call('GET', KEYS[1])
local created = 0
if not n then
  n = tostring(redis.call('INCR', KEYS[3]))
  redis.call('SET', KEYS[1], n, 'PX', ARGV[4])
  redis.call('SET', ARGV[5] .. n .. ':size', ARGV[2], 'PX', ARGV[4])
  redis.call('SET', ARGV[5] .. n .. ':open', '1', 'PX', ARGV[3])
  created = 1
end
local size = tonumber(redis.call('GET', ARGV[5] .. n .. ':size') or ARGV[2])
local list = ARGV[5] .. n .. ':samples'
local count = redis.call('RPUSH', list, ARGV[1])
redis.call('PEXPIRE', list, ARGV[4])
local left = redis.call('PTTL', ARGV[5] .. n .. ':open')
if count >= size then
  redis.call('DEL', KEYS[1])
  redis.call('SET', ARGV[7], '1', 'PX', ARGV[8])
  redis.call('SET', ARGV[5] .. n .. ':ranker', ARGV[6], 'PX', ARGV[4])
  return {'close', n, count - 1, size, left}
end
return {'wait', n, count - 1, size, left}
"""

_TIME_OUT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
local count = redis.call('LLEN', ARGV[3] .. ARGV[1] .. ':samples')
local size = tonumber(redis.call('GET', ARGV[3] .. ARGV[1] .. ':size') or count)
if size > count then redis.call('SET', KEYS[2], size - count, 'PX', ARGV[2]) end
redis.call('SET', ARGV[5], '1', 'PX', ARGV[6])
redis.call('SET', ARGV[3] .. ARGV[1] .. ':ranker', ARGV[4], 'PX', ARGV[7])
return count
"""

_RESULTS = """
local out = {}
for i = 6, #ARGV do
  local group = ARGV[1] .. ARGV[i]
  local result = redis.call('GET', group .. ':result')
  if result then
    out[#out + 1] = result
  else
    local ranker = redis.call('GET', group .. ':ranker')
    if ranker and redis.call('EXISTS', ARGV[2] .. ranker) == 0 then
      redis.call('SET', ARGV[2] .. ARGV[3], '1', 'PX', ARGV[4])
      redis.call('SET', group .. ':ranker', ARGV[3], 'PX', ARGV[5])
      out[#out + 1] = 'take'
    else
      out[#out + 1] = ''
    end
  end
end
return out
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _part(text: str) -> str:
    """A key part that no run id or group key can make ambiguous."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class _Redis:
    """A client of the shared Redis with a lease of its own (module doc)."""

    lease_s = LEASE_S

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.holder = uuid.uuid4().hex  # what this replica's claims and holds are known by
        self._renewing: asyncio.Task | None = None
        self._closed = False

    async def call(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await work(self.redis)
        except RedisError as exc:
            raise StoreError(f"redis shared state: {type(exc).__name__}: {exc}") from exc

    @property
    def _leases(self) -> str:
        return f"{self.prefix}replica:"

    def _keep_lease(self) -> None:
        """Renew the lease from now on (the scripts that claim or hold take it first)."""
        if not self._closed and (self._renewing is None or self._renewing.done()):
            self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        key = f"{self._leases}{self.holder}"
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.call(lambda r: r.set(key, "1", px=_ms(self.lease_s)))
            except StoreError:
                logger.warning("the replica's lease could not be renewed", exc_info=True)

    async def aclose(self) -> None:
        """Give the lease back: what this replica still claims or holds is anyone's now."""
        self._closed = True
        if self._renewing is None:
            return
        self._renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewing
        self._renewing = None
        try:
            await self.call(lambda r: r.delete(f"{self._leases}{self.holder}"))
        except StoreError:
            logger.warning("the replica's lease could not be given back (it lapses)")


def encode_result(result: GroupResult) -> dict:
    return dataclasses.asdict(result)


def decode_result(data: dict) -> GroupResult:
    known = {f.name for f in dataclasses.fields(GroupResult) if f.init}
    return GroupResult(**{  # type: ignore[arg-type]
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known
    })


class RedisFlights(_Redis):
    """Request-id single flight across replicas (module doc)."""

    claim_ttl_s = CLAIM_TTL_S
    result_ttl_s = RESULT_TTL_S

    async def _done(self, name: str, digest: str, result: GroupResult) -> None:
        done = json.dumps({"digest": digest, "result": encode_result(result)})
        await self.call(lambda r: r.set(name, done, px=_ms(self.result_ttl_s)))

    async def do(
        self,
        key: tuple[str, str],
        digest: bytes,
        work: Callable[[], Awaitable[GroupResult]],
        field: str,
        refused: Callable[[], InvalidRequest],
    ) -> GroupResult:
        name = f"{self.prefix}flight:{_part(key[0])}:{_part(key[1])}"
        mine = digest.hex()
        claim = json.dumps({"digest": mine, "holder": self.holder})
        while True:
            if await self._claim(name, claim):
                try:
                    result = await work()
                except BaseException:
                    # a retry may try again (on this replica or another), unless another
                    # took the claim over meanwhile
                    await self.call(lambda r: r.eval(_UNCLAIM, 1, name, claim))
                    raise
                await self._done(name, mine, result)
                return result
            while True:  # another replica's try: wait for its result, or for its claim to go
                text = await self.call(lambda r: r.eval(_WAIT, 1, name, self._leases))
                if text is None:
                    break
                data = json.loads(text)
                if data.get("digest") != mine:
                    raise refused()
                if "result" in data:
                    return decode_result(data["result"])
                await asyncio.sleep(POLL_S)

    async def _claim(self, name: str, claim: str) -> bool:
        """Claim ``name`` for this replica, under its lease; whether it was free."""
        self._keep_lease()
        keys = [name, f"{self._leases}{self.holder}"]
        return bool(await self.call(lambda r: r.eval(
            _CLAIM, len(keys), *keys, claim, _ms(self.claim_ttl_s), _ms(self.lease_s))))


@dataclasses.dataclass(frozen=True, slots=True)
class Added:
    """Where a sample went: ``status`` ``late`` (its group closed by its timeout), ``wait``
    or ``close`` (it filled the group: the caller ranks it); the group's number, the
    sample's index in it, the group's size and the seconds until its timeout."""

    status: str
    group: str
    index: int
    size: int
    left_s: float


class RedisGroups(_Redis):
    """Per-sample group buffers across replicas (module doc)."""

    result_ttl_s = RESULT_TTL_S

    def _keys(self, run_id: str, key: str) -> list[str]:
        part = f"{_part(run_id)}:{_part(key)}"
        return [f"{self.prefix}asm:{part}", f"{self.prefix}asm-late:{part}"]

    @property
    def _group(self) -> str:
        return f"{self.prefix}asm-group:"

    async def add(
        self, run_id: str, key: str, sample: dict, size: int, timeout_s: float
    ) -> Added:
        self._keep_lease()
        keys = [*self._keys(run_id, key), f"{self.prefix}asm-gen"]
        args = [json.dumps(sample), size, _ms(timeout_s),
                _ms(timeout_s + self.result_ttl_s), self._group, self.holder,
                f"{self._leases}{self.holder}", _ms(self.lease_s)]
        status, group, index, size_of, left = await self.call(
            lambda r: r.eval(_ADD, len(keys), *keys, *args)
        )
        return Added(str(status), str(group), int(index), int(size_of), max(0, int(left)) / 1e3)

    async def time_out(self, run_id: str, key: str, group: str, timeout_s: float) -> bool:
        """Close ``group`` by its timeout unless it closed already; whether this call did
        (then this replica ranks it, under its lease)."""
        self._keep_lease()
        keys = self._keys(run_id, key)
        count = await self.call(lambda r: r.eval(
            _TIME_OUT, len(keys), *keys, group, _ms(timeout_s), self._group, self.holder,
            f"{self._leases}{self.holder}", _ms(self.lease_s), _ms(self.result_ttl_s)))
        return int(count) >= 0

    def _held(self, run_id: str) -> list[str]:
        run = _part(run_id)
        return [f"{self.prefix}asm-held:{run}", f"{self.prefix}asm-held-bytes:{run}",
                f"{self.prefix}asm-held", f"{self.prefix}asm-held-bytes"]

    async def hold(
        self, run_id: str, more: tuple[int, int], max_run: tuple[int, int],
        max_all: tuple[int, int],
    ) -> tuple[bool, tuple[int, int], tuple[int, int]]:
        """Take places for samples of ``run_id``, ``more`` = (samples, bytes), unless the
        replicas together would then hold more than ``max_run`` (samples, bytes) of the run or
        ``max_all`` in all (a request larger than a cap gets in when no sample waits); whether
        it did, and what was waiting: (samples, bytes) of the run, and in all."""
        self._keep_lease()
        keys = self._held(run_id)
        taken, *held = await self.call(lambda r: r.eval(
            _HOLD, len(keys), *keys, self.holder, self._leases, _ms(self.lease_s),
            *more, *more, *max_run, *max_all))
        run_samples, run_bytes, all_samples, all_bytes = map(int, held)
        return bool(taken), (run_samples, run_bytes), (all_samples, all_bytes)

    async def unhold(self, run_id: str, places: tuple[int, int]) -> None:
        """Give back the places (samples, bytes) of ``run_id`` that :meth:`hold` took."""
        keys = self._held(run_id)
        await self.call(lambda r: r.eval(_UNHOLD, len(keys), *keys, self.holder,
                                         *places, *places))

    async def samples(self, group: str) -> list[dict]:
        texts = await self.call(lambda r: r.lrange(f"{self._group}{group}:samples", 0, -1))
        return [json.loads(t) for t in texts]

    async def put_result(self, group: str, result: dict) -> None:
        text = json.dumps(result)
        await self.call(lambda r: r.set(f"{self._group}{group}:result", text,
                                        px=_ms(self.result_ttl_s)))

    async def results(self, groups: list[str]) -> tuple[dict[str, dict], list[str]]:
        """The scores of those of ``groups`` that are ranked, and those this replica must
        rank now: closed by a replica whose lease lapsed before it stored their scores."""
        self._keep_lease()
        texts = await self.call(lambda r: r.eval(
            _RESULTS, 0, self._group, self._leases, self.holder, _ms(self.lease_s),
            _ms(self.result_ttl_s), *groups))
        found = {g: json.loads(t) for g, t in zip(groups, texts) if t not in ("", "take")}
        return found, [g for g, t in zip(groups, texts) if t == "take"]


def encode_error(exc: BaseException) -> dict:
    return {"error": type(exc).__name__, "message": str(exc),
            "run_id": getattr(exc, "run_id", None)}


def decode_error(data: dict) -> Exception:
    """The error a ranking raised on another replica, as close as it can be rebuilt."""
    kind, message = data.get("error"), str(data.get("message"))
    if kind in ("RunNotFound", "RunExists") and data.get("run_id") is not None:
        return getattr(errors, kind)(data["run_id"])
    cls = getattr(errors, str(kind), None)
    if isinstance(cls, type) and issubclass(cls, errors.ArenaError):
        try:
            return cls(message)
        except TypeError:
            pass
    return StoreError(message)


def shared_state(store: Store) -> tuple[RedisFlights, RedisGroups] | tuple[None, None]:
    """The shared request-id claims and group buffers of a redis store; None for another."""
    from .redis import RedisStore

    if not isinstance(store, RedisStore):
        return None, None
    return RedisFlights(store.client, store.prefix), RedisGroups(store.client, store.prefix)


__all__ = ["CLAIM_TTL_S", "LEASE_S", "Added", "RedisFlights", "RedisGroups", "shared_state"]
