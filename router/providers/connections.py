"""Keep-alive HTTP/1.1 connections to upstreams: the client of the hot path.

Every model call is a POST to a handful of origins, answered by a JSON body or an event
stream. For that one shape, a pool of asyncio protocols with httptools (llhttp, the parser
behind uvicorn) costs about a fifth of the CPU of httpx over aiohttp per call (bench/README.md):
no per-request URL, header or cookie objects, no decoder chain, one write per request.

Scope: direct connections (http and https). A call that goes through a proxy (an
instance's `proxy` URL, or the system proxy variables) takes the httpx client instead,
which knows proxies. Errors are httpx's exception classes, so callers handle both clients
alike. `ROUTER_UPSTREAM_TRANSPORT=aiohttp` or `httpx` turns this client off.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools
import httpx

HAPPY_EYEBALLS_DELAY = 0.25
KEEPALIVE_SECONDS = 4.0  # under the 5 s idle timeout of Node's and many other servers
MAX_IDLE_PER_ORIGIN = 256
MAX_CONNECTIONS_PER_ORIGIN = 1000
_HIGH_WATER = 1 << 20  # buffered body bytes at which reading pauses
_LOW_WATER = 1 << 18
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_clock = time.monotonic


def _user_agent() -> str:
    try:
        return f"user-agent: router/{importlib.metadata.version('router')}"
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "user-agent: router"


USER_AGENT = _user_agent()


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed upstream URL: where to connect and what to put in the request line."""

    origin: tuple[str, str, int]  # scheme, host, port
    host_header: str
    path: str  # path and query, as sent


@lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """Parsed once per URL (URLs are per instance and model, not per request)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url!r}")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target((scheme, host, port), host_header, path)


class Headers:
    """Response headers: names lower-cased; `get` answers the first value."""

    __slots__ = ("_first",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._first: dict[str, str] = {}
        for name, value in reversed(items):
            self._first[name] = value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first


class _Connection(asyncio.Protocol):
    """One connection; carries one exchange at a time. httptools calls the on_* methods
    from inside feed_data."""

    opened = 0  # connections of this process whose transport is open (open_connections)

    def __init__(self, pool: _OriginPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.lost = False
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.head: asyncio.Future[None] | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.received = False  # any byte of this exchange's answer
        self.headers_done = False
        self.informational = False
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.paused = False
        self.length_known = False  # content-length or chunked: not delimited by EOF

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _Connection.opened += 1

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid response from upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        _Connection.opened -= 1
        self.lost = True
        if self.complete:
            return
        if self.headers_done and not self.length_known and exc is None:
            self.on_message_complete()  # a body delimited by the end of the connection
            return
        message = "upstream closed the connection" + (
            " before answering" if not self.received else " mid-answer"
        )
        error_class = httpx.ReadError if exc is not None else httpx.RemoteProtocolError
        self._fail(error_class(f"{message}: {exc}" if exc else message))

    def pause_writing(self) -> None:  # the request is written in one piece; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key == "content-length" or key == "transfer-encoding":
            self.length_known = True
        self.headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 1xx (103 Early Hints...): the answer follows
            self.informational = True
            self.headers = []
            self.length_known = False
            return
        self.headers_done = True
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid inside the callback
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        self._wake()

    # the exchange

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a cancelled caller must not leave it unread
        self._wake()

    def send(self, request: bytes) -> asyncio.Future[None]:
        self._reset()
        self.head = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.head

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it arrived; None at its end."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < _LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def at_hand(self) -> bool:
        """True when `next_chunk` would return without waiting."""
        return bool(self.chunks) or self.complete or self.error is not None

    def reusable(self) -> bool:
        return (
            self.complete
            and not self.chunks
            and not self.lost
            and self.error is None
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream answer whose head has arrived. Read it with `aread` or `aiter_bytes`
    (bodies are decoded from gzip/deflate), then `aclose` it: a finished exchange goes
    back to the pool, an unfinished one closes its connection (which tells a generating
    upstream to stop)."""

    __slots__ = ("_closed", "_connection", "_decoder", "headers", "status_code")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status_code = connection.parser.get_status_code()
        self.headers = Headers(connection.headers)
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        wbits = _DECODERS.get(encoding)
        self._decoder = zlib.decompressobj(wbits) if wbits is not None else None
        self._closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        connection = self._connection
        decoder = self._decoder
        while (chunk := await connection.next_chunk()) is not None:
            if decoder is not None:
                chunk = self._decode(chunk)
                if not chunk:
                    continue
            yield chunk
        if decoder is not None and (rest := decoder.flush()):
            yield rest

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    def at_hand(self) -> bool:
        """True when the next step of `aiter_bytes` returns without waiting: a piece of
        the body, or its end, has arrived (and needs no decompressing, which may ask for
        more)."""
        return self._decoder is None and self._connection.at_hand()

    async def aclose(self) -> None:
        """Never suspends: a cancellation cannot cut it short."""
        if self._closed:
            return
        self._closed = True
        self._connection.pool.release(self._connection)

    def __del__(self) -> None:
        # Dropped without aclose (a client that went away between the upstream's answer
        # and the relay): free the slot and close the connection all the same.
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._connection.pool.release(self._connection)

    def _decode(self, chunk: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(chunk)
        except zlib.error as exc:
            raise httpx.DecodingError(f"upstream body does not decode: {exc}") from None


class _OriginPool:
    """The connections to one origin: idle ones reused most-recent first."""

    def __init__(self, origin: tuple[str, str, int], context: ssl.SSLContext | None) -> None:
        self.origin = origin
        self.context = context
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS_PER_ORIGIN)

    async def connect(self, timeout: float) -> _Connection:
        _, host, port = self.origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                # Happy Eyeballs (RFC 8305): an address that does not answer (a broken
                # IPv6 route, say) holds the next one back by 0.25 s, not the whole timeout.
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
                )
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self),
                        sock=sock,
                        ssl=self.context,
                        server_hostname=host if self.context is not None else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS with {host}:{port} failed: {exc}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return connection

    def take_idle(self) -> _Connection | None:
        stale_before = _clock() - KEEPALIVE_SECONDS
        while self.idle:
            connection = self.idle.pop()
            if connection.idle_since >= stale_before and connection.reusable():
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        self.slots.release()
        if connection.reusable() and len(self.idle) < MAX_IDLE_PER_ORIGIN:
            connection.idle_since = _clock()
            self.idle.append(connection)
        else:
            connection.close()


