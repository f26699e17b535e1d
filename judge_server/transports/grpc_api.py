"""The gRPC transport (``grpc.aio``): wire messages in, :class:`ArenaService` calls, messages out.

The servicer is thin: it converts protobuf messages to :mod:`trainer_client.types` objects and
back (the ``*_from_proto`` / ``*_to_proto`` functions below, all pure) and answers an error
with the status code its class carries (``grpc_code``: the one table, in
:mod:`judge_server.errors`); anything else is INTERNAL "internal error" (logged).

RESOURCE_EXHAUSTED carries gRPC's standard trailing metadata ``grpc-retry-pushback-ms`` (when
to try again, in whole milliseconds): a caller whose channel has a retry policy for
RESOURCE_EXHAUSTED (service config) waits that long by itself, and the trainer client, which
retries on its own, reads it. (The custom ``retry-after`` trailer, in seconds, is no longer
sent: every trainer client reads the standard one.) The caller's API key is the metadata
``authorization: Bearer <key>`` (checked when the server has keys).

The status message is the exception's message (``"field: reason"``), never a stack trace. A
request that cannot be deserialized (for example a string field holding invalid UTF-8, which a
non-Python client can send) is INVALID_ARGUMENT naming the field when it can be found (within
:data:`WALK_FIELDS` fields: a longer search would hold the event loop).

A caller without a valid key (the server has keys) is refused with UNAUTHENTICATED before its
message is read (:class:`KeyGate`, an interceptor: it sees the metadata before the handler), so
that it costs neither memory nor parsing; a message larger than ``max_message_bytes`` (the
``max_request_bytes`` setting) is refused by gRPC with RESOURCE_EXHAUSTED.

:func:`build_grpc_server` adds the standard health service (``grpc.health.v1``) and server
reflection next to the Arena service, so ``grpcurl`` and Kubernetes gRPC probes work. The
Arena service is registered by the generated ``add_ArenaServicer_to_server``, its request
deserializers made lenient on the way (:func:`request_deserializer`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trainer_client.protocol import SERVICE_NAME, settings_to_proto
from trainer_client.protocol import arena_pb2 as pb
from trainer_client.protocol import arena_pb2_grpc as pb_grpc
from trainer_client.types import Group, GroupResult, RunSettings

from ..core.service import ArenaService
from ..core.validation import group_from_wire
from ..errors import (
    ArenaError,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    RunNotFound,
    ShuttingDown,
    Unauthenticated,
)
from .tenants import Authenticator

logger = logging.getLogger(__name__)

# The default largest message received (the ``max_request_bytes`` setting): a group of 1024
# traces of 64 KiB. Results sent are far smaller than requests; the send limit stays large.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_SEND_BYTES = 512 * 1024 * 1024
WALK_FIELDS = 50_000  # fields looked at to name a string field with invalid UTF-8 (~50 ms)

STREAM_DRAIN_S = 5.0  # longest wait for a refused stream's client to finish sending
SHUTTING_DOWN = (
    "the server is shutting down: groups of this stream that got no result were not ranked"
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an exception: its class's ``grpc_code``
    (:mod:`judge_server.errors`), else INTERNAL "internal error"."""
    if isinstance(exc, ArenaError) and exc.grpc_code != "INTERNAL":
        return grpc.StatusCode[exc.grpc_code], str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


# -- conversions: wire to domain and back --------------------------------------------------


def group_from_proto(message: pb.Group, field: str = "group") -> Group:
    """A :class:`Group` from its message (:func:`~..core.validation.group_from_wire`)."""
    return group_from_wire(
        message, field,
        reference=message.reference if message.HasField("reference") else None,
        step=message.step if message.HasField("step") else None,
    )


def result_to_proto(result: GroupResult) -> pb.GroupResult:
    return pb.GroupResult(**dataclasses.asdict(result), judge_calls=result.judge_calls)


def settings_from_proto(message: pb.RunSettings, defaults: RunSettings) -> RunSettings:
    """``message``'s settings; a field left unset (or zero, without presence) keeps ``defaults``.

    The proto's field names are :class:`RunSettings`' names, so this follows new fields.
    """
    given = {}
    for f in message.DESCRIPTOR.fields:
        if f.name == "run_id":
            continue
        if message.HasField(f.name) if f.has_presence else getattr(message, f.name):
            given[f.name] = getattr(message, f.name)
    return dataclasses.replace(defaults, run_id=message.run_id, **given)


