"""Limits counted in Redis, exact across every worker of every server: one Lua script
checks and counts all of a key's limits in one round trip (EVALSHA; loaded again by
itself after a Redis restart), so two servers can never both take the last slot.

Per client key, under `router:limits:{<key name>}:` (the braces are a cluster hash tag:
every key of one client key lives on one node, as a script needs):
* `rpm`: a sorted set of the request ids admitted in the last 60 s, scored by time;
* `inflight`: a sorted set of the request ids not settled yet, scored by a lease
  deadline (10 minutes), so the slots of a server that died free themselves;
* `month:YYYY-MM`: the requests admitted this UTC month, expiring after it;
* `tpm`: a hash of tokens per second (the last 60 seconds);
* `day:YYYY-MM-DD`: the tokens of this UTC day, expiring after it.

The time comes from `now()`, not from Redis, so tests can move the clock; servers are
expected to keep their clocks in step (NTP). Every Redis call has a short timeout
(0.25 s by default, for a connection from the pool and again for the answer) and is
tried again only on a broken connection (as a Redis restart leaves in the pool): a Redis
that is away or hung raises quickly, and `guarded.GuardedLimits` answers from the local
store instead."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from router.access.keys import Limits
from router.access.limits import ADMITTED, Admission
from router.access.resp import Channel, Overdue
from router.protocols import ir

log = logging.getLogger("router.access")

PREFIX = "router:limits:"
LEASE = 600.0  # seconds a concurrency slot is held when its request is never settled
TIMEOUT = 0.25  # seconds for each connect, read or write
CONNECTIONS = 64  # per process; more requests at once wait (up to TIMEOUT) for one
_KEEP_MS = 86_400_000  # a day or month counter outlives its period by this (clock skew)
_NONE = -1  # "no such limit" in the scripts' arguments and replies

# KEYS: rpm, inflight, month, tpm, day.
# ARGV[1]: numbers, space-separated: now_ms, rpm, concurrency, monthly_requests, tpm,
# daily_tokens (-1: none), lease_ms, ms to the next month, ms to the next day, keep_ms.
# ARGV[2]: the request id.
# Reply, comma-separated (one string: cheaper to read than an array): allowed (0/1),
# the limit that refused ('' if none), retry_after_ms, then the requests limit,
# remaining and reset_ms, then the same for tokens (-1: none).
ADMIT = """
local now, rpm, concurrency, monthly, tpm, daily, lease, to_month, to_day, keep
do
  local n = {}
  for word in string.gmatch(ARGV[1], '%S+') do
    n[#n + 1] = tonumber(word)
  end
  now, rpm, concurrency, monthly, tpm, daily, lease, to_month, to_day, keep = unpack(n)
end
local id = ARGV[2]

local exceeded, wait = '', 0
local function refuse(name, ms)
  if exceeded == '' or ms > wait then
    exceeded, wait = name, ms
  end
end

local requests, newest_request = 0, nil
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  requests = redis.call('ZCARD', KEYS[1])
  if requests >= rpm then
    if requests == 0 then
      refuse('rpm', 60000)
    else
      local leaving = redis.call('ZRANGE', KEYS[1], requests - rpm, requests - rpm, 'WITHSCORES')
      refuse('rpm', tonumber(leaving[2]) + 60000 - now)
    end
  end
  if requests > 0 then
    newest_request = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  end
end

if concurrency >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= concurrency then
    refuse('concurrency', 1000)
  end
end

local month_requests = 0
if monthly >= 0 then
  month_requests = tonumber(redis.call('GET', KEYS[3]) or '0')
  if month_requests >= monthly then
    refuse('monthly_requests', to_month)
  end
end

local minute_tokens, newest_second = 0, nil
if tpm >= 0 then
  local raw = redis.call('HGETALL', KEYS[4])
  local buckets, stale = {}, {}
  for i = 1, #raw, 2 do
    local second = tonumber(raw[i])
    if second * 1000 + 60000 <= now then
      stale[#stale + 1] = raw[i]
    else
      local count = tonumber(raw[i + 1])
      minute_tokens = minute_tokens + count
      buckets[#buckets + 1] = {second, count}
      if newest_second == nil or second > newest_second then
        newest_second = second
      end
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[4], unpack(stale))
  end
  if minute_tokens >= tpm then
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    local left, ms = minute_tokens, 60000
    for _, bucket in ipairs(buckets) do
      left = left - bucket[2]
      ms = bucket[1] * 1000 + 60000 - now
      if left < tpm then
        break
      end
    end
    refuse('tpm', ms)
  end
end

local day_tokens = 0
if daily >= 0 then
  day_tokens = tonumber(redis.call('GET', KEYS[5]) or '0')
  if day_tokens >= daily then
    refuse('daily_tokens', to_day)
  end
end

local allowed = 0
if exceeded == '' then
  allowed = 1
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], 61000)
    requests = requests + 1
    if newest_request == nil or now > newest_request then
      newest_request = now
    end
  end
  if concurrency >= 0 then
    redis.call('ZADD', KEYS[2], now + lease, id)
    redis.call('PEXPIRE', KEYS[2], lease + 1000)
  end
  if monthly >= 0 then
    month_requests = redis.call('INCR', KEYS[3])
    redis.call('PEXPIRE', KEYS[3], to_month + keep)
  end
