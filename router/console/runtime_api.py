"""The console's runtime actions and live events, under the admin key or a session:

* `POST /api/providers/{pool}/{id}/enable` and `/disable`: a runtime override of the
  instance's `enabled`, kept in the state store (router.state.overrides). The worker that
  takes the request applies it at once, the others within a second (their sync loop,
  router.server.worker_sync); it outlives reloads and restarts. Allowed in read-only
  (GitOps) mode: it is runtime state, not config.
* `DELETE /api/providers/{pool}/{id}/override`: back to the file's value.
* `GET /api/events`: Server-Sent Events from every worker (router.state.events);
  `Last-Event-ID` resumes after the event it names."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.response import Stream

from router.compiler.plan import Plan
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.records import store
from router.records.reader import RecordsReader, Unavailable
from router.records.usage import RequestEvent
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan, instance_view
from router.server.records_routes import read_store
from router.state import events, overrides

_encode = msgspec.json.Encoder().encode
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _database(request: Request) -> Path:
    database = request.app.state.records.state_database
    if database is None:
        raise ir.Error(503, "unavailable", "the state store is not available (see the log)")
    return database


def _instance_of(plan: Plan, pool: str, instance: str) -> None:
    provider = plan.providers.get(pool)
    if provider is None:
        raise ir.Error(404, "not_found", f"no provider named {pool!r}")
    if not any(i.id == instance for i in provider.instances):
        raise ir.Error(404, "not_found", f"provider {pool!r} has no instance {instance!r}")


async def _override(request: Request, pool: str, instance: str, enabled: bool | None) -> Response:
    """Set (enabled True/False) or clear (None) the override, then apply it here."""
    try:
        _instance_of(admin_plan(request), pool, instance)
        database = _database(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)

    def write() -> overrides.Overrides:
        with store.connect(database) as connection:
            if enabled is None:
                overrides.clear(connection, pool, instance)
            else:
                overrides.put(connection, pool, instance, enabled)
            events.append(
                connection, "override", {"pool": pool, "instance": instance, "enabled": enabled}
            )
            return overrides.read(connection)

    try:
        found = await asyncio.to_thread(write)
    except sqlite3.Error as exc:
        error = ir.Error(503, "unavailable", f"the state store cannot be written: {exc}")
        return error_response(ADMIN_PROTOCOL, error)
    holder = request.app.state.holder
    holder.overrides = found
    await asyncio.to_thread(holder.reload, holder.fingerprint)
    plan = holder.plan
    if plan is None:  # the files broke meanwhile; the override is kept all the same
        return json_response({"pool": pool, "instance": instance, "override": enabled})
    provider = plan.providers[pool]
    [current] = [i for i in provider.instances if i.id == instance]
    return json_response({"pool": pool, **instance_view(provider, current)})


@post("/api/providers/{pool:str}/{instance:str}/enable", status_code=200)
async def enable(request: Request, pool: str, instance: str) -> Response:
    return await _override(request, pool, instance, True)


@post("/api/providers/{pool:str}/{instance:str}/disable", status_code=200)
async def disable(request: Request, pool: str, instance: str) -> Response:
    return await _override(request, pool, instance, False)


@delete("/api/providers/{pool:str}/{instance:str}/override", status_code=200)
async def clear_override(request: Request, pool: str, instance: str) -> Response:
    return await _override(request, pool, instance, None)


@get("/api/events")
async def live_events(request: Request) -> Response | Stream:
    try:
        admin_plan(request)
        database = _database(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    records = request.app.state.records.reader
    resume = events.Cursor.parse(
        request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    )
    try:
        cursor = resume or await asyncio.to_thread(_now, database, records)
    except (sqlite3.Error, Unavailable) as exc:
        error = ir.Error(503, "unavailable", f"the state store cannot be read: {exc}")
        return error_response(ADMIN_PROTOCOL, error)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    stream = _stream(database, records, cursor)
    return Stream(stream, media_type="text/event-stream", headers=headers)


def _now(database: Path, records: RecordsReader | None) -> events.Cursor:
    request = records.latest_request() if records is not None else 0
    return read_store(database, functools.partial(events.now, request=request))


def _after(
    database: Path, records: RecordsReader | None, cursor: events.Cursor
) -> list[events.Event]:
    """The events after `cursor`. Records that cannot be read now are shown once they
    can: the cursor stays at the last one shown."""
    found: list[RequestEvent] = []
    if records is not None:
        with contextlib.suppress(Unavailable):
            found = records.request_events(cursor.request, events.BATCH)
    return read_store(database, functools.partial(events.after, cursor=cursor, records=found))


async def _stream(
    database: Path, records: RecordsReader | None, cursor: events.Cursor
) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    quiet_since = time.monotonic()
    while True:
        try:
            found = await asyncio.to_thread(_after, database, records, cursor)
        except sqlite3.Error:
            found = []
        for event in found:
            cursor = event.cursor
            data = _encode({"time": event.time, **event.data}).decode()
            yield f"id: {cursor.text()}\nevent: {event.kind}\ndata: {data}\n\n".encode()
        if found:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(POLL_SECONDS)


ROUTES = [enable, disable, clear_override, live_events]
