"""Runtime overrides of an instance's `enabled`, kept in the state store: they outlive
reloads and restarts, and every worker routes by them (the Plan is compiled with them,
router.compiler.compile_config's `overrides`). Deleting one returns to the file's value."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

Overrides = dict[tuple[str, str], bool]


def read(connection: sqlite3.Connection) -> Overrides:
    rows = connection.execute("SELECT pool, instance, enabled FROM overrides")
    return {(pool, instance): bool(enabled) for pool, instance, enabled in rows}


def put(connection: sqlite3.Connection, pool: str, instance: str, enabled: bool) -> None:
    connection.execute(
        "INSERT INTO overrides (pool, instance, enabled, changed) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (pool, instance) DO UPDATE SET enabled = excluded.enabled, "
        "changed = excluded.changed",
        (pool, instance, int(enabled), time.time()),
    )


def clear(connection: sqlite3.Connection, pool: str, instance: str) -> bool:
    """Forget the override; False when there was none."""
    cursor = connection.execute(
        "DELETE FROM overrides WHERE pool = ? AND instance = ?", (pool, instance)
    )
    return cursor.rowcount > 0


def stored(database: Path) -> Overrides:
    """The overrides in the database at `database`; none when it cannot be read (a
    worker starting before the store exists, `router explain` with no state dir)."""
    if not database.exists():
        return {}
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
        try:
            return read(connection)
        finally:
            connection.close()
    except sqlite3.Error:
        return {}
