"""Where a server keeps records and usage: in PostgreSQL when a URL is configured
(`state.database` of routes.yaml, else ROUTER_DATABASE_URL), shared by every server
given the same URL; in its embedded store otherwise. The choice is made when the
records' process starts (the records service, or an in-process app's plane): a changed
`state.database` takes effect at the next start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from router.compiler.plan import Plan, redact_url
from router.records import writer
from router.records.postgres import database_url
from router.records.reader import RecordsReader, SqliteRecords
from router.records.threaded import ThreadedSink

log = logging.getLogger("router.records")

__all__ = ["database_url", "record_store", "records_reader"]


def record_store(
    database: Path | None, plan: Callable[[], Plan | None], url: str | None
) -> ThreadedSink | None:
    """The sink that writes records and usage; None when there is nowhere to write.
    `database` is the embedded store (PostgreSQL's spill, when there is a URL)."""
    retention = writer.retention_from_environment()
    if url:
        log.info(
            "records and usage go to PostgreSQL at %s (spilled to %s while it is away)",
            redact_url(url),
            database or "memory alone",
        )
        from router.records.postgres_writer import PostgresRecordStore  # only with a URL

        return PostgresRecordStore(url, plan, database, retention)
    if database is None:
        return None
    return writer.RecordStore(database, plan, retention)


def records_reader(database: Path | None, url: str | None) -> RecordsReader | None:
    if url:
        from router.records.postgres_reader import PostgresRecords  # only with a URL

        return PostgresRecords(url)
    return SqliteRecords(database) if database is not None else None
