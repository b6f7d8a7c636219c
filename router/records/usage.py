"""Reading the store: usage from the daily aggregates, the newest request records, and
the records as the console's live events. Plain functions over a connection of either
engine (router.records.reader), in its dialect; the server runs them in a thread."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from router.protocols import ir
from router.records.dialect import SQLITE, Connection, Dialect
from router.records.store import REQUEST_COLUMNS

GROUPS = ("day", "key", "pool", "instance", "model", "protocol")
DEFAULT_DAYS = 30
MAX_REQUESTS = 1000
DEFAULT_REQUESTS = 100
REQUEST_FILTERS = ("pool", "instance", "model", "key", "status", "protocol")


def _invalid(message: str, param: str) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param=param)


def parse_day(value: str, param: str) -> str:
    """A date (2026-12-01) or an RFC 3339 time (2026-12-01T10:00:00Z), as its UTC day."""
    try:
        if "T" not in value and "t" not in value:
            return date.fromisoformat(value).isoformat()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _invalid(f"`{param}` must be a date or an RFC 3339 time: {value!r}", param) from None
    if moment.tzinfo is None:
        raise _invalid(f"`{param}` needs a time zone (e.g. Z): {value!r}", param)
    return moment.astimezone(UTC).date().isoformat()


def usage_query(query: Mapping[str, str]) -> tuple[str, str, tuple[str, ...]]:
    """(from day, to day, group_by) of a /api/usage query; ir.Error 400 when malformed."""
    today = datetime.now(UTC).date()
    first = parse_day(query["from"], "from") if query.get("from") else None
    last = parse_day(query["to"], "to") if query.get("to") else today.isoformat()
    first = first or (date.fromisoformat(last) - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    groups = tuple(g.strip() for g in query.get("group_by", "").split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        message = f"`group_by` takes {', '.join(GROUPS)}; not {', '.join(unknown)}"
        raise _invalid(message, "group_by")
    if first > last:
        raise _invalid("`from` is after `to`", "from")
    return first, last, tuple(dict.fromkeys(groups))


_INTEGER_SUMS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "cancelled",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
)


def _sums(dialect: Dialect) -> str:
    integers = ", ".join(dialect.integer_sum(column) for column in _INTEGER_SUMS)
    return f"{integers}, SUM(duration), SUM(ttfb), SUM(cost)"


def counters(values: tuple[Any, ...]) -> dict[str, Any]:
    (requests, e4, e5, cancelled, tin, tout, cached, reasoning, estimated, duration, ttfb, cost) = (
        v or 0 for v in values
    )
    return {
        "requests": requests,
        "errors": {"4xx": e4, "5xx": e5, "cancelled": cancelled},
        "input_tokens": tin,
        "output_tokens": tout,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "estimated_requests": estimated,
        "duration_s": round(duration, 6),
        "ttfb_s": round(ttfb, 6),
        "cost_usd": round(cost, 6),
    }


def usage(
    connection: Connection,
    first: str,
    last: str,
    groups: tuple[str, ...],
    pool: str | None = None,
    dialect: Dialect = SQLITE,
) -> dict[str, Any]:
    mark, sums = dialect.mark, _sums(dialect)
    where = f"day >= {mark} AND day <= {mark}"
    params: list[Any] = [first, last]
    if pool is not None:
        where += f" AND pool = {mark}"
        params.append(pool)
    rows = []
    if groups:
        columns = ", ".join(groups)
        sql = f"SELECT {columns}, {sums} FROM usage_daily WHERE {where} GROUP BY {columns} "
        sql += f"ORDER BY {columns}"
        for values in connection.execute(sql, params):
            keys = {g: (values[i] or None) for i, g in enumerate(groups)}
            rows.append({**keys, **counters(values[len(groups) :])})
    total = connection.execute(f"SELECT {sums} FROM usage_daily WHERE {where}", params).fetchone()
    totals = counters(total)
    if not groups:
        rows.append(dict(totals))
    return {"from": first, "to": last, "group_by": list(groups), "rows": rows, "totals": totals}


def requests_query(query: Mapping[str, str]) -> tuple[int, int | None, dict[str, Any]]:
    """(limit, before, filters) of a /api/requests query; ir.Error 400 when malformed."""
    try:
        limit = int(query.get("limit", DEFAULT_REQUESTS))
        before = int(query["before"]) if query.get("before") else None
    except ValueError:
        raise _invalid("`limit` and `before` are integers", "limit") from None
    if not 1 <= limit <= MAX_REQUESTS:
        raise _invalid(f"`limit` is 1 to {MAX_REQUESTS}", "limit")
    filters: dict[str, Any] = {}
    for name in REQUEST_FILTERS:
        if query.get(name):
            filters[name] = query[name]
    if "status" in filters:
        try:
            filters["status"] = int(filters["status"])
        except ValueError:
            raise _invalid("`status` is an HTTP status code", "status") from None
    return limit, before, filters


# what a listed record shows: its row id, then what was written but the day
_REQUEST_COLUMNS = ("id", *(column for column in REQUEST_COLUMNS if column != "day"))
_FILTER_COLUMNS = {"pool": "pool", "instance": "instance", "model": "upstream_model"}


def requests(
    connection: Connection,
    limit: int,
    before: int | None,
    filters: Mapping[str, Any],
    dialect: Dialect = SQLITE,
) -> dict[str, Any]:
    """The newest records first; `next` is the `before` of the following page."""
    mark = dialect.mark
    clauses, params = [], []
    if before is not None:
        clauses.append(f"id < {mark}")
        params.append(before)
    for name, value in filters.items():
        clauses.append(f"{_FILTER_COLUMNS.get(name, name)} = {mark}")
        params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM requests {where} ORDER BY id DESC "
    sql += f"LIMIT {mark}"
    records = []
    for values in connection.execute(sql, [*params, limit]):
        record = dict(zip(_REQUEST_COLUMNS, values, strict=True))
        record["stream"] = bool(record["stream"])
        record["estimated"] = bool(record["estimated"])
        record["dropped"] = [d for d in record["dropped"].split(",") if d]
        record["attempts"] = json.loads(record["attempts"])
        records.append(record)
    following = records[-1]["id"] if len(records) == limit else None
    return {"requests": records, "next": following}


# one request as a live event (router.state.events): its row id, time and what is shown
RequestEvent = tuple[int, float, dict[str, Any]]


def latest_request(connection: Connection) -> int:
    """The newest record's id (0: none yet)."""
    return int(connection.execute("SELECT coalesce(max(id), 0) FROM requests", ()).fetchone()[0])


def request_events(
    connection: Connection, after: int, limit: int, dialect: Dialect = SQLITE
) -> list[RequestEvent]:
    """The records written after the one of id `after`, in the order they were written."""
    mark = dialect.mark
    sql = (
        "SELECT id, time, request_id, protocol, model, route, pool, instance, status, "
        f"duration, input_tokens, output_tokens FROM requests WHERE id > {mark} ORDER BY id "
        f"LIMIT {mark}"
    )
    return [(row[0], row[1], _event_data(row)) for row in connection.execute(sql, (after, limit))]


def _event_data(row: tuple[Any, ...]) -> dict[str, Any]:
    names = ("id", "protocol", "model", "route", "pool", "instance", "status")
    data = dict(zip(names, row[2:9], strict=True))
    data["duration_ms"] = round(row[9] * 1000, 1)
    data["input_tokens"], data["output_tokens"] = row[10], row[11]
    return data
