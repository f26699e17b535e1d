"""The transports: send groups to the judge server over gRPC or HTTP, and nothing more.

Both are async and have the same three methods::

    await transport.create_run(settings, timeout=s)     an existing run is success
    async for result in transport.rank(run_id, groups, timeout=s):
        ...                                             GroupResults as they come, any order
    await transport.aclose()

Every failure leaves as a :class:`~trainer_client.errors.TransportError` (mapped here, in
:func:`grpc_error` and :func:`http_error`, the one boundary), never as a grpc or httpx
exception. Retries, deadlines and fallbacks are the caller's business
(:class:`trainer_client._core.Plan`). Connections are made lazily, on the first send, in the
running event loop.

:class:`GrpcTransport` sends a batch on one ``RankStream`` (results come back as each group
finishes; ``wait_for_ready=False``, so a send to a server that is down fails at once). A
channel whose connection broke (UNAVAILABLE and the like) is dropped and the next send makes a
new one, so a channel in reconnect backoff is never kept. :class:`HttpTransport` posts the
batch to ``/v1/rank`` in requests of at most :data:`HTTP_GROUPS_PER_REQUEST` groups, sent
together on one pooled ``httpx.AsyncClient``, so that a slow group holds back only its request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING

import grpc
import httpx

from .errors import (
    DeadlineExceeded,
    MalformedResponse,
    RequestRejected,
    ServerError,
    ServerOverloaded,
    ServerUnavailable,
    TransportError,
)
from .protocol import arena_pb2 as pb
from .protocol import arena_pb2_grpc as pb_grpc
from .protocol import parse_retry_after, settings_to_proto
from .types import Group, GroupResult, RunSettings

if TYPE_CHECKING:
    from ._core import ClientConfig

logger = logging.getLogger("trainer_client")

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Try to reconnect soon after the server comes back (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A new channel gets new connections, not a shared subchannel still in backoff.
    ("grpc.use_local_subchannel_pool", 1),
)
# A dropped channel's calls get this long to end before it is closed under them.
RETIRE_GRACE_S = 5.0
HTTP_GROUPS_PER_REQUEST = 16
HTTP_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)
# Codes after which the channel is dropped: its connection may be broken.
_RECONNECT = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
}
_GROUP_FIELD = re.compile(r"^groups\[(\d+)\]")


# -- gRPC ----------------------------------------------------------------------------------


def group_to_proto(group: Group) -> pb.Group:
    """A group as sent: the columnar form (packed rewards)."""
    message = pb.Group(
        group_id=group.group_id,
        prompt_id=group.prompt_id,
        prompt=group.prompt,
        request_id=group.request_id,
        texts=[t.text for t in group.traces],
        rewards=[t.reward for t in group.traces],
    )
    if group.reference is not None:
        message.reference = group.reference
    if group.step is not None:
        message.step = group.step
    return message


def result_from_proto(message: pb.GroupResult) -> GroupResult:
    """A GroupResult from the wire. From a server older than ``comparisons``, the count comes
    from ``judge_calls``, and ``cached_comparisons`` and ``judge_requests`` read 0 (unknown)."""
    return GroupResult(
        group_id=message.group_id,
        advantages=tuple(message.advantages),
        routed=message.routed,
        strengths=tuple(message.strengths),
        stderr=tuple(message.stderr),
        comparisons=message.comparisons or message.judge_calls,
        cached_comparisons=message.cached_comparisons,
        judge_requests=message.judge_requests,
        rounds=message.rounds,
        anchors_used=message.anchors_used,
        status=message.status,
        error=message.error,
        latency_ms=message.latency_ms,
        retry_after_s=message.retry_after_s,
        tied=message.tied,
    )


def _grpc_retry_after(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The server's hint, in seconds: gRPC's standard trailer ``grpc-retry-pushback-ms`` (a
    decimal integer of milliseconds; a negative or unreadable one gives no hint), else
    ``retry-after`` (seconds: what servers before the standard trailer sent)."""
    hints: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        hints.setdefault(key, value)
    pushback = hints.get("grpc-retry-pushback-ms")
    if pushback is not None:
        try:
            milliseconds = int(pushback.strip())
        except ValueError:
            return None
        return milliseconds / 1e3 if milliseconds >= 0 else None
    return parse_retry_after(hints.get("retry-after"))


def grpc_error(exc: grpc.aio.AioRpcError) -> TransportError:
    """The :class:`TransportError` for a failed call (the retry-after hint comes from the
    trailing metadata ``grpc-retry-pushback-ms``, or ``retry-after`` from older servers)."""
    code = exc.code()
    message = f"gRPC {code.name}: {exc.details() or ''}"
    retry_after = _grpc_retry_after(exc.trailing_metadata())
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ServerUnavailable(message, retry_after=retry_after)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ServerOverloaded(message, retry_after=retry_after)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(message)
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED,
                grpc.StatusCode.DATA_LOSS):
        return ServerError(message, retry_after=retry_after)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION):
        return RequestRejected(message)
    return RequestRejected(message, reason="rejected")  # UNIMPLEMENTED, PERMISSION_DENIED...