class Pool:
    """Pools per origin; one per event loop (connections belong to the loop they were
    made on)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._origins: dict[tuple[str, str, int], _OriginPool] = {}

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, connect_timeout: float
    ) -> Response:
        """Send a POST and wait for the answer's head. A connection the upstream closed
        while idle is noticed (its end arrives) and not reused; one closed just as the
        request went out fails the attempt, like a reset (a POST is not resent blindly:
        the dispatcher decides what happens next)."""
        where = target(url)
        request = _request_bytes(where, headers, body)
        pool = self._origins.get(where.origin)
        if pool is None:
            context = self._context if where.origin[0] == "https" else None
            pool = self._origins[where.origin] = _OriginPool(where.origin, context)
        await pool.slots.acquire()
        connection = pool.take_idle()
        try:
            if connection is None:
                connection = await pool.connect(connect_timeout)
            await connection.send(request)
        except BaseException:
            pool.slots.release()
            if connection is not None:
                connection.close()
            raise
        return Response(connection)

    def close(self) -> None:
        for pool in self._origins.values():
            while pool.idle:
                pool.idle.pop().close()
        self._origins.clear()


def _request_bytes(where: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {where.path} HTTP/1.1", f"host: {where.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if "accept-encoding" not in headers:
        lines.append("accept-encoding: gzip, deflate")
    if "user-agent" not in headers:  # some fronts (bot filters) refuse requests without one
        lines.append(USER_AGENT)
    lines.append(f"content-length: {len(body)}")
    head = "\r\n".join(lines)
    if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
        raise httpx.LocalProtocolError("a header name or value contains a line break")
    try:
        encoded = head.encode("latin-1")
    except UnicodeEncodeError:
        encoded = head.encode()
    return encoded + b"\r\n\r\n" + body


_pools: dict[asyncio.AbstractEventLoop, Pool] = {}


def pool_for(context: ssl.SSLContext) -> Pool:
    """This event loop's pool."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for other in [other for other in _pools if other.is_closed()]:
            del _pools[other]
        pool = _pools[loop] = Pool(context)
    return pool


def open_connections() -> int:
    """Upstream connections of this process's pools that are open, idle or in use."""
    return _Connection.opened


def idle_connections() -> int:
    """Connections waiting in this process's pools for reuse (some may have been closed
    by their upstream since: they are dropped when next taken)."""
    return sum(len(origin.idle) for pool in _pools.values() for origin in pool._origins.values())


def close_all() -> None:
    for pool in _pools.values():
        pool.close()
    _pools.clear()
