"""Stage 6: one call to one instance. Returns the upstream's answer as either a complete
body or a stream that has been *primed*: read up to its first content event, so that a
failure before any content can still fail over to another instance.

Two clocks bound a call: the provider's `timeout` covers the whole answer (a stream
included, to its last byte); `first_token_timeout` covers a stream's headers and first
content event. Both are loop-time deadlines, so a slow trickle cannot stretch them."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

import httpx
import msgspec

from router.compiler.plan import Provider
from router.protocols import ir, module_for
from router.protocols.interface import WireProtocol
from router.providers import connections
from router.providers.base import Call, IRAdapter, StreamTransformer, WireAdapter
from router.providers.http import UpstreamResponse, post, upstream_headers
from router.providers.registry import adapter_for

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
_CONTENT_EVENTS = (
    ir.TextDelta,
    ir.ThinkingDelta,
    ir.ToolCallStart,
    ir.RedactedThinking,
    ir.Finish,
)
_CONNECT_TIMEOUT = 10.0
T = TypeVar("T")
_now = time.perf_counter


class Stopwatch:
    """The time one request spent waiting on upstreams (every attempt's request, answer
    or first stream event, and credential refreshes): what x-router-overhead-ms leaves
    out. Set per request in UPSTREAM_WAIT by the endpoint."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0

    def since(self, started: float) -> None:
        self.seconds += _now() - started


UPSTREAM_WAIT: ContextVar[Stopwatch | None] = ContextVar("upstream_wait", default=None)


def upstream_wait() -> Stopwatch:
    """This request's stopwatch (a throwaway one outside a request: health checks)."""
    return UPSTREAM_WAIT.get() or Stopwatch()


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


@dataclass(slots=True)
class PrimedStream:
    """A stream whose first content has arrived. `head_*` holds what was read so far; the
    rest follows as ir events (`batches`: the events of one upstream read each) or, for
    pass-through, raw bytes (`raw`). A pass-through stream keeps its `decoder` so the
    relay can still tell an error event or an early end."""

    batches: AsyncIterator[list[ir.Event]] | None = None
    raw: AsyncIterator[bytes] | None = None
    head_events: list[ir.Event] = field(default_factory=list)
    head_raw: list[bytes] = field(default_factory=list)
    close: Callable[[], Awaitable[Any]] | None = None  # releases the upstream connection
    close_waits: bool = True  # False: `close` never suspends, so needs no shield
    decoder: Any = None


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Loop-time deadlines of one attempt."""

    first: float  # response headers and, for streams, the first content event
    total: float  # the whole answer

    @classmethod
    def start(cls, timeout: float, first_token_timeout: float | None, stream: bool) -> Deadlines:
        now = asyncio.get_running_loop().time()
        total = now + timeout
        if stream and first_token_timeout:
            return cls(min(total, now + first_token_timeout), total)
        return cls(total, total)


def status_retryable(status: int, retry_on: frozenset[int | str] = frozenset()) -> bool:
    """Whether an upstream status moves on to the next instance. `retry_on` (statuses and
    "4xx"/"5xx" classes) replaces the default set: 408, 429 and every 5xx."""
    if retry_on:
        return status in retry_on or f"{status // 100}xx" in retry_on
    return status in RETRYABLE_STATUSES or status >= 500


def _timed_out(what: str) -> AttemptFailed:
    return AttemptFailed(ir.Error(504, "timeout", f"upstream timed out ({what})"), True)


def _unreachable(exc: Exception) -> AttemptFailed:
    message = f"upstream unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
    return AttemptFailed(ir.Error(502, "bad_gateway", message), True)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After (RFC 9110 10.2.3) in seconds from `now`: delay-seconds or an HTTP-date;
    None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by convention
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _retry_after(headers: httpx.Headers | connections.Headers) -> float | None:
    return retry_after_seconds(headers.get("retry-after"))


async def attempt(
    provider: Provider,
    call: Call,
    *,
    passthrough: bool = False,
    retry_on: frozenset[int | str] = frozenset(),
    timeout: float | None = None,
) -> Answer | PrimedStream:
    """One call through the provider's adapter, bounded by its timeouts (or `timeout`)."""
    try:
        adapter = adapter_for(provider)
    except ir.Error as error:
        raise AttemptFailed(error, True) from None
    timeout = timeout or provider.timeout
    if isinstance(adapter, IRAdapter):
        return await call_ir(
            adapter,
            call,
            timeout=timeout,
            first_token_timeout=provider.first_token_timeout,
            retry_on=retry_on,
        )
    return await call_wire(
        adapter,
        call,
        module_for(provider.protocol),
        passthrough=passthrough,
        timeout=timeout,
        first_token_timeout=provider.first_token_timeout,
        retry_on=retry_on,
    )


