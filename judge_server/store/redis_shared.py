"""What replicas share besides runs and pools, in Redis: request-id claims and the per-sample
route's group buffers. Used only with the redis store (:func:`shared_state`); one replica
(memory or sqlite) keeps both in its own memory.

Keys (``prefix`` is the store's, ``arena:`` by default)::

    {prefix}flight:{run_id}:{request_id}  JSON {"digest": hex} while a replica ranks the
                                          group, then {"digest", "result"}: expires
    {prefix}asm-gen                       counter: the number of the next buffered group
    {prefix}asm:{run_id}:{key digest}     the number of the group now filling for that key
    {prefix}asm-late:{...}                samples still expected by a group its timeout closed
    {prefix}asm-group:{n}:samples         list: the group's samples, in arrival order
    {prefix}asm-group:{n}:size            the group's size (its first sample's group_size)
    {prefix}asm-group:{n}:open            expires when the group's timeout fires
    {prefix}asm-group:{n}:result          JSON: every sample's score, or the group's error

Request ids (:class:`RedisFlights`): the first replica to claim ``(run, request id)`` (SET NX,
with the group's digest) ranks the group and stores the result; a replica receiving the same
request id polls for that result instead of ranking again, and takes the claim itself when
the first try failed (the claim is deleted) or its replica died (the claim expires). A request
id already claimed for another digest is refused as on one replica.

Group buffers (:class:`RedisGroups`): a sample is appended to its group's list by a script, so
that exactly one replica sees the group fill; that replica, or the first whose timer fires
(the timeout takes the group's number away atomically), ranks it and writes every sample's
score; every replica answers its own waiting callers from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from trainer_client.types import GroupResult

from .. import errors
from ..errors import InvalidRequest, StoreError
from .base import Store

CLAIM_TTL_S = 900.0
"""How long a claim on a request id lasts without a result: longer than any ranking takes."""
RESULT_TTL_S = 3600.0
"""How long a request id's result, and a buffered group's scores, are kept."""
POLL_S = 0.02
"""How often a replica waiting on another's work reads Redis."""

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
return count
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _part(text: str) -> str:
    """A key part that no run id or group key can make ambiguous."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class _Redis:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def call(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await work(self.redis)
        except RedisError as exc:
            raise StoreError(f"redis shared state: {type(exc).__name__}: {exc}") from exc


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
        claim = json.dumps({"digest": mine})
        while True:
            if await self.call(lambda r: r.set(name, claim, nx=True, px=_ms(self.claim_ttl_s))):
                try:
                    result = await work()
                except BaseException:
                    await self.call(lambda r: r.delete(name))  # a retry may try again
                    raise
                await self._done(name, mine, result)
                return result
            while True:  # another replica's try: wait for its result, or for its claim to go
                text = await self.call(lambda r: r.get(name))
                if text is None:
                    break
                data = json.loads(text)
                if data.get("digest") != mine:
                    raise refused()
                if "result" in data:
                    return decode_result(data["result"])
                await asyncio.sleep(POLL_S)


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
        keys = [*self._keys(run_id, key), f"{self.prefix}asm-gen"]
        args = [json.dumps(sample), size, _ms(timeout_s),
                _ms(timeout_s + self.result_ttl_s), self._group]
        status, group, index, size_of, left = await self.call(
            lambda r: r.eval(_ADD, len(keys), *keys, *args)
        )
        return Added(str(status), str(group), int(index), int(size_of), max(0, int(left)) / 1e3)

    async def time_out(self, run_id: str, key: str, group: str, timeout_s: float) -> bool:
        """Close ``group`` by its timeout unless it closed already; whether this call did."""
        keys = self._keys(run_id, key)
        count = await self.call(
            lambda r: r.eval(_TIME_OUT, len(keys), *keys, group, _ms(timeout_s), self._group)
        )
        return int(count) >= 0

    async def samples(self, group: str) -> list[dict]:
        texts = await self.call(lambda r: r.lrange(f"{self._group}{group}:samples", 0, -1))
        return [json.loads(t) for t in texts]

    async def put_result(self, group: str, result: dict) -> None:
        text = json.dumps(result)
        await self.call(lambda r: r.set(f"{self._group}{group}:result", text,
                                        px=_ms(self.result_ttl_s)))

    async def results(self, groups: list[str]) -> dict[str, dict]:
        texts = await self.call(lambda r: r.mget([f"{self._group}{g}:result" for g in groups]))
        return {g: json.loads(t) for g, t in zip(groups, texts) if t is not None}


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
    client = store._redis  # noqa: SLF001 - the store's connection pool, shared
    return RedisFlights(client, store.prefix), RedisGroups(client, store.prefix)


__all__ = ["Added", "RedisFlights", "RedisGroups", "shared_state"]
