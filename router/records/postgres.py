"""PostgreSQL for records and usage, shared by a set of servers: the URL, connections, and
the schema (the `requests` and `usage_daily` tables of the embedded store, in
PostgreSQL's dialect).

The URL is `state.database` of routes.yaml, else ROUTER_DATABASE_URL. It is a secret: the
log shows it without its password (redact_url). The schema is versioned as the embedded
store's is: the migrations below run in order, each in its own transaction, and the
number applied is the one row of `router_schema`. Whoever connects first brings it up to
date (the records writer, or a worker reading usage), one at a time across every server
(an advisory lock). Runtime state (overrides, sessions, events) stays in each server's
embedded store."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

from router.compiler.plan import Plan

DATABASE_ENV = "ROUTER_DATABASE_URL"
CONNECT_TIMEOUT = 5  # seconds (libpq takes whole seconds, at least 2)
TCP_USER_TIMEOUT = 15_000  # ms unacknowledged data may wait: a vanished server is noticed
MIGRATION_LOCK = 0x726F75746572  # "router": the advisory lock of the migrator

# The embedded store's migration 1 in PostgreSQL's dialect, then what only PostgreSQL
# has. Text compared or ordered by the usage API is in the C collation: byte order, as
# SQLite compares.
MIGRATIONS: tuple[str, ...] = (
    # 1: request records and daily usage
    """
    CREATE TABLE requests (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL,
        day TEXT COLLATE "C" NOT NULL,
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
        ttfb DOUBLE PRECISION,
        duration DOUBLE PRECISION NOT NULL,
        overhead DOUBLE PRECISION NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        estimated INTEGER NOT NULL,
        cost DOUBLE PRECISION,
        dropped TEXT NOT NULL,
        attempts TEXT NOT NULL
    );
    CREATE INDEX requests_time ON requests (time);
    CREATE TABLE usage_daily (
        day TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        pool TEXT COLLATE "C" NOT NULL,
        instance TEXT COLLATE "C" NOT NULL,
        model TEXT COLLATE "C" NOT NULL,
        protocol TEXT COLLATE "C" NOT NULL,
        requests BIGINT NOT NULL DEFAULT 0,
        errors_4xx BIGINT NOT NULL DEFAULT 0,
        errors_5xx BIGINT NOT NULL DEFAULT 0,
        cancelled BIGINT NOT NULL DEFAULT 0,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cached_tokens BIGINT NOT NULL DEFAULT 0,
        reasoning_tokens BIGINT NOT NULL DEFAULT 0,
        estimated_requests BIGINT NOT NULL DEFAULT 0,
        duration DOUBLE PRECISION NOT NULL DEFAULT 0,
        ttfb DOUBLE PRECISION NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key, pool, instance, model, protocol)
    );
    """,
    # 2: the batches written (router.records.postgres_writer): a batch written again (a
    # commit whose answer was lost, a spill replayed twice) is not counted twice
    """
    CREATE TABLE record_batches (
        id TEXT PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX record_batches_time ON record_batches (time);
    """,
)


def database_url(plan: Plan | None) -> str | None:
    """The PostgreSQL URL of records and usage; None: the embedded store keeps them."""
    if plan is not None and plan.state.database is not None and plan.state.database.value:
        return plan.state.database.value
    return os.environ.get(DATABASE_ENV) or None


def connect(url: str, application: str, **options: Any) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (a transaction is always explicit), that gives up
    on a server that does not answer rather than hang."""
    import psycopg  # here: a server without PostgreSQL never loads it

    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        tcp_user_timeout=TCP_USER_TIMEOUT,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        application_name=application,
        **options,
    )


def reason(exc: Exception) -> str:
    """The first line of psycopg's error: what went wrong, without libpq's hints."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schema_version(connection: psycopg.Connection[Any]) -> int:
    if connection.execute("SELECT to_regclass('router_schema')").fetchone() == (None,):
        return 0
    row = connection.execute("SELECT version FROM router_schema").fetchone()
    return int(row[0]) if row else 0


def prepare(connection: psycopg.Connection[Any]) -> int:
    """Apply the migrations this database has not had; its version after."""
    version = schema_version(connection)
    if version >= len(MIGRATIONS):
        return version
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS router_schema (version INTEGER NOT NULL)")
        if connection.execute("SELECT version FROM router_schema").fetchone() is None:
            connection.execute("INSERT INTO router_schema (version) VALUES (0)")
    version = schema_version(connection)
    for number, script in enumerate(MIGRATIONS[version:], version + 1):
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if schema_version(connection) >= number:  # another server was quicker
                continue
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("UPDATE router_schema SET version = %s", (number,))
    return schema_version(connection)
