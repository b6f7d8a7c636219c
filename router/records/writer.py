"""The store's sink: outcome records into the `requests` table and folded into the
`usage_daily` aggregates (day x key x pool x instance x upstream model x client
protocol), in one transaction per batch, at most a second after the request ended.

Tokens are what the upstream reported (a stream's final usage); when it reported none
for an answer, an estimate from the bytes exchanged (4 bytes a token) stands in, flagged
`estimated`. Cost comes from the pool's `pricing` in the Plan current when the batch is
written. A busy database (another process holding its write lock) keeps the batch for
the next round; raw rows older than the retention and aggregates older than 400 days are
deleted once an hour."""

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
from router.records.outcome import Attempt, Outcome
from router.records.store import connect
from router.records.threaded import ThreadedSink, log

DEFAULT_RETENTION = 7 * 86400.0  # seconds of raw rows
AGGREGATE_DAYS = 400
BYTES_PER_TOKEN = 4
_PRUNE_EVERY = 3600.0

_INSERT_REQUEST = """
INSERT INTO requests (
    request_id, time, day, protocol, endpoint, path, client, key, model, route, pool,
    instance, upstream_model, status, error, stream, ttfb, duration, overhead,
    input_tokens, output_tokens, cached_tokens, reasoning_tokens, estimated, cost,
    dropped, attempts
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_USAGE_COUNTERS = (
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
_USAGE_KEYS = ("day", "key", "pool", "instance", "model", "protocol")
_UPSERT_USAGE = f"""
INSERT INTO usage_daily ({", ".join(_USAGE_KEYS + _USAGE_COUNTERS)})
VALUES ({", ".join("?" * (len(_USAGE_KEYS) + len(_USAGE_COUNTERS)))})
ON CONFLICT ({", ".join(_USAGE_KEYS)}) DO UPDATE SET
{", ".join(f"{name} = {name} + excluded.{name}" for name in _USAGE_COUNTERS)}
"""


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
        rows, usage = [], {}
        for outcome in batch:
            row = self._row(outcome, plan)
            rows.append(row)
            _fold(usage, outcome, row)
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

    def _row(self, outcome: Outcome, plan: Plan | None) -> tuple[Any, ...]:
        last = outcome.attempts[-1] if outcome.attempts else None
        usage, estimated = _usage_of(outcome)
        cost = _cost(plan, last, usage)
        attempts = self._encode(outcome.attempts).decode()
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
    if outcome.usage is not None:
        return outcome.usage, False
    if outcome.status != 200 or not outcome.attempts:
        return ir.Usage(), False
    estimate = ir.Usage(
        input_tokens=outcome.request_bytes // BYTES_PER_TOKEN,
        output_tokens=outcome.response_bytes // BYTES_PER_TOKEN,
    )
    return estimate, True


def _cost(plan: Plan | None, last: Attempt | None, usage: ir.Usage) -> float | None:
    if plan is None or last is None:
        return None
    provider = plan.providers.get(last.provider)
    price = provider.price_for(last.model) if provider is not None else None
    return price.cost(usage) if price is not None else None


def _fold(usage: dict[tuple[Any, ...], list[Any]], outcome: Outcome, row: tuple[Any, ...]) -> None:
    day, pool, instance, model = row[2], row[10], row[11], row[12]
    keys = (day, outcome.key or "", pool or "", instance or "", model or "", outcome.protocol)
    totals = usage.get(keys)
    if totals is None:
        totals = usage[keys] = [0] * len(_USAGE_COUNTERS)
    status = outcome.status
    totals[0] += 1
    totals[1] += 400 <= status < 500 and status != 499
    totals[2] += status >= 500
    totals[3] += status == 499
    for index, value in enumerate(row[19:23], 4):  # input, output, cached, reasoning
        totals[index] += value
    totals[8] += row[23]
    totals[9] += outcome.duration
    totals[10] += outcome.ttfb or 0.0
    totals[11] += row[24] or 0.0
