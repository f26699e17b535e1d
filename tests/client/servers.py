"""Tiny real servers on loopback that misbehave on purpose, and a TCP proxy that can cut.

:class:`ScriptedArena` is a gRPC Arena service and :class:`ScriptedHttp` an HTTP one; both
answer the n-th rank request as ``script(n)`` says ("ok", "overloaded", "unavailable",
"malformed", "internal"...) and count the requests they got. :class:`CuttingProxy` forwards
TCP to a server and breaks every open connection on :meth:`CuttingProxy.cut`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc

Script = Callable[[int], str]


def centred(n: int) -> list[float]:
    """Zero-mean advantages for n traces: what the scripted servers answer."""
    return [k - (n - 1) / 2 for k in range(n)]


class ScriptedArena(pb_grpc.ArenaServicer):
    """A gRPC Arena whose n-th RankStream (from 1) does what ``script(n)`` says; a refusal
    carries ``trailer`` (a ``(key, value)`` of trailing metadata) when given."""

    def __init__(self, script: Script, *, trailer: tuple[str, str] | None = None) -> None:
        self.script = script
        self.trailer = trailer
        self.calls = 0
        self.groups_received = 0
        self.create_run_calls = 0

    async def CreateRun(self, request, context):
        self.create_run_calls += 1
        return request.settings

    async def RankStream(self, request_iterator, context):
        self.calls += 1
        action = self.script(self.calls)
        requests = [r async for r in request_iterator]
        self.groups_received += len(requests)
        if action in ("overloaded", "unavailable", "internal"):
            if self.trailer is not None:
                context.set_trailing_metadata((self.trailer,))
            code = {"overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "unavailable": grpc.StatusCode.UNAVAILABLE,
                    "internal": grpc.StatusCode.INTERNAL}[action]
            await context.abort(code, f"scripted: {action}")
        for r in reversed(requests):  # out of order, as a real server may answer
            n = len(r.group.texts) or len(r.group.traces)
            if action == "malformed":
                yield pb.GroupResult(group_id=r.group.group_id, advantages=[1.0], routed=True,
                                     status="ok")
                yield pb.GroupResult(group_id="nobody-sent-this", advantages=[0.0] * n)
            elif action == "judge_failed":
                yield pb.GroupResult(group_id=r.group.group_id, advantages=[0.0] * n,
                                     routed=True, status="judge_failed", error="scripted",
                                     judge_calls=2)
            elif action == "invalid":
                yield pb.GroupResult(group_id=r.group.group_id, status="invalid",
                                     error="group.traces: scripted")
            elif action == "short":  # ends the stream cleanly without answering
                return
            else:
                yield pb.GroupResult(group_id=r.group.group_id, advantages=centred(n),
                                     strengths=centred(n), routed=True, status="ok",
                                     judge_calls=n)


async def start_scripted_arena(arena: ScriptedArena) -> tuple[grpc.aio.Server, str]:
    """Serve ``arena`` on a free loopback port (call in the serving loop)."""
    server = grpc.aio.server()
    pb_grpc.add_ArenaServicer_to_server(arena, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


class ScriptedHttp:
    """An HTTP judge (``http.server`` in a thread) whose n-th ``POST /v1/rank`` does what
    ``script(n)`` says; ``POST /v1/runs`` answers 201."""

    def __init__(self, script: Script, *, retry_after: str | None = None) -> None:
        self.script = script
        self.retry_after = retry_after
        self.calls = 0
        self.create_run_calls = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path == "/v1/runs":
                    with owner._lock:
                        owner.create_run_calls += 1
                    self._reply(201, json.dumps(request["settings"]).encode())
                    return
                with owner._lock:
                    owner.calls += 1
                    action = owner.script(owner.calls)
                headers = {"retry-after": owner.retry_after} if owner.retry_after else {}
                error = {"overloaded": 429, "unavailable": 503, "internal": 500}.get(action)
                if error is not None:
                    body = {"error": {"code": "unavailable", "field": None, "message": action}}
                    self._reply(error, json.dumps(body).encode(), headers)
                elif action == "malformed":
                    self._reply(200, b"{not json")
                elif action == "invalid_group":  # refuses a group whose id ends in "-1"
                    groups = request["groups"]
                    bad = [k for k, g in enumerate(groups) if g["group_id"].endswith("-1")]
                    if bad:
                        field = f"groups[{bad[0]}].traces[0].text"
                        body = {"error": {"code": "invalid_argument", "field": field,
                                          "message": f"{field}: too long"}}
                        self._reply(400, json.dumps(body).encode())
                    else:
                        self._ok(groups)
                else:
                    self._ok(request["groups"])

            def _ok(self, groups: list[dict]) -> None:
                results = [
                    {"group_id": g["group_id"], "advantages": centred(len(g["texts"])),
                     "strengths": centred(len(g["texts"])), "routed": True, "status": "ok",
                     "judge_calls": len(g["texts"])}
                    for g in groups
                ]
                self._reply(200, json.dumps({"results": results}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CuttingProxy:
    """Forwards loopback TCP connections to ``upstream_port``; :meth:`cut` resets them all
    (new connections are forwarded again). Start it in a running loop with :meth:`start`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self._transports: set[asyncio.WriteTransport] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._transports -= pair

    async def cut(self) -> None:
        """Reset every open connection, both ways."""
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
