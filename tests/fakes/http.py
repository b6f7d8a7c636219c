"""A minimal HTTP/1.1 server on asyncio streams (standard library only).

It gives the fakes full control over the socket: keep-alive, chunked streaming,
cutting a stream without its terminating chunk, resetting a connection (RST) and
noticing when the client went away in the middle of a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
EXTRA_REASONS = {529: "Overloaded", 499: "Client Closed Request"}


class BadRequest(Exception):
    """The bytes on the wire are not a valid HTTP/1.1 request."""


class PeerGone(Exception):
    """The client closed the connection (or it broke) while we were answering."""


@dataclass
class Request:
    method: str
    target: str
    path: str
    query_string: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    version: str = "HTTP/1.1"

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return EXTRA_REASONS.get(status, "Unknown")


@dataclass
class Connection:
    """One client connection; read requests, write responses."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _buffer: bytearray = field(default_factory=bytearray)
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)
    keep_alive: bool = True
    _watcher: asyncio.Task[None] | None = None

    # ---- reading -------------------------------------------------------------
    async def _fill(self) -> bool:
        if self.peer_closed.is_set():
            return False
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.peer_closed.set()
            return False
        self._buffer += data
        return True

    async def _read_until(self, sep: bytes, limit: int) -> bytes | None:
        while True:
            idx = self._buffer.find(sep)
            if idx >= 0:
                out = bytes(self._buffer[: idx + len(sep)])
                del self._buffer[: idx + len(sep)]
                return out
            if len(self._buffer) > limit:
                raise BadRequest("header section too large")
            if not await self._fill():
                return None

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._fill():
                raise BadRequest("body shorter than announced")
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def read_request(self) -> Request | None:
        """Next request on the connection, or None when the client closed it."""
        head = await self._read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError as exc:
            raise BadRequest(f"bad request line {lines[0]!r}") from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(f"bad header line {line!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(headers)
        split = urlsplit(target)
        path = unquote(split.path) if split.path else "/"
        return Request(
            method=method.upper(),
            target=target,
            path=path,
            query_string=split.query,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            version=version.strip(),
        )

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size_line = await self._read_until(b"\r\n", 1024)
                if size_line is None:
                    raise BadRequest("truncated chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers end with an empty line
                    while await self._read_until(b"\r\n", MAX_HEADER_BYTES) not in (
                        b"\r\n",
                        None,
                    ):
                        pass
                    return bytes(out)
                out += await self._read_exactly(size)
                await self._read_exactly(2)
                if len(out) > MAX_BODY_BYTES:
                    raise BadRequest("body too large")
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY_BYTES:
            raise BadRequest("body too large")
        return await self._read_exactly(length) if length else b""

    # ---- watching the peer while we answer ------------------------------------
    def start_watching(self) -> None:
        """Read in the background so a client that goes away is noticed at once."""

        async def watch() -> None:
            while await self._fill():
                pass

        if self._watcher is None and not self.peer_closed.is_set():
            self._watcher = asyncio.get_running_loop().create_task(watch())

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def sleep(self, seconds: float) -> bool:
        """Sleep; return False early if the client disconnects meanwhile."""
        if seconds <= 0:
            return not self.peer_closed.is_set()
        try:
            await asyncio.wait_for(self.peer_closed.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    # ---- writing -------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason(status)}"]
        base = {
            "date": formatdate(time.time(), usegmt=True),
            "server": "fake-upstream",
            "connection": "keep-alive" if self.keep_alive else "close",
        }
        merged = {**base, **{k.lower(): v for k, v in headers.items()}}
        lines += [f"{k}: {v}" for k, v in merged.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing() or self.peer_closed.is_set():
            raise PeerGone()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.peer_closed.set()
            raise PeerGone() from exc

    async def send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        hdrs = {"content-type": content_type, "content-length": str(len(body)), **(headers or {})}
        await self._write(self._head(status, hdrs) + body)

    async def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        await self.send(status, body, "application/json; charset=utf-8", headers)

    async def send_partial(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Announce the full length, send half of the body, then close (a cut body)."""
        hdrs = {"content-type": content_type, "content-length": str(len(body)), **(headers or {})}
        await self._write(self._head(status, hdrs) + body[: len(body) // 2])
        self.close()

    async def start_body(
        self, status: int, length: int, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """The head of a body of `length` bytes; its bytes follow with `send_raw`."""
        hdrs = {"content-type": content_type, "content-length": str(length), **(headers or {})}
        await self._write(self._head(status, hdrs))

    async def send_raw(self, data: bytes) -> None:
        await self._write(data)

    async def start_chunked(
        self, status: int, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        hdrs = {
            "content-type": content_type,
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            **(headers or {}),
        }
        await self._write(self._head(status, hdrs))

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    async def end_chunked(self) -> None:
        await self._write(b"0\r\n\r\n")

    async def send_cut_chunk(self, data: bytes) -> None:
        """Announce a chunk of `data`, send half of it, then close: a chunked body cut in
        the middle of a chunk."""
        await self._write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
        self.close()

    def close(self) -> None:
        """Close gracefully (FIN) without finishing whatever was in flight."""
        self.keep_alive = False
        with contextlib.suppress(Exception):
            self.writer.close()

    def reset(self) -> None:
        """Close with RST: the client sees 'connection reset by peer'."""
        self.keep_alive = False
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(Exception):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Request, Connection], Awaitable[None]]


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    conn = Connection(reader, writer)
    try:
        while conn.keep_alive:
            try:
                request = await conn.read_request()
            except BadRequest as exc:
                conn.keep_alive = False
                with contextlib.suppress(PeerGone):
                    await conn.send_json(400, {"error": {"message": str(exc)}})
                break
            if request is None:
                break
            conn.keep_alive = request.keep_alive
            conn.start_watching()
            try:
                await handler(request, conn)
            except PeerGone:
                conn.keep_alive = False
            finally:
                await conn.stop_watching()
            if conn.peer_closed.is_set():
                break
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


async def start_server(
    handler: Handler, host: str, port: int, tls: ssl.SSLContext | None = None
) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, handler)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_HEADER_BYTES, ssl=tls)
