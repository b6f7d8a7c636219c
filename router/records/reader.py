"""Reading records and usage, wherever they are kept: one interface (`RecordsReader`), an
implementation for the server's embedded store (SQLite) and one for PostgreSQL, which a
set of servers shares, so each shows the usage of all. Everything that reads records
(the usage API, the console's pages, the request events of `/api/events`) goes through
the worker's reader (`RecordsPlane.reader`).

The methods block: the server calls them in a thread. A store that cannot be read
raises `Unavailable`, with a message the admin API may show (never the URL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from router.records import postgres, store, usage
from router.records.dialect import POSTGRES, SQLITE, Connection, Dialect

T = TypeVar("T")
Query = Callable[[Connection, Dialect], T]
IDLE_CONNECTIONS = 4  # PostgreSQL connections a worker keeps for reads


class Unavailable(Exception):
    """The store of records cannot be read (the message says why)."""


class RecordsReader:
    """The interface: `read` runs a query of any caller's in the store's dialect; the
    rest are the usual queries, on `read`."""

    def read(self, query: Query[T]) -> T:
        """`query(connection, dialect)` over a connection of the store."""
        raise NotImplementedError

    def usage(
        self, first: str, last: str, groups: tuple[str, ...], pool: str | None = None
    ) -> dict[str, Any]:
        return self.read(lambda c, d: usage.usage(c, first, last, groups, pool, dialect=d))

    def requests(
        self, limit: int, before: int | None, filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self.read(lambda c, d: usage.requests(c, limit, before, filters, dialect=d))

    def latest_request(self) -> int:
        return self.read(lambda c, _: usage.latest_request(c))

    def request_events(self, after: int, limit: int) -> list[usage.RequestEvent]:
        return self.read(lambda c, d: usage.request_events(c, after, limit, dialect=d))

    def close(self) -> None:
        pass


class SqliteRecords(RecordsReader):
    """The server's embedded store: a read-only connection per read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, query: Query[T]) -> T:
        try:
            return store.read(self.path, lambda connection: query(connection, SQLITE))
        except sqlite3.Error as exc:
            raise Unavailable(f"the state store cannot be read: {exc}") from exc


class PostgresRecords(RecordsReader):
    """PostgreSQL: connections opened when a read needs one, a few kept for the next
    reads. A kept connection the server dropped meanwhile (it restarted) is replaced
    once, silently."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._prepared = False

    def read(self, query: Query[T]) -> T:
        for retry in (False, True):
            connection, kept = self._take()
            try:
                found = query(connection, POSTGRES)
            except psycopg.Error as exc:
                connection.close()
                if kept and not retry and isinstance(exc, psycopg.OperationalError):
                    self.close()  # kept from before the server restarted, like this one
                    continue
                raise Unavailable(f"PostgreSQL cannot be read: {postgres.reason(exc)}") from exc
            self._give(connection)
            return found
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> tuple[psycopg.Connection[Any], bool]:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection, True
        try:
            connection = postgres.connect(self.url, "router-reads")
        except psycopg.Error as exc:
            raise Unavailable(f"PostgreSQL cannot be reached: {postgres.reason(exc)}") from exc
        if not self._prepared:  # a read may come before the first record is written
            try:
                postgres.prepare(connection)
            except psycopg.Error as exc:
                connection.close()
                raise Unavailable(f"PostgreSQL cannot be read: {postgres.reason(exc)}") from exc
            self._prepared = True
        return connection, False

    def _give(self, connection: psycopg.Connection[Any]) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS and not connection.broken:
                self._idle.append(connection)
                return
        connection.close()
