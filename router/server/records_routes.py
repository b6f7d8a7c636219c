"""What the operator plane shows: `GET /metrics` (Prometheus exposition, summed over the
workers; admin key, or open with ROUTER_METRICS_PUBLIC=1) and the usage API under the
admin key: `GET /api/usage`, `GET /api/usage/{pool}`, `GET /api/requests`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from litestar import Request, Response, get

from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.records import metrics, usage
from router.records.plane import RecordsPlane
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan

T = TypeVar("T")


def _plane(request: Request) -> RecordsPlane:
    return request.app.state.records


def read_store(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        return query(connection)
    finally:
        connection.close()


async def _from_store(request: Request, query: Callable[[sqlite3.Connection], Any]) -> Response:
    try:
        admin_plan(request)
        path = _plane(request).database
        if path is None:
            raise ir.Error(503, "unavailable", "the state store is not available (see the log)")
        document = await asyncio.to_thread(read_store, path, query)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except sqlite3.Error as exc:
        error = ir.Error(503, "unavailable", f"the state store cannot be read: {exc}")
        return error_response(ADMIN_PROTOCOL, error)
    return json_response(document)


async def _usage(request: Request, pool: str | None) -> Response:
    try:
        first, last, groups = usage.usage_query(request.query_params)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return await _from_store(request, lambda c: usage.usage(c, first, last, groups, pool))


@get("/api/usage")
async def usage_all(request: Request) -> Response:
    """Usage from the daily aggregates: `from`, `to` (dates or RFC 3339; whole UTC days),
    `group_by` (any of day, key, pool, instance, model, protocol)."""
    return await _usage(request, None)


@get("/api/usage/{pool:str}")
async def usage_of_pool(request: Request, pool: str) -> Response:
    return await _usage(request, pool)


@get("/api/requests")
async def recent_requests(request: Request) -> Response:
    """The newest records first: `limit` (default 100, at most 1,000), `before` (the
    `next` of the previous page), and filters pool, instance, model, key, status, protocol."""
    try:
        limit, before, filters = usage.requests_query(request.query_params)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return await _from_store(request, lambda c: usage.requests(c, limit, before, filters))


@get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    if os.environ.get("ROUTER_METRICS_PUBLIC") != "1":
        try:
            admin_plan(request)
        except ir.Error as error:
            return error_response(ADMIN_PROTOCOL, error)
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return Response(body, media_type=content_type)


ROUTES = [usage_all, usage_of_pool, recent_requests, prometheus_metrics]
