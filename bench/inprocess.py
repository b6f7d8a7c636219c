"""One case through the gateway's ASGI app (or the floor's) in this process, request after
request, against the canned nginx upstream: no server, no load generator, so the
per-request cost shows to a few microseconds and a profiler sees only the app.

python -m bench.inprocess router|floor a|b|c [--requests N] [--profile]
(BENCH_CONFIG_DIR: another config dir than bench/config, e.g. one whose key has limits)

Prints wall and CPU time per request and, for the gateway, when its first body byte
was sent. --profile adds a pyinstrument tree of the measured requests."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, systems, upstream

BENCH = Path(__file__).parent


def _app(which: str) -> Any:
    if which == "floor":
        sys.path.insert(0, str(BENCH))
        import floor  # reads FLOOR_UPSTREAM and FLOOR_CLIENT when imported

        return floor.app
    from router.server.app import create_app

    config = os.environ.get("BENCH_CONFIG_DIR") or str(BENCH / "config")
    return create_app(config, watch_config=False)


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


async def _start_lifespan(app: Any) -> None:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    asyncio.get_running_loop().create_task(app(scope, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"


async def _one(app: Any, scope: dict[str, Any], body: bytes) -> float:
    """One request; returns the seconds until its first body byte went out."""
    started = time.perf_counter()
    first: float | None = None
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal first
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif first is None and message.get("body"):
            first = time.perf_counter() - started

    await app(dict(scope), receive, send)
    return first or 0.0


async def _run(which: str, case: systems.Case, requests: int, profile: bool) -> None:
    app = _app(which)
    call = case.gateway if which == "router" else case.upstream
    body = call.body.read_bytes()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.encode(), v.encode()) for k, v in call.headers]
    scope = _scope(call.path, headers)
    if which == "router":
        await _start_lifespan(app)
    for _ in range(300):  # warm up: connections, caches
        await _one(app, scope, body)
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        profiler.start()
    firsts = []
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        firsts.append(await _one(app, scope, body))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    firsts.sort()
    print(
        f"{which} ({case.key}): {wall / requests * 1e6:.0f} us wall, "
        f"{cpu / requests * 1e6:.0f} us CPU per request; first body byte p50 "
        f"{firsts[len(firsts) // 2] * 1e6:.0f} us"
    )
    from router.providers.http import close_all

    await close_all()  # the upstream pools of both (no lifespan shutdown is run here)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("which", choices=("router", "floor"))
    parser.add_argument("case", choices=[case.key for case in systems.CASES])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="pyinstrument the run")
    args = parser.parse_args()
    case = next(case for case in systems.CASES if case.key == args.case)
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as work:
        _, url = upstream.start(Path(work), Path(work))
        os.environ["BENCH_UPSTREAM"] = os.environ["FLOOR_UPSTREAM"] = url
        try:
            import uvloop

            uvloop.run(_run(args.which, case, args.requests, args.profile))
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
