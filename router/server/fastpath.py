"""Stage 1, the hot half: a thin ASGI front for the generating endpoints (POST chat
completions, responses, messages and Gemini's generate/streamGenerateContent, each also
under /{provider}/). Everything else (model lists, count_tokens, management, OAuth, a
wrong method or an odd path) goes to the Litestar app behind it.

Both fronts run the same `endpoints.serve`; this one only skips Litestar's per-request
machinery (routing, middleware, Request and Response objects), about a sixth of the
worker's time under load. It reproduces what the client sees from Litestar: the body
size limit (413 in the client's protocol), header names and order, content-type with
charset for text types, and a stream cancelled when the client goes away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from router.protocols import ir, paths
from router.providers.upstream import UPSTREAM_WAIT, Stopwatch
from router.records.outcome import Trace
from router.server.client_timeouts import BODY_TIMEOUT, body_too_slow
from router.server.disconnect import WATCH_DISCONNECT_AFTER, DisconnectWatch
from router.server.endpoints import Incoming, serve, too_large
from router.server.errors import error_parts
from router.server.respond import Reply
from router.server.state import PlanHolder

log = logging.getLogger("router.fastpath")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    query: dict[str, str] = {}
    if raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            query.setdefault(name, value)  # the first of repeated names, as Litestar
    return query


class _Body:
    """Reads the request body within the size limit and ROUTER_BODY_TIMEOUT."""

    __slots__ = ("headers", "limit", "receive")

    def __init__(self, receive: Receive, headers: dict[str, str], limit: int) -> None:
        self.receive = receive
        self.headers = headers
        self.limit = limit

    async def read(self) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise too_large()
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                return await self._chunks()
        except TimeoutError:
            raise body_too_slow() from None

    async def _chunks(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ir.Error(499, "invalid_request", "client disconnected prematurely")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.limit:
                    raise too_large()
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_type(media_type: str) -> bytes:
    if media_type.startswith("text/") and "charset" not in media_type:
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


def _start(reply: Reply) -> Message:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    headers.append((b"content-type", _content_type(reply.media_type)))
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    return {"type": "http.response.start", "status": reply.status, "headers": headers}


async def _send_stream(
    start: Message, stream: AsyncIterator[bytes], receive: Receive, send: Send, trace: Trace
) -> None:
    """Send `start`, then relay `stream`; when the client goes away, stop (closing the
    upstream call) with one debug line: a client hanging up mid-stream is normal
    operation. The request's trace is finished either way."""
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch(task, receive)
    # as for the call itself: a stream over within this long needs no watcher task
    timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER, watch.start)
    status = 499  # unless the stream runs to its end
    try:
        await send(start)
        async for chunk in stream:
            trace.sent(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        status = trace.status
    except asyncio.CancelledError:
        if not (watch.gone and task.uncancel() == 0):
            raise
        log.debug("client disconnected mid-stream")
    except OSError as exc:  # the server could not write to the client any more
        log.debug("client disconnected mid-stream: %s", exc)
    finally:
        trace.finish(status)
        timer.cancel()
        watch.stop()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _with_overhead(send: Send, started: float, wait: Stopwatch) -> Send:
    """`send` adding x-router-overhead-ms to a response Litestar serves (model lists,
    management, count_tokens...), less what went through `upstream` (health checks)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == _OVERHEAD for name, _ in headers):  # not set by serve
                seconds = max(time.perf_counter() - started - wait.seconds, 0.0)
                headers.append((_OVERHEAD, f"{seconds * 1000:.3f}".encode()))
                message["headers"] = headers
        await send(message)

    return sending


_OVERHEAD = b"x-router-overhead-ms"


class FastPath:
    """The ASGI app Granian runs: hot POSTs here, the rest to `app` (Litestar), with
    x-router-overhead-ms added to what Litestar sends."""

    def __init__(self, app: ASGIApp, holder: PlanHolder, max_body: int, hot: bool = True) -> None:
        self.app = app
        self.holder = holder
        self.max_body = max_body
        self.hot = hot  # False: Litestar serves the generating endpoints too

    def __getattr__(self, name: str) -> Any:  # `state`, `debug`... of the Litestar app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.hot and scope["method"] == "POST":
            found = paths.match(scope["path"])
            if found is not None and found.endpoint.kind == "generate":
                return await self._serve(scope, receive, send, found)
        wait = Stopwatch()
        token = UPSTREAM_WAIT.set(wait)
        try:
            await self.app(scope, receive, _with_overhead(send, time.perf_counter(), wait))
        finally:
            UPSTREAM_WAIT.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, found: paths.Match) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        client = scope.get("client")
        incoming = Incoming(
            endpoint=found.endpoint,
            path=scope["path"],
            client=client[0] if client else None,
            provider=found.provider,
            model=found.model,
            headers=headers,
            query=_query(scope),
            read_body=_Body(receive, headers, self.max_body).read,
            receive=receive,
            started=started,
        )
        try:
            reply = await serve(self.holder, incoming)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            error = ir.Error(500, "api_error", "internal gateway error")
            status, body, out = error_parts(found.endpoint.protocol, error)
            reply = Reply(status, out, body)
        trace = reply.trace or Trace(found.endpoint.protocol, found.endpoint.path, started=started)
        if reply.stream is None:
            try:
                trace.sent(reply.body)
                await send(_start(reply))
                await send({"type": "http.response.body", "body": reply.body})
            finally:
                trace.finish(reply.status)
        else:
            await _send_stream(_start(reply), reply.stream, receive, send, trace)
