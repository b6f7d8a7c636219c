"""One OAuth refresh per Google account across every server that shares a Redis.

Before refreshing an access token a process looks in Redis for a token another server
refreshed already. If there is none it takes the account's refresh lock (`SET NX PX`);
the winner refreshes at Google, publishes the new access token (with its expiry, and the
refresh token only when Google rotated it) under a key that lives until the token
expires, and releases the lock if it still owns it (compare-and-delete in Lua). The
others poll for the published token, bounded by the lock's lifetime, and use it without
calling Google.

The account is named by the sha256 of its refresh token, never by the token itself.
Access tokens in Redis are secrets, as in the credentials file (mode 0600): Redis must
be trusted like the credentials directory (private network, `requirepass`/ACL, TLS
across hosts). Nothing here logs a token.

Redis is a help, never a dependency: when it is away, hung or misbehaving, the process
refreshes on its own, as it does without Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

from router.state import redis_client

log = logging.getLogger("router.oauth")

LOCK_TTL = 35.0  # seconds; outlives the winner's token request (30 s timeout)
POLL_INTERVAL = 0.05  # seconds between looks for the winner's token
NO_EXPIRY_TTL = 3600.0  # seconds a token without a known expiry is kept
PUBLISHED = ("access_token", "expiry_date", "token_type", "scope")

# Delete the lock only if it still holds our value: a lock that expired and was taken
# by another process is not ours to release.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

Token = dict[str, Any]


def account_id(refresh_token: str) -> str:
    """The name of an account in key names: the sha256 of its refresh token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


async def refresh_once(
    redis: Redis,
    refresh_token: str,
    usable: Callable[[Token], bool],
    refresh: Callable[[], Awaitable[Mapping[str, Any]]],
) -> Token | None:
    """The account's refreshed token from another server (`usable` says whether a
    published one will do), or None once `refresh` ran here (it refreshes at Google,
    writes the credentials file and returns the new credentials, which are published).
    Errors of `refresh` propagate; errors of Redis only make it a local refresh."""
    account = account_id(refresh_token)
    token_key = redis_client.key("oauth", account, "token")
    lock_key = redis_client.key("oauth", account, "lock")
    owner = secrets.token_hex(16)
    try:
        shared = await _take_lock_or_token(redis, token_key, lock_key, owner, usable)
    except Exception as exc:  # Redis away, hung or broken: refresh here, as without it
        redis_client.say_unavailable("the OAuth refresh lock", exc)
        await refresh()
        return None
    if shared is not None:
        return shared
    try:
        creds = await refresh()
        await _publish(redis, token_key, creds, refresh_token)
    finally:
        await _release(redis, lock_key, owner)
    return None


async def _take_lock_or_token(
    redis: Redis,
    token_key: str,
    lock_key: str,
    owner: str,
    usable: Callable[[Token], bool],
) -> Token | None:
    """A usable published token, or None once this process may refresh: it holds the
    lock, or the lock outlived LOCK_TTL without a token appearing."""
    deadline = time.monotonic() + LOCK_TTL
    while True:
        shared = _decode(await redis.get(token_key))
        if shared is not None and usable(shared):
            return shared
        if await redis.set(lock_key, owner, nx=True, px=int(LOCK_TTL * 1000)):
            # the winner may have published and released between our two calls
            shared = _decode(await redis.get(token_key))
            if shared is not None and usable(shared):
                await _release(redis, lock_key, owner)
                return shared
            return None
        if time.monotonic() >= deadline:
            log.warning("OAuth refresh lock %s held too long; refreshing here", lock_key)
            return None
        await asyncio.sleep(POLL_INTERVAL)


async def _publish(
    redis: Redis, token_key: str, creds: Mapping[str, Any], refresh_token: str
) -> None:
    token = {key: creds[key] for key in PUBLISHED if creds.get(key) is not None}
    if creds.get("refresh_token") and creds["refresh_token"] != refresh_token:
        token["refresh_token"] = creds["refresh_token"]  # Google rotated it
    expiry = creds.get("expiry_date")
    ttl = expiry / 1000 - time.time() if isinstance(expiry, int | float) else NO_EXPIRY_TTL
    if ttl <= 0 or not token.get("access_token"):
        return
    try:
        await redis.set(token_key, json.dumps(token), px=max(1, int(ttl * 1000)))
    except Exception as exc:  # the others will refresh for themselves
        redis_client.say_unavailable("sharing a refreshed OAuth token", exc)


async def _release(redis: Redis, lock_key: str, owner: str) -> None:
    try:
        await redis.eval(_RELEASE, 1, lock_key, owner)
    except Exception as exc:  # the lock expires on its own
        redis_client.say_unavailable("the OAuth refresh lock", exc)


def _decode(raw: bytes | str | None) -> Token | None:
    if raw is None:
        return None
    try:
        token = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
        return None
    return token
