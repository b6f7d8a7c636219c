"""Where request rows wait while PostgreSQL is away: the `records_spill` table of the
server's embedded store, one row per batch (its id, when it was made, its request rows as
JSON), taken back oldest first once PostgreSQL answers again (router.records.postgres_writer).

A table of its own rather than the embedded `requests` and `usage_daily` with a pending
flag: a batch goes in and comes out whole (its id is what makes a replay count once),
nothing that reads the embedded store's records can take a spilled row for a delivered
one, and usage is folded only once, when the batch is written to PostgreSQL. Rows are
kept as they were made (priced then), so usage comes out as if PostgreSQL had never been
away. Used from one thread: the writer's."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from router.records.store import connect

Row = tuple[Any, ...]


@dataclass(slots=True)
class Batch:
    id: str  # unique: PostgreSQL's `record_batches` takes each id once
    made: float  # unix time
    rows: list[Row]


class Spill:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(list[list[Any]]).decode

    def put(self, batches: list[Batch]) -> None:
        """Keep `batches`, after every batch kept before; all or none."""
        connection = self._open()
        rows = [(b.id, b.made, len(b.rows), self._encode(b.rows)) for b in batches]
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO records_spill (batch, time, records, rows) VALUES (?, ?, ?, ?)",
                rows,
            )

    def oldest(self, limit: int) -> list[tuple[int, Batch]]:
        """The `limit` oldest batches, each with the number `remove` takes."""
        found = self._open().execute(
            "SELECT id, batch, time, rows FROM records_spill ORDER BY id LIMIT ?", (limit,)
        )
        return [
            (number, Batch(batch, made, [tuple(row) for row in self._decode(rows)]))
            for number, batch, made, rows in found
        ]

    def remove(self, number: int) -> None:
        with self._open() as connection:
            connection.execute("DELETE FROM records_spill WHERE id = ?", (number,))

    def records(self) -> int:
        """How many request rows wait."""
        found = self._open().execute("SELECT coalesce(sum(records), 0) FROM records_spill")
        return int(found.fetchone()[0])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = connect(self.path)
        return self._connection
