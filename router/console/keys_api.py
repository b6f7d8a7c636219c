"""Client keys over the admin API, under the admin key or a console session:

* `POST /api/keys` `{name, models?, providers?, limits?, expires?}` makes a runtime key
  and answers 201 with it, once (`key`): only its sha256 is stored, so it cannot be shown
  again;
* `GET /api/keys` lists the keys of routes.yaml and the environment (origin `config`) and
  the runtime ones (origin `runtime`, revoked ones included), each with its scopes,
  limits, expiry, state and usage (today's requests and tokens, this month's, UTC);
* `GET /api/keys/{name}`;
* `PATCH /api/keys/{name}` changes a runtime key's `models`, `providers` (lists, or null
  for any), `limits` (merged: a limit set to null is removed) or `expires` (null: never).
  A configured key is changed in routes.yaml: 409;
* `DELETE /api/keys/{name}` revokes a runtime key: its row stays, and it is refused (401).

The worker that takes a write applies it at once, the others within their next exchange
(router.server.worker_sync, half a second). Keys are operator state, not config: all of
this works in read-only (GitOps) mode. Each write is a `key` event in `/api/events`, with
the key's name and never the key or its digest."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from router.access.keys import ClientKey
from router.compiler.plan import Plan
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.records import store
from router.records.dialect import SQLITE, Connection, Dialect
from router.records.reader import Unavailable
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan
from router.state import keys

NO_STORE = {"cache-control": "no-store"}
SHOWN_ONCE = "Copy this key now: only its hash is stored, it cannot be shown again."

Usage = dict[str, dict[str, dict[str, int]]]  # key name -> today / month -> counters


def _database(request: Request) -> Path:
    database = request.app.state.records.state_database
    if database is None:
        raise ir.Error(503, "unavailable", "the state store is not available (see the log)")
    return database


def config_keys(plan: Plan) -> list[ClientKey]:
    """The keys of routes.yaml and the environment, in their order."""
    return list(plan.auth.keys.values())


def config_names(plan: Plan) -> set[str]:
    """Names a runtime key may not take: those of the configured client keys."""
    return {key.name for key in plan.auth.keys.values()}


# --- what is shown -----------------------------------------------------------------------


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def key_view(
    key: ClientKey,
    stored: keys.StoredKey | None,
    usage: Usage | None,
    now: float,
) -> dict[str, Any]:
    """A key as the API and the console show it: never the key, never its digest."""
    if stored is not None and stored.revoked is not None:
        state = "revoked"
    elif key.expired(now):
        state = "expired"
    else:
        state = "active"
    if stored is not None:
        providers = list(stored.providers) if stored.providers is not None else None
    else:
        providers = sorted(key.providers) if key.providers is not None else None
    return {
        "name": key.name,
        "origin": "runtime" if stored is not None else "config",
        "prefix": key.prefix or None,
        "models": list(key.models) if key.models is not None else None,
        "providers": providers,
        "limits": key.limits.as_dict(),
        "expires": key.expires,
        "expires_at": _iso(key.expires),
        "created": stored.created if stored else None,
        "changed": stored.changed if stored else None,
        "revoked": stored.revoked if stored else None,
        "state": state,
        "usage": _usage_of(usage, key.name),
    }


def _usage_of(usage: Usage | None, name: str) -> dict[str, dict[str, int]] | None:
    if usage is None:
        return None
    empty = {"requests": 0, "tokens": 0}
    found = usage.get(name, {})
    return {"today": found.get("today", empty), "month": found.get("month", empty)}


def _periods(now: float) -> tuple[str, str]:
    """Today and the first day of this month (UTC), as the usage table's days."""
    today = datetime.fromtimestamp(now, UTC).date()
    return today.isoformat(), today.replace(day=1).isoformat()


def usage_by_key(
    connection: Connection, now: float, name: str | None = None, dialect: Dialect = SQLITE
) -> Usage:
    """Requests and tokens (input + output) by key name (or of the key `name`), today and
    this month (UTC), from the daily usage, in the records store's dialect."""
    today, month = _periods(now)
    mark = dialect.mark
    where, params = f"day >= {mark} AND day <= {mark}", [today, today, month, today]
    if name is not None:
        where += f" AND key = {mark}"
        params.append(name)
    tokens = "input_tokens + output_tokens"
    sums = ", ".join(
        dialect.integer_sum(column)
        for column in (
            f"CASE WHEN day = {mark} THEN requests ELSE 0 END",
            f"CASE WHEN day = {mark} THEN {tokens} ELSE 0 END",
            "requests",
            tokens,
        )
    )
    rows = connection.execute(
        f"SELECT key, {sums} FROM usage_daily WHERE {where} GROUP BY key", params
    )
    return {
        key: {
            "today": {"requests": day_requests or 0, "tokens": day_tokens or 0},
            "month": {"requests": month_requests or 0, "tokens": month_tokens or 0},
        }
        for key, day_requests, day_tokens, month_requests, month_tokens in rows
    }


async def read_usage(
    request: Request, now: float, name: str | None = None
) -> tuple[Usage | None, str | None]:
    """The usage of every key (or of `name`), from wherever the records are kept; None
    and why when it cannot be read."""
    reader = request.app.state.records.reader
    if reader is None:
        return None, "no records are kept (ROUTER_RECORDS=0, or no state store)"
    try:
        query = functools.partial(usage_by_key, now=now, name=name)
        found = await asyncio.to_thread(reader.read, lambda c, d: query(c, dialect=d))
    except Unavailable as exc:
        return None, str(exc)
    return found, None


