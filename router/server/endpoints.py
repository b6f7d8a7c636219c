"""Stage 1: the client-side endpoints of the four protocols (router.protocols.paths), each
also under /{provider}/. They authenticate, decode the body, hand over to the dispatcher
and shape the reply. Every request leaves one outcome record (router.records), started
here and finished by the front once the last byte is out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import HTTPException
from litestar.response import Stream

from router.access.gate import (
    Admitting,
    Refused,
    check_live,
    check_model,
    identify,
    known_key,
)
from router.compiler.plan import Plan
from router.protocols import ir, module_for, paths
from router.protocols.paths import Endpoint
from router.providers.upstream import UPSTREAM_WAIT, Stopwatch
from router.records.outcome import Trace
from router.server import models
from router.server.client_timeouts import BODY_TIMEOUT, body_too_slow
from router.server.counting import count_tokens
from router.server.disconnect import ClientGone, Receive, cancel_on_disconnect
from router.server.dispatch import Exhausted, dispatch
from router.server.errors import error_parts, error_response
from router.server.respond import Reply
from router.server.state import PlanHolder
from router.server.translate import Inbound

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
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.body()
    except TimeoutError:
        raise body_too_slow() from None
    except HTTPException as exc:
        if exc.status_code == 413:
            raise too_large() from None
        raise ir.Error(exc.status_code, "invalid_request", str(exc.detail)) from None


def too_large() -> ir.Error:
    return ir.Error(413, "request_too_large", "request body too large")


def too_deep() -> ir.Error:
    return ir.Error(400, "invalid_request", "request body is nested too deeply")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise ir.Error(400, "invalid_request", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep() from None
    if not isinstance(body, dict):
        raise ir.Error(400, "invalid_request", "request body must be a JSON object")
    return body


async def _json_body(request: Request) -> dict[str, Any]:
    return json_object(await _raw_body(request))


def _model_of(body: dict[str, Any], url_model: str | None) -> str:
    if url_model is not None:
        return url_model
    model = body.get("model")
    if model is None or model == "":
        raise ir.Error(400, "invalid_request", "`model` is required", param="model")
    if not isinstance(model, str):
        raise ir.Error(400, "invalid_request", "`model` must be a string", param="model")
    return model


def _stream_of(body: dict[str, Any], endpoint: Endpoint) -> bool:
    if endpoint.stream is not None:
        return endpoint.stream
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ir.Error(400, "invalid_request", "`stream` must be a boolean", param="stream")
    return stream


@dataclass(frozen=True, slots=True)
class Incoming:
    """One request to a generating endpoint, as the front read it."""

    endpoint: Endpoint
    path: str  # as the client called it
    client: str | None  # the client's address
    provider: str | None  # the /{provider}/ path prefix
    model: str | None  # the model the URL names
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    read_body: Callable[[], Awaitable[bytes]]  # raises ir.Error (413...)
    receive: Receive  # the ASGI receive, to notice a disconnect
    started: float  # perf_counter() when the request reached the gateway


async def serve(holder: PlanHolder, incoming: Incoming) -> Reply:
    """Stages 2-8 of one request: auth, body, dispatch; the reply or the error, in the
    client's protocol, with x-router-overhead-ms and the request's trace."""
    endpoint = incoming.endpoint
    trace = Trace(
        endpoint.protocol,
        endpoint.path,
        path=incoming.path,
        client=incoming.client,
        started=incoming.started,
    )
    wait = Stopwatch()
    token = UPSTREAM_WAIT.set(wait)
    try:
        reply = await _serve(holder, incoming, trace)
    except BaseException:
        # an error no stage expected (the front answers 500 with a trace of its own):
        # give back what the key's admission took, or its slot would stay taken
        ticket, trace.ticket = trace.ticket, None
        if ticket is not None:
            ticket.settle(None)
        raise
    finally:
        UPSTREAM_WAIT.reset(token)
    overhead = max(time.perf_counter() - incoming.started - wait.seconds, 0.0)
    trace.overhead = overhead
    if not trace.status:
        trace.status = reply.status
    reply.headers["x-router-overhead-ms"] = f"{overhead * 1000:.3f}"
    reply.trace = trace
    return reply


async def _serve(holder: PlanHolder, incoming: Incoming, trace: Trace) -> Reply:
    protocol, headers, query = trace.protocol, incoming.headers, incoming.query
    try:
        plan = current_plan(holder)
        key = known_key(plan, holder.runtime_keys, headers, query)
        if key is not None:
            trace.key = key.name  # a refused key is named in its record too
            check_live(key)
        raw = await incoming.read_body()
        trace.request_bytes = len(raw)
        body = json_object(raw)
        if trace.exchange is not None:
            trace.exchange.request, trace.exchange.headers = body, headers
        model = trace.model = _model_of(body, incoming.model)
        check_model(key, model)
        stream = trace.stream = _stream_of(body, incoming.endpoint)
        inbound = Inbound(
            protocol=protocol,
            body=body,
            headers=headers,
            query=query,
            model=model,
            stream=stream,
            path_provider=incoming.provider,
            sse=module_for(protocol).sse_requested(query),
            strict=headers.get("x-router-strict", "").lower() in ("1", "true", "yes"),
            trace=trace,
            key=key,
        )
        admitting = None
        if key is not None and key.limits:
            store = holder.limits.for_plan(plan)
            headers_for = module_for(protocol).rate_limit_headers
            admitting = Admitting(store, key, trace, headers_for)  # Refused when decided so
            if not admitting.answered:  # answered before the first upstream call
                inbound.admitting = admitting
        if admitting is None or admitting.answered:
            reply = await cancel_on_disconnect(incoming.receive, dispatch(plan, inbound))
        else:
            reply = await _dispatch(plan, inbound, incoming.receive, admitting)
    except ir.Error as error:
        return _error_reply(trace, error)
    except Refused as refused:
        return _error_reply(trace, refused.error, refused.headers)
    except RecursionError:  # a body that decodes but is too deep for the stages after
        return _error_reply(trace, too_deep())
    except Exhausted as exhausted:
        return _error_reply(trace, exhausted.error, exhausted.headers)
    except ClientGone:
        trace.status = 499
        return Reply(499, {})
    if reply.stream is not None:
        reply.headers["cache-control"] = "no-cache"
    if admitting is not None and admitting.headers:
        reply.headers.update(admitting.headers)
    return reply


async def _dispatch(plan: Plan, inbound: Inbound, receive: Receive, admitting: Admitting) -> Reply:
    """dispatch() while the key's admission is under way, answered however it ends: an
    error that came before the answer gives way to a refusal (the limit is checked
    first), and a request that ends otherwise (its client gone) settles the admission
    once it is answered."""
    try:
        reply = await cancel_on_disconnect(receive, dispatch(plan, inbound))
    except (ir.Error, Exhausted, RecursionError):
        if not admitting.answered:
            await admitting.wait()
        raise
    except BaseException:
        admitting.abandon()
        raise
    if not admitting.answered:
        await admitting.wait()
    return reply


def _error_reply(trace: Trace, error: ir.Error, headers: dict[str, str] | None = None) -> Reply:
    trace.failed(error)
    status, body, out = error_parts(trace.protocol, error, headers)
    return Reply(status, out, body)


async def _serve_litestar(
    request: Request, endpoint: Endpoint, provider: str | None, model: str | None = None
) -> Response:
    started = time.perf_counter()
    client = request.scope.get("client")
    incoming = Incoming(
        endpoint=endpoint,
        path=request.scope["path"],
        client=client[0] if client else None,
        provider=provider,
        model=model,
        headers=_headers(request),
        query=dict(request.query_params),
        read_body=lambda: _raw_body(request),
        receive=request.receive,
        started=started,
    )
    reply = await serve(_holder(request), incoming)
    trace = reply.trace
    assert trace is not None
    if reply.stream is not None:
        return Stream(
            _traced(reply.stream, trace),
            status_code=reply.status,
            media_type=reply.media_type,
            headers=reply.headers,
        )
    trace.sent(reply.body)  # about to: Litestar sends it once this returns
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.media_type,
        headers=reply.headers,
        background=BackgroundTask(trace.finish),
    )


async def _traced(stream: AsyncIterator[bytes], trace: Trace) -> AsyncIterator[bytes]:
    """`stream`, noting its first byte and finishing the trace after its last."""
    status = 499  # unless it runs to its end
    try:
        async for chunk in stream:
            trace.sent(chunk)
            yield chunk
        status = trace.status
    finally:
        trace.finish(status)


def _with_prefix(paths_: list[str]) -> list[str]:
    """Each path, and the same under a `/{provider}` prefix."""
    return [*paths_, *("/{provider:str}" + path for path in paths_)]


def _fixed(kind: paths.Kind) -> list[str]:
    return [e.path for e in paths.ENDPOINTS if e.kind == kind and not e.action]


def _endpoint_of(request: Request) -> paths.Match:
    found = paths.match(request.scope["path"])
    assert found is not None  # Litestar routed it here by one of the table's paths
    return found


# the paths that name the model: `{prefix}{model}{action}` (Gemini's)
_MODEL_ACTION_PREFIXES = sorted({e.prefix for e in paths.ENDPOINTS if e.action})
(_MODEL_ACTION_PROTOCOL,) = {e.protocol for e in paths.ENDPOINTS if e.action}


@post(_with_prefix(_fixed("generate")), status_code=200)
async def generate(request: Request, provider: str | None = None) -> Response:
    """Chat completions, responses, messages: the endpoints whose body names the model."""
    return await _serve_litestar(request, _endpoint_of(request).endpoint, provider)


@post(_with_prefix(_fixed("count")), status_code=200)
async def count(request: Request, provider: str | None = None) -> Response:
    return await _count(request, _endpoint_of(request).endpoint, provider)


@post(_with_prefix([prefix + "{model_action:str}" for prefix in _MODEL_ACTION_PREFIXES]))
async def model_actions(
    request: Request, model_action: str, provider: str | None = None
) -> Response:
    """`models/{model}:{action}`: Gemini's generate, stream and count."""
    found = paths.match(request.scope["path"])
    if found is None:
        action = paths.split_model_action(model_action)[1]
        error = ir.Error(404, "not_found", f"unknown method {action or ':'}")
        return error_response(_MODEL_ACTION_PROTOCOL, error)
    if found.endpoint.kind == "count":
        return await _count(request, found.endpoint, provider, found.model)
    return await _serve_litestar(request, found.endpoint, provider, found.model)


