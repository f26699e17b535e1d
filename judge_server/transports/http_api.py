"""The HTTP transport (FastAPI): JSON bodies in, :class:`ArenaService` calls, JSON out.

:func:`build_app` makes the app for one service; there is no module-level app or settings.
The routes only convert :mod:`judge_server.transports.http_protocol` bodies to
:mod:`trainer_client.types` objects and back. Every error goes through :func:`error_response`: a
:mod:`judge_server.errors` class answers with the HTTP status its class carries
(``http_status``; the body's ``code`` is its gRPC code in lower case: the one table is in
:mod:`judge_server.errors`), and the rest here:

    RequestValidationError    422 invalid_argument  (pydantic's; field: group.traces[2].reward)
    Unauthenticated           (401) with WWW-Authenticate: Bearer
    Overloaded                (429) with Retry-After: seconds
    HTTPException (Starlette) its status            (unknown path 404, wrong method 405, ...)
    anything else             500 internal "internal error" (logged, never a stack trace)

Bodies are decoded as UTF-8 with invalid bytes kept as lone surrogates, so that a string with
invalid UTF-8 is refused by the service's checks naming its field, with the gRPC API's message
(bytes that break the JSON itself are a 422 naming ``body``).

The caller's API key is the ``Authorization: Bearer <key>`` header (checked when the server has
keys; the OpenRLHF route also takes ``?api_key=``, as OpenRLHF sends no headers). ``/healthz``,
``/readyz`` and ``/metrics`` need no key: keep them inside the cluster (see k8s/). The OpenAPI
spec declares the header as the ``bearer`` security scheme (and the query parameter as
``apiKeyQuery``, on that route) for the routes that take a key; the schemes only document:
:class:`Authenticator` checks the key and its errors are the table's.

Before any route reads a body, :class:`BodyGuard` (pure ASGI, outside FastAPI) refuses a
request to ``/v1/`` without a valid key (401) and a body larger than ``max_body_bytes`` (the
``max_request_bytes`` setting; 413 ``too_large``, by its Content-Length or while it streams):
a caller without a key costs neither memory nor parsing.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, cast
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyQuery, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainer_client.types import Group, GroupResult, RunSettings

from ..core.service import ArenaService
from ..core.validation import group_from_wire
from ..errors import ArenaError, InvalidRequest, Overloaded, ShuttingDown, Unauthenticated
from .assembly import AssemblyOptions, GroupAssembler, Sample, SampleScore, response_of
from .http_protocol import (
    CreateRunRequest,
    DeleteRunResponse,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    GroupIn,
    GroupResultOut,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    RunList,
    RunSettingsOut,
    RunStatsOut,
    ServerStatsOut,
    Status,
)
from .status_page import STATUS_PAGE
from .tenants import Authenticator

logger = logging.getLogger(__name__)

HTTP_STATUS_CODES: dict[int, ErrorCode] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "already_exists",
    413: "too_large",
    422: "invalid_argument",
    429: "resource_exhausted",
    503: "unavailable",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 422, 429, 500, 503)
}


# -- conversions: wire to domain and back --------------------------------------------------


def group_from_body(body: GroupIn, field: str = "group") -> Group:
    """A :class:`Group` from its body (:func:`~..core.validation.group_from_wire`)."""
    return group_from_wire(body, field, reference=body.reference, step=body.step)


def result_to_body(result: GroupResult) -> GroupResultOut:
    return GroupResultOut(**dataclasses.asdict(result), judge_calls=result.judge_calls)


def settings_to_body(settings: RunSettings) -> RunSettingsOut:
    return RunSettingsOut(**dataclasses.asdict(settings))


def _field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's ``("body", "group", "traces", 2, "reward")`` as ``group.traces[2].reward``."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "path", "query") else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


# -- the one error table -------------------------------------------------------------------


def _error(
    status: int, code: ErrorCode, field: str | None, message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates
    body = ErrorBody(error=ErrorDetail(code=code, field=field, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def error_response(exc: Exception, service: ArenaService | None = None) -> JSONResponse:
    """The response for an exception: its class's ``http_status`` (:mod:`judge_server.errors`);
    counts refused requests."""
    if isinstance(exc, StarletteHTTPException):
        field = "body" if exc.status_code in (400, 413) else None
        message = f"body: {exc.detail}" if field else str(exc.detail)
        return _error(
            exc.status_code, HTTP_STATUS_CODES.get(exc.status_code, "error"), field, message
        )
    status: int
    code: ErrorCode
    if isinstance(exc, RequestValidationError):
        status, code = 422, "invalid_argument"
    elif isinstance(exc, ArenaError) and exc.http_status != 500:
        status, code = exc.http_status, cast(ErrorCode, exc.error_code)
    else:
        logger.error("internal error", exc_info=exc)
        return _error(500, "internal", None, "internal error")
    if status in (400, 422) and service is not None:
        service.metrics.invalid.labels("http").inc()
    if status in (401, 403) and service is not None:
        service.metrics.unauthorised.labels("http").inc()
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
        return _error(status, code, exc.field, str(exc), headers)
    if isinstance(exc, Overloaded):  # whole seconds, as HTTP has it (gRPC's hint is exact)
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return _error(status, code, None, str(exc), headers)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "malformed")
            return _error(status, code, "body", f"body: invalid JSON: {reason}")
        field = _field_path(tuple(first.get("loc", ())))
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more error{'s' * (more > 1)})" if more else ""
        return _error(status, code, field, f"{field}: {first.get('msg', 'invalid')}{suffix}")
    return _error(status, code, getattr(exc, "field", None), str(exc))


class _LenientJSONRequest(Request):
    """Parses the body as JSON with invalid UTF-8 kept as lone surrogates (see module doc)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = (await self.body()).removeprefix(codecs.BOM_UTF8)
            self._json = json.loads(body.decode("utf-8", "surrogateescape"))
        return self._json


