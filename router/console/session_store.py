"""Where console sessions, login failures and the admin password's hash are kept
(router.console.sessions has the rules): one interface, `SessionStore`, and the server's
embedded SQLite store, `LocalStore` (tables `sessions`, `login_failures`, `settings`),
shared by the server's workers. router.console.session_redis has the Redis one, shared by
every server, and the `FallbackStore` the console uses: Redis while it answers, else
this one.

Nothing here stores a session's token (its SHA-256 names it) or the admin password (its
argon2 hash is kept). Times are `time.time()` seconds: the servers' clocks must agree."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from router.records import store

log = logging.getLogger("router.console")

T = TypeVar("T")

IDLE_ENV = "ROUTER_SESSION_IDLE_SECONDS"
DEFAULT_IDLE = 3600.0
LIFETIME = 12 * 3600.0  # absolute, whatever the use; the cookie's Max-Age
TOUCH_EVERY = 60.0  # seconds between writes of a session's `seen`
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
LOCKOUT = 15 * 60.0
PASSWORD_SETTING = "admin_password"


def idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV)
    try:
        value = float(raw) if raw else DEFAULT_IDLE
    except ValueError:
        return DEFAULT_IDLE
    return value if value > 0 else DEFAULT_IDLE


def touch_every(idle: float) -> float:
    return min(TOUCH_EVERY, idle / 10)


def kept_unused() -> float:
    """How long a store keeps a session nobody uses: the idle timeout, plus the lag of
    its stored `seen` behind the last use (a worker writes it every touch_every)."""
    idle = idle_seconds()
    return idle + touch_every(idle)


@dataclass(frozen=True)
class Stored:
    csrf: str
    created: float
    seen: float
    home: SessionStore  # the store that has it: uses are written back there


class SessionStore(Protocol):
    async def find(self, digest: str) -> Stored | None:
        """The session named by the SHA-256 of its token, if stored and not expired."""
        ...

    async def add(self, digest: str, csrf: str, now: float) -> Stored: ...

    async def touch(self, digest: str, created: float, seen: float) -> None:
        """Record a use (best effort: never raises; the next use writes it again)."""
        ...

    async def remove(self, digest: str) -> None: ...

    async def count_attempt(self, address: str, now: float) -> float:
        """Count a login attempt from `address`: the seconds it stays locked out, 0.0
        when the attempt may go on. The MAX_FAILURES-th within FAILURE_WINDOW locks the
        address for LOCKOUT."""
        ...

    async def clear_failures(self, address: str) -> None: ...

    async def password_hash(self) -> str | None: ...

    async def set_password_hash(self, hashed: str) -> None: ...


# ---- the server's SQLite store (blocking work in threads)


def _read(path: Path, query: Callable[[sqlite3.Connection], T], timeout: float = 1.0) -> T:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        return query(connection)
    finally:
        connection.close()


def _write(path: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    connection = store.connect(path)
    try:
        return work(connection)
    finally:
        connection.close()


def _transaction(path: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` in one write transaction (taken at once: no upgrade deadlock)."""

    def run(connection: sqlite3.Connection) -> T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    return _write(path, run)


def _setting(connection: sqlite3.Connection, name: str) -> str | None:
    row = connection.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


class LocalStore:
    """The embedded store of this server. Its errors (sqlite3.Error) propagate, except
    from `touch`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def find(self, digest: str) -> Stored | None:
        row = await asyncio.to_thread(_read, self.path, lambda c: self._select(c, digest))
        if row is None:
            return None
        csrf, created, seen = row
        return Stored(csrf, created, seen, self)

    @staticmethod
    def _select(connection: sqlite3.Connection, digest: str) -> tuple[str, float, float] | None:
        return connection.execute(
            "SELECT csrf, created, seen FROM sessions WHERE token_hash = ?", (digest,)
        ).fetchone()

    async def add(self, digest: str, csrf: str, now: float) -> Stored:
        """Also purges the sessions that have expired."""
        unused = kept_unused()

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "DELETE FROM sessions WHERE seen < ? OR created < ?",
                (now - unused, now - LIFETIME),
            )
            connection.execute(
                "INSERT INTO sessions (token_hash, csrf, created, seen) VALUES (?, ?, ?, ?)",
                (digest, csrf, now, now),
            )

        await asyncio.to_thread(_transaction, self.path, work)
        return Stored(csrf, now, now, self)

    async def touch(self, digest: str, created: float, seen: float) -> None:
        try:
            await asyncio.to_thread(
                _write,
                self.path,
                lambda c: c.execute(
                    "UPDATE sessions SET seen = max(seen, ?) WHERE token_hash = ?",
                    (seen, digest),
                ),
            )
        except sqlite3.Error as exc:  # the next use writes it again
            log.debug("session seen not written: %s", exc)

    async def remove(self, digest: str) -> None:
        await asyncio.to_thread(
            _write,
            self.path,
            lambda c: c.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,)),
        )

    async def count_attempt(self, address: str, now: float) -> float:
        def work(connection: sqlite3.Connection) -> float:
            connection.execute(
                "DELETE FROM login_failures WHERE first < ? AND locked_until < ?",
                (now - FAILURE_WINDOW, now),
            )
            row = connection.execute(
                "SELECT failures, first, locked_until FROM login_failures WHERE address = ?",
                (address,),
            ).fetchone()
            if row is not None and row[2] > now:
                return row[2] - now
            if row is None or row[2] or now - row[1] >= FAILURE_WINDOW:
                failures, first = 0, now  # none yet, or the last lockout is over
            else:
                failures, first = row[0], row[1]
            failures += 1
            locked_until = now + LOCKOUT if failures >= MAX_FAILURES else 0.0
            connection.execute(
                "INSERT OR REPLACE INTO login_failures (address, failures, first, locked_until)"
                " VALUES (?, ?, ?, ?)",
                (address, failures, first, locked_until),
            )
            return 0.0

        return await asyncio.to_thread(_transaction, self.path, work)

    async def clear_failures(self, address: str) -> None:
        await asyncio.to_thread(
            _write,
            self.path,
            lambda c: c.execute("DELETE FROM login_failures WHERE address = ?", (address,)),
        )

    async def password_hash(self) -> str | None:
        return await asyncio.to_thread(
            _read, self.path, lambda c: _setting(c, PASSWORD_SETTING), store.BUSY_TIMEOUT
        )

    async def set_password_hash(self, hashed: str) -> None:
        await asyncio.to_thread(
            _write,
            self.path,
            lambda c: c.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (PASSWORD_SETTING, hashed),
            ),
        )
