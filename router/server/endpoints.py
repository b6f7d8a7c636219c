"""Stage 1: the client-side endpoints of the four protocols, each also under /{provider}/.
They authenticate, decode the body, hand over to the dispatcher and shape the reply."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from router.compiler.plan import Plan
from router.protocols import ir, module_for
from router.server import models
from router.server.auth import check_client
from router.server.counting import count_body, count_tokens
from router.server.dispatch import (
    ClientGone,
    Exhausted,
    Outcome,
    Receive,
    cancel_on_disconnect,
    dispatch,
)
from router.server.errors import error_parts, error_response
from router.server.state import PlanHolder
from router.server.translate import Inbound
from router.server.upstream import UPSTREAM_WAIT, Stopwatch

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _holder(request: Request) -> PlanHolder:
    return request.app.state.holder


def current_plan(holder: PlanHolder) -> Plan:
    plan = holder.plan
    if plan is None:
        raise ir.Error(503, "unavailable", "no valid configuration loaded")
    return plan


def _plan(request: Request) -> Plan:
    return current_plan(_holder(request))


def _headers(request: Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


async def _raw_body(request: Request) -> bytes:
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code == 413:
            raise too_large() from None
        raise ir.Error(exc.status_code, "invalid_request", str(exc.detail)) from None


def too_large() -> ir.Error:
    return ir.Error(413, "request_too_large", "request body too large")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise ir.Error(400, "invalid_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ir.Error(400, "invalid_request", "request body must be a JSON object")
    return body


async def _json_body(request: Request) -> dict[str, Any]:
    return json_object(await _raw_body(request))


def _model_and_stream(protocol: str, body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ir.Error(400, "invalid_request", "`model` is required", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ir.Error(400, "invalid_request", "`stream` must be a boolean", param="stream")
    return model, stream


@dataclass(slots=True)
class Reply:
    """What goes back to the client, whichever front (Litestar or the fast path) sends it."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Call:
    """One request to a generating endpoint, as the front read it."""

    protocol: str
    provider: str | None  # the /{provider}/ path prefix
    gemini: str | None  # Gemini's `{model}:{action}` path segment
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    read_body: Callable[[], Awaitable[bytes]]  # raises ir.Error (413...)
    receive: Receive  # the ASGI receive, to notice a disconnect
    started: float  # perf_counter() when the request reached the gateway


async def serve(holder: PlanHolder, call: Call) -> Reply:
    """Stages 2-8 of one request: auth, body, dispatch; the reply or the error, in the
    client's protocol, with x-router-overhead-ms."""
    wait = Stopwatch()
    token = UPSTREAM_WAIT.set(wait)
    try:
        reply = await _serve_call(holder, call)
    finally:
        UPSTREAM_WAIT.reset(token)
    overhead = (time.perf_counter() - call.started - wait.seconds) * 1000
    reply.headers["x-router-overhead-ms"] = f"{max(overhead, 0.0):.3f}"
    return reply


async def _serve_call(holder: PlanHolder, call: Call) -> Reply:
    protocol, headers, query = call.protocol, call.headers, call.query
    try:
        plan = current_plan(holder)
        check_client(plan.auth.api_keys, headers, query)
        body = json_object(await call.read_body())
        if call.gemini is None:
            model, stream = _model_and_stream(protocol, body)
        else:
            model, stream = _gemini_action(call.gemini)
        inbound = Inbound(
            protocol=protocol,
            body=body,
            headers=headers,
            query=query,
            model=model,
            stream=stream,
            path_provider=call.provider,
            gemini_sse=query.get("alt") == "sse",
            strict=headers.get("x-router-strict", "").lower() in ("1", "true", "yes"),
        )
        outcome = await cancel_on_disconnect(call.receive, dispatch(plan, inbound))
    except ir.Error as error:
        return _error_reply(protocol, error)
    except Exhausted as exhausted:
        return _error_reply(protocol, exhausted.error, exhausted.headers)
    except ClientGone:
        return Reply(499, {})
    return _reply(outcome)


def _error_reply(protocol: str, error: ir.Error, headers: dict[str, str] | None = None) -> Reply:
    status, body, out = error_parts(protocol, error, headers)
    return Reply(status, out, body)


