"""The Litestar application: one per Granian worker, holding that worker's Plan."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from router.console import (
    config_api,
    config_files_api,
    keys_api,
    providers_api,
    runtime_api,
    sessions_api,
    ui,
)
from router.protocols import ir
from router.providers.http import close_all
from router.records import metrics, store
from router.records.plane import RecordsPlane, records_enabled
from router.server import (
    endpoints,
    health_view,
    management,
    oauth_routes,
    records_routes,
    system,
)
from router.server.errors import error_response, protocol_for_path
from router.server.fastpath import FastPath
from router.server.reload import fingerprint, watch
from router.server.state import PlanHolder
from router.server.worker_sync import WorkerSync
from router.state import keys, overrides, redis_client

log = logging.getLogger("router.app")

DEFAULT_MAX_BODY_MB = 64


def _http_error(request: Request, exc: HTTPException) -> Response:
    headers = {k.lower(): v for k, v in request.headers.items()}
    protocol = protocol_for_path(request.url.path, headers)
    kind = ir.error_kind_for_status(exc.status_code)
    message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    return error_response(protocol, ir.Error(exc.status_code, kind, message))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    protocol = protocol_for_path(request.url.path)
    return error_response(protocol, ir.Error(500, "api_error", "internal gateway error"))


def _use_state_engines(holder: PlanHolder) -> None:
    """The Plan's shared Redis (`state.redis`), for the state servers share."""
    plan = holder.plan
    if plan is not None:
        redis_client.configure(plan.state.redis.value if plan.state.redis else None)


def create_app(config_dir: str | None = None, *, watch_config: bool | None = None) -> FastPath:
    """The worker's ASGI app: the fast path for the generating endpoints in front of the
    Litestar app (ROUTER_FASTPATH=0: Litestar alone, which serves them the same way)."""
    config_dir = config_dir or os.environ.get("ROUTER_CONFIG_DIR", ".")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call otherwise
    if watch_config is None:
        watch_config = os.environ.get("ROUTER_WATCH", "1") != "0"
    holder = PlanHolder(config_dir)
    database = store.database_path(store.state_dir())
    holder.overrides = overrides.stored(database)
    holder.runtime_keys = keys.stored(database)  # then kept up to date by WorkerSync
    holder.listeners.append(lambda _: _use_state_engines(holder))
    holder.reload(fingerprint(config_dir if watch_config else None))
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    records = RecordsPlane(lambda: holder.plan, lambda: holder.limits.guarded)
    if records_enabled():
        holder.listeners.append(metrics.note_reload)

    async def start_watcher() -> None:
        records.start()
        if records.state_database is not None:
            sync = WorkerSync(holder, records.state_database)
            app.state.sync = sync
            tasks.append(sync.start(stop))
        if os.environ.get("ROUTER_GC_FREEZE", "1") != "0":
            gc.freeze()
        tasks.append(asyncio.create_task(watch(holder, stop, config=bool(watch_config))))

    async def shutdown() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await close_all()
        if app.state.sync is not None:
            await app.state.sync.close()
        records.stop()  # flushes what the sinks hold

    max_body = int(os.environ.get("ROUTER_MAX_BODY_MB", DEFAULT_MAX_BODY_MB)) * 1024 * 1024
    app = Litestar(
        route_handlers=[
            *endpoints.ROUTES,
            *management.ROUTES,
            *oauth_routes.ROUTES,
            *system.ROUTES,
            *records_routes.ROUTES,
            *config_api.ROUTES,
            *providers_api.ROUTES,
            *runtime_api.ROUTES,
            *keys_api.ROUTES,
            *health_view.ROUTES,
            *config_files_api.ROUTES,
            *ui.ROUTES,
            *sessions_api.ROUTES,
        ],
        before_request=sessions_api.load_session,
        on_startup=[start_watcher],
        on_shutdown=[shutdown],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        request_max_body_size=max_body,
        openapi_config=None,
        debug=False,
    )
    app.state.holder = holder
    app.state.sync = None  # the worker's WorkerSync, once started with a state store
    app.state.records = records
    return FastPath(app, holder, max_body, hot=os.environ.get("ROUTER_FASTPATH", "1") != "0")
