"""Each worker's status in the state store, and commands for every worker.

A worker writes its status about twice a second (`beat`): pid, start, config
generation, requests served, memory, CPU and its health book. What a server shows as one
view (`/provider_health`, `/api/system`) is read from the rows of the live workers.

A command is something every worker must do that one of them was asked (`send`): forget
a pool's health, or learn a health check's results. Each worker reads the commands that
came after the last one it saw (`received`) and does them; its own it did already."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

REMOTE_ORIGIN = 0  # the origin of commands from other servers (router.state.bridge)
LIVE_SECONDS = 5.0  # a worker not seen for this long is not counted
FORGET_SECONDS = 60.0  # rows of workers gone this long are deleted
COMMAND_SECONDS = 600.0  # commands are kept this long


def beat(connection: sqlite3.Connection, pid: int, started: float, status: dict[str, Any]) -> None:
    connection.execute(
        "INSERT INTO workers (pid, started, seen, status) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (pid) DO UPDATE SET started = excluded.started, seen = excluded.seen, "
        "status = excluded.status",
        (pid, started, time.time(), json.dumps(status, separators=(",", ":"))),
    )


def leave(connection: sqlite3.Connection, pid: int) -> None:
    connection.execute("DELETE FROM workers WHERE pid = ?", (pid,))


def live(connection: sqlite3.Connection, remote: bool = False) -> list[dict[str, Any]]:
    """The status of every worker seen lately, by pid; with `remote`, then those of the
    other servers of the set (each with its `server`), as the state bridge last saw them."""
    rows = connection.execute(
        "SELECT pid, started, seen, status FROM workers WHERE seen >= ? ORDER BY pid",
        (time.time() - LIVE_SECONDS,),
    )
    found = [
        {"pid": pid, "started": started, "seen": seen, **json.loads(status)}
        for pid, started, seen, status in rows
    ]
    if remote:
        for server, workers in connection.execute(
            "SELECT server, workers FROM remote_workers WHERE seen >= ? ORDER BY server",
            (time.time() - LIVE_SECONDS,),
        ):
            found.extend({**worker, "server": server} for worker in json.loads(workers))
    return found


def replace_remote(
    connection: sqlite3.Connection, servers: dict[str, list[dict[str, Any]]]
) -> None:
    """The other servers' live workers, as published through Redis."""
    now = time.time()
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("DELETE FROM remote_workers")
        connection.executemany(
            "INSERT INTO remote_workers (server, seen, workers) VALUES (?, ?, ?)",
            [(server, now, json.dumps(found)) for server, found in servers.items()],
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def send(connection: sqlite3.Connection, origin: int, action: str, data: dict[str, Any]) -> None:
    connection.execute(
        "INSERT INTO commands (time, origin, action, data) VALUES (?, ?, ?, ?)",
        (time.time(), origin, action, json.dumps(data, separators=(",", ":"))),
    )


def last_command(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT coalesce(max(id), 0) FROM commands").fetchone()[0])


def received(
    connection: sqlite3.Connection, after: int, me: int
) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """The last command's id, and the commands after id `after` that another worker
    sent: (action, data)."""
    rows = connection.execute(
        "SELECT id, origin, action, data FROM commands WHERE id > ? ORDER BY id", (after,)
    ).fetchall()
    last = rows[-1][0] if rows else after
    return last, [(action, json.loads(data)) for _, origin, action, data in rows if origin != me]


def prune(connection: sqlite3.Connection) -> None:
    now = time.time()
    connection.execute("DELETE FROM workers WHERE seen < ?", (now - FORGET_SECONDS,))
    connection.execute("DELETE FROM commands WHERE time < ?", (now - COMMAND_SECONDS,))