class GrpcTransport:
    """Sends each batch on one ``RankStream`` of a lazily made, replaceable channel.

    ``api_key`` goes with every call as the metadata ``authorization: Bearer <key>``; ``tls``
    True makes a TLS channel trusting the system's roots, a path one trusting that PEM bundle.
    """

    def __init__(self, target: str, *, api_key: str | None = None,
                 tls: bool | str = False) -> None:
        self.target = target
        self.tls = tls
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.ArenaStub | None = None
        self._closing: set[asyncio.Task] = set()

    def _options(self) -> tuple[tuple[str, object], ...]:
        """:data:`CHANNEL_OPTIONS`; a ``dns:///`` target (a headless Service: one address per
        judge replica) or an ``ipv4:a:p,b:p`` list spreads calls over every address."""
        if self.target.startswith(("dns:", "ipv4:", "ipv6:")):
            return (*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin"))
        return CHANNEL_OPTIONS

    def _connect(self) -> tuple[grpc.aio.Channel, pb_grpc.ArenaStub]:
        if self._channel is None or self._stub is None:
            if self.tls:
                roots = None
                if isinstance(self.tls, str):
                    with open(self.tls, "rb") as file:
                        roots = file.read()
                credentials = grpc.ssl_channel_credentials(root_certificates=roots)
                self._channel = grpc.aio.secure_channel(
                    self.target, credentials, options=self._options()
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options())
            self._stub = pb_grpc.ArenaStub(self._channel)
        return self._channel, self._stub

    def _failed(self, exc: grpc.aio.AioRpcError, channel: grpc.aio.Channel) -> TransportError:
        if exc.code() in _RECONNECT and self._channel is not None and self._channel is channel:
            # Drop the channel: the next send makes a new one instead of waiting out a backoff.
            self._channel = self._stub = None
            task = asyncio.ensure_future(channel.close(grace=RETIRE_GRACE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return grpc_error(exc)

    async def create_run(self, settings: RunSettings, *, timeout: float) -> None:
        channel, stub = self._connect()
        request = pb.CreateRunRequest(settings=settings_to_proto(settings))
        try:
            await stub.CreateRun(
                request, timeout=timeout, wait_for_ready=False, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return
            raise self._failed(exc, channel) from exc

    async def rank(
        self, run_id: str, groups: Sequence[Group], *, timeout: float
    ) -> AsyncIterator[GroupResult]:
        channel, stub = self._connect()
        requests = [pb.RankStreamRequest(run_id=run_id, group=group_to_proto(g)) for g in groups]
        call = stub.RankStream(
            iter(requests), timeout=timeout, wait_for_ready=False, metadata=self._metadata
        )
        try:
            async for message in call:
                yield result_from_proto(message)
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc, channel) from exc
        finally:
            call.cancel()

    async def aclose(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)


# -- HTTP ----------------------------------------------------------------------------------


def group_to_body(group: Group) -> dict:
    """A group as JSON (judge_server.transports.http_protocol.GroupIn, columnar)."""
    body: dict = {
        "group_id": group.group_id,
        "prompt_id": group.prompt_id,
        "prompt": group.prompt,
        "request_id": group.request_id,
        "texts": [t.text for t in group.traces],
        "rewards": [t.reward for t in group.traces],
    }
    if group.reference is not None:
        body["reference"] = group.reference
    if group.step is not None:
        body["step"] = group.step
    return body


def _floats(values: object) -> tuple[float, ...]:
    if not isinstance(values, list):
        raise TypeError("not a list")
    return tuple(float(v) for v in values)


def result_from_body(body: object) -> GroupResult:
    """A GroupResult from JSON (judge_server.transports.http_protocol.GroupResultOut); raises
    :class:`MalformedResponse` when it is not one. An older server's result (no
    ``comparisons``) is read as :func:`result_from_proto` reads one."""
    try:
        if not isinstance(body, dict) or not isinstance(body["group_id"], str):
            raise TypeError("not a result object")
        return GroupResult(
            group_id=body["group_id"],
            advantages=_floats(body["advantages"]),
            routed=bool(body.get("routed", False)),
            strengths=_floats(body.get("strengths", [])),
            stderr=_floats(body.get("stderr", [])),
            comparisons=int(body.get("comparisons") or body.get("judge_calls", 0)),
            cached_comparisons=int(body.get("cached_comparisons", 0)),
            judge_requests=int(body.get("judge_requests", 0)),
            rounds=int(body.get("rounds", 0)),
            anchors_used=int(body.get("anchors_used", 0)),
            status=str(body.get("status", "ok")),
            error=str(body.get("error", "")),
            latency_ms=float(body.get("latency_ms", 0.0)),
            retry_after_s=float(body.get("retry_after_s", 0.0)),
            tied=bool(body.get("tied", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"not a group result: {exc}") from exc


def http_error(response: httpx.Response, groups: Sequence[Group] = ()) -> TransportError:
    """The :class:`TransportError` for an error response. A 400/422 that names
    ``groups[k]...`` fails only that group (``group_id``)."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    field, detail = None, response.text[:500]
    try:
        error = response.json()["error"]
        field, detail = error.get("field"), error.get("message", detail)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    message = f"HTTP {status}: {detail}"
    if status == 429:
        return ServerOverloaded(message, retry_after=retry_after)
    if status in (502, 503, 504):
        return ServerUnavailable(message, retry_after=retry_after)
    if status >= 500:
        return ServerError(message, retry_after=retry_after)
    if status in (400, 404, 413, 422):
        group_id = None
        match = _GROUP_FIELD.match(field) if isinstance(field, str) else None
        if match and int(match.group(1)) < len(groups):
            group_id = groups[int(match.group(1))].group_id
        return RequestRejected(message, group_id=group_id)
    return RequestRejected(message, reason="rejected")


def _retrieve(task: asyncio.Future) -> None:
    """Mark a request's failure as seen (it is reported through another, or not needed)."""
    if not task.cancelled():
        task.exception()


class HttpTransport:
    """Posts batches to ``/v1/rank`` on one pooled ``httpx.AsyncClient``.

    ``api_key`` goes with every request as ``Authorization: Bearer <key>``; ``verify`` is
    httpx's (True: the system's roots; or an SSL context) for an https:// URL.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 verify: bool | ssl.SSLContext = True) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._verify = verify
        self._client: httpx.AsyncClient | None = None

    async def _post(self, path: str, body: dict, timeout: float) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, limits=HTTP_LIMITS, headers=self._headers,
                verify=self._verify,
            )
        try:
            return await self._client.post(path, json=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"HTTP {path}: no answer in time ({exc!r})") from exc
        except httpx.HTTPError as exc:  # connection refused or broken, protocol errors
            raise ServerUnavailable(f"HTTP {path}: {exc!r}") from exc

    async def create_run(self, settings: RunSettings, *, timeout: float) -> None:
        response = await self._post(
            "/v1/runs", {"settings": dataclasses.asdict(settings)}, timeout
        )
        if response.status_code not in (200, 201, 409):
            raise http_error(response)

    async def _rank(self, run_id: str, groups: Sequence[Group], timeout: float
                    ) -> list[GroupResult]:
        body = {"run_id": run_id, "groups": [group_to_body(g) for g in groups]}
        response = await self._post("/v1/rank", body, timeout)
        if response.status_code != 200:
            raise http_error(response, groups)
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedResponse(f"HTTP /v1/rank: not a RankResponse: {exc!r}") from exc
        if not isinstance(results, list) or len(results) != len(groups):
            raise MalformedResponse(f"HTTP /v1/rank: not one result per group ({len(groups)})")
        return [result_from_body(r) for r in results]

    async def rank(
        self, run_id: str, groups: Sequence[Group], *, timeout: float
    ) -> AsyncIterator[GroupResult]:
        chunks = [groups[k : k + HTTP_GROUPS_PER_REQUEST]
                  for k in range(0, len(groups), HTTP_GROUPS_PER_REQUEST)]
        tasks = [asyncio.ensure_future(self._rank(run_id, c, timeout)) for c in chunks]
        error: TransportError | None = None
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    results = await next_done
                except TransportError as exc:
                    # Keep the error that fails the most: one that names a single group
                    # yields to one about the whole request.
                    if error is None or (error.group_id is not None and exc.group_id is None):
                        error = exc
                    continue
                for result in results:
                    yield result
        finally:
            for task in tasks:
                task.cancel()
                task.add_done_callback(_retrieve)
        if error is not None:
            raise error

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


Transport = GrpcTransport | HttpTransport


def make_transport(config: ClientConfig) -> Transport:
    """The transport of a :class:`~trainer_client.ClientConfig`; no I/O."""
    if config.transport == "http":
        assert config.http_url is not None  # ClientConfig checks it
        verify: bool | ssl.SSLContext = True
        if isinstance(config.tls, str):
            verify = ssl.create_default_context(cafile=config.tls)
        return HttpTransport(config.http_url, api_key=config.api_key, verify=verify)
    return GrpcTransport(config.target, api_key=config.api_key, tls=config.tls)


__all__ = [
    "CHANNEL_OPTIONS",
    "HTTP_GROUPS_PER_REQUEST",
    "GrpcTransport",
    "HttpTransport",
    "Transport",
    "grpc_error",
    "group_to_body",
    "group_to_proto",
    "http_error",
    "make_transport",
    "parse_retry_after",
    "result_from_body",
    "result_from_proto",
]
