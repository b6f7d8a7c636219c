"""The Redis of this process's Plan (`state.redis`), for the state that servers share:
overrides, keys, sessions, events, health summaries and OAuth refresh locks. The worker
configures it whenever a Plan loads; users ask `current()` and get None while no Redis
is configured (the embedded store alone).

Every call has a short timeout, so a Redis that is away or hung fails fast and the
caller falls back to what it holds locally; nothing here retries."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("router.state")

TIMEOUT = 0.5  # seconds, to connect and for each call
PREFIX = "router:"

_url: str | None = None
_client: Redis | None = None
_warned_at = 0.0


def configure(url: str | None) -> None:
    """Use the Redis at `url` from now on (None: none)."""
    global _url, _client
    if url == _url:
        return
    _url, _client = url, None


def current() -> Redis | None:
    global _client
    if _url is None:
        return None
    if _client is None:
        from redis.asyncio import Redis  # here: a worker without Redis never loads it

        _client = Redis.from_url(
            _url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            health_check_interval=0,
            decode_responses=False,
        )
    return _client


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def say_unavailable(what: str, exc: BaseException) -> None:
    """One warning a minute at most while Redis is away."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at > 60.0:
        _warned_at = now
        log.warning("Redis unavailable for %s (%s); using local state", what, type(exc).__name__)
