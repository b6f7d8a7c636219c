"""The records reader of PostgreSQL (router.records.reader has the interface), in a
module of its own so that a server without PostgreSQL never loads psycopg."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from router.records import postgres
from router.records.dialect import POSTGRES
from router.records.reader import Query, RecordsReader, T, Unavailable

IDLE_CONNECTIONS = 4  # PostgreSQL connections a worker keeps for reads


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