# The API key in the OpenAPI spec. auto_error=False: these never refuse a request (the
# Authenticator does, with the table's 401); they only declare the schemes on the routes.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="An API key: `Authorization: Bearer <key>`, needed when the server has keys "
    "(ARENA_API_KEYS).",
    auto_error=False,
)
API_KEY_QUERY = APIKeyQuery(
    name="api_key",
    scheme_name="apiKeyQuery",
    description="The API key as a query parameter, for callers that cannot send headers "
    "(OpenRLHF's remote reward URL).",
    auto_error=False,
)
KEYED = [Security(BEARER)]  # the routes that take a key


class _ArenaRoute(APIRoute):
    """Every route's errors go through :func:`error_response`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(_LenientJSONRequest(request.scope, request.receive))
            except Exception as exc:  # noqa: BLE001 - the one place errors become responses
                return error_response(exc, request.app.state.service)

        return route


# -- before the body: the key and the size ----------------------------------------------------

MAX_BODY_BYTES = 64 * 1024 * 1024  # the max_request_bytes setting's default
KEYED_PREFIX = "/v1/"  # the paths that take a key (the rest: health, metrics, docs, status)
QUERY_KEY_PREFIX = "/v1/openrlhf/"  # the paths that also take ?api_key=


def _too_large(limit: int) -> StarletteHTTPException:
    return StarletteHTTPException(413, f"larger than the limit of {limit} bytes")


class BodyGuard:
    """Pure ASGI middleware: the key and the body's size, checked before the body is read.

    A request to a keyed path (``/v1/...``) without a valid key (the ``authorization`` header,
    or ``?api_key=`` on the OpenRLHF route) is answered 401 at once; its body is never read.
    A body larger than ``max_body_bytes`` is answered 413: by its Content-Length before it is
    read, or as soon as what has been read passes the limit. The routes check the key again
    (for its tenant): this only refuses early.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        max_body_bytes: int = MAX_BODY_BYTES,
        service: ArenaService | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limit, seen = self.max_body_bytes, 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except asyncio.CancelledError:
            # The drain ended with this request in flight (uvicorn cancels it): answer with the
            # error body every refusal has (503, send again), not uvicorn's plain-text 500.
            if not started:
                await error_response(ShuttingDown(), self.service)(scope, receive, send)
            raise

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            if length.isdigit():
                return error_response(_too_large(self.max_body_bytes))
            return error_response(StarletteHTTPException(400, "invalid Content-Length"))
        path: str = scope.get("path", "")
        if self.authenticator.open or not path.startswith(KEYED_PREFIX):
            return None
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        if path.startswith(QUERY_KEY_PREFIX):
            keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
            if keys:
                authorization = f"Bearer {keys[0]}"
        try:
            self.authenticator.tenant(authorization)
        except Unauthenticated as exc:
            return error_response(exc, self.service)
        return None