end

local requests_limit, requests_left, requests_reset = -1, -1, -1
if rpm >= 0 then
  requests_limit, requests_left = rpm, math.max(0, rpm - requests)
  requests_reset = newest_request and math.max(0, newest_request + 60000 - now) or 0
elseif monthly >= 0 then
  requests_limit, requests_left = monthly, math.max(0, monthly - month_requests)
  requests_reset = to_month
end
local tokens_limit, tokens_left, tokens_reset = -1, -1, -1
if tpm >= 0 then
  tokens_limit, tokens_left = tpm, math.max(0, tpm - minute_tokens)
  tokens_reset = newest_second and math.max(0, newest_second * 1000 + 60000 - now) or 0
elseif daily >= 0 then
  tokens_limit, tokens_left, tokens_reset = daily, math.max(0, daily - day_tokens), to_day
end
local function int(x)
  return string.format('%d', x)
end
return table.concat({int(allowed), exceeded, int(math.max(0, wait)), int(requests_limit),
  int(requests_left), int(requests_reset), int(tokens_limit), int(tokens_left),
  int(tokens_reset)}, ',')
"""

# KEYS: inflight, tpm, day. ARGV: request id ('' : no concurrency limit), tokens, the
# tpm bucket's second ('' : no tpm), '1' when daily_tokens is limited, ms to the next
# day plus keep_ms.
SETTLE = """
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  if ARGV[3] ~= '' then
    redis.call('HINCRBY', KEYS[2], ARGV[3], tokens)
    redis.call('PEXPIRE', KEYS[2], 61000)
  end
  if ARGV[4] == '1' then
    redis.call('INCRBY', KEYS[3], tokens)
    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
  end
