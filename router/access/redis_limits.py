"""Limits counted in Redis, exact across every worker of every server: one Lua script
checks and counts all of a key's limits in one round trip (EVALSHA; loaded again by
itself after a Redis restart), so two servers can never both take the last slot. The
ends of the key's earlier requests from this process (their slots, their tokens) ride
in the same script, or go in one of their own within SETTLE_DELAY.

Per client key, under `router:limits:{<key name>}:` (the braces are a cluster hash tag:
every key of one client key lives on one node, as a script needs):
* `rpm`: a sorted set of the request ids admitted in the last 60 s, scored by time;
* `inflight`: a sorted set of the request ids not settled yet, scored by a lease
  deadline (10 minutes), so the slots of a server that died free themselves;
* `month:YYYY-MM`: the requests admitted this UTC month, expiring after it;
* `tpm`: a hash of the tokens of the last 60 seconds: their total, the last second
  expired, the newest second, and a bucket per second modulo 60;
* `day:YYYY-MM-DD`: the tokens of this UTC day, expiring after it.

The time comes from `now()`, not from Redis, so tests can move the clock; servers are
expected to keep their clocks in step (NTP). Every Redis call has a short timeout
(0.25 s by default, for a connection from the pool and again for the answer) and is
tried again only on a broken connection (as a Redis restart leaves in the pool): a Redis
that is away or hung raises quickly, and `guarded.GuardedLimits` answers from the local
store instead."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from router.access.keys import Limits
from router.access.limits import ADMITTED, SPREAD, Admission, Calendar, Ready
from router.access.resp import Channel, NoScript, Overdue, Reply, bulks
from router.protocols import ir

log = logging.getLogger("router.access")

PREFIX = "router:limits:"
LEASE = 600.0  # seconds a concurrency slot is held when its request is never settled
TIMEOUT = 0.25  # seconds for each connect, read or write
CONNECTIONS = 64  # per process; more requests at once wait (up to TIMEOUT) for one
SETTLE_DELAY = 0.005  # seconds a noted settlement waits for an admission to ride on
_KEEP_MS = 86_400_000  # a day or month counter outlives its period by this (clock skew)
_NONE = -1  # "no such limit" in the scripts' arguments and replies

# One script settles and admits. KEYS: rpm, inflight, month, tpm, day.
# ARGV[1..7]: the limits: rpm, concurrency, monthly_requests, tpm, daily_tokens (-1:
# none), lease_ms, keep_ms. ARGV[8..10]: the times: now_ms, ms to the next month, ms to
# the next day. ARGV[11]: the request id to admit, or '' to settle only. ARGV[12..13]:
# for a lease, how many admissions are wanted (0: not a lease) and the most tokens a
# request of the key used lately (0: unknown). ARGV[14]: how many leases give back.
# Then 4 per lease given back: its id, the first unused member, how many it was granted,
# and the kinds it counted in (r: rpm, c: concurrency, m: monthly_requests). Then 4 per
# settlement (of this key and day, before the admission): the request id whose slot to
# free ('' : none), its tokens, the second they count in for tpm (-1: none), '1' when
# they count for daily_tokens.
# A lease of n counts members `<id>:0` .. `<id>:<n-1>` where a request counts `<id>`; a
# lease whose first member is counted already was sent again after its reply was lost,
# and is answered with the members it has, counting nothing more.
# The tpm hash keeps a running total: `total`, `through` (the last second expired),
# `newest` (the newest second charged), and 60 buckets `s<i>`/`n<i>` (second, tokens)
# for the seconds i modulo 60, so an admission reads three fields.
# Reply, comma-separated (one string: cheaper to read than an array): allowed (0/1),
# the limit that refused ('' if none), retry_after_ms, then the requests limit,
# remaining and reset_ms, then the same for tokens (-1: none), then how many admissions
# were counted (more than 1 for a lease); '' when settling only.
SCRIPT = """
local rpm, concurrency, monthly = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tpm, daily = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease, keep = tonumber(ARGV[6]), tonumber(ARGV[7])
local now, to_month, to_day = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local id = ARGV[11]
local want, peak = tonumber(ARGV[12]), tonumber(ARGV[13])
local returns_end = 15 + 4 * tonumber(ARGV[14])
local edge = math.floor(now / 1000) - 60  -- this second and the ones before have left