async def call_wire(
    adapter: WireAdapter,
    call: Call,
    upstream: WireProtocol,
    *,
    passthrough: bool,
    timeout: float,
    first_token_timeout: float | None,
    retry_on: frozenset[int | str],
) -> Answer | PrimedStream:
    started = _now()
    try:
        await adapter.prepare(call)
    except ir.Error as error:  # credentials or project discovery: this instance only
        raise AttemptFailed(error, True) from None
    finally:
        upstream_wait().since(started)
    limits = Deadlines.start(timeout, first_token_timeout, call.stream)
    response = await _send_until_accepted(adapter, call, upstream, timeout, limits, retry_on)
    if not call.stream:
        body = adapter.unwrap_body(await _read(response, limits.total))
        return Answer(status=response.status_code, body=body)
    return await _prime_wire_stream(
        response, upstream, passthrough, limits, retry_on, adapter.unwrap_stream()
    )


async def _send_until_accepted(
    adapter: WireAdapter,
    call: Call,
    upstream: WireProtocol,
    timeout: float,
    limits: Deadlines,
    retry_on: frozenset[int | str],
) -> UpstreamResponse:
    """Send the call until the upstream accepts it (< 400), asking `adapter.retry` after
    each failure whether to send it again to the same instance."""
    while True:
        try:
            response = await _send(adapter, call, timeout, limits.first)
        except AttemptFailed as failure:
            if failure.error.kind != "timeout" and await adapter.retry(call, None):
                continue
            raise
        if response.status_code < 400:
            return response
        body = await _read(response, limits.first)
        if await adapter.retry(call, response.status_code):
            continue
        error = upstream.parse_error(response.status_code, body)
        if error.retry_after is None:
            error.retry_after = _retry_after(response.headers)
        raise AttemptFailed(error, status_retryable(response.status_code, retry_on))


async def _send(
    adapter: WireAdapter, call: Call, timeout: float, deadline: float
) -> UpstreamResponse:
    headers = upstream_headers(
        adapter.auth_headers(call.instance), call.instance.headers, call.headers, call.stream
    )
    body = adapter.wrap_body(call)
    started = _now()
    try:
        async with asyncio.timeout_at(deadline):
            return await post(
                call.instance.proxy,
                adapter.url(call),
                headers,
                body,
                timeout,
                min(timeout, _CONNECT_TIMEOUT),
            )
    except (TimeoutError, httpx.TimeoutException):
        raise _timed_out("no response") from None
    except httpx.HTTPError as exc:
        raise _unreachable(exc) from None
    finally:
        upstream_wait().since(started)


async def _read(response: UpstreamResponse, deadline: float) -> bytes:
    started = _now()
    try:
        async with asyncio.timeout_at(deadline):
            return await response.aread()
    except (TimeoutError, httpx.TimeoutException):
        raise _timed_out("reading the body") from None
    except httpx.HTTPError as exc:
        raise AttemptFailed(ir.Error(502, "bad_gateway", f"upstream failed: {exc}"), True) from None
    finally:
        await response.aclose()
        upstream_wait().since(started)


