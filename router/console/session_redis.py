"""Console sessions, login lockouts and the admin password's hash in Redis, shared by
every server (router.console.session_store has the interface and the local store).

`FallbackStore`, what the console uses: Redis while one is configured (`state.redis`)
and answers, else the server's local store, per call. A Redis that is away costs a
warning (`redis_client.say_unavailable`), never an error, and what is made meanwhile is
local to the server that made it: a session created while Redis was away opens that
server only (the others do not know its cookie) until it expires or logs out, Redis back
or not; failed logins are counted per server meanwhile.

Keys of `RedisStore` (router.state.redis_client.key):
* `router:console:session:<sha256 of the token>`: a hash {csrf, created, seen} whose TTL
  is the idle timeout (plus the lag of `seen`: session_store.kept_unused), renewed on
  use and never past LIFETIME after login;
* `router:console:failures:<address>`: the failed logins of the window, an INCR counter
  that expires FAILURE_WINDOW after the first; `router:console:lock:<address>`: the
  lockout, whose TTL is what is left of it;
* `router:console:admin_password`: the argon2 hash.
Its calls raise Redis's errors (FallbackStore answers from the local store then), except
`touch`."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from router.console.session_store import (
    FAILURE_WINDOW,
    LIFETIME,
    LOCKOUT,
    MAX_FAILURES,
    LocalStore,
    SessionStore,
    Stored,
    kept_unused,
)
from router.state import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("router.console")

T = TypeVar("T")


def redis_failures() -> tuple[type[BaseException], ...]:
    """What a call to Redis raises when it is away, hung, or holding junk. Imported on
    the first failure: a worker without Redis never loads the package."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, ValueError)


REDIS_BACK_OFF = 1.0  # seconds the local store answers alone after Redis failed

