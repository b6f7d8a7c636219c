"""The embedded state store: one SQLite database (WAL) per server, shared by all its
workers, at `<state dir>/router.db`.

The state dir is `--state-dir`, else `ROUTER_STATE_DIR`, else `./.router` (in the working
directory: beside the config when it is served from there, never one of the files the
config watcher looks at). It is created with mode 0700. The schema is versioned: the
migrations below run in order at start (`router serve` runs them once, before the
workers open the database), each in its own transaction."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

DEFAULT_STATE_DIR = ".router"
DATABASE_NAME = "router.db"
BUSY_TIMEOUT = 5.0  # seconds a connection waits on another's write lock
T = TypeVar("T")

# the columns of `requests` a record fills, in the order rows are written
REQUEST_COLUMNS = (
    "request_id",
    "time",
    "day",
    "protocol",
    "endpoint",
    "path",
    "client",
    "key",
    "model",
    "route",
    "pool",
    "instance",
    "upstream_model",
    "status",
    "error",
    "stream",
    "ttfb",
    "duration",
    "overhead",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated",
    "cost",
    "dropped",
    "attempts",
)

MIGRATIONS: tuple[str, ...] = (
    # 1: request records and daily usage
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        time REAL NOT NULL,
        day TEXT NOT NULL,
        protocol TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        path TEXT NOT NULL,
        client TEXT,
        key TEXT,
        model TEXT,
        route TEXT,
        pool TEXT,
        instance TEXT,
        upstream_model TEXT,
        status INTEGER NOT NULL,
        error TEXT,
        stream INTEGER NOT NULL,
        ttfb REAL,
        duration REAL NOT NULL,
        overhead REAL NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        cost REAL,
        dropped TEXT NOT NULL,
        attempts TEXT NOT NULL
    );
    CREATE INDEX requests_time ON requests (time);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        pool TEXT NOT NULL,
        instance TEXT NOT NULL,
        model TEXT NOT NULL,
        protocol TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        errors_4xx INTEGER NOT NULL DEFAULT 0,
        errors_5xx INTEGER NOT NULL DEFAULT 0,
        cancelled INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        estimated_requests INTEGER NOT NULL DEFAULT 0,
        duration REAL NOT NULL DEFAULT 0,
        ttfb REAL NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key, pool, instance, model, protocol)
    );
    """,
    # 2: what the workers of a server share at run time (router.state, router.console)
    """
    CREATE TABLE overrides (
        pool TEXT NOT NULL,
        instance TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        changed REAL NOT NULL,
        PRIMARY KEY (pool, instance)
    );
    CREATE TABLE workers (
        pid INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        seen REAL NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        origin INTEGER NOT NULL,
        action TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_time ON events (time);
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        csrf TEXT NOT NULL,
        created REAL NOT NULL,
        seen REAL NOT NULL
    );
    CREATE TABLE login_failures (
        address TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        first REAL NOT NULL,
        locked_until REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: client keys made at run time (router.state.keys): the key's sha256, never the key
    """
    CREATE TABLE keys (
        name TEXT NOT NULL UNIQUE,
        digest TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        models TEXT,
        providers TEXT,
        limits TEXT NOT NULL,
        expires REAL,
        created REAL NOT NULL,
        changed REAL NOT NULL,
        revoked REAL,
        version INTEGER NOT NULL
    );
    """,
    # 4: batches of request rows kept while PostgreSQL is away (router.records.spill)
    """
    CREATE TABLE records_spill (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch TEXT NOT NULL,
        time REAL NOT NULL,
        records INTEGER NOT NULL,
        rows BLOB NOT NULL
    );
    """,
    # 5: the other servers' live workers, as Redis last showed them (router.state.bridge)
    """
    CREATE TABLE remote_workers (
        server TEXT PRIMARY KEY,
        seen REAL NOT NULL,
        workers TEXT NOT NULL
    );
    """,
)


def state_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ROUTER_STATE_DIR") or DEFAULT_STATE_DIR).resolve()


def database_path(directory: Path) -> Path:
    return directory / DATABASE_NAME


def prepare(directory: Path) -> Path:
    """Create the state dir (0700) and bring the database's schema up to date; the
    database's path. Raises OSError or sqlite3.Error when it cannot."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = database_path(directory)
    with connect(path) as connection:
        migrate(connection)
    return path


def connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, fast
    return connection


def read(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """`query` over a read-only connection of its own, closed after."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        return query(connection)
    finally:
        connection.close()


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations this database has not had; its version after."""
    connection.execute("BEGIN IMMEDIATE")  # one migrator at a time
    try:
        version = schema_version(connection)
        for number, script in enumerate(MIGRATIONS[version:], version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return schema_version(connection)
