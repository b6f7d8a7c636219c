"""Client keys made at run time (`POST /api/keys`), kept in the state store's `keys`
table: the hex sha256 of the key (`digest`) and its first characters (`prefix`, to tell
keys apart in a list), never the key itself. A revoked key keeps its row, and its name:
records and usage name keys, so a name always means one key.

Every write sets the row's `version` to one more than the table's highest, in the write's
transaction, so `fingerprint` (the row count and the highest version) changes with every
write and the workers rebuild their keys only then (router.server.worker_sync).

The checks of what a client may send (`parse`) live here too: names, model globs, pools,
limits and expiry, each refused with a 400 that says what is wrong."""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.access.keys import LIMIT_NAMES, ClientKey, Limits, digest, models_test, parse_expiry
from router.compiler.glob import glob_problem
from router.protocols import ir
from router.state import events

KEY_PREFIX = "sk-router-"
RANDOM_LENGTH = 40  # url-safe characters after the prefix (240 bits)
SHOWN_LENGTH = len(KEY_PREFIX) + 4  # the prefix kept: "sk-router-" and 4 random characters
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 200
MAX_LIMIT = 2**53  # past this a JSON number is no longer an exact integer
FIELDS = ("name", "models", "providers", "limits", "expires")
_COLUMNS = "name, digest, prefix, models, providers, limits, expires, created, changed, revoked"

Fingerprint = tuple[int, int]  # (rows, highest version)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A row of the `keys` table."""

    name: str
    digest: str
    prefix: str
    models: tuple[str, ...] | None
    providers: tuple[str, ...] | None
    limits: Limits
    expires: float | None
    created: float
    changed: float
    revoked: float | None

    def client_key(self) -> ClientKey:
        """The key as the request path looks it up (by digest)."""
        return ClientKey(
            name=self.name,
            digest=self.digest,
            models=self.models,
            providers=frozenset(self.providers) if self.providers is not None else None,
            limits=self.limits,
            expires=self.expires,
            runtime=True,
            prefix=self.prefix,
            revoked=self.revoked is not None,
            model_test=models_test(self.models),
        )


def new_key() -> str:
    """A fresh client key: `sk-router-` and 40 url-safe characters from `secrets`."""
    key = KEY_PREFIX + secrets.token_urlsafe(RANDOM_LENGTH * 3 // 4)
    assert len(key) == len(KEY_PREFIX) + RANDOM_LENGTH
    return key


# --- what a client may send ------------------------------------------------------------


def _invalid(message: str, param: str) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param=param)


def parse(
    document: Any, pools: Collection[str], *, creating: bool, now: float | None = None
) -> dict[str, Any]:
    """The fields of a create (`creating`) or update body, checked: only those present
    (on create, `name` is required). `limits` is a dict of the names given, a None value
    meaning "no such limit". ir.Error 400 otherwise."""
    if not isinstance(document, dict):
        raise ir.Error(400, "invalid_request", "the body must be a JSON object")
    allowed = FIELDS if creating else FIELDS[1:]
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        fields = ", ".join(f"`{name}`" for name in allowed)
        raise _invalid(f"unknown field `{unknown[0]}` (expected {fields})", unknown[0])
    if creating and "name" not in document:
        raise _invalid("`name` is required", "name")
    found: dict[str, Any] = {}
    if "name" in document:
        found["name"] = parse_name(document["name"])
    if "models" in document:
        found["models"] = parse_models(document["models"])
    if "providers" in document:
        found["providers"] = parse_providers(document["providers"], pools)
    if "limits" in document:
        found["limits"] = parse_limits(document["limits"])
    if "expires" in document:
        found["expires"] = parse_expires(document["expires"], time.time() if now is None else now)
    return found


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise _invalid(
            "`name` must be 1 to 64 characters of letters, digits, '.', '_' and '-'", "name"
        )
    return value


