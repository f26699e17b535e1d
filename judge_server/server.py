"""Both transports, gRPC and HTTP, in one asyncio loop on one :class:`ArenaService`.

:class:`JudgeServer` starts and stops them; :func:`run` is ``arena-judge serve``: it sets up
logging (the only place that does), runs the server until SIGINT or SIGTERM, and stops it
gracefully. Stopping: the health service says NOT_SERVING and ``/readyz`` 503, both transports
stop accepting, groups in flight get ``grace`` seconds to finish (streams take no new groups
and end with UNAVAILABLE once their groups in flight are answered), then the service closes.

Requests: a caller without a valid key is refused before its request is read, on both
transports, and no request larger than ``max_request_bytes`` is read (see
:class:`~.transports.grpc_api.KeyGate` and :class:`~.transports.http_api.BodyGuard`).

Readiness: the gRPC health service's Check answers NOT_SERVING, like ``/readyz`` 503, while
the judge or the store is not ready (:meth:`ArenaService.readiness`). Retention: while it runs,
the server expires idle runs every :attr:`~.core.runs.RunRegistry.sweep_every_s` (off when
runs are kept for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2

from trainer_client.protocol import SERVICE_NAME

from .app import build_service
from .core.service import ArenaService
from .settings import ServerSettings
from .transports.assembly import AssemblyOptions
from .transports.grpc_api import MAX_MESSAGE_BYTES, build_grpc_server, host_port
from .transports.http_api import build_app
from .transports.tenants import Authenticator, RedactKeys

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Idle HTTP connections are kept this long: longer than clients keep theirs (httpx: 5 s), so
# that the client, not the server, closes an idle connection and no request is sent on a
# connection the server is closing (uvicorn's default, 5 s, races httpx's and loses requests).
HTTP_KEEP_ALIVE_S = 75
# uvicorn's loggers: request lines (with their query strings, where the OpenRLHF route's
# ``api_key=`` is), errors, and at its trace level each request's scope.
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn.asgi")


def redact_keys_in_logs(*targets: logging.Logger | logging.Handler) -> None:
    """Put a :class:`~.transports.tenants.RedactKeys` filter on each of ``targets`` (default:
    uvicorn's loggers) that has none. A logger's filter sees the records logged on it; a handler's,
    every record it writes."""
    for target in targets or tuple(logging.getLogger(name) for name in UVICORN_LOGGERS):
        if not any(isinstance(f, RedactKeys) for f in target.filters):
            target.addFilter(RedactKeys())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the :class:`JudgeServer` owner has them."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ReadinessHealthServicer(health.aio.HealthServicer):
    """The standard health service, whose Check of the server ("") and the Arena service
    also asks the service whether it is ready (judge and store), as ``/readyz`` does."""

    def __init__(self, service: ArenaService) -> None:
        super().__init__()
        self.service = service

    async def Check(  # noqa: N802 - the generated servicer's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        response = await super().Check(request, context)
        if (
            request.service in (health.OVERALL_HEALTH, SERVICE_NAME)
            and response.status == health_pb2.HealthCheckResponse.SERVING
            and await self.service.readiness() is not None
        ):
            return health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.NOT_SERVING
            )
        return response


def _listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket (``port`` 0: a free one) for uvicorn to serve on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"HTTP: cannot listen on {host_port(host, port)}: {exc}") from exc
    return sock


class JudgeServer:
    """The gRPC and HTTP APIs of one service, in the running event loop.

    ``async with JudgeServer(service) as server:`` starts it on free ports (``server.grpc_port``,
    ``server.http_port``) and stops it on exit; or call :meth:`start` and :meth:`stop`. The
    server owns the service: :meth:`stop` closes it.
    """

    def __init__(
        self,
        service: ArenaService,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        access_log: bool = False,
        assembly: AssemblyOptions | None = None,
        authenticator: Authenticator | None = None,
        tls: tuple[Path, Path] | None = None,
        max_request_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.service = service
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.access_log = access_log
        self.authenticator = authenticator or Authenticator()
        self.tls = tls  # (certificate chain, private key), PEM files
        self.max_request_bytes = max_request_bytes  # largest gRPC message, HTTP body
        self.app = build_app(
            service, assembly=assembly, authenticator=self.authenticator,
            max_body_bytes=max_request_bytes,
        )
        self._draining = asyncio.Event()
        self._health: health.aio.HealthServicer | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: _Uvicorn | None = None
        self._http_task: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._stopped = False

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def grpc_address(self) -> str:
        return host_port(self.host, self.grpc_port)

    @property
    def http_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host_port(self.host, self.http_port)}"

    async def start(self) -> None:
        """Listen on both ports; returns when both accept requests."""
        self._health = ReadinessHealthServicer(self.service)
        self._grpc, self.grpc_port = await build_grpc_server(
            self.service,
            host=self.host,
            port=self.grpc_port,
            health_servicer=self._health,
            draining=self._draining,
            authenticator=self.authenticator,
            tls=None if self.tls is None else (self.tls[1].read_bytes(), self.tls[0].read_bytes()),
            max_message_bytes=self.max_request_bytes,
        )
        await self._grpc.start()
        redact_keys_in_logs()  # request lines show query strings: ?api_key= (OpenRLHF)
        try:
            sock = _listen(self.host, self.http_port)
            self.http_port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app,
                log_config=None,
                lifespan="off",
                access_log=self.access_log,
                timeout_keep_alive=HTTP_KEEP_ALIVE_S,
                ssl_certfile=None if self.tls is None else str(self.tls[0]),
                ssl_keyfile=None if self.tls is None else str(self.tls[1]),
            )
            self._http = _Uvicorn(config)
            self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
            while not self._http.started:
                if self._http_task.done():
                    await self._http_task  # raises why it failed
                    raise RuntimeError("HTTP server exited while starting")
                await asyncio.sleep(0.01)
        except BaseException:
            await self._grpc.stop(None)
            raise
        if self.service.runs.sweep_every_s is not None:
            self._sweeper = asyncio.create_task(self._sweep(self.service.runs.sweep_every_s))

    async def _sweep(self, every_s: float) -> None:
        """Expire idle runs every ``every_s`` until the server stops."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.service.runs.expire_idle()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.warning("expiring idle runs failed", exc_info=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Refuse new work, give groups in flight ``grace`` seconds, then close the service."""
        if self._stopped:
            return
        self._stopped = True
        self._draining.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.app.state.draining = True
        await self.app.state.assembler.aclose()  # answer the samples still waiting for a group
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        waits = []
        if self._grpc is not None:
            waits.append(self._grpc.stop(grace))
        if self._http is not None and self._http_task is not None:
            # uvicorn's annotation says int; it waits with asyncio.wait_for, a float is fine
            self._http.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
            self._http.should_exit = True
            waits.append(self._http_task)
        results = await asyncio.gather(*waits, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                logger.error("error while stopping", exc_info=result)
        await self.service.aclose()

    async def wait_http(self) -> None:
        """Wait until the HTTP server exits (it does on its own only when it fails)."""
        if self._http_task is not None:
            await asyncio.shield(self._http_task)

    async def __aenter__(self) -> JudgeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(settings: ServerSettings, *, service: ArenaService | None = None) -> None:
    """Run a server for ``settings`` until SIGINT or SIGTERM (a second one is not caught).

    ``service``: the service to serve (default: ``build_service(settings)``); tests pass one
    with a judge of their own.
    """
    server = JudgeServer(
        build_service(settings) if service is None else service,
        host=settings.host,
        grpc_port=settings.grpc_port,
        http_port=settings.http_port,
        access_log=settings.log_level == "debug",
        assembly=settings.assembly_options(),
        authenticator=Authenticator(settings.api_keys),
        tls=(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file and settings.tls_key_file  # both or neither (settings)
        else None,
        max_request_bytes=settings.max_request_bytes,
    )
    try:
        await server.start()
    except BaseException:
        await server.service.aclose()
        raise
    logger.info("gRPC on %s, HTTP on %s%s", server.grpc_address, server.http_url,
                " (TLS)" if server.tls else "")
    if server.authenticator.open:
        logger.warning("no API keys configured: the server is open to anyone who can reach "
                       "it (set ARENA_API_KEYS to require keys)")
    else:
        logger.info("API keys of %d tenants", len(server.authenticator.tenants))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        logger.info("%s: stopping (grace %.1f s)", signal.Signals(signum).name,
                    settings.shutdown_grace_s)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(server.wait_http())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        if failed.done() and not stopped.done():
            logger.error("the HTTP server exited; stopping")
        stopped.cancel()
        failed.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop(settings.shutdown_grace_s)
    logger.info("stopped")


def run(settings: ServerSettings) -> None:
    """``arena-judge serve``: configure logging, serve until SIGINT or SIGTERM, stop gracefully."""
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    redact_keys_in_logs(*logging.getLogger().handlers)  # whoever logs a key: never written
    asyncio.run(serve(settings))


__all__ = ["JudgeServer", "ReadinessHealthServicer", "run", "serve"]
