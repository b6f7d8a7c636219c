"""`GET /provider_health`: one view of the instances' health merged over every worker of
the server (each worker's own state with `?per_worker=1`), from the statuses the workers
write to the state store (router.server.worker_sync). Without a state store, the
answering worker's own view."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

from litestar import Request, Response, get

from router.access.gate import identify, presented_key
from router.compiler.plan import Plan
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.server.auth import key_matches
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan, provider_health_document
from router.server.records_routes import read_store
from router.server.worker_sync import HealthBook, health_book
from router.state import workers


@get("/provider_health")
async def provider_health(request: Request) -> Response:
    """As open as the generating endpoints: with client keys configured it takes one of
    them, an admin key or a console session (upstream URLs and error messages are not for
    everyone)."""
    plan = request.app.state.holder.plan
    if plan is None:
        return json_response({"providers": {}}, 503)
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = dict(request.query_params)
    try:
        identify(plan, request.app.state.holder.runtime_keys, headers, query)
    except ir.Error as error:
        presented = presented_key(headers, query)
        admin = presented is not None and key_matches(presented, plan.auth.admin_keys)
        if not admin and not _console_session(request):
            return error_response(ADMIN_PROTOCOL, error)
    document = provider_health_document(plan)
    per_worker = request.query_params.get("per_worker") in ("1", "true")
    merge(document, await worker_books(request, plan), per_worker)
    return json_response(document)


def _console_session(request: Request) -> bool:
    """A signed-in console (its cookie, no key shown) may read it too."""
    try:
        admin_plan(request)
    except ir.Error:
        return False
    return True


async def worker_books(request: Request, plan: Plan) -> dict[int | str, HealthBook]:
    """Each live worker's health book by pid: this worker's as of now, the others' as
    they last wrote it to the state store (only this one's without a store); with Redis,
    the other servers' workers too, as `"<server>/<pid>"`."""
    books: dict[int | str, HealthBook] = {os.getpid(): health_book(plan)}
    database = request.app.state.records.state_database
    if database is None or request.app.state.sync is None:
        return books
    try:
        rows = await asyncio.to_thread(read_store, database, _live_everywhere)
    except sqlite3.Error:
        rows = []
    for row in rows:
        name = f"{row['server']}/{row['pid']}" if "server" in row else row["pid"]
        books.setdefault(name, row.get("health") or {})
    return books


def _live_everywhere(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    return workers.live(connection, remote=True)


def merge(document: dict[str, Any], books: dict[int | str, HealthBook], per_worker: bool) -> None:
    """Replace each instance's health in `document` (`{"providers": {pool: {"instances":
    [view, ...]}}}`, as /provider_health and /api/providers answer) with the workers'
    merged."""
    document["workers"] = sorted(books, key=_worker_order)
    for name, pool in document["providers"].items():
        for view in pool["instances"]:
            states = {
                pid: book[name][view["id"]]
                for pid, book in books.items()
                if view["id"] in book.get(name, {})
            }
            if not states:
                continue
            view.update(merged(list(states.values())))
            if per_worker:
                view["workers"] = {
                    str(pid): state
                    for pid, state in sorted(states.items(), key=lambda i: _worker_order(i[0]))
                }


def _worker_order(name: int | str) -> tuple[int, str]:
    """This server's workers (by pid) first, then the others' (`server/pid`)."""
    return (0, f"{name:>12}") if isinstance(name, int) else (1, name)


def merged(states: list[dict[str, Any]]) -> dict[str, Any]:
    healthy = [s for s in states if s.get("healthy")]
    errors = [s["last_error"] for s in states if s.get("last_error")]
    down = [s["down_since"] for s in states if s.get("down_since") is not None]
    recovers = [s["recovers_at"] for s in states if s.get("recovers_at") is not None]
    return {
        "healthy": len(healthy) == len(states),
        "healthy_workers": f"{len(healthy)}/{len(states)}",
        "consecutive_errors": max(s.get("consecutive_errors", 0) for s in states),
        "successes": sum(s.get("successes", 0) for s in states),
        "failures": sum(s.get("failures", 0) for s in states),
        "last_used": max((s.get("last_used") or 0 for s in states), default=0) or None,
        "last_error": max(errors, key=lambda e: e["at"]) if errors else None,
        "down_since": min(down) if down else None,
        "recovers_at": min(recovers) if recovers else None,
        "cooldown_until": max((s.get("cooldown_until") or 0 for s in states), default=0) or None,
    }


ROUTES = [provider_health]