async def _prime_wire_stream(
    response: UpstreamResponse,
    upstream: WireProtocol,
    passthrough: bool,
    limits: Deadlines,
    retry_on: frozenset[int | str],
    transformer: StreamTransformer | None = None,
) -> PrimedStream:
    decoder = upstream.StreamDecoder()
    chunks = _body_chunks(response)
    at_hand = _never
    if transformer is not None:
        chunks = _transformed(chunks, transformer)
    elif isinstance(response, connections.Response):
        at_hand = response.at_hand
    head_raw: list[bytes] = []
    head_events: list[ir.Event] = []
    rest = b""  # what arrived with the first content but was not decoded yet
    wait = upstream_wait()
    try:
        while True:
            chunk = await _next_before(chunks, limits.first, wait, at_hand)
            if chunk is None:
                head_events.extend(events := decoder.close())
                if _primed_by(events, retry_on):
                    break
                # ended with no content and no error: treat as broken
                raise AttemptFailed(ir.Error(502, "bad_gateway", "empty upstream stream"), True)
            fed, primed = _feed_until_content(decoder, chunk, head_events, retry_on)
            head_raw.append(chunk[:fed])
            if primed:
                rest = chunk[fed:]
                break
    except (TimeoutError, httpx.TimeoutException):
        await response.aclose()
        raise _timed_out("no first token") from None
    except httpx.HTTPError as exc:
        await response.aclose()
        message = f"upstream stream failed: {type(exc).__name__}: {exc}"
        raise AttemptFailed(ir.Error(502, "bad_gateway", message), True) from None
    except AttemptFailed:
        await response.aclose()
        raise
    except Exception as exc:  # the decoder could not read it: bytes that are not UTF-8...
        await response.aclose()
        message = f"upstream sent an unreadable stream: {type(exc).__name__}: {exc}"
        raise AttemptFailed(ir.Error(502, "bad_gateway", message), True) from None
    except BaseException:
        await response.aclose()
        raise
    close_waits = not isinstance(response, connections.Response)
    if passthrough:
        return PrimedStream(
            raw=_until(chunks, limits.total, rest, at_hand),
            head_raw=head_raw,
            head_events=head_events,
            close=response.aclose,
            close_waits=close_waits,
            decoder=decoder,
        )
    return PrimedStream(
        batches=_decoded(chunks, decoder, limits.total, rest, at_hand),
        head_events=head_events,
        close=response.aclose,
        close_waits=close_waits,
    )


def _never() -> bool:
    return False


async def _next_before(
    items: AsyncIterator[T], deadline: float, wait: Stopwatch, at_hand: Callable[[], bool] = _never
) -> T | None:
    """The next item (None at the end), its wait counted as upstream time; TimeoutError
    past `deadline`. `at_hand()` True: the item is there already, no deadline to set."""
    started = _now()
    try:
        if at_hand():
            return await anext(items, None)
        async with asyncio.timeout_at(deadline):
            return await anext(items, None)
    finally:
        wait.since(started)


def _body_chunks(response: UpstreamResponse) -> AsyncIterator[bytes]:
    """The body as it arrives; httpx's decoding layer only when it has work to do."""
    if not isinstance(response, httpx.Response) or "content-encoding" in response.headers:
        return response.aiter_bytes()
    return response.aiter_raw()


def _feed_until_content(
    decoder: Any,
    chunk: bytes,
    events: list[ir.Event],
    retry_on: frozenset[int | str],
) -> tuple[int, bool]:
    """Feed `chunk` one event (up to a blank line) at a time until content arrives, so a
    chunk carrying a whole stream does not hold up the first write to the client. Returns
    how many bytes were fed and whether content arrived. Decoders take any chunking."""
    start = 0
    while True:
        end = chunk.find(b"\n\n", start)
        end = len(chunk) if end < 0 else end + 2
        new = decoder.feed(chunk[start:end])
        events.extend(new)
        if _primed_by(new, retry_on):
            return end, True
        if end == len(chunk):
            return end, False
        start = end


