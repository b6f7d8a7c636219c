"""The shared upstream HTTP client: nothing of one request may leak into another."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from router.providers.http import client_for, close_all


class CookieSetter(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        CookieSetter.seen.append(self.headers.get("cookie"))
        self.send_response(200)
        self.send_header("set-cookie", "__cf_bm=user-A-session; Path=/")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_upstream_cookies_are_never_replayed_to_later_requests():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CookieSetter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    async def two_requests() -> None:
        for proxy in (None, False):
            client = client_for(proxy)
            for _ in range(2):
                response = await client.get(url)
                assert response.headers["set-cookie"].startswith("__cf_bm=")
            assert len(client.cookies) == 0
        await close_all()

    try:
        asyncio.run(two_requests())
    finally:
        server.shutdown()
    assert CookieSetter.seen == [None, None, None, None]
