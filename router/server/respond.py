"""Stage 8: the upstream's answer, translated back to the client's protocol and mapped by
the route's `response` steps. Streams are encoded event by event; a failure after the
first byte ends the stream with the protocol's own error event, never a hang."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from router.compiler.plan import Pipeline, Provider
from router.compiler.probe import context
from router.pool.health import InstanceHealth
from router.protocols import ir, lookup, module_for
from router.protocols.sse import SSEParser, data_line, named_event
from router.providers.upstream import Answer, AttemptFailed, PrimedStream, decode_json
from router.records.outcome import Trace
from router.server import signatures
from router.server.translate import Inbound, Prepared

log = logging.getLogger("router.respond")
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Reply:
    """What goes back to the client, whichever front (Litestar or the fast path) sends it.
    The front calls `trace.finish()` once the last byte is out."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    trace: Trace | None = None


def build(
    inbound: Inbound,
    provider: Provider,
    prepared: Prepared,
    result: Answer | PrimedStream,
    health: InstanceHealth,
    pipeline: Pipeline | None,
) -> Reply:
    """The Reply for a successful attempt. Raises AttemptFailed when a complete answer
    turns out unusable (invalid JSON), so the dispatcher can still fail over."""
    if isinstance(result, Answer):
        body = _answer_body(inbound, provider, prepared, result, pipeline)
        health.succeed()
        return Reply(status=200, headers={}, body=body)
    health.succeed()
    if result.raw is not None:
        chunks = _relay(inbound, result, health, provider, pipeline)
    else:
        upstream = lookup(provider.protocol)
        if upstream is not None and upstream.SIGNS_TOOL_CALLS:
            signatures.watch_stream(result)
        chunks = _encode_events(inbound, prepared, result, health, provider, pipeline)
    media = module_for(inbound.protocol).stream_media_type(inbound.sse)
    return Reply(status=200, headers={}, stream=chunks, media_type=media)


def _answer_body(
    inbound: Inbound,
    provider: Provider,
    prepared: Prepared,
    answer: Answer,
    pipeline: Pipeline | None,
) -> bytes:
    has_response_steps = pipeline is not None and bool(pipeline.response)
    if prepared.passthrough:  # the upstream speaks the client's protocol
        # a 2xx that is not a JSON object is the upstream's fault
        document: dict[str, Any] = _not_an_error(decode_json(answer.body), provider, answer)
        _note_usage(inbound, module_for(inbound.protocol).usage_of(document))
        if not has_response_steps:
            return answer.body
    else:
        response = answer.response
        if response is None:  # a wire answer
            upstream = module_for(provider.protocol)
            response = upstream.parse_response(
                _not_an_error(decode_json(answer.body), provider, answer)
            )
            if upstream.SIGNS_TOOL_CALLS:
                signatures.remember_response(response)
        _note_usage(inbound, response.usage)
        assert prepared.request is not None
        document = module_for(inbound.protocol).build_response(response, prepared.request)
    if has_response_steps:
        assert pipeline is not None
        document = pipeline.run("response", document, context(inbound))
    return _encode(document)


def _not_an_error(document: dict[str, Any], provider: Provider, answer: Answer) -> dict[str, Any]:
    """A 2xx whose body is an error in the upstream's protocol (every protocol puts an
    object under `error`; a Responses answer has `"error": null`) is a failed attempt, as
    some proxies answer: never an answer to pass on as if it were one."""
    if not isinstance(document.get("error"), dict):
        return document
    error = module_for(provider.protocol).parse_error(502, answer.body)
    message = f"upstream answered {answer.status} with an error: {error.message}"
    raise AttemptFailed(ir.Error(502, "bad_gateway", message), True)


class _Framer:
    """Cuts a relayed byte stream at event boundaries (blank lines), so bytes reach the
    client event by event and an error event appended after a broken upstream never
    lands inside a half-sent one. Counts the events it let through."""

    __slots__ = ("events", "tail")

    def __init__(self) -> None:
        self.tail = b""
        self.events = 0

    def feed(self, chunk: bytes) -> bytes:
        data = self.tail + chunk if self.tail else chunk
        end = data.rfind(b"\n\n") + 2  # 1 when absent
        crlf = data.rfind(b"\r\n\r\n") + 4  # 3 when absent
        end = max(end if end > 1 else 0, crlf if crlf > 3 else 0)
        if end == len(data):
            whole, self.tail = data, b""
        else:
            whole, self.tail = data[:end], data[end:]
        if whole:
            self.events += whole.count(b"\n\n") + whole.count(b"\r\n\r\n")
        return whole

    def flush(self) -> bytes:
        tail, self.tail = self.tail, b""
        return tail


class _EndWatch:
    """Feeds relayed chunks to the upstream protocol's decoder to learn how the stream
    ended: with its terminal event, with an error event, or not at all."""

    __slots__ = ("decoder", "end")

    def __init__(self, decoder: Any, head: list[ir.Event]) -> None:
        self.decoder = decoder
        self.end: ir.Event | None = _terminal(head)

    @property
    def failed(self) -> bool:
        return isinstance(self.end, ir.Error)

    def feed(self, chunk: bytes) -> None:
        if self.end is None and self.decoder is not None:
            try:
                self.end = _terminal(self.decoder.feed(chunk))
            except Exception as exc:  # the client may cope where our decoder did not
                log.warning("cannot follow the relayed stream any more: %s", exc)
                self.decoder = None

    def close(self) -> None:
        """At the upstream's EOF; raises when it ended without its terminal event."""
        if self.end is None and self.decoder is not None:
            end = _terminal(self.decoder.close())
            if isinstance(end, ir.Error):
                raise AttemptFailed(end, True)
            self.end = end


