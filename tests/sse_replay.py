"""A loopback HTTP server that answers every request with prepared bytes, so a stream
our encoders produced can be fed to an official SDK and parsed by the SDK's own helpers.

    with ReplayServer() as server:
        server.reply(body_bytes)                        # next answer (any path)
        client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
        message = client.messages.stream(...).get_final_message()
        server.requests[-1]                             # (method, path, headers, body)

The body is written in small pieces (`chunk_size`) to exercise the client's own
re-assembly. One server can be shared by many tests (module-scoped fixture).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    body: bytes
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 7


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ReplayServer:
    def __init__(self) -> None:
        self.reply_with = Reply(b"")
        self.requests: list[Recorded] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    Recorded(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                reply = server.reply_with
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                step = max(1, reply.chunk_size)
                for start in range(0, len(reply.body), step):
                    self.wfile.write(reply.body[start : start + step])
                self.wfile.flush()

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def reply(self, body: bytes, **options: Any) -> None:
        """Answer the following requests with `body` (see `Reply` for options)."""
        self.reply_with = Reply(body, **options)

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
