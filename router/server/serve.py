"""`router serve`: compile once to fail fast, then run the app under Granian."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from router.compiler import compile_config
from router.server.client_timeouts import body_timeout, header_timeout
from router.server.records_service import RecordsService

if TYPE_CHECKING:
    from granian.constants import Loops

    from router.compiler.plan import Plan
    from router.state.bridge import StateBridge

log = logging.getLogger("router.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be ours, or None. Granian's workers share their socket
    through SO_REUSEPORT, which would also let a second server take part of the traffic;
    a bind without it fails while any other socket listens there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use (another router serve?)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def event_loop() -> Loops:
    """ROUTER_LOOP: `auto` (the default: uvloop when installed, as it is with the
    package), `uvloop` or `asyncio` (the standard library loop)."""
    from granian.constants import Loops

    return Loops(os.environ.get("ROUTER_LOOP", "auto"))


def _runtime_keys(state_dir: str | None) -> bool:
    """Whether the state store holds a live runtime key (`POST /api/keys`): then clients
    need a key even with none in the config."""
    from router.records import store
    from router.state import keys

    found = keys.stored(store.database_path(store.state_dir(state_dir)))
    return any(not key.revoked for key in found.values())


def share_state(runtime: str, state_dir: str | None) -> None:
    """What the workers share: the state store, migrated once here before any worker
    opens it, and the directory of the metrics every worker adds to."""
    from router.records import store

    directory = store.state_dir(state_dir)
    os.environ["ROUTER_STATE_DIR"] = str(directory)
    try:
        store.prepare(directory)
    except (OSError, sqlite3.Error) as exc:  # the workers say it again, and serve on
        log.error("state store %s unavailable: %s", directory, exc)
    metrics = Path(runtime) / "metrics"
    metrics.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)


def main(config_dir: str, host: str, port: int, workers: int, state_dir: str | None = None) -> int:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call otherwise
    config_dir = str(Path(config_dir).resolve())
    plan, diagnostics = compile_config(config_dir, env=dict(os.environ))
    for diagnostic in diagnostics:
        print(diagnostic, file=sys.stderr)
    if plan is None:
        print("router: configuration has errors; not starting", file=sys.stderr)
        return 1
    if plan.auth.open and not is_loopback(host) and not _runtime_keys(state_dir):
        print(
            f"router: refusing to listen on {host} with no client API key configured; "
            "set REQUIRED_API_KEY (or auth.api_keys / auth.keys in routes.yaml), or bind "
            "127.0.0.1",
            file=sys.stderr,
        )
        return 2

    taken = address_in_use(host, port)
    if taken is not None:
        print(f"router: {taken}; not starting", file=sys.stderr)
        return 2

    try:
        header_seconds = header_timeout()
        body_timeout()  # read by every worker: refuse a bad value here, once
    except ValueError as exc:
        print(f"router: {exc}; not starting", file=sys.stderr)
        return 2

    runtime = tempfile.mkdtemp(prefix="router-")
    os.environ["ROUTER_CONFIG_DIR"] = config_dir
    os.environ["ROUTER_WORKERS"] = str(workers)
    os.environ["ROUTER_RUNTIME_DIR"] = runtime
    share_state(runtime, state_dir)
    server = Granian(
        "router.server.app:create_app",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=event_loop(),
        log_access=False,
        # a client must send its headers in time (the body: client_timeouts.BODY_TIMEOUT)
        http1_settings=HTTP1Settings(header_read_timeout=max(1, int(header_seconds * 1000))),
        # a worker that dies (OOM killer, a crash in native code) is replaced at once;
        # Granian's default is to shut the whole server down
        respawn_failed_workers=True,
    )
    # SIGHUP would make Granian respawn its workers, and a worker starting on a broken
    # config has nothing to serve. Instead, ask the live workers to reload in place.
    trigger = Path(runtime) / "reload"
    server.signal_handler_reload = lambda *_: trigger.write_text("sighup")  # type: ignore[method-assign]
    records = RecordsService(runtime)
    if os.environ.get("ROUTER_RECORDS", "1") != "0":
        records.start()
    bridge = state_bridge(config_dir, plan, host, port)
    try:
        server.serve()
    finally:
        records.stop()
        if bridge is not None:
            bridge.stop()
    return 0


def state_bridge(config_dir: str, plan: Plan, host: str, port: int) -> StateBridge | None:
    """The bridge between this server's state store and Redis (router.state.bridge); it
    idles while the config names no Redis."""
    from router.records import store
    from router.state.bridge import RedisOfConfig, StateBridge

    database = store.database_path(store.state_dir())
    if not database.exists():
        return None
    url = plan.state.redis.value if plan.state.redis else None
    server = f"{socket.gethostname()}:{port}"
    bridge = StateBridge(database, server, RedisOfConfig(config_dir, url))
    bridge.start()
    return bridge