def _terminal(events: list[ir.Event]) -> ir.Event | None:
    for event in events:
        if isinstance(event, ir.Error | ir.Finish):
            return event
    return None


def _completed(tail: bytes) -> bytes:
    """The upstream's last event when it lacked the closing blank line (SDKs need it)."""
    if not tail.strip():
        return tail
    return tail + (b"\n" if tail.endswith(b"\n") else b"\n\n")


async def _relay(
    inbound: Inbound,
    primed: PrimedStream,
    health: InstanceHealth,
    provider: Provider,
    pipeline: Pipeline | None,
) -> AsyncIterator[bytes]:
    """Pass-through: the upstream's own bytes, event by event. An upstream error event
    is relayed as it is; a broken or truncated upstream gets the protocol's error event."""
    mapper = _event_mapper(inbound, pipeline) or _same
    framer = _Framer()
    watch = _EndWatch(primed.decoder, primed.head_events)
    try:
        if out := framer.feed(b"".join(primed.head_raw)):
            yield mapper(out)
        assert primed.raw is not None
        if not watch.failed:
            async for chunk in primed.raw:
                watch.feed(chunk)
                if out := framer.feed(chunk):
                    yield mapper(out)
                if watch.failed:
                    break
            else:
                watch.close()
        if isinstance(watch.end, ir.Error):
            _stream_failed(inbound, provider, health, watch.end)
        elif tail := _completed(framer.flush()):
            yield mapper(tail)
    except Exception as exc:  # the upstream broke after bytes reached the client
        if isinstance(watch.end, ir.Finish):  # ... but after its terminal event: complete
            log.info("upstream failed after the end of its stream: %s", exc)
            return
        error = _mid_stream_error(exc)
        _stream_failed(inbound, provider, health, error)
        yield module_for(inbound.protocol).stream_error(error, framer.events)
    finally:
        if isinstance(watch.end, ir.Finish):
            _note_usage(inbound, watch.end.usage)
        await _close(primed)


def _same(chunk: bytes) -> bytes:
    return chunk


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
    encoder = client.StreamEncoder(prepared.request, sse=inbound.sse)
    mapper = _event_mapper(inbound, pipeline) or _same
    end = _terminal(primed.head_events)
    ended = end is not None
    if isinstance(end, ir.Finish):
        _note_usage(inbound, end.usage)
    try:
        # What arrived before the first content goes out in one piece: one write to
        # the client rather than one per event (often the whole of a short stream).
        if head := b"".join([encoder.encode(event) for event in primed.head_events]):
            yield mapper(head)
        assert primed.batches is not None
        if isinstance(end, ir.Error):
            _stream_failed(inbound, provider, health, end)
        else:
            async for events in primed.batches:
                # the events of one upstream read go out in one write, as they came in
                out, failed = [], None
                for event in events:
                    if chunk := encoder.encode(event):
                        out.append(chunk)
                    if isinstance(event, ir.Finish):
                        ended = True
                        _note_usage(inbound, event.usage)
                    elif isinstance(event, ir.Error):
                        ended, failed = True, event
                        break
                if out:
                    yield mapper(b"".join(out))
                if failed is not None:
                    _stream_failed(inbound, provider, health, failed)
                    break
        if not ended:
            early = ir.Error(502, "bad_gateway", "upstream stream ended early")
            _note_failure(inbound, early)
            yield mapper(encoder.encode(early))
    except Exception as exc:
        if ended:  # the client already has a complete stream; only the upstream's tail broke
            log.info("upstream failed after the end of its stream: %s", exc)
            return
        error = _mid_stream_error(exc)
        _stream_failed(inbound, provider, health, error)
        yield mapper(encoder.encode(error))
    finally:
        await _close(primed)


async def _close(primed: PrimedStream) -> None:
    """Release the upstream connection, even while the request is being cancelled (the
    client went away): that close is what tells the upstream to stop generating."""
    if primed.close is None:
        return
    if not primed.close_waits:  # nothing to shield: it runs to its end in one step
        await primed.close()
        return
    with anyio.CancelScope(shield=True):
        await primed.close()


def _mid_stream_error(exc: Exception) -> ir.Error:
    if isinstance(exc, ir.Error):
        return exc
    if isinstance(exc, AttemptFailed):
        return exc.error
    log.warning("upstream stream failed mid-way: %s: %s", type(exc).__name__, exc)
    return ir.Error(502, "bad_gateway", "upstream stream failed mid-way")


def _stream_failed(
    inbound: Inbound, provider: Provider, health: InstanceHealth, error: ir.Error
) -> None:
    """The upstream's stream failed after the client had its first bytes."""
    health.fail(provider.health, error.status, error.message)
    _note_failure(inbound, error)


def _note_failure(inbound: Inbound, error: ir.Error) -> None:
    if inbound.trace is not None:
        inbound.trace.failed(error)


def _note_usage(inbound: Inbound, usage: ir.Usage | None) -> None:
    """Keep the usage the upstream reported (none reported: all zero)."""
    if (
        inbound.trace is not None
        and usage is not None
        and (usage.input_tokens or usage.output_tokens)
    ):
        inbound.trace.usage = usage


def _event_mapper(inbound: Inbound, pipeline: Pipeline | None) -> Callable[[bytes], bytes] | None:
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
