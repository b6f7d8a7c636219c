"""What the operator plane shows: `GET /metrics` (Prometheus exposition, summed over the
workers; admin key, or open with ROUTER_METRICS_PUBLIC=1) and the usage API under the
admin key: `GET /api/usage`, `GET /api/usage/{pool}`, `GET /api/requests`, read from
wherever the records are kept (the worker's RecordsPlane.reader)."""

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
from router.records import metrics, store, usage
from router.records.plane import RecordsPlane
from router.records.reader import RecordsReader, Unavailable
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan

T = TypeVar("T")


def _plane(request: Request) -> RecordsPlane:
    return request.app.state.records


def read_store(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """`query` over a read-only connection of the state store (runtime state)."""
    return store.read(path, query)


async def _from_store(request: Request, query: Callable[[RecordsReader], Any]) -> Response:
    try:
        admin_plan(request)
        reader = _plane(request).reader
        if reader is None:
            raise ir.Error(503, "unavailable", "the state store is not available (see the log)")
        document = await asyncio.to_thread(query, reader)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except Unavailable as exc:
        return error_response(ADMIN_PROTOCOL, ir.Error(503, "unavailable", str(exc)))
    return json_response(document)


async def _usage(request: Request, pool: str | None) -> Response:
    try:
        first, last, groups = usage.usage_query(request.query_params)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return await _from_store(request, lambda r: r.usage(first, last, groups, pool))


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
    return await _from_store(request, lambda r: r.requests(limit, before, filters))


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
