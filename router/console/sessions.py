"""Console sessions: what `POST /api/login` hands out and what the admin endpoints accept
besides an admin key.

* A session is a random token (`secrets.token_urlsafe(32)`) in an HttpOnly,
  SameSite=Strict cookie; the store keeps only its SHA-256, with a CSRF token that
  unsafe methods must echo in `x-csrf-token`. It expires after ROUTER_SESSION_IDLE_SECONDS
  (default 3600) without use, and at the latest LIFETIME after login.
* The store is the truth: Redis when the Plan has one (`state.redis`: every server shares
  it), else the server's SQLite store (every worker of the server shares it), see
  router.console.session_store and router.console.session_redis. Each worker keeps a
  cache of the sessions it has seen: before the handler (`load`, Litestar's
  before_request) a miss, or an entry older than RECHECK, costs one look at the store,
  so that `authenticate` (and `admin_plan`) stays synchronous and a logout anywhere is
  refused by every worker within RECHECK. `seen` is written back at most once a minute
  per session and worker (less than a tenth of the idle timeout when that is short).
* Logins: the admin key (any configured one, compared in constant time) or the admin
  password, kept as an argon2 hash in the store (never in a file). Every attempt is
  counted against the client's address before the credentials are checked; a success
  clears the count; the MAX_FAILURES-th failure within FAILURE_WINDOW locks the address
  out for LOCKOUT (429 with Retry-After), whatever it sends."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from router.compiler.plan import Secret
from router.console.session_redis import FallbackStore
from router.console.session_store import (
    LIFETIME,
    LocalStore,
    SessionStore,
    idle_seconds,
    touch_every,
)
from router.protocols import ir
from router.server.auth import matching_key

log = logging.getLogger("router.console")

COOKIE = "router_session"
STATE = "console_session"  # where `load` leaves its finding in request.state
CSRF_HEADER = "x-csrf-token"
RECHECK = 0.5  # seconds a cached session is trusted before the store is asked again
PASSWORD_RECHECK = 5.0  # seconds the cached "is a password set" is trusted
MAX_CACHED = 1024
MIN_PASSWORD = 12
MAX_SECRET = 1024  # characters of a key or password a login may show
MAX_TOKEN = 128
SAFE_METHODS = frozenset({"GET", "HEAD"})

_hasher = PasswordHasher()
_argon2_slots = threading.BoundedSemaphore(2)  # 64 MiB each: a burst of logins stays bounded


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- the sessions a worker knows


@dataclass
class Session:
    digest: str
    csrf: str
    created: float
    seen: float  # the last use this worker knows of
    stored_seen: float  # what the store has
    checked: float  # time.monotonic() of the last look at the store
    home: SessionStore  # the store that has it


@dataclass(frozen=True)
class Loaded:
    """What `load` found for a request's cookie: the session (None: unknown or expired
    in the store), or the error of a store that cannot be read."""

    session: Session | None
    error: ir.Error | None = None


class SessionBook:
    """One worker's cache of the sessions of one store. Used on the event loop only."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.cache: dict[str, Session] = {}
        self.password_known: tuple[float, bool] | None = None  # (monotonic, set)
        self.pending: set[asyncio.Task[None]] = set()

    async def load(self, token: str) -> Session | None:
        """The cached session of `token`, looked up in the store on a miss or when the
        cached entry is older than RECHECK (its use is `verify`'s)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        digest = token_hash(token)
        entry = self.cache.get(digest)
        clock = time.monotonic()
        if entry is not None and clock - entry.checked < RECHECK:
            return entry
        found = await self.store.find(digest)
        if found is None:
            self.cache.pop(digest, None)
            return None
        entry = self.cache.get(digest)  # another request may have loaded it meanwhile
        if entry is None:
            entry = Session(
                digest, found.csrf, found.created, found.seen, found.seen, clock, found.home
            )
            self._keep(entry)
        else:
            entry.seen = max(entry.seen, found.seen)
            entry.stored_seen = max(entry.stored_seen, found.seen)
            entry.checked, entry.home = clock, found.home
        return entry

    def verify(self, entry: Session | None) -> Session | None:
        """A use of the session `load` gave: None once it has expired (idle or past its
        lifetime), else the session, its `seen` written back when due."""
        if entry is None:
            return None
        now = time.time()
        idle = idle_seconds()
        if now - entry.seen > idle or now - entry.created > LIFETIME:
            self.cache.pop(entry.digest, None)  # the store drops it by itself
            return None
        entry.seen = now
        if now - entry.stored_seen >= touch_every(idle):
            entry.stored_seen = now
            self._in_background(entry.home.touch(entry.digest, entry.created, now))
        return entry

    def remember(self, digest: str, csrf: str, created: float, home: SessionStore) -> None:
        self._keep(Session(digest, csrf, created, created, created, time.monotonic(), home))

    def forget(self, token: str) -> None:
        self.cache.pop(token_hash(token), None)

    async def load_password_state(self) -> None:
        """Whether an admin password is set, looked up at most every PASSWORD_RECHECK."""
        clock = time.monotonic()
        if self.password_known is None or clock - self.password_known[0] >= PASSWORD_RECHECK:
            present = await self.store.password_hash() is not None
            self.password_known = (time.monotonic(), present)

    def password_set(self) -> bool:
        return self.password_known is not None and self.password_known[1]

    def password_changed(self) -> None:
        self.password_known = (time.monotonic(), True)

    def _keep(self, entry: Session) -> None:
        if entry.digest not in self.cache and len(self.cache) >= MAX_CACHED:
            oldest = min(self.cache.values(), key=lambda s: s.checked)
            del self.cache[oldest.digest]
        self.cache[entry.digest] = entry

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)


_books: dict[Path, SessionBook] = {}


def book(path: Path) -> SessionBook:
    """The worker's book of the sessions kept for the state store at `path` (and in the
    Plan's Redis, when it has one)."""
    found = _books.get(path)
    if found is None:
        found = _books[path] = SessionBook(FallbackStore(LocalStore(path)))
    return found


