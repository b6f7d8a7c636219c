"""`GET /api/system`: what the worker that answers holds (admin key required): tasks,
file descriptors, upstream connections and memory, to tell a leak from a worker that is
merely busy; and under `workers`, every live worker of the server as it last wrote its
status to the state store (pid, requests served, memory, CPU, generation)."""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any

from litestar import Request, Response, get

from router.cli import version
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL
from router.providers import connections
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan
from router.server.records_routes import read_store
from router.state import workers

_IMPORTED = time.monotonic()  # the fallback start time where /proc is not there
_PROC = Path("/proc/self")


def uptime_seconds() -> float:
    """Seconds since this process started (Linux: from /proc; else since this module was
    imported, which a worker does as it starts)."""
    try:
        # field 22 of /proc/self/stat, counted after the ")" that ends the command name
        fields = (_PROC / "stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, since_boot - started)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def open_fds() -> int | None:
    try:
        return len(os.listdir(_PROC / "fd"))
    except OSError:
        return None


def rss_bytes() -> int | None:
    """Resident memory now (the second field of /proc/self/statm, in pages)."""
    try:
        pages = int((_PROC / "statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def system_document() -> dict[str, Any]:
    """Figures of this process; call it on the worker's event loop (tasks are counted on
    the running loop)."""
    return {
        "pid": os.getpid(),
        "python": platform.python_version(),
        "version": version(),
        "uptime_s": round(uptime_seconds(), 3),
        "tasks": len(asyncio.all_tasks()),
        "open_fds": open_fds(),
        "connections": connections.open_connections(),
        "idle_connections": connections.idle_connections(),
        "rss_bytes": rss_bytes(),
    }


@get("/api/system")
async def system(request: Request) -> Response:
    try:
        plan = admin_plan(request)
    except ir.Error as error:
        return error_response(DEFAULT_PROTOCOL, error)
    document = system_document()
    database = request.app.state.records.state_database
    document["config_dir"] = plan.config_dir
    document["state_store"] = str(database) if database is not None else None
    document["workers"] = await _workers(database, document)
    servers = {worker.get("server") for worker in document["workers"]}
    document["mode"] = (
        "servers"
        if len(servers) > 1
        else "standalone"
        if len(document["workers"]) <= 1
        else "workers"
    )
    return json_response(document)


async def _workers(database: Path | None, mine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live worker's figures as it last wrote them (router.server.worker_sync);
    this worker's as of now."""
    rows: list[dict[str, Any]] = []
    if database is not None:
        try:
            rows = await asyncio.to_thread(read_store, database, _everywhere)
        except sqlite3.Error:
            rows = []
    found = {
        (row.get("server", ""), row["pid"]): {k: v for k, v in row.items() if k != "health"}
        for row in rows
    }
    here = ("", mine["pid"])
    found.setdefault(here, {"pid": mine["pid"]})
    found[here].update(rss_bytes=mine["rss_bytes"], uptime_s=mine["uptime_s"])
    return [found[name] for name in sorted(found)]


def _everywhere(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    """This server's workers, then (with Redis) the other servers', each with `server`."""
    return workers.live(connection, remote=True)


ROUTES = [system]
