"""The native upstream client (router/providers/connections.py) against raw HTTP/1.1
servers on loopback that answer exactly the bytes each test scripts: keep-alive reuse,
every way a body can be delimited, decoding, early ends, errors and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from router.providers import connections, http

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
JSON = b'{"ok":true}'


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answer(body: bytes = JSON, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines + list(extra)) + "\r\n\r\n").encode() + body


class RawServer:
    """A loopback server running `handler(reader, writer, connection_number)` per
    connection; records every request head and body."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed = asyncio.Event()  # a connection saw the client's end

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/messages?beta=true"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        connections.close_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> None:
        self.requests.append(await read_request(reader))

    @classmethod
    def answering(cls, raw: bytes) -> RawServer:
        """A server that reads one request per connection, answers `raw` and closes."""

        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(raw)
            await writer.drain()

        server = cls(handler)
        return server


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 10))


async def post(url: str, headers: dict[str, str] | None = None, connect: float = 5.0):
    pool = connections.pool_for(http.tls_context())
    return await pool.post(url, headers or {"content-type": "application/json"}, b"{}", connect)


async def fetch(url: str) -> tuple[int, bytes]:
    response = await post(url)
    body = await response.aread()
    await response.aclose()
    return response.status_code, body


def keep_alive_handler(server_ref: list[RawServer]) -> Handler:
    async def handler(reader, writer, number):
        while True:
            await server_ref[0].request(reader)
            writer.write(answer(b'{"n":%d}' % number))
            await writer.drain()

    return handler


def first_hangs(server_ref: list[RawServer], head: bytes = b"") -> Handler:
    """The first connection gets `head` and then nothing until the client hangs up (which
    sets `closed`); later ones get the JSON answer."""

    async def handler(reader, writer, number):
        server = server_ref[0]
        await server.request(reader)
        if number == 1:
            writer.write(head)
            await writer.drain()
            await reader.read()  # returns when the client hangs up
            server.closed.set()
            return
        writer.write(answer())
        await writer.drain()

    return handler


def test_sequential_calls_share_one_connection_and_send_an_exact_request() -> None:
    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(keep_alive_handler(ref)) as server:
            ref.append(server)
            results = [await fetch(server.url) for _ in range(3)]
            assert results == [(200, b'{"n":1}')] * 3
            assert server.connections == 1
            head, body = server.requests[0]
            lines = head.decode().split("\r\n")
            assert lines[0] == "POST /v1/messages?beta=true HTTP/1.1"
            assert f"host: 127.0.0.1:{server.port}" in lines
            assert "content-type: application/json" in lines
            assert "content-length: 2" in lines
            assert "accept-encoding: gzip, deflate" in lines
            assert any(line.startswith("user-agent: router") for line in lines)
            assert body == b"{}"

    run(main())


def test_concurrent_calls_open_one_connection_each_then_reuse_them() -> None:
    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(keep_alive_handler(ref)) as server:
            ref.append(server)
            first = await asyncio.gather(*(fetch(server.url) for _ in range(4)))
            second = await asyncio.gather(*(fetch(server.url) for _ in range(4)))
            assert {status for status, _ in first + second} == {200}
            assert server.connections == 4

    run(main())


def test_chunked_body_is_relayed_as_it_arrives() -> None:
    async def main() -> None:
        proceed = asyncio.Event()

        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"6\r\nevent1\r\n")
            await writer.drain()
            await proceed.wait()  # the client must have the first piece before this
            writer.write(b"6\r\nevent2\r\n0\r\n\r\n")
            await writer.drain()
            await server.request(reader)
            writer.write(answer())

        async with RawServer(handler) as server:
            response = await post(server.url)
            pieces = response.aiter_bytes()
            assert await anext(pieces) == b"event1"
            assert not response.at_hand()  # the next piece is still on its way
            proceed.set()
            while not response.at_hand():  # it arrives (bounded by the test's timeout)
                await asyncio.sleep(0.001)
            assert [piece async for piece in pieces] == [b"event2"]
            await response.aclose()
            assert await fetch(server.url) == (200, JSON)
            assert server.connections == 1

    run(main())


def test_informational_answers_before_the_real_one_are_skipped() -> None:
    async def main() -> None:
        ref: list[RawServer] = []

        async def handler(reader, writer, number):
            while True:
                await ref[0].request(reader)
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n")
                writer.write(answer(JSON, "x-real: yes"))
                await writer.drain()

        async with RawServer(handler) as server:
            ref.append(server)
            for _ in range(2):  # and the connection stays usable
                response = await post(server.url)
                assert response.status_code == 200
                assert response.headers.get("x-real") == "yes"
                assert response.headers.get("link") is None
                assert await response.aread() == JSON
                await response.aclose()
            assert server.connections == 1

    run(main())