async def _count(
    request: Request, endpoint: Endpoint, provider: str | None, url_model: str | None = None
) -> Response:
    """Token counting: the model comes from the body, or the URL when it names one."""
    protocol = endpoint.protocol
    try:
        plan = _plan(request)
        headers = _headers(request)
        query = dict(request.query_params)
        key = identify(plan, _holder(request).runtime_keys, headers, query)
        body = await _json_body(request)
        model = _model_of(body, url_model)
        check_model(key, model)
        inbound = Inbound(protocol, body, headers, query, model, False, provider, key=key)
        count = await count_tokens(plan, inbound)
    except ir.Error as error:
        return error_response(protocol, error)
    except RecursionError:
        return error_response(protocol, too_deep())
    counting = module_for(protocol).COUNTING
    assert counting is not None  # a count endpoint's protocol has a count body
    return Response(
        _encode(counting.answer(count.tokens)),
        status_code=200,
        media_type="application/json",
        headers={"x-router-token-count": count.source},
    )


@get(_with_prefix(list(paths.MODEL_LISTS)))
async def list_models(request: Request, provider: str | None = None) -> Response:
    headers = _headers(request)
    query = dict(request.query_params)
    protocol = paths.list_protocol(request.url.path, headers, query)
    try:
        plan = _plan(request)
        key = identify(plan, _holder(request).runtime_keys, headers, query)
        names = models.reachable_models(plan, provider, key)
    except ir.Error as error:
        return error_response(protocol, error)
    return Response(_encode(module_for(protocol).model_list(names)), media_type="application/json")


ROUTES = [generate, count, model_actions, list_models]