def stats_to_proto(stats: dict) -> pb.RunStats:
    return pb.RunStats(**stats)


# -- requests that do not parse ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request message that failed to parse; the handler refuses it."""

    error: InvalidRequest


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class _TooLong(Exception):
    """The search for a field with invalid UTF-8 gave up (:data:`WALK_FIELDS`)."""


def _bad_utf8(
    descriptor: Descriptor, data: bytes, prefix: str, budget: list[int] | None = None
) -> InvalidRequest | None:
    """The first string field of ``data`` (a ``descriptor`` message) that is not UTF-8.

    ``budget``: fields still to look at, shared by the nested messages; raises
    :class:`_TooLong` when they are spent.
    """
    budget = [WALK_FIELDS] if budget is None else budget
    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong()
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            chunk, pos = data[pos : pos + length], pos + length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            name = field.name
            if field.is_repeated:
                counts[number] = counts.get(number, -1) + 1
                name = f"{name}[{counts[number]}]"
            path = f"{prefix}.{name}" if prefix else name
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    at = len(chunk[: exc.start].decode("utf-8"))
                    return InvalidRequest(path, f"invalid UTF-8 at character {at}")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _bad_utf8(field.message_type, chunk, path, budget)
                if found is not None:
                    return found
        else:
            return None
    return None


def _decode_error(cls: type[protobuf_message.Message], data: bytes) -> InvalidRequest:
    try:
        found = _bad_utf8(cls.DESCRIPTOR, data, "")
    except (IndexError, _TooLong):  # truncated (not even the wire format holds), or too long
        found = None
    if found is not None:
        return found
    return InvalidRequest("request", f"not a valid {cls.DESCRIPTOR.full_name} message")


def request_deserializer(cls: type[protobuf_message.Message]) -> Callable[[bytes], object]:
    """``cls.FromString``, but a message that does not parse becomes :class:`Undecodable`.

    (gRPC answers an exception raised while deserializing with INTERNAL; the handler answers
    an :class:`Undecodable` with INVALID_ARGUMENT.)
    """

    def deserialize(data: bytes) -> object:
        try:
            return cls.FromString(data)
        except protobuf_message.DecodeError:
            return Undecodable(_decode_error(cls, data))

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise request.error
    return request


# -- callers without a key: refused before their message is read -----------------------------


class KeyGate(grpc.aio.ServerInterceptor):
    """Refuses a call of the Arena service without a valid key (UNAUTHENTICATED) before its
    request is read or parsed.

    The handler that refuses reads no request: for a unary method, a handler that takes a
    request stream it never iterates (so gRPC does not receive the message before calling it)
    and whose deserializer is the identity. Health and reflection need no key.
    """

    def __init__(self, authenticator: Authenticator, service: ArenaService | None = None) -> None:
        self.authenticator = authenticator
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = getattr(handler_call_details, "method", "")
        if self.authenticator.open or not method.startswith(f"/{SERVICE_NAME}/"):
            return await continuation(handler_call_details)
        metadata = getattr(handler_call_details, "invocation_metadata", None) or ()
        found = [v for k, v in metadata if k == "authorization" and isinstance(v, str)]
        try:
            self.authenticator.tenant(found[0] if found else None)
        except Unauthenticated as exc:
            if self.service is not None:
                self.service.metrics.unauthorised.labels("grpc").inc()
            return _refusal(await continuation(handler_call_details), exc)
        return await continuation(handler_call_details)


def _refusal(
    handler: grpc.RpcMethodHandler | None, error: Unauthenticated
) -> grpc.RpcMethodHandler:
    """A handler that answers ``error`` without parsing a request. A unary request is not
    read at all; a stream's messages are read as bytes and dropped (:func:`_drain`, bounded
    by :data:`STREAM_DRAIN_S`), or the client may see INTERNAL instead of UNAUTHENTICATED."""

    async def refuse(requests: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))

    async def refuse_stream(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> None:
        await _drain(requests)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))

    serializer = None if handler is None else handler.response_serializer
    if handler is not None and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, None, serializer)
    return grpc.stream_unary_rpc_method_handler(refuse, None, serializer)


# -- the servicer --------------------------------------------------------------------------


