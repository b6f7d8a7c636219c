"""The dashboard's figures over the last hour, per minute, from the `requests` table (the
state store's, or PostgreSQL's: the query takes the reader's dialect): requests per
second, error rate, p50/p95 latency and tokens.

Counts and token sums are aggregated by the database; latency percentiles come from the rows'
durations, a systematic sample of them (every k-th row id) once the hour holds more than
SAMPLE rows, so that a busy server's dashboard stays quick to draw."""

from __future__ import annotations

import time
from typing import Any

from router.console.ui.charts import Point
from router.records.dialect import SQLITE, Connection, Dialect

WINDOW = 3600.0  # seconds shown
BUCKET = 60  # seconds per point
SAMPLE = 20_000  # durations read at most


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted `values` (share 0.5 = median)."""
    if not values:
        return 0.0
    rank = max(1, round(share * len(values) + 0.5 - 1e-9))
    return values[min(len(values), rank) - 1]


def last_hour(
    connection: Connection, now: float | None = None, dialect: Dialect = SQLITE
) -> dict[str, Any]:
    now = time.time() if now is None else now
    current = int(now // BUCKET)  # the minute under way
    first = current - int(WINDOW // BUCKET) + 1
    start = first * BUCKET
    buckets: dict[int, list[int]] = {}
    mark = dialect.mark
    sql = (
        f"SELECT {dialect.whole(f'time / {mark}')} AS minute, COUNT(*), "
        f"{dialect.count_if('status >= 400')}, {dialect.integer_sum('input_tokens')}, "
        f"{dialect.integer_sum('output_tokens')} FROM requests WHERE time >= {mark} "
        "GROUP BY minute"
    )
    for minute, count, errors, tokens_in, tokens_out in connection.execute(sql, (BUCKET, start)):
        if first <= minute <= current:
            buckets[minute] = [count, errors or 0, tokens_in or 0, tokens_out or 0]
    total = sum(b[0] for b in buckets.values())
    stride = max(1, total // SAMPLE)
    durations: dict[int, list[float]] = {}
    every: list[float] = []
    sql = (
        f"SELECT time, duration FROM requests WHERE time >= {mark} "
        f"AND {dialect.modulo('id', mark)} = 0"
    )
    for moment, duration in connection.execute(sql, (start, stride)):
        minute = int(moment // BUCKET)
        if first <= minute <= current:
            durations.setdefault(minute, []).append(duration * 1000)
            every.append(duration * 1000)
    return _series(buckets, durations, every, first, current, now)


def _series(
    buckets: dict[int, list[int]],
    durations: dict[int, list[float]],
    every: list[float],
    first: int,
    current: int,
    now: float,
) -> dict[str, Any]:
    rps: list[Point] = []
    error_rate: list[Point] = []
    p50: list[Point] = []
    p95: list[Point] = []
    tokens_in: list[Point] = []
    tokens_out: list[Point] = []
    for minute in range(first, current + 1):
        moment = float(minute * BUCKET)
        count, errors, t_in, t_out = buckets.get(minute, (0, 0, 0, 0))
        seconds = BUCKET if minute < current else max(1.0, now - moment)
        rps.append((moment, count / seconds))
        tokens_in.append((moment, float(t_in)))
        tokens_out.append((moment, float(t_out)))
        if count:
            error_rate.append((moment, 100.0 * errors / count))
        values = sorted(durations.get(minute, ()))
        if values:
            p50.append((moment, percentile(values, 0.5)))
            p95.append((moment, percentile(values, 0.95)))
    requests = sum(b[0] for b in buckets.values())
    errors = sum(b[1] for b in buckets.values())
    every.sort()
    return {
        "span": (float(first * BUCKET), float(current * BUCKET)),
        "rps": rps,
        "error_rate": error_rate,
        "p50": p50,
        "p95": p95,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "totals": {
            "requests": requests,
            "errors": errors,
            "error_rate": 100.0 * errors / requests if requests else 0.0,
            "rps": requests / WINDOW,
            "p50_ms": percentile(every, 0.5) if every else None,
            "p95_ms": percentile(every, 0.95) if every else None,
            "input_tokens": sum(b[2] for b in buckets.values()),
            "output_tokens": sum(b[3] for b in buckets.values()),
        },
    }