local tokens, through, newest, loaded, changed, renewed = 0, 0, 0, false, false, false
local buckets, written = {}, {}  -- i -> {second, tokens} as read or changed; i -> true
local function bucket(i)
  local found = buckets[i]
  if found == nil then
    local v = redis.call('HMGET', KEYS[4], 's' .. i, 'n' .. i)
    found = {tonumber(v[1]) or -1, tonumber(v[2]) or 0}
    buckets[i] = found
  end
  return found
end

local function load_tokens()
  if loaded then
    return
  end
  loaded = true
  local v = redis.call('HMGET', KEYS[4], 'total', 'through', 'newest')
  tokens, through, newest = tonumber(v[1]) or 0, tonumber(v[2]), tonumber(v[3]) or 0
  if through == nil then  -- nothing charged in the last minute
    tokens, through = 0, edge
  elseif through < edge then
    for second = math.max(through + 1, edge - 59), edge do
      local i = second % 60
      local found = bucket(i)
      if found[2] > 0 and found[1] <= edge then
        tokens, found[2], written[i] = tokens - found[2], 0, true
      end
    end
    through, changed = edge, true
    if tokens < 0 then
      tokens = 0
    end
  end
end

local function charge(second, used)
  load_tokens()
  if second <= edge then
    return  -- out of the window already
  end
  local i = second % 60
  local found = bucket(i)
  if found[1] ~= second then
    tokens, found[1], found[2] = tokens - found[2], second, 0  -- an older second
  end
  found[2], written[i] = found[2] + used, true
  tokens, changed = math.max(tokens, 0) + used, true
  if second > newest then
    newest, renewed = second, true
  end
end