def _errors_to_status(method):
    """Run a handler; map what it raises to one status via :func:`status_for`, and abort."""

    @functools.wraps(method)
    async def handler(self: ArenaServicer, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            code, message = status_for(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self.service.metrics.invalid.labels("grpc").inc()
            elif isinstance(exc, (Unauthenticated, PermissionDenied)):
                self.service.metrics.unauthorised.labels("grpc").inc()
            elif code == grpc.StatusCode.INTERNAL:
                logger.exception("internal error in %s", method.__name__)
            trailing: tuple[tuple[str, str], ...] = ()
            if isinstance(exc, Overloaded):
                # gRPC's pushback trailer (retry spec A6): a decimal integer of milliseconds.
                pushback_ms = str(math.ceil(exc.retry_after_s * 1e3))
                trailing = (("grpc-retry-pushback-ms", pushback_ms),)
            await context.abort(code, message, trailing_metadata=trailing)

    return handler


class _Messages:
    """A stream's request messages until the client ends it or the server starts to drain."""

    def __init__(self, requests: AsyncIterator, draining: asyncio.Event) -> None:
        self.requests = requests
        self.draining = draining
        self.cut = False  # True when draining ended the stream, not the client

    async def __aiter__(self):
        drained = asyncio.ensure_future(self.draining.wait())
        read = None
        try:
            while True:
                read = asyncio.ensure_future(self.requests.__anext__())
                await asyncio.wait({read, drained}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    self.cut = True
                    return
                try:
                    message = read.result()
                except StopAsyncIteration:
                    return
                yield message
        finally:
            drained.cancel()
            if read is not None:
                read.cancel()


async def _drain(requests: AsyncIterator, limit_s: float = STREAM_DRAIN_S) -> None:
    """Read what the client still sends before a stream is refused.

    A grpc.aio client whose write is still in flight when the server ends the stream reports
    INTERNAL "Internal error from Core" instead of the server's status (grpc/grpc#36066);
    our client sends a whole batch and half-closes, so waiting for that takes little.
    """
    async def read_all() -> None:
        async for _ in requests:
            pass

    try:
        await asyncio.wait_for(read_all(), limit_s)
    except (asyncio.TimeoutError, grpc.aio.AioRpcError):
        pass


class ArenaServicer(pb_grpc.ArenaServicer):
    """The Arena service over an :class:`ArenaService`.

    ``draining`` is set when the server starts to stop: streams then take no new groups,
    finish the ones in flight, and end with UNAVAILABLE so that the client resends the rest.
    """

    def __init__(
        self,
        service: ArenaService,
        *,
        draining: asyncio.Event | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.service = service
        self.draining = draining or asyncio.Event()
        self.authenticator = authenticator or Authenticator()

    def tenant(self, context: grpc.aio.ServicerContext) -> str | None:
        """The caller's tenant, from the ``authorization`` metadata (None: open server)."""
        if self.authenticator.open:
            return None
        found = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        return self.authenticator.tenant(found[0] if found else None)

    @_errors_to_status
    async def Rank(self, request, context):
        if self.draining.is_set():  # health says NOT_SERVING: no new groups from now on
            raise ShuttingDown()
        tenant = self.tenant(context)
        request = _checked(request)
        groups = [group_from_proto(g, f"groups[{k}]") for k, g in enumerate(request.groups)]
        results = await self.service.rank(request.run_id, groups, tenant=tenant)
        return pb.RankResponse(results=[result_to_proto(r) for r in results])

    @_errors_to_status
    async def RankStream(self, request_iterator, context):
        try:
            tenant = self.tenant(context)
        except Unauthenticated:
            await _drain(request_iterator)
            raise
        writing = asyncio.Lock()  # results and refusals are written from two tasks

        async def send(result: GroupResult) -> None:
            if result.status == "invalid":
                self.service.metrics.invalid.labels("grpc").inc()
            async with writing:
                await context.write(result_to_proto(result))

        messages = _Messages(request_iterator, self.draining)
        allowed: set[str] = set()  # runs this caller may use, checked at their first group

        async def groups():
            async for message in messages:
                message = _checked(message)
                try:
                    group = group_from_proto(message.group, "group")
                    if message.run_id not in allowed:  # found (or made) at its first group
                        await self.service.open_run(message.run_id, tenant=tenant)
                        allowed.add(message.run_id)
                except (InvalidRequest, RunNotFound) as exc:
                    await send(GroupResult(
                        group_id=message.group.group_id, advantages=(), routed=False,
                        status="invalid", error=str(exc),
                    ))
                    continue
                yield message.run_id, group

        try:
            async for result in self.service.rank_stream(groups(), tenant=tenant):
                await send(result)
        except PermissionDenied:
            await _drain(request_iterator)
            raise
        if messages.cut:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    @_errors_to_status
    async def CreateRun(self, request, context):
        tenant = self.tenant(context)
        request = _checked(request)
        run_id = request.settings.run_id
        defaults = self.service.settings_for_new_run(run_id)
        created = await self.service.create_run(
            settings_from_proto(request.settings, defaults), tenant=tenant
        )
        return settings_to_proto(created)

    @_errors_to_status
    async def GetRun(self, request, context):
        tenant = self.tenant(context)
        request = _checked(request)
        return settings_to_proto(await self.service.get_run(request.run_id, tenant=tenant))

    @_errors_to_status
    async def DeleteRun(self, request, context):
        tenant = self.tenant(context)
        request = _checked(request)
        deleted = await self.service.delete_run(request.run_id, tenant=tenant)
        return pb.DeleteRunResponse(deleted=deleted)

    @_errors_to_status
    async def GetRunStats(self, request, context):
        tenant = self.tenant(context)
        request = _checked(request)
        return stats_to_proto(await self.service.run_stats(request.run_id, tenant=tenant))


class _LenientRegistration:
    """Stands in for the server in the generated ``add_ArenaServicer_to_server``: registers
    its method handlers on ``server`` with each deserializer made :func:`request_deserializer`.
    (The generated function hard-codes ``FromString``, which answers a request that does not
    parse with INTERNAL instead of INVALID_ARGUMENT naming the field.)"""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: :meth:`add_registered_method_handlers` registers the same methods."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        lenient = {
            # a generated handler is grpc's namedtuple; its deserializer, cls.FromString
            name: handler._replace(
                request_deserializer=request_deserializer(
                    handler.request_deserializer.__self__
                )
            )
            for name, handler in handlers.items()
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, lenient),)
        )
        self.server.add_registered_method_handlers(service, lenient)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def build_grpc_server(
    service: ArenaService,
    *,
    host: str,
    port: int,
    health_servicer: health.aio.HealthServicer | None = None,
    draining: asyncio.Event | None = None,
    authenticator: Authenticator | None = None,
    tls: tuple[bytes, bytes] | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.aio.Server, int]:
    """An unstarted ``grpc.aio`` server with the Arena, health and reflection services.

    ``port`` 0 picks a free port; the bound port is returned. The health service answers
    SERVING for the server ("") and for the Arena service. Pass ``health_servicer`` and
    ``draining`` to control them when stopping (see :class:`judge_server.server.JudgeServer`).
    ``tls``: (PEM private key, PEM certificate chain) to serve over TLS. Health and
    reflection need no API key (probes and grpcurl). ``max_message_bytes``: the largest request
    message received (larger: RESOURCE_EXHAUSTED, from gRPC).
    """
    authenticator = authenticator or Authenticator()
    server = grpc.aio.server(
        interceptors=[KeyGate(authenticator, service)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),  # a second server on the port is an error, not a twin
        ],
    )
    pb_grpc.add_ArenaServicer_to_server(
        ArenaServicer(service, draining=draining, authenticator=authenticator),
        _LenientRegistration(server),
    )

    health_servicer = health_servicer or health.aio.HealthServicer()
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    try:
        if tls is None:
            bound = server.add_insecure_port(host_port(host, port))
        else:
            credentials = grpc.ssl_server_credentials([tls])
            bound = server.add_secure_port(host_port(host, port), credentials)
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise OSError(f"gRPC: cannot listen on {host_port(host, port)}") from exc
    return server, bound


__all__ = [
    "MAX_MESSAGE_BYTES",
    "SERVICE_NAME",
    "ArenaServicer",
    "KeyGate",
    "Undecodable",
    "build_grpc_server",
    "group_from_proto",
    "request_deserializer",
    "result_to_proto",
    "settings_from_proto",
    "settings_to_proto",
    "stats_to_proto",
    "status_for",
]
