"""Records and usage into PostgreSQL (router.records.postgres): the rows and daily
aggregates of the embedded store's writer (router.records.writer), one transaction per
batch, from the records service's thread (or an in-process app's).

PostgreSQL away (stopped, unreachable, refusing) fails no request and loses nothing:
- a batch it did not take is held in memory, in order, up to HOLD_RECORDS records or
  HOLD_SECONDS; past either, the oldest batches are spilled to the server's embedded
  store (router.records.spill), as is whatever is held when the writer stops;
- it is tried again after a back-off (half a second, doubling to BACKOFF_MAX); the log
  says it is away at most once a minute, and says when it is back;
- once it answers, the spill is replayed oldest first (at most REPLAY_SECONDS a round,
  so the service's buffer keeps moving), then what is held, then new batches.
A batch's id goes into `record_batches` in the transaction that writes its rows: a
batch written again (its commit's answer lost with the connection, or a spill replayed
after a crash) is skipped, so usage counts every record exactly once. A batch keeps its
rows (priced when they were made) and its bounds through the spill, so the aggregates
come out as if PostgreSQL had never been away."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from router.compiler.plan import Plan, redact_url
from router.records import postgres, writer
from router.records.outcome import Outcome
from router.records.spill import Batch, Row, Spill
from router.records.threaded import ThreadedSink, log

HOLD_RECORDS = 10_000
HOLD_SECONDS = 5.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
WARN_EVERY = 60.0  # seconds between two warnings that PostgreSQL is away
REPLAY_SECONDS = 2.0
REPLAY_BATCHES = 32  # read from the spill at a time
BATCH_DAYS = 7  # days `record_batches` remembers a batch, at least

_INSERT_REQUEST = writer.insert_requests("%s")
_UPSERT_USAGE = writer.upsert_usage("%s", existing="usage_daily.")
_CLAIM = "INSERT INTO record_batches (id, time) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_PRUNE_EVERY = 3600.0


class PostgresRecordStore(ThreadedSink):
    name = "postgres"
    interval = 1.0
    hold_records = HOLD_RECORDS
    hold_seconds = HOLD_SECONDS

    def __init__(
        self,
        url: str,
        plan: Callable[[], Plan | None],
        spill: Path | None,
        retention: float = writer.DEFAULT_RETENTION,
    ) -> None:
        super().__init__()
        self.url = url
        self.plan = plan
        self.retention = retention
        self.where = redact_url(url)
        self.spill = Spill(spill) if spill is not None else None
        self._held: deque[Batch] = deque()
        self._held_records = 0
        self._spilled: int | None = None  # records in the spill; None: not counted yet
        self._connection: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0  # monotonic
        self._backoff = BACKOFF_MIN
        self._away_since: float | None = None  # monotonic
        self._warned_at = -WARN_EVERY
        self._pruned_at = 0.0
        self._encode = msgspec.json.Encoder().encode

    def handle(self, batch: list[Outcome]) -> None:
        plan = self.plan()
        rows = [_text_safe(writer.request_row(o, plan, self._encode)) for o in batch]
        self._held.append(Batch(uuid.uuid4().hex, time.time(), rows))
        self._held_records += len(rows)

    def tick(self) -> None:
        """Once a round, after the round's batch is held: deliver, else spill."""
        self._deliver()
        self._spill_over(everything=False)
        self._prune()

    def finish(self) -> None:
        self._deliver()
        self._spill_over(everything=True)
        self._close()
        if self.spill is not None:
            self.spill.close()

    # --- delivery

    def _deliver(self) -> None:
        if not self._held and not self._spill_waiting():
            return
        if time.monotonic() < self._retry_at:
            return
        try:
            connection = self._open()
            if self._replay(connection):
                while self._held:
                    self._write(connection, self._held[0])
                    self._held_records -= len(self._held.popleft().rows)
        except psycopg.Error as exc:
            self._away(exc)
            return
        self._back()

    def _replay(self, connection: psycopg.Connection[Any]) -> bool:
        """Write spilled batches, oldest first, for at most REPLAY_SECONDS; whether the
        spill is empty now."""
        if self.spill is None or not self._spill_waiting():
            return True
        deadline = time.monotonic() + REPLAY_SECONDS
        while time.monotonic() < deadline:
            try:
                found = self.spill.oldest(REPLAY_BATCHES)
            except sqlite3.Error as exc:
                log.warning("records: the spill cannot be read (%s); trying again", exc)
                return False
            if not found:
                self._spilled = 0
                return True
            for number, batch in found:
                self._write(connection, batch)
                try:
                    self.spill.remove(number)
                except sqlite3.Error as exc:  # written once all the same: its id is taken
                    log.warning("records: a replayed batch stays in the spill (%s)", exc)
                    return False
                self._spilled = max((self._spilled or 0) - len(batch.rows), 0)
        return False

    def _write(self, connection: psycopg.Connection[Any], batch: Batch) -> None:
        """Write `batch`, or drop it when PostgreSQL refuses it for what it holds (raise
        when the connection is at fault: the batch waits)."""
        try:
            self._transact(connection, batch)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            if connection.broken or connection.closed:
                raise
            self.dropped += len(batch.rows)
            log.error("records: PostgreSQL refused a batch of %d: %s", len(batch.rows), exc)

    def _transact(self, connection: psycopg.Connection[Any], batch: Batch) -> None:
        usage = sorted(writer.fold(batch.rows).items())  # one lock order for every writer
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(_CLAIM, (batch.id, batch.made))
            if cursor.rowcount == 0:  # written before
                return
            cursor.executemany(_INSERT_REQUEST, batch.rows)
            cursor.executemany(_UPSERT_USAGE, [(*keys, *values) for keys, values in usage])

    # --- spilling

    def _spill_waiting(self) -> bool:
        if self.spill is None:
            return False
        if self._spilled is None:
            try:
                self._spilled = self.spill.records()
            except sqlite3.Error as exc:
                log.warning("records: the spill cannot be read (%s)", exc)
                return False
            if self._spilled:
                log.warning("records: %d records wait in the spill for PostgreSQL", self._spilled)
        return self._spilled > 0

    def _spill_over(self, everything: bool) -> None:
        """Spill the oldest held batches past the bounds (all of them: `everything`)."""
        taken: list[Batch] = []
        records = self._held_records
        now = time.time()
        for batch in self._held:
            if not (
                everything or records > self.hold_records or now - batch.made > self.hold_seconds
            ):
                break
            taken.append(batch)
            records -= len(batch.rows)
        if not taken:
            return
        if self.spill is not None:
            try:
                self.spill.put(taken)
            except sqlite3.Error as exc:
                log.warning("records: cannot spill (%s); %d records held", exc, self._held_records)
            else:
                for _ in taken:
                    self._held.popleft()
                self._held_records = records
                self._spilled = (self._spilled or 0) + sum(len(b.rows) for b in taken)
                return
        while self._held and self._held_records > self.capacity:  # memory stays bounded
            lost = self._held.popleft()
            self._held_records -= len(lost.rows)
            self.dropped += len(lost.rows)

    # --- the connection

    def _open(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            connection = postgres.connect(self.url, "router-records")
            try:
                postgres.prepare(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _away(self, exc: Exception) -> None:
        self._close()
        now = time.monotonic()
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        if self._away_since is None:
            self._away_since = now
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "records: PostgreSQL at %s unavailable (%s); %d records held, %d spilled",
                self.where,
                postgres.reason(exc),
                self._held_records,
                self._spilled or 0,
            )

    def _back(self) -> None:
        self._backoff = BACKOFF_MIN
        if self._away_since is not None:
            away = time.monotonic() - self._away_since
            log.info("records: PostgreSQL at %s is back after %.0f s", self.where, away)
            self._away_since = None

    def _prune(self) -> None:
        now = time.time()
        if now - self._pruned_at < _PRUNE_EVERY or self._connection is None:
            return
        self._pruned_at = now
        oldest_day = writer.utc_day(now - writer.AGGREGATE_DAYS * 86400)
        batches = now - max(self.retention, BATCH_DAYS * 86400.0)
        try:
            with self._connection.transaction():
                self._connection.execute(
                    "DELETE FROM requests WHERE time < %s", (now - self.retention,)
                )
                self._connection.execute("DELETE FROM usage_daily WHERE day < %s", (oldest_day,))
                self._connection.execute("DELETE FROM record_batches WHERE time < %s", (batches,))
        except psycopg.Error as exc:
            log.debug("records: PostgreSQL pruning later (%s)", exc)
            self._pruned_at = 0.0


def _text_safe(row: Row) -> Row:
    """PostgreSQL's text holds no NUL character (a client's model name may)."""
    if not any(isinstance(value, str) and "\x00" in value for value in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)