async def keys_document(request: Request, plan: Plan) -> dict[str, Any]:
    """Every key, configured ones first: what `GET /api/keys` answers and the console's
    Keys page shows. Raises ir.Error 503 without a state store, sqlite3.Error."""
    now = time.time()
    listed = await asyncio.to_thread(store.read, _database(request), keys.listed)
    usage, problem = await read_usage(request, now)
    views = [key_view(key, None, usage, now) for key in config_keys(plan)]
    views += [key_view(stored.client_key(), stored, usage, now) for stored in listed]
    today, month = _periods(now)
    return {"keys": views, "day": today, "month": month[:7], "usage_problem": problem}


# --- handlers ----------------------------------------------------------------------------


def _failed(error: ir.Error) -> Response:
    return error_response(ADMIN_PROTOCOL, error, dict(NO_STORE))


def _store_error(exc: sqlite3.Error) -> Response:
    return _failed(ir.Error(503, "unavailable", f"the state store cannot be used: {exc}"))


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        raise ir.Error(400, "invalid_request", "the body must be a JSON object") from None


async def _write(
    request: Request, action: Callable[[sqlite3.Connection], keys.StoredKey]
) -> keys.StoredKey:
    """Do `action` in the state store, then apply the keys to this worker at once (the
    others follow within their next exchange)."""
    database = _database(request)

    def run() -> tuple[keys.StoredKey, keys.Fingerprint, dict[str, ClientKey]]:
        with contextlib.closing(store.connect(database)) as connection:
            result = action(connection)
            return result, keys.fingerprint(connection), keys.read_all(connection)

    result, fingerprint, found = await asyncio.to_thread(run)
    sync = request.app.state.sync
    if sync is not None:
        sync.apply_keys(fingerprint, found)
    else:
        request.app.state.holder.runtime_keys = found
    return result


async def _answer(request: Request, stored: keys.StoredKey, status: int = 200) -> Response:
    now = time.time()
    usage, _ = await read_usage(request, now, stored.name)
    return json_response(key_view(stored.client_key(), stored, usage, now), status, NO_STORE)


@post("/api/keys", status_code=201)
async def create_key(request: Request) -> Response:
    try:
        plan = admin_plan(request)
        fields = keys.parse(await _body(request), plan.providers, creating=True)
        key = keys.new_key()
        taken = config_names(plan)
        stored = await _write(request, lambda c: keys.create(c, key, fields, taken))
    except ir.Error as error:
        return _failed(error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    now = time.time()
    document = {"key": key, "note": SHOWN_ONCE, **key_view(stored.client_key(), stored, {}, now)}
    return json_response(document, 201, NO_STORE)


@get("/api/keys")
async def list_keys(request: Request) -> Response:
    try:
        document = await keys_document(request, admin_plan(request))
    except ir.Error as error:
        return _failed(error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    return json_response(document, headers=NO_STORE)


def _runtime(database: Path, name: str) -> keys.StoredKey | None:
    return store.read(database, lambda c: keys.get(c, name))


def _configured(plan: Plan, name: str) -> ClientKey | None:
    return next((key for key in config_keys(plan) if key.name == name), None)


@get("/api/keys/{name:str}")
async def get_key(request: Request, name: str) -> Response:
    """A runtime key of that name, else a configured one."""
    try:
        plan = admin_plan(request)
        stored = await asyncio.to_thread(_runtime, _database(request), name)
        if stored is not None:
            return await _answer(request, stored)
        configured = _configured(plan, name)
        if configured is None:
            raise ir.Error(404, "not_found", f"no key named {name!r}")
    except ir.Error as error:
        return _failed(error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    now = time.time()
    usage, _ = await read_usage(request, now, name)
    return json_response(key_view(configured, None, usage, now), headers=NO_STORE)


def _not_runtime(plan: Plan, name: str) -> ir.Error:
    if _configured(plan, name) is not None:
        return ir.Error(
            409,
            "invalid_request",
            f"the key {name!r} is configured (routes.yaml or the environment): change it there",
        )
    return ir.Error(404, "not_found", f"no key named {name!r}")


@patch("/api/keys/{name:str}")
async def update_key(request: Request, name: str) -> Response:
    try:
        plan = admin_plan(request)
        fields = keys.parse(await _body(request), plan.providers, creating=False)
        if not fields:
            raise ir.Error(
                400,
                "invalid_request",
                "nothing to change: send models, providers, limits or expires",
            )
        if await asyncio.to_thread(_runtime, _database(request), name) is None:
            raise _not_runtime(plan, name)
        stored = await _write(request, lambda c: keys.update(c, name, fields))
    except ir.Error as error:
        return _failed(error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    return await _answer(request, stored)


@delete("/api/keys/{name:str}", status_code=200)
async def revoke_key(request: Request, name: str) -> Response:
    try:
        plan = admin_plan(request)
        if await asyncio.to_thread(_runtime, _database(request), name) is None:
            raise _not_runtime(plan, name)
        stored = await _write(request, lambda c: keys.revoke(c, name))
    except ir.Error as error:
        return _failed(error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    return await _answer(request, stored)


ROUTES = [create_key, list_keys, get_key, update_key, revoke_key]