for k = 15, returns_end - 1, 4 do
  local base, kinds = ARGV[k], ARGV[k + 3]
  local first, granted = tonumber(ARGV[k + 1]), tonumber(ARGV[k + 2])
  local members = {}
  for n = first, granted - 1 do
    members[#members + 1] = base .. ':' .. n
  end
  local removed = granted - first  -- with no set to tell which were counted, all were
  if string.find(kinds, 'c', 1, true) then
    removed = redis.call('ZREM', KEYS[2], unpack(members))
  end
  if string.find(kinds, 'r', 1, true) then
    local gone = redis.call('ZREM', KEYS[1], unpack(members))
    if not string.find(kinds, 'c', 1, true) then
      removed = gone
    end
  end
  if string.find(kinds, 'm', 1, true) and removed > 0 then
    local counted = tonumber(redis.call('GET', KEYS[3]) or '0')
    if counted > 0 then
      redis.call('DECRBY', KEYS[3], math.min(removed, counted))
    end
  end
end

local day_charged = false
for k = returns_end, #ARGV, 4 do
  if ARGV[k] ~= '' then
    redis.call('ZREM', KEYS[2], ARGV[k])
  end
  local used = tonumber(ARGV[k + 1])
  if used > 0 then
    local second = tonumber(ARGV[k + 2])
    if second >= 0 then
      charge(second, used)
    end
    if ARGV[k + 3] == '1' then
      redis.call('INCRBY', KEYS[5], used)
      day_charged = true
    end
  end
end
if day_charged then
  redis.call('PEXPIRE', KEYS[5], to_day + keep)
end

local function save_tokens()
  if changed then
    local fields = {'total', tokens, 'through', through, 'newest', newest}
    for i in pairs(written) do
      local found = buckets[i]
      fields[#fields + 1], fields[#fields + 2] = 's' .. i, found[1]
      fields[#fields + 1], fields[#fields + 2] = 'n' .. i, found[2]
    end
    redis.call('HSET', KEYS[4], unpack(fields))
    if renewed then  -- kept a minute past its newest second
      redis.call('PEXPIRE', KEYS[4], 61000)
    end
    changed, written = false, {}
  end
end
if id == '' then
  save_tokens()
  return ''
end

local replayed = 0  -- a lease's members counted already (see above)
if want > 0 then
  local set = nil
  if concurrency >= 0 then
    set = KEYS[2]
  elseif rpm >= 0 then
    set = KEYS[1]
  end
  if set ~= nil and redis.call('ZSCORE', set, id .. ':0') then
    while replayed < want and redis.call('ZSCORE', set, id .. ':' .. replayed) do
      replayed = replayed + 1
    end
  end
end

local exceeded, wait = '', 0
local function refuse(name, ms)
  if replayed > 0 then
    return
  end
  if exceeded == '' or ms > wait then
    exceeded, wait = name, ms
  end
end

local requests = 0
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
end

local held = 0
if concurrency >= 0 then
  held = redis.call('ZCARD', KEYS[2])
  if held >= concurrency then  -- let go of the slots whose lease ran out, and count again
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    held = redis.call('ZCARD', KEYS[2])
  end
  if held >= concurrency then
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

if tpm >= 0 then
  load_tokens()
  if tokens >= tpm then
    save_tokens()  -- the buckets this script charged, for the wait below
    local raw = redis.call('HGETALL', KEYS[4])
    local fields = {}
    for i = 1, #raw, 2 do
      fields[raw[i]] = tonumber(raw[i + 1])
    end
    local buckets = {}
    for i = 0, 59 do
      local second, held = fields['s' .. i], fields['n' .. i]
      if second and held and held > 0 and second > edge then
        buckets[#buckets + 1] = {second, held}
      end
    end
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    local left, ms = tokens, 60000
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
save_tokens()

local day_tokens = 0
if daily >= 0 then
  day_tokens = tonumber(redis.call('GET', KEYS[5]) or '0')
  if day_tokens >= daily then
    refuse('daily_tokens', to_day)
  end
end

local allowed, granted = 0, 1
local function share(left)  -- a lease takes at most 1/SPREAD of what a limit has left
  local most = math.floor(left / SPREAD)
  if most < granted then
    granted = most
  end
end
if replayed > 0 then
  allowed, granted = 1, replayed
elseif exceeded == '' then
  allowed = 1
  if want > 0 then
    granted = want
    if rpm >= 0 then share(rpm - requests) end
    if concurrency >= 0 then share(concurrency - held) end
    if monthly >= 0 then share(monthly - month_requests) end
    local tokens_left = nil
    if tpm >= 0 then tokens_left = tpm - tokens end
    if daily >= 0 and (tokens_left == nil or daily - day_tokens < tokens_left) then
      tokens_left = daily - day_tokens
    end
    if tokens_left ~= nil then
      if peak > 0 then share(math.floor(tokens_left / peak)) else granted = 1 end
    end
    if granted < 1 then
      granted = 1
    end
  end
  local function members(score)
    if want == 0 then
      return {score, id}
    end
    local scored = {}
    for n = 0, granted - 1 do
      scored[2 * n + 1], scored[2 * n + 2] = score, id .. ':' .. n
    end
    return scored
  end
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], unpack(members(now)))
    redis.call('PEXPIRE', KEYS[1], 61000)
    requests = requests + granted
  end
  if concurrency >= 0 then
    redis.call('ZADD', KEYS[2], unpack(members(now + lease)))
    redis.call('PEXPIRE', KEYS[2], lease + 1000)
  end
  if monthly >= 0 then
    month_requests = redis.call('INCRBY', KEYS[3], granted)
    redis.call('PEXPIRE', KEYS[3], to_month + keep)
  end
end

local requests_limit, requests_left, requests_reset = -1, -1, -1
if rpm >= 0 then
  requests_limit, requests_left = rpm, math.max(0, rpm - requests)
  if allowed == 1 then
    requests_reset = 60000  -- the newest admission is this one
  elseif requests > 0 then
    local newest_request = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
    requests_reset = math.max(0, tonumber(newest_request) + 60000 - now)
  else
    requests_reset = 0
  end
elseif monthly >= 0 then
  requests_limit, requests_left = monthly, math.max(0, monthly - month_requests)
  requests_reset = to_month
end
local tokens_limit, tokens_left, tokens_reset = -1, -1, -1
if tpm >= 0 then
  tokens_limit, tokens_left = tpm, math.max(0, tpm - tokens)
  tokens_reset = tokens > 0 and math.max(0, newest * 1000 + 60000 - now) or 0
elseif daily >= 0 then
  tokens_limit, tokens_left, tokens_reset = daily, math.max(0, daily - day_tokens), to_day
end
return string.format('%d,%s,%d,%d,%d,%d,%d,%d,%d,%d', allowed, exceeded, math.max(0, wait),
  requests_limit, requests_left, requests_reset, tokens_limit, tokens_left, tokens_reset,
  granted)
""".replace("SPREAD", str(SPREAD))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _limit(value: int | None) -> int:
    return value or _NONE  # 0 is no limit, as in the embedded store


def _slots_only(settling: tuple[str | int, ...]) -> list[str | int]:
    """Settlements (4 arguments each) that free their slots and count no tokens."""
    out: list[str | int] = []
    for at in range(0, len(settling), 4):
        out += [settling[at], 0, _NONE, ""]
    return out


def _replayable(returning: tuple[str | int, ...] | list[str | int]) -> list[str | int]:
    """Give-backs (4 arguments each) that are safe to send again: those counted by
    members (a monthly-only one would take its unused off the month twice)."""
    out: list[str | int] = []
    for at in range(0, len(returning), 4):
        kinds = str(returning[at + 3])
        if "r" in kinds or "c" in kinds:
            out += returning[at : at + 4]
    return out


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
        self._script = self.channel.script(SCRIPT)
        self._calendar = Calendar()
        # the parts of a command that stay the same, as they are and encoded:
        self._head = bulks((b"EVALSHA", self._script, 5))
        self._names: dict[str, tuple[str, tuple[str, ...], bytes]] = {}  # key -> day, KEYS
        self._words: dict[int, tuple[Limits, tuple[int, ...], bytes]] = {}  # ARGV[1..7]
        self._settle_words = (_NONE, _NONE, _NONE, _NONE, _NONE, self.lease_ms, _KEEP_MS)
        # settlements noted, by (key, day): 4 arguments each (see SCRIPT), sent with the
        # key's next admission or within SETTLE_DELAY
        self._pending: dict[tuple[str, str], list[str | int]] = {}
        # leases' unused admissions, by key: 4 arguments each (see SCRIPT), sent likewise
        self._returning: dict[str, list[str | int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Task[None] | None = None

    def _keys(self, key: str, days: Calendar) -> tuple[tuple[str, ...], bytes]:
        """KEYS of the script for `key` today (rpm, inflight, month, tpm, day), as they
        are and encoded."""
        found = self._names.get(key)
        if found is not None and found[0] == days.day_name:
            return found[1], found[2]
        if len(self._names) > 10_000:
            self._names.clear()
        base = f"{self.prefix}{{{key}}}:"
        names = (
            base + "rpm",
            base + "inflight",
            f"{base}month:{days.month_name}",
            base + "tpm",
            f"{base}day:{days.day_name}",
        )
        encoded = bulks(names)
        self._names[key] = (days.day_name, names, encoded)
        return names, encoded

    def _limit_words(self, limits: Limits) -> tuple[tuple[int, ...], bytes]:
        """ARGV[1..7] for `limits`, as they are and encoded."""
        found = self._words.get(id(limits))
        if found is not None and found[0] is limits:
            return found[1], found[2]
        if len(self._words) > 10_000:
            self._words.clear()
        words = (
            _limit(limits.rpm),
            _limit(limits.concurrency),
            _limit(limits.monthly_requests),
            _limit(limits.tpm),
            _limit(limits.daily_tokens),
            self.lease_ms,
            _KEEP_MS,
        )
        encoded = bulks(words)
        self._words[id(limits)] = (limits, words, encoded)
        return words, encoded

    def admit(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        """Sent now; the answer when awaited."""
        if not limits:
            return Ready(ADMITTED)
        return self._send(key, limits, request_id, 0, 0)

    def grant(
        self, key: str, limits: Limits, lease_id: str, want: int, peak: int
    ) -> Awaitable[Admission]:
        return self._send(key, limits, lease_id, want, peak)

    def give_back(
        self, key: str, limits: Limits, lease: Admission, lease_id: str, used: int
    ) -> None:
        """Noted now, sent like a settlement: the unused members leave the rpm and
        in-flight sets, and the month's count goes down by as many as left them (by the
        unused, for a key limited by the month alone); the month is left as it is when
        the lease is of another month (`mark` 0: unknown, the members tell)."""
        last = lease.granted
        if used >= last:
            return
        same_month = (
            not lease.mark or Calendar().at(lease.mark).month == self._calendar.at(self.now()).month
        )
        kinds = "".join(
            kind
            for kind, limit in (
                ("r", limits.rpm),
                ("c", limits.concurrency),
                ("m", limits.monthly_requests and same_month),
            )
            if limit
        )
        if not kinds:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left to send it: the members leave with their
            return  # minute (rpm) or lease (in flight), the month keeps them
        self._returning.setdefault(key, []).extend((lease_id, used, last, kinds))
        self._schedule(loop)

    def _send(
        self, key: str, limits: Limits, request_id: str, want: int, peak: int
    ) -> Awaitable[Admission]:
        self._loop = asyncio.get_running_loop()
        now = self.now()
        days = self._calendar.at(now)
        keys, encoded_keys = self._keys(key, days)
        words, encoded_words = self._limit_words(limits)
        settling = self._pending.pop((key, days.day_name), None) if self._pending else None
        returning = self._returning.pop(key, ()) if self._returning else ()
        varying = (
            _ms(now),
            _ms(days.month_end - now),
            _ms(days.day_end - now),
            request_id,
            want,
            peak,
            len(returning) // 4,
            *returning,
            *(settling or ()),
        )
        command = b"*%d\r\n%s%s%s%s" % (
            15 + len(varying),  # EVALSHA, sha, 5, 5 KEYS, 7 limits, then the rest
            self._head,
            encoded_keys,
            encoded_words,
            bulks(varying),
        )
        sent = self.channel.start_encoded(command)
        request = (key, limits, request_id, days.day_name)
        return self._answer(sent, keys, (*words, *varying), request, settling, returning)

    async def _answer(
        self,
        sent: asyncio.Future[Reply],
        keys: tuple[str, ...],
        args: tuple[str | int, ...],  # ARGV, for sending again
        request: tuple[str, Limits, str, str],  # key, limits, request id, day
        settling: list[str | int] | None,
        returning: list[str | int] | tuple[()],
    ) -> Admission:
        key, limits, request_id, day = request
        try:
            try:
                reply = await sent
            except Overdue:
                raise
            except ConnectionError:  # once more on a new connection: a restarted Redis
                # the script may have run before the connection broke: its settlements
                # go again for their slots only, not to count their tokens twice
                settled_at = 14 + int(args[13]) * 4
                given = _replayable(args[14:settled_at])
                again = (
                    *args[:13],
                    len(given) // 4,
                    *given,
                    *_slots_only(args[settled_at:]),
                )
                reply = await self.channel.evalsha(self._script, keys, again)
            except NoScript:  # a restarted Redis that this connection survived
                reply = await self.channel.evalsha(self._script, keys, args)
        except asyncio.CancelledError:
            # the request went away with its admission on its way: Redis counts it all
            # the same, so give back its slot (a settlement after it on the connection)
            if limits.concurrency:
                self.settle(key, limits, request_id, 0)
            if settling:  # in case it never went out: their slots, later
                self._note_again(key, day, settling)
            self._return_again(key, returning)
            raise
        except BaseException:
            if settling:  # the slots at least, later (their tokens may have been counted)
                self._note_again(key, day, settling)
            self._return_again(key, returning)
            raise
        assert isinstance(reply, bytes)
        allowed, exceeded, *counts = reply.split(b",")
        wait, req_limit, req_left, req_reset, tok_limit, tok_left, tok_reset, granted = map(
            int, counts
        )
        rates = ir.RateLimits(
            _decode(req_limit),
            _decode(req_left),
            _seconds(req_reset, req_limit),
            _decode(tok_limit),
            _decode(tok_left),
            _seconds(tok_reset, tok_limit),
        )
        if allowed == b"1":
            if args[11] == 0:
                return Admission(True, rates=rates)
            return Admission(True, rates=rates, granted=granted, mark=int(args[7]) / 1000)
        retry_after = max(wait, 1) / 1000
        return Admission(False, exceeded=exceeded.decode(), retry_after=retry_after, rates=rates)

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        """Noted now, sent with this key's next admission from this process or within
        SETTLE_DELAY: one script and one write fewer per request under load."""
        counts_tokens = tokens > 0 and bool(limits.tpm or limits.daily_tokens)
        if not limits.concurrency and not counts_tokens:
            return
        now = self.now()
        day = self._calendar.at(now).day_name
        settlement = (
            request_id if limits.concurrency else "",
            tokens if counts_tokens else 0,
            int(now) if limits.tpm else _NONE,
            "1" if limits.daily_tokens else "",
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another thread: hand it to the loop
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._note, key, day, settlement, loop)
            return
        self._note(key, day, settlement, loop)

    def _note(
        self,
        key: str,
        day: str,
        settlement: tuple[str, int, int, str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        noted = self._pending.get((key, day))
        if noted is None:
            self._pending[(key, day)] = list(settlement)
        else:
            noted.extend(settlement)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(SETTLE_DELAY, self._send_pending)

    def _note_again(self, key: str, day: str, settling: list[str | int]) -> None:
        """The slots of settlements whose admission call failed, to free them later."""
        for at in range(0, len(settling), 4):
            if settling[at]:
                self._note(key, day, (str(settling[at]), 0, _NONE, ""), asyncio.get_running_loop())

    def _return_again(self, key: str, returning: list[str | int] | tuple[()]) -> None:
        """Give-backs whose script failed, to send later: those that can be told apart
        (by members: sending one twice takes nothing twice)."""
        given = _replayable(returning)
        if given:
            self._returning.setdefault(key, []).extend(given)
            self._schedule(asyncio.get_running_loop())

    def _send_pending(self) -> None:
        """Send every settlement noted so far, one script per key and day."""
        self._timer = None
        pending, self._pending = self._pending, {}
        returning, self._returning = self._returning, {}
        now = self.now()
        days = self._calendar.at(now)
        times = (_ms(now), _ms(days.month_end - now), _ms(days.day_end - now))
        for key in returning.keys() - {key for key, _ in pending}:
            pending[(key, days.day_name)] = []
        for (key, day), settling in pending.items():
            rpm, inflight, month, tpm, _ = self._keys(key, days)[0]
            keys = (rpm, inflight, month, tpm, f"{self.prefix}{{{key}}}:day:{day}")
            given = returning.pop(key, ())
            args = (*self._settle_words, *times, "", 0, 0, len(given) // 4, *given, *settling)
            self.channel.evalsha_later(self._script, keys, args)

    async def drain(self) -> None:
        """Send the settlements noted so far, and wait until every one has reached Redis
        (or failed)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._pending or self._returning:
            self._send_pending()
        self._timer = None
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