# A use: raise `seen` (never lower it: workers write in any order) and renew the TTL,
# only while the session exists (a logout is not undone by a late touch).
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'seen') or '0')
if tonumber(ARGV[1]) > seen then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# An attempt: while locked, the lock's milliseconds left; else count it (the window
# starts at the first) and lock at the MAX_FAILURES-th, which itself goes on (0).
_COUNT = """
local locked = redis.call('PTTL', KEYS[2])
if locked > 0 then return locked end
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if failures >= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
    redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _session_key(digest: str) -> str:
    return redis_client.key("console", "session", digest)


def _failures_key(address: str) -> str:
    return redis_client.key("console", "failures", address)


def _lock_key(address: str) -> str:
    return redis_client.key("console", "lock", address)


PASSWORD_KEY = redis_client.key("console", "admin_password")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._touch = redis.register_script(_TOUCH)
        self._count = redis.register_script(_COUNT)

    async def find(self, digest: str) -> Stored | None:
        csrf, created, seen = await self.redis.hmget(
            _session_key(digest), ["csrf", "created", "seen"]
        )
        if csrf is None or created is None or seen is None:
            return None
        return Stored(_text(csrf), float(created), float(seen), self)

    async def add(self, digest: str, csrf: str, now: float) -> Stored:
        key = _session_key(digest)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"csrf": csrf, "created": repr(now), "seen": repr(now)})
            pipe.pexpire(key, _ms(min(kept_unused(), LIFETIME)))
            await pipe.execute()
        return Stored(csrf, now, now, self)

    async def touch(self, digest: str, created: float, seen: float) -> None:
        left = min(kept_unused(), created + LIFETIME - time.time())
        try:
            if left <= 0:
                await self.redis.delete(_session_key(digest))
            else:
                await self._touch(keys=[_session_key(digest)], args=[repr(seen), _ms(left)])
        except redis_failures() as exc:  # the next use writes it again
            redis_client.say_unavailable("console sessions", exc)

    async def remove(self, digest: str) -> None:
        await self.redis.delete(_session_key(digest))

    async def count_attempt(self, address: str, now: float) -> float:
        keys = [_failures_key(address), _lock_key(address)]
        args = [_ms(FAILURE_WINDOW), MAX_FAILURES, _ms(LOCKOUT)]
        locked = int(await self._count(keys=keys, args=args))
        return locked / 1000 if locked > 0 else 0.0

    async def clear_failures(self, address: str) -> None:
        await self.redis.delete(_failures_key(address), _lock_key(address))

    async def password_hash(self) -> str | None:
        value = await self.redis.get(PASSWORD_KEY)
        return None if value is None else _text(value)

    async def set_password_hash(self, hashed: str) -> None:
        await self.redis.set(PASSWORD_KEY, hashed)


# ---- Redis when it answers, else the local store


class _Away:
    """What a call to Redis gives when there is none, or it failed."""


AWAY = _Away()


class FallbackStore:
    """Redis while one is configured and answers, else `local` (see the module's
    docstring for what is local then).

    * A session is looked up in Redis, then locally (one made while Redis was away, or
      before it was configured); it is added where Redis is, else locally; its uses go
      to the store that has it; a logout removes it from both.
    * Failed logins count in Redis, else locally.
    * The admin password's hash is written to both (so a server knows the shared one
      while Redis is away) and read from Redis, else locally (a password set before
      Redis was configured, or lost with Redis's data, stays the server's own until one
      is set through the console; one set while Redis is away is the server's own until
      Redis answers again, with the shared one).

    After a failed call the local store answers alone for REDIS_BACK_OFF seconds, so a
    hung Redis costs one timeout a second, not one per call."""

    def __init__(self, local: LocalStore) -> None:
        self.local = local
        self._shared: tuple[object, SessionStore] | None = None  # (client, its store)
        self._away_until = 0.0
        self._mirrored: str | None = None  # the shared hash last copied to the local store

    def shared(self) -> SessionStore | None:
        client = redis_client.current()
        if client is None or time.monotonic() < self._away_until:
            return None
        if self._shared is None or self._shared[0] is not client:
            self._shared = (client, RedisStore(client))
        return self._shared[1]

    async def _on_redis(self, what: str, call: Callable[[SessionStore], Awaitable[T]]) -> T | _Away:
        shared = self.shared()
        if shared is None:
            return AWAY
        try:
            return await call(shared)
        except redis_failures() as exc:
            self._away_until = time.monotonic() + REDIS_BACK_OFF
            redis_client.say_unavailable(what, exc)
            return AWAY

    async def find(self, digest: str) -> Stored | None:
        found = await self._on_redis("console sessions", lambda s: s.find(digest))
        if isinstance(found, Stored):
            return found
        return await self.local.find(digest)

    async def add(self, digest: str, csrf: str, now: float) -> Stored:
        added = await self._on_redis("console sessions", lambda s: s.add(digest, csrf, now))
        if isinstance(added, Stored):
            return added
        return await self.local.add(digest, csrf, now)

    async def touch(self, digest: str, created: float, seen: float) -> None:
        """Unused by the book (it touches a session's home); both, for completeness."""
        await self._on_redis("console sessions", lambda s: s.touch(digest, created, seen))
        await self.local.touch(digest, created, seen)

    async def remove(self, digest: str) -> None:
        await self._on_redis("console sessions", lambda s: s.remove(digest))
        await self.local.remove(digest)

    async def count_attempt(self, address: str, now: float) -> float:
        wait = await self._on_redis("login lockouts", lambda s: s.count_attempt(address, now))
        if isinstance(wait, float):
            return wait
        return await self.local.count_attempt(address, now)

    async def clear_failures(self, address: str) -> None:
        await self._on_redis("login lockouts", lambda s: s.clear_failures(address))
        await self.local.clear_failures(address)  # any counted while Redis was away

    async def password_hash(self) -> str | None:
        shared = await self._on_redis("the admin password", lambda s: s.password_hash())
        if isinstance(shared, str):
            if shared != self._mirrored:
                await self._mirror(shared)
            return shared
        return await self.local.password_hash()

    async def set_password_hash(self, hashed: str) -> None:
        await self._on_redis("the admin password", lambda s: s.set_password_hash(hashed))
        await self.local.set_password_hash(hashed)
        self._mirrored = hashed

    async def _mirror(self, hashed: str) -> None:
        """Copy the shared hash to the local store, for when Redis is away (best effort:
        the next read tries again)."""
        try:
            if await self.local.password_hash() != hashed:
                await self.local.set_password_hash(hashed)
        except sqlite3.Error as exc:
            log.debug("admin password hash not copied to the state store: %s", exc)
            return
        self._mirrored = hashed