def _names(value: Any, field: str, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid(f"`{field}` must be a non-empty list of {what}, or null for any", field)
    if len(value) > MAX_GLOBS:
        raise _invalid(f"`{field}` has more than {MAX_GLOBS} entries", field)
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_GLOB_LENGTH:
            raise _invalid(
                f"`{field}` entries must be non-empty strings of at most "
                f"{MAX_GLOB_LENGTH} characters, not {json.dumps(item)}",
                field,
            )
    return list(dict.fromkeys(item.strip() for item in value))


def parse_models(value: Any) -> tuple[str, ...] | None:
    """Model globs (`gpt-*`); None: any model."""
    if value is None:
        return None
    globs = _names(value, "models", "model names or globs")
    for pattern in globs:
        problem = glob_problem(pattern)
        if problem is not None:
            raise _invalid(f"`models`: {pattern!r}: {problem}", "models")
    return tuple(globs)


def parse_providers(value: Any, pools: Collection[str]) -> tuple[str, ...] | None:
    """Provider pools of the current config; None: any pool."""
    if value is None:
        return None
    names = _names(value, "providers", "provider pools")
    unknown = [name for name in names if name not in pools]
    if unknown:
        known = ", ".join(sorted(pools)) or "none"
        raise _invalid(
            f"`providers`: no provider named {unknown[0]!r} (known: {known})", "providers"
        )
    return tuple(names)


def parse_limits(value: Any) -> dict[str, int | None]:
    """Limit names to positive integers (None: remove that limit); null: remove all."""
    if value is None:
        return dict.fromkeys(LIMIT_NAMES)
    if not isinstance(value, dict):
        raise _invalid('`limits` must be an object such as {"rpm": 60}', "limits")
    found: dict[str, int | None] = {}
    for name, limit in value.items():
        if name not in LIMIT_NAMES:
            raise _invalid(
                f"`limits`: unknown limit {name!r} (expected {', '.join(LIMIT_NAMES)})", "limits"
            )
        if limit is None:
            found[name] = None
        elif isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
            raise _invalid(
                f"`limits.{name}` must be a positive integer, not {json.dumps(limit)}", "limits"
            )
        else:
            found[name] = limit
    return found


def parse_expires(value: Any, now: float) -> float | None:
    """An ISO date (midnight UTC), an ISO date-time (UTC unless it says otherwise) or a
    unix time, in the future; None: never."""
    if value is None:
        return None
    try:
        moment: float | None = parse_expiry(value)
    except ValueError:
        moment = None
    if moment is None or not math.isfinite(moment):
        raise _invalid(
            "`expires` must be an ISO date (2027-01-01), an ISO date-time "
            "(2027-01-01T12:00:00Z) or a unix time, or null for never",
            "expires",
        )
    if moment <= now:
        raise _invalid("`expires` is in the past", "expires")
    return moment


# --- the table ---------------------------------------------------------------------------


def _row(values: tuple[Any, ...]) -> StoredKey:
    name, key_digest, prefix, models, providers, limits, expires, created, changed, revoked = values
    return StoredKey(
        name=name,
        digest=key_digest,
        prefix=prefix,
        models=tuple(json.loads(models)) if models is not None else None,
        providers=tuple(json.loads(providers)) if providers is not None else None,
        limits=Limits.from_mapping(json.loads(limits)),
        expires=expires,
        created=created,
        changed=changed,
        revoked=revoked,
    )


def _list_json(values: Iterable[str] | None) -> str | None:
    return None if values is None else json.dumps(list(values), separators=(",", ":"))


def _limits_json(limits: Limits) -> str:
    return json.dumps(limits.as_dict(), separators=(",", ":"))


def _next_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT coalesce(max(version), 0) + 1 FROM keys").fetchone()[0])


def fingerprint(connection: sqlite3.Connection) -> Fingerprint:
    rows, version = connection.execute(
        "SELECT count(*), coalesce(max(version), 0) FROM keys"
    ).fetchone()
    return int(rows), int(version)


def listed(connection: sqlite3.Connection) -> list[StoredKey]:
    """Every runtime key, revoked ones included, oldest first."""
    rows = connection.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created, name")
    return [_row(values) for values in rows]


def get(connection: sqlite3.Connection, name: str) -> StoredKey | None:
    found = connection.execute(f"SELECT {_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone()
    return _row(found) if found else None


def read_all(connection: sqlite3.Connection) -> dict[str, ClientKey]:
    """Every runtime key by digest, as the request path looks them up; revoked ones stay,
    with `revoked=True`, so that they are refused as revoked rather than unknown."""
    return {stored.digest: stored.client_key() for stored in listed(connection)}


def stored(database: Path) -> dict[str, ClientKey]:
    """The runtime keys in the database at `database`; none when it cannot be read (a
    worker starting before the store exists)."""
    if not database.exists():
        return {}
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
        try:
            return read_all(connection)
        finally:
            connection.close()
    except sqlite3.Error:
        return {}


def _in_use(existing: StoredKey) -> ir.Error:
    if existing.revoked is not None:
        message = (
            f"a revoked key is named {existing.name!r}: a name stays with its key, so that "
            "records and usage keep meaning one key; choose another"
        )
    else:
        message = f"a runtime key named {existing.name!r} exists already"
    return ir.Error(409, "invalid_request", message)


def _write(connection: sqlite3.Connection, action: str, name: str) -> None:
    """The console event of a write (never the key or its digest)."""
    events.append(connection, "key", {"action": action, "name": name})


def create(
    connection: sqlite3.Connection,
    key: str,
    fields: Mapping[str, Any],
    taken: Collection[str] = (),
    now: float | None = None,
) -> StoredKey:
    """Store `key` (its digest) under `fields` (from `parse`, creating). `taken`: the
    names of the keys in routes.yaml. ir.Error 409 when the name is used."""
    name = fields["name"]
    if name in taken:
        raise ir.Error(
            409,
            "invalid_request",
            f"{name!r} is the name of a configured key (routes.yaml or the environment): "
            "choose another",
        )
    now = time.time() if now is None else now
    limits = Limits.from_mapping(fields.get("limits"))
    models, providers = fields.get("models"), fields.get("providers")
    connection.execute("BEGIN IMMEDIATE")
    try:
        existing = get(connection, name)
        if existing is not None:
            raise _in_use(existing)
        connection.execute(
            f"INSERT INTO keys ({_COLUMNS}, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (
                name,
                digest(key),
                key[:SHOWN_LENGTH],
                _list_json(models),
                _list_json(providers),
                _limits_json(limits),
                fields.get("expires"),
                now,
                now,
                _next_version(connection),
            ),
        )
        _write(connection, "create", name)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    found = get(connection, name)
    assert found is not None
    return found


def _live(connection: sqlite3.Connection, name: str) -> StoredKey:
    found = get(connection, name)
    if found is None:
        raise ir.Error(404, "not_found", f"no key named {name!r}")
    return found


def update(
    connection: sqlite3.Connection, name: str, fields: Mapping[str, Any], now: float | None = None
) -> StoredKey:
    """Change a runtime key's models, providers, limits (merged: a None value removes that
    limit) or expiry. ir.Error 404 unknown, 409 revoked."""
    now = time.time() if now is None else now
    connection.execute("BEGIN IMMEDIATE")
    try:
        current = _live(connection, name)
        if current.revoked is not None:
            raise ir.Error(409, "invalid_request", f"the key {name!r} is revoked")
        models = fields.get("models", current.models)
        providers = fields.get("providers", current.providers)
        limits = current.limits.as_dict()
        for limit, value in (fields.get("limits") or {}).items():
            if value is None:
                limits.pop(limit, None)
            else:
                limits[limit] = value
        expires = fields.get("expires", current.expires)
        connection.execute(
            "UPDATE keys SET models = ?, providers = ?, limits = ?, expires = ?, changed = ?, "
            "version = ? WHERE name = ?",
            (
                _list_json(models),
                _list_json(providers),
                _limits_json(Limits.from_mapping(limits)),
                expires,
                now,
                _next_version(connection),
                name,
            ),
        )
        _write(connection, "update", name)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return _live(connection, name)


def revoke(connection: sqlite3.Connection, name: str, now: float | None = None) -> StoredKey:
    """Revoke a runtime key: it stays, refused with 401. Revoking it again changes nothing.
    ir.Error 404 when there is no such key."""
    now = time.time() if now is None else now
    connection.execute("BEGIN IMMEDIATE")
    try:
        current = _live(connection, name)
        if current.revoked is None:
            connection.execute(
                "UPDATE keys SET revoked = ?, changed = ?, version = ? WHERE name = ?",
                (now, now, _next_version(connection), name),
            )
            _write(connection, "revoke", name)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return _live(connection, name)
