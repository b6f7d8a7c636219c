"""A loopback HTTP forward proxy that logs what went through it (standard library only).

    python -m tests.fakes.proxy --port 0 --port-file PATH

Handles `CONNECT host:port` (a TCP tunnel) and absolute-URI requests
(`GET http://host:port/path HTTP/1.1`, forwarded with `Connection: close`).
Its own endpoints, requested in origin form:
    GET  /_proxy/log     [{"method", "target", "host", "port", "time"}], oldest first
    POST /_proxy/reset   clear the log
    GET  /_proxy/health  {"ok": true}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

from .bootstrap import arg_parser, run_program, serve_until_signalled

HOP_BY_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


class Proxy:
    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            writer.close()
            return
        headers = [line for line in lines[1:] if line]
        try:
            if method.upper() == "CONNECT":
                await self.tunnel(target, reader, writer)
            elif target.startswith(("http://", "https://")):
                await self.forward(method, target, version, headers, reader, writer)
            else:
                await self.control(method, target, headers, reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def record(self, method: str, target: str, host: str, port: int) -> None:
        self.log.append(
            {"method": method, "target": target, "host": host, "port": port, "time": time.time()}
        )

    async def tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        self.record("CONNECT", target, host, int(port_text))
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port_text))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self.splice(reader, writer, up_reader, up_writer)

    async def forward(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        self.record(method, target, host, port)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in HOP_BY_HOP]
        head = f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in kept)
        head += "connection: close\r\n\r\n"
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            await writer.drain()
            return
        up_writer.write(head.encode("latin-1"))
        await up_writer.drain()
        await self.splice(reader, writer, up_reader, up_writer)

    async def splice(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass

        up = asyncio.ensure_future(pipe(reader, up_writer))
        down = asyncio.ensure_future(pipe(up_reader, writer))
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            up_writer.close()

    async def control(
        self,
        method: str,
        target: str,
        headers: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        length = 0
        for h in headers:
            name, _, value = h.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length:
            await reader.readexactly(length)
        status = 200
        if target == "/_proxy/log":
            payload: Any = self.log
        elif target == "/_proxy/reset" and method.upper() == "POST":
            self.log.clear()
            payload = {"ok": True}
        elif target == "/_proxy/health":
            payload = {"ok": True}
        else:
            status, payload = 404, {"error": "not a proxy request"}
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


async def run(args: argparse.Namespace) -> None:
    proxy = Proxy()
    server = await asyncio.start_server(proxy.handle, args.host, args.port)
    await serve_until_signalled(server, "fake proxy", args)


def main(argv: list[str] | None = None) -> None:
    run_program(run(arg_parser("loopback HTTP forward proxy that logs").parse_args(argv)))


if __name__ == "__main__":
    main()