# -- per-sample rewards: OpenRLHF's remote reward URL, and any trainer that scores one sample
# at a time. The route translates the body into samples and calls the GroupAssembler
# (judge_server.transports.assembly), which buffers them into groups and ranks each group once.

OPENRLHF_COLUMNS = {
    "response": "query",
    "prompt": "prompts",
    "label": "labels",
    "group_key": "group_ids",
    "reward": "verifiable_rewards",
}


def samples_from_openrlhf(body: OpenRLHFRewardRequest) -> list[Sample]:
    """One :class:`Sample` per query; every other column, when given, matches it in length."""
    n = len(body.query)
    columns: dict[str, list[Any]] = {}
    for attr, name in OPENRLHF_COLUMNS.items():
        values = getattr(body, name) if attr != "response" else body.query
        if values is not None and len(values) != n:
            raise InvalidRequest(name, f"{len(values)} {name} for {n} queries: lengths differ")
        columns[attr] = values or [None] * n
    samples = []
    for k in range(n):
        prompt, label = columns["prompt"][k], columns["label"][k]
        samples.append(
            Sample(
                response=response_of(body.query[k], prompt),
                prompt=prompt or "",
                label=None if label is None else str(label),
                group_key=columns["group_key"][k],
                reward=columns["reward"][k],
            )
        )
    return samples


def openrlhf_body(scores: list[SampleScore]) -> OpenRLHFRewardResponse:
    return OpenRLHFRewardResponse(
        rewards=[s.value for s in scores],
        scores=[s.verifiable for s in scores],
        extra_logs={
            "arena_verifiable": [s.verifiable for s in scores],
            "arena_judge": [s.judge for s in scores],
            "arena_judged": [float(s.status == "judged") for s in scores],
            "arena_group_size": [float(s.group_size) for s in scores],
        },
    )


def _add_openrlhf_route(
    app: FastAPI, assembler: GroupAssembler, caller: Callable[..., str | None]
) -> None:
    @app.post(
        "/v1/openrlhf/{run_id}",
        response_model=OpenRLHFRewardResponse,
        responses=ERROR_RESPONSES,
        dependencies=[*KEYED, Security(API_KEY_QUERY)],  # either one
        summary="Score samples one at a time (OpenRLHF --reward.remote_url); each is judged "
        "with the rest of its group",
    )
    async def openrlhf_reward(
        request: Request,
        run_id: str,
        body: OpenRLHFRewardRequest,
        group_size: int | None = Query(None, description="Samples per group (server default)."),
        timeout_s: float | None = Query(None, description="Wait for the group (server default)."),
        api_key: str | None = Query(
            None, description="The API key, for callers that cannot send headers (OpenRLHF)."
        ),
    ) -> OpenRLHFRewardResponse:
        if app.state.draining:
            raise ShuttingDown()
        tenant = caller(request) if api_key is None else caller(request, f"Bearer {api_key}")
        scores = await assembler.score_many(
            run_id,
            samples_from_openrlhf(body),
            group_size=group_size,
            timeout_s=timeout_s,
            columns=OPENRLHF_COLUMNS,
            tenant=tenant,
        )
        return openrlhf_body(scores)


# -- the app -------------------------------------------------------------------------------


