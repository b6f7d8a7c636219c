"""Stage 6: one call to one instance. Returns the upstream's answer as either a complete
body or a stream that has been *primed*: read up to its first content event, so that a
failure before any content can still fail over to another instance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType

import httpx
import msgspec

from router.protocols import ir
from router.providers.base import Call, IRAdapter, StreamTransformer, WireAdapter
from router.providers.http import client_for

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
_CONTENT_EVENTS = (
    ir.TextDelta,
    ir.ThinkingDelta,
    ir.ToolCallStart,
    ir.RedactedThinking,
    ir.Finish,
)


class AttemptFailed(Exception):
    """A failure of one attempt. `retryable` decides whether the dispatcher moves on."""

    def __init__(self, error: ir.Error, retryable: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable


@dataclass(slots=True)
class Answer:
    """A complete non-stream answer: the raw upstream body (wire) or an ir.Response."""

    status: int = 200
    body: bytes = b""
    response: ir.Response | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PrimedStream:
    """A stream whose first content has arrived. `head` holds what was read so far:
    ir events (`events`) or, for pass-through, raw bytes (`raw`)."""

    events: AsyncIterator[ir.Event] | None = None
    raw: AsyncIterator[bytes] | None = None
    head_events: list[ir.Event] = field(default_factory=list)
    head_raw: list[bytes] = field(default_factory=list)
    close: object = None  # async callable releasing the upstream connection


def _status_retryable(status: int, retry_on: frozenset[int | str]) -> bool:
    if retry_on:
        return status in retry_on or (status >= 500 and "5xx" in retry_on)
    return status in RETRYABLE_STATUSES or status >= 500


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def call_wire(
    adapter: WireAdapter,
    call: Call,
    upstream: ModuleType,
    *,
    passthrough: bool,
    timeout: float,
    first_token_timeout: float | None,
    retry_on: frozenset[int | str],
) -> Answer | PrimedStream:
    try:
        await adapter.prepare(call)
    except ir.Error as error:  # credentials or project discovery: this instance only
        raise AttemptFailed(error, True) from None
    deadline = time.monotonic() + (first_token_timeout or timeout)
    while True:
        response = await _send(adapter, call, timeout, deadline)
        if response.status_code < 400:
            break
        body = await _read(response, deadline)
        if await adapter.retry(call, response.status_code):
            continue
        error = upstream.parse_error(response.status_code, body)
        error.retry_after = _retry_after(response.headers)
        raise AttemptFailed(error, _status_retryable(response.status_code, retry_on))

    if not call.stream:
        body = adapter.unwrap_body(await _read(response, time.monotonic() + timeout))
        return Answer(status=response.status_code, body=body, headers=dict(response.headers))

    return await _prime_wire_stream(
        response, upstream, passthrough, deadline, retry_on, adapter.unwrap_stream()
    )


async def _send(
    adapter: WireAdapter, call: Call, timeout: float, deadline: float
) -> httpx.Response:
    """Send the call (again after `adapter.retry` approved a network error)."""
    while True:
        headers = {"content-type": "application/json", **adapter.auth_headers(call.instance)}
        headers.update(call.instance.headers)
        headers.update(call.headers)
        if call.stream:
            headers["accept"] = "text/event-stream"
        client = client_for(call.instance.proxy)
        request = client.build_request(
            "POST",
            adapter.url(call),
            content=adapter.wrap_body(call),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )
        try:
            response = await asyncio.wait_for(
                client.send(request, stream=True), timeout=max(0.0, deadline - time.monotonic())
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            message = f"upstream timed out: {exc}"
            raise AttemptFailed(ir.Error(504, "timeout", message), True) from None
        except httpx.HTTPError as exc:
            if await adapter.retry(call, None):
                continue
            message = f"upstream unreachable: {type(exc).__name__}: {exc}"
            raise AttemptFailed(ir.Error(502, "bad_gateway", message), True) from None
        return response


async def _read(response: httpx.Response, deadline: float) -> bytes:
    try:
        return await asyncio.wait_for(response.aread(), max(0.0, deadline - time.monotonic()))
    except (TimeoutError, httpx.TimeoutException):
        raise AttemptFailed(ir.Error(504, "timeout", "upstream timed out"), True) from None
    except httpx.HTTPError as exc:
        raise AttemptFailed(ir.Error(502, "bad_gateway", f"upstream failed: {exc}"), True) from None
    finally:
        await response.aclose()


async def _prime_wire_stream(
    response: httpx.Response,
    upstream: ModuleType,
    passthrough: bool,
    deadline: float,
    retry_on: frozenset[int | str],
    transformer: StreamTransformer | None = None,
) -> PrimedStream:
    decoder = upstream.StreamDecoder()
    chunks = response.aiter_bytes()
    if transformer is not None:
        chunks = _transformed(chunks, transformer)
    head_raw: list[bytes] = []
    head_events: list[ir.Event] = []
    try:
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
            except StopAsyncIteration:
                events = decoder.close()
                chunk = None
            else:
                events = decoder.feed(chunk)
                head_raw.append(chunk)
            head_events.extend(events)
            for event in events:
                if isinstance(event, ir.Error):
                    raise AttemptFailed(event, _status_retryable(event.status, retry_on))
                if isinstance(event, _CONTENT_EVENTS):
                    return _primed(response, chunks, decoder, head_events, head_raw, passthrough)
            if chunk is None:  # ended with no content and no error: treat as broken
                raise AttemptFailed(ir.Error(502, "bad_gateway", "empty upstream stream"), True)
    except (TimeoutError, httpx.TimeoutException):
        await response.aclose()
        raise AttemptFailed(ir.Error(504, "timeout", "no first token before timeout"), True) from None
    except httpx.HTTPError as exc:
        await response.aclose()
        raise AttemptFailed(ir.Error(502, "bad_gateway", f"upstream stream failed: {exc}"), True) from None
    except AttemptFailed:
        await response.aclose()
        raise


async def _transformed(
    chunks: AsyncIterator[bytes], transformer: StreamTransformer
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if out := transformer.feed(chunk):
            yield out
    if tail := transformer.close():
        yield tail


def _primed(
    response: httpx.Response,
    chunks: AsyncIterator[bytes],
    decoder: object,
    head_events: list[ir.Event],
    head_raw: list[bytes],
    passthrough: bool,
) -> PrimedStream:
    if passthrough:
        return PrimedStream(raw=chunks, head_raw=head_raw, close=response.aclose)

    async def events() -> AsyncIterator[ir.Event]:
        async for chunk in chunks:
            for event in decoder.feed(chunk):  # type: ignore[attr-defined]
                yield event
        for event in decoder.close():  # type: ignore[attr-defined]
            yield event

    return PrimedStream(events=events(), head_events=head_events, close=response.aclose)


async def call_ir(
    adapter: IRAdapter, call: Call, *, timeout: float, first_token_timeout: float | None
) -> Answer | PrimedStream:
    if not call.stream:
        try:
            response = await asyncio.wait_for(adapter.generate(call), timeout)
        except TimeoutError:
            raise AttemptFailed(ir.Error(504, "timeout", "provider timed out"), True) from None
        except ir.Error as error:
            raise AttemptFailed(error, error.status in RETRYABLE_STATUSES) from None
        return Answer(response=response)
    stream = adapter.stream(call)
    head: list[ir.Event] = []
    deadline = time.monotonic() + (first_token_timeout or timeout)
    try:
        while True:
            event = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
            head.append(event)
            if isinstance(event, ir.Error):
                raise AttemptFailed(event, event.status in RETRYABLE_STATUSES)
            if isinstance(event, _CONTENT_EVENTS):
                return PrimedStream(events=stream, head_events=head, close=stream.aclose)
    except StopAsyncIteration:
        raise AttemptFailed(ir.Error(502, "bad_gateway", "provider stream was empty"), True) from None
    except TimeoutError:
        await stream.aclose()
        raise AttemptFailed(ir.Error(504, "timeout", "no first token before timeout"), True) from None
    except ir.Error as error:
        await stream.aclose()
        raise AttemptFailed(error, error.status in RETRYABLE_STATUSES) from None


def decode_json(body: bytes) -> dict:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise AttemptFailed(ir.Error(502, "bad_gateway", "upstream sent invalid JSON"), True) from None
    if not isinstance(value, dict):
        raise AttemptFailed(ir.Error(502, "bad_gateway", "upstream sent a non-object body"), True)
    return value
