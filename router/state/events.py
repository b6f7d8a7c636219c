"""The console's events (`GET /api/events`), from every worker, in the state store.

Two sources make one stream: the `events` table (health changes, reloads, overrides,
config writes, OAuth progress), and the `requests` table the records service writes
(one `request` event per record; it is not written twice), read through the records
reader (router.records.reader: the state store's table, or PostgreSQL's). A cursor is
both tables' last id, written `"<requests id>.<events id>"`: the SSE event id, which a
client sends back as `Last-Event-ID` to resume."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from router.records.usage import RequestEvent

KEEP_SECONDS = 3600.0  # events older than this are pruned (requests have their retention)
BATCH = 500  # events read at most per poll and table


@dataclass(frozen=True, slots=True)
class Cursor:
    request: int = 0
    event: int = 0

    def text(self) -> str:
        return f"{self.request}.{self.event}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        """A cursor from `Last-Event-ID`; None when absent or not one of ours."""
        if not text:
            return None
        request, dot, event = text.strip().partition(".")
        if not dot or not request.isdigit() or not event.isdigit():
            return None
        return cls(int(request), int(event))


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    time: float
    data: dict[str, Any]
    cursor: Cursor


def append(connection: sqlite3.Connection, kind: str, data: dict[str, Any]) -> None:
    connection.execute(
        "INSERT INTO events (time, kind, data) VALUES (?, ?, ?)",
        (time.time(), kind, json.dumps(data, separators=(",", ":"))),
    )


def now(connection: sqlite3.Connection, request: int) -> Cursor:
    """The cursor of the newest events, `request` being the newest record's id: a stream
    starting here shows only what follows."""
    event = connection.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    return Cursor(request, int(event))


def after(
    connection: sqlite3.Connection, cursor: Cursor, records: Sequence[RequestEvent]
) -> list[Event]:
    """What came after `cursor`: the records after its request id (read by the caller,
    at most BATCH) and the events table's, each in the order it was written, the two
    merged by time. Each event carries the cursor that resumes right after it."""
    requests = [(at, number, "request", data) for number, at, data in records]
    others = [
        (at, number, kind, json.loads(data))
        for number, at, kind, data in connection.execute(
            "SELECT id, time, kind, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (cursor.event, BATCH),
        )
    ]
    merged: list[Event] = []
    request, event = cursor.request, cursor.event
    r = o = 0
    while r < len(requests) or o < len(others):
        take_request = o >= len(others) or (r < len(requests) and requests[r][0] <= others[o][0])
        if take_request:
            at, request, kind, data = requests[r]
            r += 1
        else:
            at, event, kind, data = others[o]
            o += 1
        merged.append(Event(kind, at, data, Cursor(request, event)))
    return merged


def prune(connection: sqlite3.Connection) -> None:
    connection.execute("DELETE FROM events WHERE time < ?", (time.time() - KEEP_SECONDS,))
