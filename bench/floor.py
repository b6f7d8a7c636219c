"""The Python floor: Granian + a bare ASGI app + the stack's HTTP client, httpx over
aiohttp (httpx-aiohttp's transport, as the gateway sets it up for all but model calls:
`router.providers.transport`), forwarding the request body to FLOOR_UPSTREAM + path and
streaming the answer back. No parsing, no routing.

FLOOR_CLIENT picks the client, like ROUTER_UPSTREAM_TRANSPORT does the gateway's model
calls' one: `aiohttp` (the default, above), `httpx` (httpx's own pool, httpcore) or
`native` (the gateway's own keep-alive pool, router/providers/connections.py).

python bench/floor.py PORT"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8089")
os.environ["ROUTER_UPSTREAM_TRANSPORT"] = os.environ.get("FLOOR_CLIENT", "aiohttp")

from router.providers.http import post  # noqa: E402  (reads the variable above)

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: accept startup and shutdown
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    # no system proxy (False), as in the gateway's bench config
    response = await post(False, UPSTREAM + scope["path"], HEADERS, body, 600.0, 10.0)
    content_type = (response.headers.get("content-type") or "application/json").encode()
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": [(b"content-type", content_type)]})
    async for chunk in response.aiter_bytes():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await response.aclose()
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    from pathlib import Path

    from granian import Granian
    from granian.constants import Interfaces

    from router.server.serve import event_loop

    Granian(
        "floor:app",
        address="127.0.0.1",
        port=int(sys.argv[1]),
        workers=1,
        interface=Interfaces.ASGI,
        loop=event_loop(),  # ROUTER_LOOP, as for the gateway
        log_access=False,
        working_dir=Path(__file__).parent,
    ).serve()
