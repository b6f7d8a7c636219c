"""Console sessions: what `POST /api/login` hands out and what the admin endpoints accept
besides an admin key.

* A session is a random token (`secrets.token_urlsafe(32)`) in an HttpOnly,
  SameSite=Strict cookie; the state store keeps only its SHA-256, with a CSRF token that
  unsafe methods must echo in `x-csrf-token`. It expires after ROUTER_SESSION_IDLE_SECONDS
  (default 3600) without use, and at the latest LIFETIME after login.
* The store is the truth (every worker of the server shares it). Each worker keeps a
  cache of the sessions it has seen, so that `admin_plan` stays synchronous: a miss, or an
  entry older than RECHECK, costs one indexed SELECT (admin endpoints only, never the
  model endpoints), so a logout on one worker is refused by all within RECHECK. `seen` is
  written back at most once a minute per session and worker (less than a tenth of the
  idle timeout when that is short), off the event loop.
* Logins: the admin key (any configured one, compared in constant time) or the admin
  password, kept as an argon2 hash in the store's `settings` (never in a file). Every
  attempt is counted against the client's address before the credentials are checked; a
  success clears the count; the MAX_FAILURES-th failure within FAILURE_WINDOW locks the
  address out for LOCKOUT (429 with Retry-After), whatever it sends.

The functions that write, or hash, block: run them with `asyncio.to_thread`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from router.compiler.plan import Secret
from router.protocols import ir
from router.records import store
from router.server.auth import matching_key

log = logging.getLogger("router.console")

COOKIE = "router_session"
CSRF_HEADER = "x-csrf-token"
IDLE_ENV = "ROUTER_SESSION_IDLE_SECONDS"
DEFAULT_IDLE = 3600.0
LIFETIME = 12 * 3600.0  # absolute, whatever the use; the cookie's Max-Age
RECHECK = 0.5  # seconds a cached session is trusted before the store is asked again
TOUCH_EVERY = 60.0  # seconds between writes of a session's `seen`
MAX_CACHED = 1024
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
LOCKOUT = 15 * 60.0
PASSWORD_SETTING = "admin_password"
MIN_PASSWORD = 12
MAX_SECRET = 1024  # characters of a key or password a login may show
SAFE_METHODS = frozenset({"GET", "HEAD"})

_hasher = PasswordHasher()
_argon2_slots = threading.BoundedSemaphore(2)  # 64 MiB each: a burst of logins stays bounded


def idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV)
    try:
        value = float(raw) if raw else DEFAULT_IDLE
    except ValueError:
        return DEFAULT_IDLE
    return value if value > 0 else DEFAULT_IDLE


def touch_every(idle: float) -> float:
    return min(TOUCH_EVERY, idle / 10)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: Path, query: Callable[[sqlite3.Connection], object], timeout: float = 1.0):
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        return query(connection)
    finally:
        connection.close()


def _write(path: Path, work: Callable[[sqlite3.Connection], object]):
    connection = store.connect(path)
    try:
        return work(connection)
    finally:
        connection.close()


def _transaction(path: Path, work: Callable[[sqlite3.Connection], object]):
    """`work` in one write transaction (taken at once: no upgrade deadlock)."""

    def run(connection: sqlite3.Connection):
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    return _write(path, run)


# ---- the sessions a worker knows


@dataclass
class Session:
    digest: str
    csrf: str
    created: float
    seen: float  # the last use this worker knows of
    stored_seen: float  # what the store has
    checked: float  # time.monotonic() of the last look at the store


class SessionBook:
    """One worker's cache of the sessions of one state store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache: dict[str, Session] = {}
        self.password_known: tuple[float, bool] | None = None  # (monotonic, set)
        self.pending: set[asyncio.Future] = set()

    def verify(self, token: str) -> Session | None:
        """The live session of `token`, or None. Synchronous: on a miss, or when the cached
        entry is older than RECHECK, one indexed SELECT."""
        if not token or len(token) > 128:
            return None
        digest = token_hash(token)
        entry = self.cache.get(digest)
        clock = time.monotonic()
        if entry is None or clock - entry.checked >= RECHECK:
            row = _read(self.path, lambda c: _select_session(c, digest))
            if row is None:
                self.cache.pop(digest, None)
                return None
            csrf, created, seen = row
            if entry is None:
                entry = Session(digest, csrf, created, seen, seen, clock)
                self._keep(entry)
            else:
                entry.seen = max(entry.seen, seen)
                entry.stored_seen = max(entry.stored_seen, seen)
                entry.checked = clock
        now = time.time()
        idle = idle_seconds()
        if now - entry.seen > idle or now - entry.created > LIFETIME:
            self.cache.pop(digest, None)  # the row goes at a later login's purge
            return None
        entry.seen = now
        if now - entry.stored_seen >= touch_every(idle):
            entry.stored_seen = now
            self._in_background(touch, self.path, digest, now)
        return entry

    def forget(self, token: str) -> None:
        self.cache.pop(token_hash(token), None)

    def password_set(self) -> bool:
        """Whether an admin password is set; looked up at most every 5 seconds."""
        clock = time.monotonic()
        if self.password_known is None or clock - self.password_known[0] >= 5.0:
            present = _read(self.path, lambda c: _setting(c, PASSWORD_SETTING) is not None)
            self.password_known = (clock, bool(present))
        return self.password_known[1]

    def password_changed(self) -> None:
        self.password_known = (time.monotonic(), True)

    def _keep(self, entry: Session) -> None:
        if len(self.cache) >= MAX_CACHED:
            oldest = min(self.cache.values(), key=lambda s: s.checked)
            del self.cache[oldest.digest]
        self.cache[entry.digest] = entry

    def _in_background(self, work: Callable[..., None], *args: object) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work(*args)
            return
        task = loop.create_task(asyncio.to_thread(work, *args))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)


