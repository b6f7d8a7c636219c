"""The store's sink: outcome records into the `requests` table and folded into the
`usage_daily` aggregates (day x key x pool x instance x upstream model x client
protocol), in one transaction per batch, at most a second after the request ended.

Tokens are what the upstream reported (a stream's final usage); when it reported none
for an answer, an estimate from the bytes exchanged (4 bytes a token) stands in, flagged
`estimated`. Cost comes from the pool's `pricing` in the Plan current when the batch is
written. A busy database (another process holding its write lock) keeps the batch for
the next round; raw rows older than the retention and aggregates older than 400 days are
deleted once an hour. The rows and the fold are PostgreSQL's writer's too
(router.records.postgres_writer)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from router.compiler.plan import Plan
from router.config.durations import parse_duration
from router.protocols import ir
from router.records.outcome import Attempt, Outcome, usage_or_estimate
from router.records.store import REQUEST_COLUMNS, connect
from router.records.threaded import ThreadedSink, log

DEFAULT_RETENTION = 7 * 86400.0  # seconds of raw rows
AGGREGATE_DAYS = 400
_PRUNE_EVERY = 3600.0

USAGE_COUNTERS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "cancelled",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "duration",
    "ttfb",
    "cost",
)
USAGE_KEYS = ("day", "key", "pool", "instance", "model", "protocol")


def insert_requests(mark: str) -> str:
    """The INSERT of one request row, with `mark` as the placeholder."""
    marks = ", ".join([mark] * len(REQUEST_COLUMNS))
    return f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({marks})"


def upsert_usage(mark: str, existing: str = "") -> str:
    """The INSERT that adds one group's counters to its `usage_daily` row; `existing`
    qualifies the row's own columns ("usage_daily." for PostgreSQL, where they are
    ambiguous otherwise)."""
    columns = USAGE_KEYS + USAGE_COUNTERS
    added = ", ".join(f"{name} = {existing}{name} + excluded.{name}" for name in USAGE_COUNTERS)
    return (
        f"INSERT INTO usage_daily ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))}) "
        f"ON CONFLICT ({', '.join(USAGE_KEYS)}) DO UPDATE SET {added}"
    )


_INSERT_REQUEST = insert_requests("?")
_UPSERT_USAGE = upsert_usage("?")


def retention_from_environment() -> float:
    value = os.environ.get("ROUTER_RECORDS_RETENTION")
    return parse_duration(value) if value else DEFAULT_RETENTION


_day: list[Any] = [-1, ""]  # the last day number formatted, and its text


def utc_day(unix: float) -> str:
    day = int(unix // 86400)
    if day != _day[0]:
        _day[:] = [day, datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")]
    return _day[1]


class RecordStore(ThreadedSink):
    name = "store"
    interval = 1.0

    def __init__(
        self, path: Path, plan: Callable[[], Plan | None], retention: float = DEFAULT_RETENTION
    ) -> None:
        super().__init__()
        self.path = path
        self.plan = plan
        self.retention = retention
        self._connection: sqlite3.Connection | None = None
        self._pruned_at = 0.0
        self._encode = msgspec.json.Encoder().encode

    def handle(self, batch: list[Outcome]) -> None:
        plan = self.plan()
        rows = [request_row(outcome, plan, self._encode) for outcome in batch]
        usage = fold(rows)
        try:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_INSERT_REQUEST, rows)
                connection.executemany(
                    _UPSERT_USAGE, [(*keys, *values) for keys, values in usage.items()]
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:  # locked or busy: try again next round
            log.debug("records store busy (%s); %d records wait", exc, len(batch))
            self.requeue(batch)

    def tick(self) -> None:
        now = time.time()
        if now - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            connection = self._open()
            connection.execute("DELETE FROM requests WHERE time < ?", (now - self.retention,))
            oldest_day = utc_day(now - AGGREGATE_DAYS * 86400)
            connection.execute("DELETE FROM usage_daily WHERE day < ?", (oldest_day,))
        except sqlite3.OperationalError as exc:
            log.debug("records store busy (%s); pruning later", exc)
            self._pruned_at = 0.0

    def finish(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:  # made in the sink's own thread, used only there
            self._connection = connect(self.path)
        return self._connection


def request_row(
    outcome: Outcome, plan: Plan | None, encode: Callable[[Any], bytes]
) -> tuple[Any, ...]:
    """The `requests` row of `outcome`, priced by `plan` (in REQUEST_COLUMNS' order)."""
    last = outcome.attempts[-1] if outcome.attempts else None
    usage, estimated = _usage_of(outcome)
    cost = _cost(plan, last, usage)
    attempts = encode(outcome.attempts).decode()
    return (
        outcome.id,
        outcome.time,
        utc_day(outcome.time),
        outcome.protocol,
        outcome.endpoint,
        outcome.path,
        outcome.client,
        outcome.key,
        outcome.model,
        outcome.route,
        last.provider if last else None,
        last.instance if last else None,
        last.model if last else None,
        outcome.status,
        outcome.error,
        int(outcome.stream),
        outcome.ttfb,
        outcome.duration,
        outcome.overhead,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
        int(estimated),
        cost,
        ",".join(outcome.dropped),
        attempts,
    )


def _usage_of(outcome: Outcome) -> tuple[ir.Usage, bool]:
    """The usage the upstream reported; for an answer without one, the estimate."""
    return usage_or_estimate(
        outcome.usage,
        outcome.status,
        bool(outcome.attempts),
        outcome.request_bytes,
        outcome.response_bytes,
    )


def _cost(plan: Plan | None, last: Attempt | None, usage: ir.Usage) -> float | None:
    if plan is None or last is None:
        return None
    provider = plan.providers.get(last.provider)
    price = provider.price_for(last.model) if provider is not None else None
    return price.cost(usage) if price is not None else None


def fold(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], list[Any]]:
    """The `usage_daily` counters the request rows add, by group (USAGE_KEYS), in the
    rows' order."""
    usage: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        pool, instance, model = row[10], row[11], row[12]
        keys = (row[2], row[7] or "", pool or "", instance or "", model or "", row[3])
        totals = usage.get(keys)
        if totals is None:
            totals = usage[keys] = [0] * len(USAGE_COUNTERS)
        status = row[13]
        totals[0] += 1
        totals[1] += 400 <= status < 500 and status != 499
        totals[2] += status >= 500
        totals[3] += status == 499
        for index, value in enumerate(row[19:23], 4):  # input, output, cached, reasoning
            totals[index] += value
        totals[8] += row[23]
        totals[9] += row[17]  # duration
        totals[10] += row[16] or 0.0  # time to first byte
        totals[11] += row[24] or 0.0  # cost
    return usage