async def _serve(request: Request, protocol: str, provider: str | None, gemini: str | None = None):
    started = time.perf_counter()
    call = Call(
        protocol=protocol,
        provider=provider,
        gemini=gemini,
        headers=_headers(request),
        query=dict(request.query_params),
        read_body=lambda: _raw_body(request),
        receive=request.receive,
        started=started,
    )
    reply = await serve(_holder(request), call)
    if reply.stream is not None:
        return Stream(
            reply.stream,
            status_code=reply.status,
            media_type=reply.media_type,
            headers=reply.headers,
        )
    return Response(
        reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers
    )


def _gemini_action(model_action: str) -> tuple[str, bool]:
    model, _, action = model_action.partition(":")
    if action == "generateContent":
        return model, False
    if action == "streamGenerateContent":
        return model, True
    raise ir.Error(404, "not_found", f"unknown method :{action}")


def _reply(outcome: Outcome) -> Reply:
    if outcome.stream is not None:
        outcome.headers["cache-control"] = "no-cache"
        stream = cast("AsyncIterator[bytes]", outcome.stream)
        return Reply(200, outcome.headers, stream=stream, media_type=outcome.media_type)
    return Reply(outcome.status, outcome.headers, outcome.body, media_type=outcome.media_type)


@post(["/v1/chat/completions", "/{provider:str}/v1/chat/completions"], status_code=200)
async def chat_completions(request: Request, provider: str | None = None) -> Response:
    return await _serve(request, "openai-chat", provider)


@post(["/v1/responses", "/{provider:str}/v1/responses"], status_code=200)
async def responses(request: Request, provider: str | None = None) -> Response:
    return await _serve(request, "openai-responses", provider)


@post(["/v1/messages", "/{provider:str}/v1/messages"], status_code=200)
async def messages(request: Request, provider: str | None = None) -> Response:
    return await _serve(request, "anthropic", provider)


@post(
    [
        "/v1beta/models/{model_action:str}",
        "/v1/models/{model_action:str}",
        "/{provider:str}/v1beta/models/{model_action:str}",
        "/{provider:str}/v1/models/{model_action:str}",
    ]
)
async def gemini_generate(
    request: Request, model_action: str, provider: str | None = None
) -> Response:
    if model_action.endswith(":countTokens"):
        return await _count(request, "gemini", provider, model_action.partition(":")[0])
    return await _serve(request, "gemini", provider, gemini=model_action)


@post(["/v1/messages/count_tokens", "/{provider:str}/v1/messages/count_tokens"], status_code=200)
async def messages_count_tokens(request: Request, provider: str | None = None) -> Response:
    return await _count(request, "anthropic", provider)


async def _count(
    request: Request, protocol: str, provider: str | None, model: str | None = None
) -> Response:
    """Token counting: the model comes from the body (Anthropic) or the URL (Gemini)."""
    try:
        plan = _plan(request)
        headers = _headers(request)
        query = dict(request.query_params)
        check_client(plan.auth.api_keys, headers, query)
        body = await _json_body(request)
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            raise ir.Error(400, "invalid_request", "`model` is required")
        inbound = Inbound(protocol, body, headers, query, model, False, provider)
        count = await count_tokens(plan, inbound)
    except ir.Error as error:
        return error_response(protocol, error)
    return Response(
        _encode(count_body(protocol, count)),
        status_code=200,
        media_type="application/json",
        headers={"x-router-token-count": count.source},
    )


@get(["/v1/models", "/v1beta/models", "/{provider:str}/v1/models", "/{provider:str}/v1beta/models"])
async def list_models(request: Request, provider: str | None = None) -> Response:
    headers = _headers(request)
    query = dict(request.query_params)
    protocol = models.protocol_for_list(request.url.path, headers, query)
    try:
        plan = _plan(request)
        check_client(plan.auth.api_keys, headers, query)
        names = models.reachable_models(plan, provider)
    except ir.Error as error:
        return error_response(protocol, error)
    return Response(_encode(module_for(protocol).model_list(names)), media_type="application/json")


ROUTES = [
    chat_completions,
    responses,
    messages,
    messages_count_tokens,
    gemini_generate,
    list_models,
]