_books: dict[Path, SessionBook] = {}


def book(path: Path) -> SessionBook:
    found = _books.get(path)
    if found is None:
        found = _books[path] = SessionBook(path)
    return found


def _select_session(connection: sqlite3.Connection, digest: str):
    return connection.execute(
        "SELECT csrf, created, seen FROM sessions WHERE token_hash = ?", (digest,)
    ).fetchone()


def _setting(connection: sqlite3.Connection, name: str) -> str | None:
    row = connection.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


# ---- what admin_plan asks


def authenticate(
    path: Path | None,
    admin_keys: tuple[Secret, ...],
    cookies: Mapping[str, str],
    method: str,
    headers: Mapping[str, str],
) -> Session | None:
    """The session the request's cookie opens, None when it shows no cookie. ir.Error:
    401 for an unknown or expired session, 403 without the right `x-csrf-token` on an
    unsafe method or when the console is off (no admin key, no password), 503 when the
    store cannot be read. Synchronous (see SessionBook.verify)."""
    token = cookies.get(COOKIE)
    if not token:
        return None
    if path is None:
        raise ir.Error(503, "unavailable", "the state store is not available (see the log)")
    sessions = book(path)
    try:
        if not admin_keys and not sessions.password_set():
            raise disabled()
        session = sessions.verify(token)
    except sqlite3.Error as exc:
        raise ir.Error(503, "unavailable", f"the state store cannot be read: {exc}") from None
    if session is None:
        raise ir.Error(401, "authentication", "console session expired or unknown: log in again")
    if method.upper() not in SAFE_METHODS:
        shown = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(shown.encode(), session.csrf.encode()):
            raise ir.Error(403, "permission", f"missing or wrong {CSRF_HEADER} header")
    return session


def password_set(path: Path | None) -> bool:
    """Synchronous, cached: see SessionBook.password_set. False without a store."""
    if path is None:
        return False
    try:
        return book(path).password_set()
    except sqlite3.Error:
        return False


def disabled() -> ir.Error:
    return ir.Error(
        403,
        "permission",
        "management API disabled: set ADMIN_API_KEY or auth.admin_keys (console login "
        "also takes the admin password, once one is set)",
    )


# ---- the store's side (blocking: asyncio.to_thread)


