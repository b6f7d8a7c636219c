"""Stage 8: the upstream's answer, translated back to the client's protocol and mapped by
the route's `response` steps. Streams are encoded event by event; a failure after the
first byte ends the stream with the protocol's own error event, never a hang."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from router.compiler.plan import Pipeline, Provider
from router.pool.health import InstanceHealth
from router.protocols import ir, module_for
from router.protocols.sse import SSEParser, data_line, named_event
from router.server.translate import Inbound, Prepared, context
from router.server.upstream import Answer, AttemptFailed, PrimedStream, decode_json

log = logging.getLogger("router.respond")
_encode = msgspec.json.Encoder().encode

SSE_MEDIA_TYPE = "text/event-stream"


def build(
    inbound: Inbound,
    provider: Provider,
    prepared: Prepared,
    result: Answer | PrimedStream,
    health: InstanceHealth,
    pipeline: Pipeline | None,
):
    from router.server.dispatch import Outcome

    if isinstance(result, Answer):
        health.succeed()
        body = _answer_body(inbound, provider, prepared, result, pipeline)
        return Outcome(status=200, headers={}, body=body)
    health.succeed()
    if result.raw is not None:
        chunks = _relay(inbound, result, health, provider, pipeline)
    else:
        chunks = _encode_events(inbound, prepared, result, health, provider, pipeline)
    media = SSE_MEDIA_TYPE
    if inbound.protocol == "gemini" and not inbound.gemini_sse:
        media = "application/json"
    return Outcome(status=200, headers={}, stream=chunks, media_type=media)


def _answer_body(
    inbound: Inbound,
    provider: Provider,
    prepared: Prepared,
    answer: Answer,
    pipeline: Pipeline | None,
) -> bytes:
    has_response_steps = pipeline is not None and bool(pipeline.response)
    if prepared.passthrough and not has_response_steps:
        return answer.body
    if prepared.passthrough:
        document: dict[str, Any] = decode_json(answer.body)
    else:
        response = answer.response
        if response is None:
            response = module_for(provider.protocol).parse_response(decode_json(answer.body))
        assert prepared.request is not None
        document = module_for(inbound.protocol).build_response(response, prepared.request)
    if has_response_steps:
        assert pipeline is not None
        document = pipeline.run("response", document, context(inbound))
    return _encode(document)


async def _relay(
    inbound: Inbound,
    primed: PrimedStream,
    health: InstanceHealth,
    provider: Provider,
    pipeline: Pipeline | None,
) -> AsyncIterator[bytes]:
    mapper = _event_mapper(inbound, pipeline)
    try:
        for chunk in primed.head_raw:
            yield mapper(chunk) if mapper else chunk
        assert primed.raw is not None
        async for chunk in primed.raw:
            yield mapper(chunk) if mapper else chunk
    except Exception as exc:  # the upstream broke after bytes reached the client
        error = _mid_stream_error(exc)
        health.fail(provider.health, error.status, error.message)
        yield stream_error(inbound.protocol, error)
    finally:
        await primed.close()  # type: ignore[misc]


async def _encode_events(
    inbound: Inbound,
    prepared: Prepared,
    primed: PrimedStream,
    health: InstanceHealth,
    provider: Provider,
    pipeline: Pipeline | None,
) -> AsyncIterator[bytes]:
    client = module_for(inbound.protocol)
    assert prepared.request is not None
    options = {"sse": inbound.gemini_sse} if inbound.protocol == "gemini" else {}
    encoder = client.StreamEncoder(prepared.request, **options)
    mapper = _event_mapper(inbound, pipeline)
    ended = False
    try:
        for event in primed.head_events:
            ended = ended or isinstance(event, ir.Finish | ir.Error)
            chunk = encoder.encode(event)
            yield mapper(chunk) if mapper else chunk
        assert primed.events is not None
        async for event in primed.events:
            if isinstance(event, ir.Error):
                health.fail(provider.health, event.status, event.message)
            ended = ended or isinstance(event, ir.Finish | ir.Error)
            chunk = encoder.encode(event)
            if chunk:
                yield mapper(chunk) if mapper else chunk
        if not ended:
            yield encoder.encode(ir.Error(502, "bad_gateway", "upstream stream ended early"))
    except Exception as exc:
        if ended:
            raise
        error = _mid_stream_error(exc)
        health.fail(provider.health, error.status, error.message)
        yield encoder.encode(error)
    finally:
        await primed.close()  # type: ignore[misc]


def _mid_stream_error(exc: Exception) -> ir.Error:
    if isinstance(exc, ir.Error):
        return exc
    if isinstance(exc, AttemptFailed):
        return exc.error
    log.warning("upstream stream failed mid-way: %s: %s", type(exc).__name__, exc)
    return ir.Error(502, "bad_gateway", "upstream stream failed mid-way")


def stream_error(protocol: str, error: ir.Error) -> bytes:
    """The protocol's own mid-stream error event, for relayed (pass-through) streams."""
    return module_for(protocol).stream_error(error)


def _event_mapper(inbound: Inbound, pipeline: Pipeline | None):
    """Apply `response` steps to each SSE event's JSON data. Off unless configured."""
    if pipeline is None or not pipeline.response:
        return None
    parser = SSEParser()
    ctx = context(inbound)

    def remap(chunk: bytes) -> bytes:
        out = []
        for event in parser.feed(chunk):
            if event.data == "[DONE]":
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                document = msgspec.json.decode(event.data)
            except msgspec.DecodeError:
                continue
            if isinstance(document, dict):
                document = pipeline.run("response", document, ctx)
            out.append(named_event(event.event, document) if event.event else data_line(document))
        return b"".join(out)

    return remap