# ---- before the handler, and what admin_plan asks


async def load(
    path: Path | None, cookies: Mapping[str, str], need_password_state: bool
) -> Loaded | None:
    """Before the handler: the session of the request's cookie (None without a cookie),
    and, when `need_password_state` (no admin key configured), whether a password is
    set. Never raises: a store that cannot be read is a 503 for `authenticate`."""
    token = cookies.get(COOKIE)
    if path is None:
        return None if not token else Loaded(None, _no_store())
    sessions = book(path)
    try:
        if need_password_state:
            await sessions.load_password_state()
        if not token:
            return None
        return Loaded(await sessions.load(token))
    except sqlite3.Error as exc:
        if not token:
            return None
        error = ir.Error(503, "unavailable", f"the state store cannot be read: {exc}")
        return Loaded(None, error)


def authenticate(
    path: Path | None,
    loaded: Loaded | None,
    admin_keys: tuple[Secret, ...],
    method: str,
    headers: Mapping[str, str],
) -> Session | None:
    """The session `load` found for the request's cookie, None when it shows no cookie.
    ir.Error: 401 for an unknown or expired session, 403 without the right
    `x-csrf-token` on an unsafe method or when the console is off (no admin key, no
    password), 503 when the store cannot be read. Synchronous."""
    if loaded is None:
        return None
    if loaded.error is not None:
        raise loaded.error
    if path is None:
        raise _no_store()
    sessions = book(path)
    if not admin_keys and not sessions.password_set():
        raise disabled()
    session = sessions.verify(loaded.session)
    if session is None:
        raise ir.Error(401, "authentication", "console session expired or unknown: log in again")
    if method.upper() not in SAFE_METHODS:
        shown = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(shown.encode(), session.csrf.encode()):
            raise ir.Error(403, "permission", f"missing or wrong {CSRF_HEADER} header")
    return session


def password_set(path: Path | None) -> bool:
    """Whether an admin password is set, as `load` last found (every PASSWORD_RECHECK
    seconds while no admin key is configured). False without a store."""
    return path is not None and book(path).password_set()


def _no_store() -> ir.Error:
    return ir.Error(503, "unavailable", "the state store is not available (see the log)")


def disabled() -> ir.Error:
    return ir.Error(
        403,
        "permission",
        "management API disabled: set ADMIN_API_KEY or auth.admin_keys (console login "
        "also takes the admin password, once one is set)",
    )


# ---- logins, logouts and the password


async def login(
    sessions: SessionBook,
    admin_keys: tuple[Secret, ...],
    address: str,
    *,
    key: str | None = None,
    password: str | None = None,
) -> tuple[str, str]:
    """(token, csrf) of a new session when `key` is an admin key or `password` the admin
    password. ir.Error 403 when neither can be (nothing configured), 429 when the address
    is locked out, 401 for wrong credentials (counted)."""
    store = sessions.store
    hashed = await store.password_hash() if password is not None or not admin_keys else None
    if not admin_keys and hashed is None:
        raise ir.Error(
            403,
            "permission",
            "console login is impossible: no admin key is configured (ADMIN_API_KEY or "
            "auth.admin_keys) and no admin password is set",
        )
    now = time.time()
    wait = await store.count_attempt(address, now)
    if wait:
        raise ir.Error(
            429, "rate_limit", "too many failed logins from this address", retry_after=wait
        )
    ok = False
    if key is not None:
        ok = bool(admin_keys) and matching_key(key, admin_keys) is not None
    elif password is not None and hashed is not None:
        ok, rehashed = await asyncio.to_thread(check_password, hashed, password)
        if rehashed is not None:
            await store.set_password_hash(rehashed)
    if not ok:
        raise ir.Error(401, "authentication", "invalid admin key or password")
    await store.clear_failures(address)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    stored = await store.add(token_hash(token), csrf, now)
    sessions.remember(token_hash(token), csrf, now, stored.home)
    return token, csrf


async def logout(sessions: SessionBook, token: str) -> None:
    """End the session of `token` in the store (a session kept in a Redis that is away
    cannot be reached: it lives on there until its idle timeout)."""
    sessions.forget(token)
    await sessions.store.remove(token_hash(token))


def check_password(hashed: str, password: str) -> tuple[bool, str | None]:
    """Whether `password` matches the argon2 `hashed`, and its new hash when the hasher's
    parameters changed since. Blocking: asyncio.to_thread."""
    with _argon2_slots:
        try:
            _hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False, None
        if _hasher.check_needs_rehash(hashed):
            return True, _hasher.hash(password)
    return True, None


async def set_password(sessions: SessionBook, password: str) -> None:
    """Store the argon2 hash of the new admin password (the password itself nowhere).
    The sessions stay."""

    def hash_it() -> str:
        with _argon2_slots:
            return _hasher.hash(password)

    await sessions.store.set_password_hash(await asyncio.to_thread(hash_it))
    sessions.password_changed()


def cookie(token: str, *, secure: bool, max_age: int | None = None) -> str:
    """The Set-Cookie value: the session's, or (token "", max_age 0) one that clears it."""
    age = int(LIFETIME) if max_age is None else max_age
    value = f"{COOKIE}={token}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict"
    return value + "; Secure" if secure else value