def login(
    path: Path,
    admin_keys: tuple[Secret, ...],
    address: str,
    *,
    key: str | None = None,
    password: str | None = None,
) -> tuple[str, str]:
    """(token, csrf) of a new session when `key` is an admin key or `password` the admin
    password. ir.Error 403 when neither can be (nothing configured), 429 when the address
    is locked out, 401 for wrong credentials (counted)."""
    if not admin_keys and not _read(path, lambda c: _setting(c, PASSWORD_SETTING)):
        raise ir.Error(
            403,
            "permission",
            "console login is impossible: no admin key is configured (ADMIN_API_KEY or "
            "auth.admin_keys) and no admin password is set",
        )
    now = time.time()
    count_attempt(path, address, now)
    if key is not None:
        ok = bool(admin_keys) and matching_key(key, admin_keys) is not None
    else:
        ok = password is not None and check_password(path, password)
    if not ok:
        raise ir.Error(401, "authentication", "invalid admin key or password")
    clear_failures(path, address)
    return create(path, now)


def create(path: Path, now: float | None = None) -> tuple[str, str]:
    """A new session's (token, csrf); only the token's hash is stored. Purges the sessions
    that have expired."""
    now = time.time() if now is None else now
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    idle = idle_seconds()

    def work(connection: sqlite3.Connection) -> None:
        # `seen` lags the last use by up to touch_every(idle): keep that margin
        connection.execute(
            "DELETE FROM sessions WHERE seen < ? OR created < ?",
            (now - idle - touch_every(idle), now - LIFETIME),
        )
        connection.execute(
            "INSERT INTO sessions (token_hash, csrf, created, seen) VALUES (?, ?, ?, ?)",
            (token_hash(token), csrf, now, now),
        )

    _transaction(path, work)
    return token, csrf


def delete(path: Path, token: str) -> None:
    """Remove the session from the store (the caller forgets it on the event loop: the
    cache is the loop's alone)."""
    _write(
        path,
        lambda c: c.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),)),
    )


def touch(path: Path, digest: str, seen: float) -> None:
    try:
        _write(
            path,
            lambda c: c.execute(
                "UPDATE sessions SET seen = max(seen, ?) WHERE token_hash = ?", (seen, digest)
            ),
        )
    except sqlite3.Error as exc:  # the next use writes it again
        log.debug("session seen not written: %s", exc)


def count_attempt(path: Path, address: str, now: float) -> None:
    """Count a login attempt from `address` before its credentials are checked (parallel
    attempts cannot slip past the limit); ir.Error 429 while the address is locked out."""

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

    wait = _transaction(path, work)
    if wait:
        raise ir.Error(
            429, "rate_limit", "too many failed logins from this address", retry_after=wait
        )


def clear_failures(path: Path, address: str) -> None:
    _write(path, lambda c: c.execute("DELETE FROM login_failures WHERE address = ?", (address,)))


def check_password(path: Path, password: str) -> bool:
    stored = _read(path, lambda c: _setting(c, PASSWORD_SETTING), timeout=store.BUSY_TIMEOUT)
    if not isinstance(stored, str):
        return False
    with _argon2_slots:
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        if _hasher.check_needs_rehash(stored):
            _store_hash(path, _hasher.hash(password))
    return True


def set_password(path: Path, password: str) -> None:
    """Store the argon2 hash of the new admin password (the password itself nowhere); the
    caller tells its book (SessionBook.password_changed) on the event loop."""
    with _argon2_slots:
        hashed = _hasher.hash(password)
    _store_hash(path, hashed)


def _store_hash(path: Path, hashed: str) -> None:
    _write(
        path,
        lambda c: c.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (PASSWORD_SETTING, hashed),
        ),
    )


def cookie(token: str, *, secure: bool, max_age: int | None = None) -> str:
    """The Set-Cookie value: the session's, or (token "", max_age 0) one that clears it."""
    age = int(LIFETIME) if max_age is None else max_age
    value = f"{COOKIE}={token}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict"
    return value + "; Secure" if secure else value
