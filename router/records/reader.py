"""Reading records and usage, wherever they are kept: one interface (`RecordsReader`), an
implementation for the server's embedded store (SQLite) and one for PostgreSQL, which a
set of servers shares, so each shows the usage of all. Everything that reads records
(the usage API, the console's pages, the request events of `/api/events`) goes through
the worker's reader (`RecordsPlane.reader`).

The methods block: the server calls them in a thread. A store that cannot be read
raises `Unavailable`, with a message the admin API may show (never the URL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from router.records import store, usage
from router.records.dialect import SQLITE, Connection, Dialect

T = TypeVar("T")
Query = Callable[[Connection, Dialect], T]


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