def build_app(
    service: ArenaService,
    *,
    assembly: AssemblyOptions | None = None,
    authenticator: Authenticator | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The HTTP API of ``service``. Set ``app.state.draining`` to make ``/readyz`` answer 503.

    Callers without a valid key and bodies over ``max_body_bytes`` are refused before the body
    is read (:class:`BodyGuard`).

    ``authenticator`` holds the API keys (none: the server is open). ``assembly`` configures
    the per-sample route's group buffer (``app.state.assembler``; close
    it with ``await app.state.assembler.aclose()`` before closing the service).
    """
    app = FastAPI(
        title="Reasoning Arena judge",
        version="1",
        description="Groups of reasoning traces in, advantages out. Dead groups (all rewards "
        "equal) are judged in a tournament; every error body is an ErrorBody.",
    )
    app.router.route_class = _ArenaRoute
    app.state.service = service
    app.state.draining = False
    auth = authenticator or Authenticator()
    app.add_middleware(
        BodyGuard, authenticator=auth, max_body_bytes=max_body_bytes, service=service
    )

    def caller(request: Request, authorization: str | None = None) -> str | None:
        """The tenant of the request's key (None: the server is open)."""
        return auth.tenant(authorization or request.headers.get("authorization"))

    async def http_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    app.add_exception_handler(StarletteHTTPException, http_error)  # unknown paths and methods

    @app.post(
        "/v1/rank",
        response_model=GroupResultOut | RankResponse,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="Rank one group (answer: its result) or several (answer: results in order)",
    )
    async def rank(request: Request, body: RankRequest) -> GroupResultOut | RankResponse:
        if app.state.draining:  # /readyz says 503: no new groups from now on
            raise ShuttingDown()
        tenant = caller(request)
        if body.group is not None and body.groups is not None:
            raise InvalidRequest("groups", "give either group or groups, not both")
        if body.group is not None:
            group = group_from_body(body.group, "group")
            return result_to_body(await service.rank_group(body.run_id, group, tenant=tenant))
        if body.groups is None:
            raise InvalidRequest("group", "give group (one group) or groups (a list)")
        groups = [group_from_body(g, f"groups[{k}]") for k, g in enumerate(body.groups)]
        results = await service.rank(body.run_id, groups, tenant=tenant)
        return RankResponse(results=[result_to_body(r) for r in results])

    @app.post(
        "/v1/runs",
        status_code=201,
        response_model=RunSettingsOut,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="Create a run; settings left out take the server's defaults",
    )
    async def create_run(request: Request, body: CreateRunRequest) -> RunSettingsOut:
        tenant = caller(request)
        given = body.settings.model_dump(exclude_none=True)
        settings = dataclasses.replace(service.settings_for_new_run(given.pop("run_id")), **given)
        return settings_to_body(await service.create_run(settings, tenant=tenant))

    @app.get(
        "/v1/runs", response_model=RunList, responses=ERROR_RESPONSES, dependencies=KEYED,
        summary="Every run (of the caller's tenant)",
    )
    async def list_runs(request: Request) -> RunList:
        runs = await service.list_runs(tenant=caller(request))
        return RunList(runs=[settings_to_body(s) for s in runs])

    @app.get(
        "/v1/runs/{run_id}",
        response_model=RunSettingsOut,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="A run's settings",
    )
    async def get_run(request: Request, run_id: str) -> RunSettingsOut:
        return settings_to_body(await service.get_run(run_id, tenant=caller(request)))

    @app.get(
        "/v1/runs/{run_id}/stats",
        response_model=RunStatsOut,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="A run's figures on this server",
    )
    async def run_stats(request: Request, run_id: str) -> RunStatsOut:
        return RunStatsOut(**await service.run_stats(run_id, tenant=caller(request)))

    @app.get(
        "/v1/stats",
        response_model=ServerStatsOut,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="Every run's figures (of the caller's tenant) and the judge queue's",
    )
    async def server_stats(request: Request) -> ServerStatsOut:
        stats = await service.server_stats(tenant=caller(request))
        return ServerStatsOut(**stats, open=auth.open)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(STATUS_PAGE)

    @app.delete(
        "/v1/runs/{run_id}",
        response_model=DeleteRunResponse,
        responses=ERROR_RESPONSES,
        dependencies=KEYED,
        summary="Delete a run, its settings and its anchor pool",
    )
    async def delete_run(request: Request, run_id: str) -> DeleteRunResponse:
        return DeleteRunResponse(deleted=await service.delete_run(run_id, tenant=caller(request)))

    @app.get("/healthz", response_model=Status, summary="The process is alive")
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get(
        "/readyz",
        response_model=Status,
        responses={503: {"model": Status}},
        summary="Ready to rank: the judge answers, the store reads and writes, and the server "
        "is not draining",
    )
    async def readyz() -> Response:
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        not_ready = await service.readiness()  # "judge unavailable", "store unavailable"
        if not_ready is not None:
            return JSONResponse({"status": not_ready}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.state.assembler = GroupAssembler(service, assembly)
    _add_openrlhf_route(app, app.state.assembler, caller)
    return app


__all__ = [
    "BodyGuard",
    "build_app",
    "error_response",
    "group_from_body",
    "openrlhf_body",
    "samples_from_openrlhf",
    "result_to_body",
    "settings_to_body",
]