def test_body_delimited_by_the_end_of_the_connection() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"
        async with RawServer.answering(raw) as server:
            assert await fetch(server.url) == (200, b"until the end")
            assert await fetch(server.url) == (200, b"until the end")
            assert server.connections == 2

    run(main())


def test_connection_close_answer_is_not_reused() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(answer(JSON, "connection: close"))
            await writer.drain()
            await asyncio.sleep(0.5)  # keep the socket open: the header alone must decide

        async with RawServer(handler) as server:
            assert await fetch(server.url) == (200, JSON)
            assert await fetch(server.url) == (200, JSON)
            assert server.connections == 2

    run(main())


def test_connection_the_upstream_closed_while_idle_is_replaced() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(answer(b'{"n":%d}' % number))
            await writer.drain()  # then the handler returns: the server closes it

        async with RawServer(handler) as server:
            assert await fetch(server.url) == (200, b'{"n":1}')
            await asyncio.sleep(0.1)  # the close reaches the idle connection
            assert await fetch(server.url) == (200, b'{"n":2}')

    run(main())


def test_idle_connections_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "KEEPALIVE_SECONDS", 0.0)

    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(keep_alive_handler(ref)) as server:
            ref.append(server)
            assert await fetch(server.url) == (200, b'{"n":1}')
            assert await fetch(server.url) == (200, b'{"n":2}')

    run(main())


def test_gzip_body_is_decoded() -> None:
    text = b'{"text":"' + b"compressible " * 500 + b'"}'

    async def main() -> None:
        raw = answer(gzip.compress(text), "content-encoding: gzip")
        async with RawServer.answering(raw) as server:
            response = await post(server.url)
            assert response.headers.get("Content-Encoding") == "gzip"
            assert not response.at_hand()  # a compressed piece may decode to nothing yet
            assert await response.aread() == text
            await response.aclose()

    run(main())


def test_undecodable_gzip_is_a_decoding_error() -> None:
    async def main() -> None:
        raw = answer(b"not gzip at all", "content-encoding: gzip")
        async with RawServer.answering(raw) as server:
            response = await post(server.url)
            with pytest.raises(httpx.DecodingError):
                await response.aread()
            await response.aclose()

    run(main())


def test_large_body_arrives_whole_through_flow_control() -> None:
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB, above the pause threshold

    async def main() -> None:
        async with RawServer.answering(answer(body)) as server:
            response = await post(server.url)
            await asyncio.sleep(0.2)  # let the body pile up: reading must pause, then resume
            received = await response.aread()
            await response.aclose()
            assert received == body

    run(main())


def test_upstream_hanging_up_mid_body_is_a_protocol_error() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"
        async with RawServer.answering(raw) as server:
            response = await post(server.url)
            with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
                await response.aread()
            await response.aclose()

    run(main())


def test_upstream_hanging_up_before_answering() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await server.request(reader)

        async with RawServer(handler) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="before answering"):
                await post(server.url)

    run(main())


def test_garbage_answer_is_a_protocol_error() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1)

        async with RawServer(handler) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="invalid response"):
                await post(server.url)

    run(main())


def test_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError, match="cannot connect"):
            await post(f"http://127.0.0.1:{port}/v1")

    run(main())


def blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback port whose accept queue is full: connecting to it hangs (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    return listener, fillers


def test_an_address_that_does_not_answer_holds_the_next_back_only_briefly() -> None:
    """A host name with two addresses, the first unreachable (a broken IPv6 route, say):
    the second is tried 0.25 s later instead of after the whole connect timeout."""
    listener, fillers = blackhole()

    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(keep_alive_handler(ref)) as server:
            ref.append(server)
            stream = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
            addresses = [(*stream, listener.getsockname()), (*stream, ("127.0.0.1", server.port))]

            async def resolve(host, port, **kwargs):  # the name service's answer
                assert (host, port) == ("upstream.test", server.port)
                return addresses

            asyncio.get_running_loop().getaddrinfo = resolve  # type: ignore[method-assign]
            started = time.monotonic()
            response = await post(f"http://upstream.test:{server.port}/v1", connect=5.0)
            assert await response.aread() == b'{"n":1}'
            await response.aclose()
            assert connections.HAPPY_EYEBALLS_DELAY <= time.monotonic() - started < 2.0
            assert (
                server.requests[0][0].split(b"\r\n")[1] == b"host: upstream.test:%d" % server.port
            )

    try:
        run(main())
    finally:
        for sock in (listener, *fillers):
            sock.close()


def test_tls_handshake_that_never_completes_is_a_connect_timeout() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await asyncio.sleep(5)  # accepts TCP, never speaks TLS

        async with RawServer(handler) as server:
            url = f"https://127.0.0.1:{server.port}/v1"
            with pytest.raises(httpx.ConnectTimeout):
                await post(url, connect=0.3)

    run(main())


def test_line_break_in_a_header_value_is_refused_before_sending() -> None:
    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(keep_alive_handler(ref)) as server:
            ref.append(server)
            for value in ("a\r\nx-injected: 1", "a\nb", "a\rb"):
                with pytest.raises(httpx.LocalProtocolError):
                    await post(server.url, {"x-note": value})
            assert server.connections == 0
            response = await post(server.url, {"user-agent": "custom/1"})  # the caller's wins
            await response.aread()
            await response.aclose()
            assert b"user-agent: custom/1\r\n" in server.requests[0][0]
            assert server.requests[0][0].count(b"user-agent") == 1

    run(main())


def test_closing_an_unfinished_answer_closes_its_connection() -> None:
    async def main() -> None:
        async def handler(reader, writer, number):
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await reader.read()  # returns when the client hangs up
            server.closed.set()

        async with RawServer(handler) as server:
            response = await post(server.url)
            assert await anext(response.aiter_bytes()) == b"first"
            await response.aclose()
            await asyncio.wait_for(server.closed.wait(), 2)

    run(main())


def test_cancelled_call_closes_its_connection_and_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "MAX_CONNECTIONS_PER_ORIGIN", 1)

    async def main() -> None:
        ref: list[RawServer] = []
        async with RawServer(first_hangs(ref)) as server:
            ref.append(server)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await post(server.url)
            await asyncio.wait_for(server.closed.wait(), 2)
            # the only slot is free again, and the next call gets a new connection
            assert await asyncio.wait_for(fetch(server.url), 2) == (200, JSON)
            assert server.connections == 2

    run(main())


def test_answer_dropped_without_closing_frees_its_slot_and_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "MAX_CONNECTIONS_PER_ORIGIN", 1)

    async def main() -> None:
        ref: list[RawServer] = []
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        async with RawServer(first_hangs(ref, head)) as server:
            ref.append(server)
            response = await post(server.url)
            assert response.status_code == 200
            del response  # never read, never closed
            gc.collect()
            await asyncio.wait_for(server.closed.wait(), 2)
            assert await asyncio.wait_for(fetch(server.url), 2) == (200, JSON)

    run(main())


def test_target_parsing() -> None:
    plain = connections.target("http://example.test/v1/chat/completions")
    assert plain.origin == ("http", "example.test", 80)
    assert plain.host_header == "example.test"
    assert plain.path == "/v1/chat/completions"
    tls = connections.target("https://[::1]:8443/v1beta/models/x:generateContent?alt=sse")
    assert tls.origin == ("https", "::1", 8443)
    assert tls.host_header == "[::1]:8443"
    assert tls.path == "/v1beta/models/x:generateContent?alt=sse"
    with pytest.raises(httpx.UnsupportedProtocol):
        connections.target("ftp://example.test/file")


def test_proxy_settings_decide_which_client_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    http._system_proxy_applies.cache_clear()
    http._transport.cache_clear()
    monkeypatch.delenv("ROUTER_UPSTREAM_TRANSPORT", raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    try:
        assert http._direct(False, "https://api.example.test/v1")  # proxy: false
        assert not http._direct("http://127.0.0.1:3128", "http://api.example.test/v1")
        assert not http._direct(None, "https://api.example.test/v1")  # system proxy
        assert http._direct(None, "http://api.example.test/v1")  # no HTTP_PROXY set
        assert http._direct(None, "https://internal.test/v1")  # NO_PROXY
        http._transport.cache_clear()
        monkeypatch.setenv("ROUTER_UPSTREAM_TRANSPORT", "aiohttp")
        assert not http._direct(False, "https://api.example.test/v1")
    finally:
        http._system_proxy_applies.cache_clear()
        http._transport.cache_clear()