end
return 1
"""


class _Calendar:
    """The UTC day and month of a time, worked out once a day."""

    __slots__ = ("day", "day_end", "day_start", "month", "month_end")

    def __init__(self) -> None:
        self.day_start = self.day_end = 0.0
        self.day = self.month = ""
        self.month_end = 0.0

    def at(self, now: float) -> _Calendar:
        if not self.day_start <= now < self.day_end:
            self.day_start = now - now % 86400
            self.day_end = self.day_start + 86400
            moment = time.gmtime(self.day_start)
            self.day = time.strftime("%Y-%m-%d", moment)
            self.month = time.strftime("%Y-%m", moment)
            year, month = divmod(moment.tm_year * 12 + moment.tm_mon, 12)  # the next month
            self.month_end = float(calendar.timegm((year, month + 1, 1, 0, 0, 0)))
        return self


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _limit(value: int | None) -> int:
    return value or _NONE  # 0 is no limit, as in the embedded store


def _decode(value: int) -> int | None:
    return None if value < 0 else value


def _seconds(value: int, limited: int) -> float | None:
    return None if limited < 0 else value / 1000


class RedisLimits:
    """A LimitStore in Redis at `url` (`redis://`, `rediss://` or `unix://`)."""

    def __init__(
        self,
        url: str,
        now: Callable[[], float] = time.time,
        *,
        prefix: str = PREFIX,
        lease: float = LEASE,
        timeout: float = TIMEOUT,
        connections: int = CONNECTIONS,
    ) -> None:
        self.now = now
        self.prefix = prefix
        self.lease_ms = _ms(lease)
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout,  # to wait for a free connection: busy beyond that is away
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # once more at once on a broken connection (one Redis restarted drops); never
            # on a timeout: the guard decides what happens next
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
        )
        self.client: Redis = Redis.from_pool(pool)  # for looking inside; requests use:
        self.channel = Channel(url, timeout)
        self._admit = self.channel.script(ADMIT)
        self._settle = self.channel.script(SETTLE)
        self._calendar = _Calendar()
        self._names: dict[str, tuple[str, str, str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Task[None] | None = None

    def _keys(self, key: str) -> tuple[str, str, str, str]:
        """rpm, inflight, tpm, and the start of the day and month keys of `key`."""
        names = self._names.get(key)
        if names is None:
            if len(self._names) > 10_000:
                self._names.clear()
            base = f"{self.prefix}{{{key}}}:"
            names = self._names[key] = (base + "rpm", base + "inflight", base + "tpm", base)
        return names

    async def admit(self, key: str, limits: Limits, request_id: str) -> Admission:
        if not limits:
            return ADMITTED
        self._loop = asyncio.get_running_loop()
        now = self.now()
        days = self._calendar.at(now)
        rpm, inflight, tpm, base = self._keys(key)
        numbers = (
            f"{_ms(now)} {_limit(limits.rpm)} {_limit(limits.concurrency)} "
            f"{_limit(limits.monthly_requests)} {_limit(limits.tpm)} "
            f"{_limit(limits.daily_tokens)} {self.lease_ms} {_ms(days.month_end - now)} "
            f"{_ms(days.day_end - now)} {_KEEP_MS}"
        )
        keys = (rpm, inflight, f"{base}month:{days.month}", tpm, f"{base}day:{days.day}")
        try:
            reply = await self.channel.evalsha(self._admit, keys, (numbers, request_id))
        except Overdue:
            raise
        except ConnectionError:  # once more on a new connection: a restarted Redis
            reply = await self.channel.evalsha(self._admit, keys, (numbers, request_id))
        assert isinstance(reply, bytes)
        allowed, exceeded, *counts = reply.split(b",")
        wait, req_limit, req_left, req_reset, tok_limit, tok_left, tok_reset = map(int, counts)
        rates = ir.RateLimits(
            requests_limit=_decode(req_limit),
            requests_remaining=_decode(req_left),
            requests_reset=_seconds(req_reset, req_limit),
            tokens_limit=_decode(tok_limit),
            tokens_remaining=_decode(tok_left),
            tokens_reset=_seconds(tok_reset, tok_limit),
        )
        if allowed == b"1":
            return Admission(True, rates=rates)
        retry_after = max(wait, 1) / 1000
        return Admission(False, exceeded=exceeded.decode(), retry_after=retry_after, rates=rates)

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        counts_tokens = tokens > 0 and bool(limits.tpm or limits.daily_tokens)
        if not limits.concurrency and not counts_tokens:
            return
        now = self.now()
        days = self._calendar.at(now)
        _, inflight, tpm, base = self._keys(key)
        keys = (inflight, tpm, f"{base}day:{days.day}")
        args = (
            request_id if limits.concurrency else "",
            tokens,
            str(int(now)) if limits.tpm else "",
            "1" if limits.daily_tokens else "",
            _ms(days.day_end - now) + _KEEP_MS,
        )
        self._on_loop(lambda: self.channel.evalsha_later(self._settle, keys, args))

    def _on_loop(self, work: Callable[[], None]) -> None:
        """`work` now on the running loop, or handed to the loop from another thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(work)
            return
        work()

    async def drain(self) -> None:
        """Wait until every settlement sent so far has reached Redis (or failed)."""
        with contextlib.suppress(ConnectionError):
            await self.channel.drain()

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        await self.channel.call(b"PING")

    async def aclose(self) -> None:
        await self.drain()
        self.channel.close()
        await self.client.aclose()

    def close(self) -> None:
        """Close the connections once pending settlements are done (on the running loop;
        without one, the connections go with their loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._closing is None:
            self._closing = loop.create_task(self.aclose())