def _primed_by(events: list[ir.Event], retry_on: frozenset[int | str]) -> bool:
    """True once content arrived; raises on an error event before it."""
    for event in events:
        if isinstance(event, ir.Error):
            raise AttemptFailed(event, status_retryable(event.status, retry_on))
        if isinstance(event, _CONTENT_EVENTS):
            return True
    return False


async def _until(
    chunks: AsyncIterator[Any],
    deadline: float,
    first: bytes = b"",
    at_hand: Callable[[], bool] = _never,
) -> AsyncIterator[Any]:
    """`first` (when not empty), then `chunks` until the total deadline; past it,
    AttemptFailed (a mid-stream error). A chunk already at hand is taken without
    setting the deadline (a timer per read costs more than the read)."""
    if first:
        yield first
    while True:
        try:
            if at_hand():
                item = await anext(chunks, None)
            else:
                async with asyncio.timeout_at(deadline):
                    item = await anext(chunks, None)
        except TimeoutError:
            raise _timed_out("stream exceeded the total timeout") from None
        if item is None:
            return
        yield item


async def _decoded(
    chunks: AsyncIterator[bytes],
    decoder: Any,
    deadline: float,
    first: bytes = b"",
    at_hand: Callable[[], bool] = _never,
) -> AsyncIterator[list[ir.Event]]:
    """`_until` and the decoder in one generator, yielding the events of each chunk
    together: they go to the client in one write."""
    if first and (events := decoder.feed(first)):
        yield events
    while True:
        try:
            if at_hand():
                chunk = await anext(chunks, None)
            else:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, None)
        except TimeoutError:
            raise _timed_out("stream exceeded the total timeout") from None
        if chunk is None:
            break
        if events := decoder.feed(chunk):
            yield events
    if events := decoder.close():
        yield events


async def _one_by_one(events: AsyncIterator[ir.Event]) -> AsyncIterator[list[ir.Event]]:
    async for event in events:
        yield [event]


async def _transformed(
    chunks: AsyncIterator[bytes], transformer: StreamTransformer
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if out := transformer.feed(chunk):
            yield out
    if tail := transformer.close():
        yield tail


async def call_ir(
    adapter: IRAdapter,
    call: Call,
    *,
    timeout: float,
    first_token_timeout: float | None,
    retry_on: frozenset[int | str] = frozenset(),
) -> Answer | PrimedStream:
    limits = Deadlines.start(timeout, first_token_timeout, call.stream)
    wait = upstream_wait()
    started = _now()
    if not call.stream:
        try:
            async with asyncio.timeout_at(limits.total):
                return Answer(response=await adapter.generate(call))
        except TimeoutError:
            raise _timed_out("no answer") from None
        except ir.Error as error:
            raise AttemptFailed(error, status_retryable(error.status, retry_on)) from None
        finally:
            wait.since(started)
    stream = adapter.stream(call)
    head: list[ir.Event] = []
    try:
        while True:
            event = await _next_before(stream, limits.first, wait)
            if event is None:
                raise AttemptFailed(ir.Error(502, "bad_gateway", "provider stream was empty"), True)
            head.append(event)
            if _primed_by([event], retry_on):
                break
    except TimeoutError:
        await stream.aclose()
        raise _timed_out("no first token") from None
    except ir.Error as error:
        await stream.aclose()
        raise AttemptFailed(error, status_retryable(error.status, retry_on)) from None
    except BaseException:
        await stream.aclose()
        raise
    events = _one_by_one(_until(stream, limits.total))
    return PrimedStream(batches=events, head_events=head, close=stream.aclose)


def decode_json(body: bytes) -> dict:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise AttemptFailed(
            ir.Error(502, "bad_gateway", "upstream sent invalid JSON"), True
        ) from None
    if not isinstance(value, dict):
        raise AttemptFailed(ir.Error(502, "bad_gateway", "upstream sent a non-object body"), True)
    return value
