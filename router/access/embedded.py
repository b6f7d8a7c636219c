"""The embedded limit store: counters in one memory-mapped file in the state dir, shared
by every worker (and every server) of the host that uses that state dir. Each admission
or settlement takes an exclusive `flock` on the file for a few microseconds, so counts
are exact across processes, and nothing waits on the disk: the file lives in the page
cache and the kernel writes it back when it likes, which also keeps daily and monthly
budgets across restarts.

Layout: a header, a table of cells (open addressing on a 16-byte id of key, limit and
size), and a heap the cells are carved from. A cell is never moved or freed, so each
process remembers where its cells are. A full table or heap fails open, with a warning:
a limit must not take the gateway down."""

from __future__ import annotations

import calendar
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from router.access.keys import Limits
from router.access.limits import ADMITTED, Admission
from router.protocols import ir

log = logging.getLogger("router.limits")

FILE_NAME = "limits.bin"
MAGIC = b"RLIMITS1"
SLOTS = 16384
HEAP_BYTES = 64 * 1024 * 1024
WINDOW = 60.0  # seconds, for rpm and tpm
CONCURRENCY_HOLDERS = 64  # processes that may hold slots of one key at once
CONCURRENCY_RETRY = 1.0  # seconds a refused request is told to wait for a free slot

_HEADER = struct.Struct("<8sQ")  # magic, heap top (offset of the first free byte)
_SLOT = struct.Struct("<16sQQ")  # cell id, offset, size
_TABLE = 64
_HEAP = _TABLE + SLOTS * _SLOT.size
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_PAIR = struct.Struct("<qq")
_HOLDERS = struct.Struct(f"<{CONCURRENCY_HOLDERS * 2}q")
_BUCKETS = struct.Struct("<120q")


def _cell_id(key: str, kind: str, size: int) -> bytes:
    return hashlib.blake2b(f"{key}\0{kind}\0{size}".encode(), digest_size=16).digest()


def _day(now: float) -> int:
    return int(now // 86400)


def _month(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.year * 12 + moment.month - 1


def _next_month(now: float) -> float:
    month = _month(now) + 1
    return float(calendar.timegm((month // 12, month % 12 + 1, 1, 0, 0, 0)))


class _Full(Exception):
    """No room left for a new cell."""


class EmbeddedLimits:
    def __init__(self, path: Path, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.Lock()  # flock does not exclude threads sharing the fd
        with self._locked():
            self._prepare()
        self._map = mmap.mmap(self._fd, _HEAP + HEAP_BYTES)
        self._cells: dict[tuple[str, str, int], int] = {}
        self._pid = os.getpid()
        self._full_said = 0.0

    def _prepare(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == _HEAP + HEAP_BYTES:
            magic = os.pread(self._fd, len(MAGIC), 0)
            if magic == MAGIC:
                return
        os.ftruncate(self._fd, 0)  # a new file, or another version's: start afresh
        os.ftruncate(self._fd, _HEAP + HEAP_BYTES)  # sparse: zeros cost nothing
        os.pwrite(self._fd, _HEADER.pack(MAGIC, _HEAP), 0)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    # --- the interface -----------------------------------------------------------------

    async def admit(self, key: str, limits: Limits, request_id: str) -> Admission:
        return self.admit_now(key, limits)

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        if not (limits.concurrency or limits.tpm or limits.daily_tokens):
            return
        now = self.now()
        try:
            with self._locked():
                if limits.concurrency:
                    self._release(self._cell(key, "concurrency", CONCURRENCY_HOLDERS))
                if tokens > 0 and limits.tpm:
                    self._charge_window(self._cell(key, "tpm", 60), now, tokens)
                if tokens > 0 and limits.daily_tokens:
                    self._charge_period(self._cell(key, "daily", 1), _day(now), tokens)
        except _Full:
            self._say_full()

    def admit_now(self, key: str, limits: Limits) -> Admission:
        if not limits:
            return ADMITTED
        now = self.now()
        try:
            with self._locked():
                return self._admit(key, limits, now)
        except _Full:
            self._say_full()
            return ADMITTED

    # --- counting, under the lock --------------------------------------------------------

    def _admit(self, key: str, limits: Limits, now: float) -> Admission:
        rpm = self._cell(key, "rpm", limits.rpm) if limits.rpm else None
        concurrency = (
            self._cell(key, "concurrency", CONCURRENCY_HOLDERS) if limits.concurrency else None
        )
        monthly = self._cell(key, "monthly", 1) if limits.monthly_requests else None
        tpm = self._cell(key, "tpm", 60) if limits.tpm else None
        daily = self._cell(key, "daily", 1) if limits.daily_tokens else None
        month = _month(now) if monthly is not None else 0
        today = _day(now)
        tokens_used, tokens_reset = None, None
        if tpm is not None:
            tokens_used, tokens_reset = self._window_sum(tpm, now)
        elif daily is not None:
            tokens_used = self._period_value(daily, today)
            tokens_reset = (today + 1) * 86400.0 - now

        refusals: list[tuple[float, str]] = []  # (wait, limit)
        if rpm is not None and (oldest := self._ring_oldest(rpm)) > now - WINDOW:
            refusals.append((oldest + WINDOW - now, "rpm"))
        if concurrency is not None and self._full(concurrency, limits.concurrency or 0):
            refusals.append((CONCURRENCY_RETRY, "concurrency"))
        if monthly is not None and self._period_value(monthly, month) >= (
            limits.monthly_requests or 0
        ):
            refusals.append((_next_month(now) - now, "monthly_requests"))
        if tpm is not None and (tokens_used or 0) >= (limits.tpm or 0):
            refusals.append((self._window_wait(tpm, now, limits.tpm or 0), "tpm"))
        if daily is not None and self._period_value(daily, today) >= (limits.daily_tokens or 0):
            refusals.append(((today + 1) * 86400.0 - now, "daily_tokens"))
        # several limits reached: the one that frees up last says when to come back
        refusal = max(refusals) if refusals else None

        if refusal is None:
            if rpm is not None:
                self._ring_push(rpm, limits.rpm or 1, now)
            if concurrency is not None:
                self._hold(concurrency)
            if monthly is not None:
                self._charge_period(monthly, month, 1)
        rates = self._rates(limits, now, rpm, monthly, month, tokens_used, tokens_reset)
        if refusal is None:
            return Admission(True, rates=rates)
        wait, exceeded = refusal
        return Admission(False, exceeded, max(wait, 0.001), rates)

    def _full(self, at: int, limit: int) -> bool:
        """Whether `limit` requests are in flight; dead holders are let go first."""
        return (
            self._in_flight(at, prune=False) >= limit and self._in_flight(at, prune=True) >= limit
        )

    def _rates(
        self,
        limits: Limits,
        now: float,
        rpm: int | None,
        monthly: int | None,
        month: int,
        tokens_used: int | None,
        tokens_reset: float | None,
    ) -> ir.RateLimits:
        requests_limit = requests_remaining = None
        requests_reset: float | None = None
        if rpm is not None and limits.rpm:
            in_window, newest = self._ring_window(rpm, limits.rpm, now)
            requests_limit, requests_remaining = limits.rpm, limits.rpm - in_window
            requests_reset = max(newest + WINDOW - now, 0.0) if in_window else 0.0
        elif monthly is not None and limits.monthly_requests:
            requests_limit = limits.monthly_requests
            requests_remaining = limits.monthly_requests - self._period_value(monthly, month)
            requests_reset = _next_month(now) - now
        tokens_limit = limits.tpm or limits.daily_tokens
        tokens_remaining = None
        if tokens_limit is not None and tokens_used is not None:
            tokens_remaining = tokens_limit - tokens_used
        return ir.RateLimits(
            requests_limit,
            None if requests_remaining is None else max(requests_remaining, 0),
            requests_reset,
            tokens_limit,
            None if tokens_remaining is None else max(tokens_remaining, 0),
            tokens_reset,
        )

    # rpm: a ring of the last `rpm` admission times; the cursor points at the oldest
    def _ring_oldest(self, at: int) -> float:
        cursor = _U64.unpack_from(self._map, at)[0]
        return _F64.unpack_from(self._map, at + 8 + cursor * 8)[0]

    def _ring_push(self, at: int, size: int, now: float) -> None:
        cursor = _U64.unpack_from(self._map, at)[0]
        _F64.pack_into(self._map, at + 8 + cursor * 8, now)
        _U64.pack_into(self._map, at, (cursor + 1) % size)

    def _ring_window(self, at: int, size: int, now: float) -> tuple[int, float]:
        """How many admissions are in the window, and the newest one's time. The ring
        is in time order from the cursor, so a binary search finds the window's start."""
        cursor = _U64.unpack_from(self._map, at)[0]

        def entry(i: int) -> float:
            return _F64.unpack_from(self._map, at + 8 + ((cursor + i) % size) * 8)[0]

        low, high, since = 0, size, now - WINDOW
        while low < high:
            middle = (low + high) // 2
            if entry(middle) > since:
                high = middle
            else:
                low = middle + 1
        return size - low, entry(size - 1)

    # concurrency: (pid, count) per process holding slots
    def _in_flight(self, at: int, prune: bool) -> int:
        holders = _HOLDERS.unpack_from(self._map, at)
        if not prune:
            return sum(count for count in holders[1::2] if count > 0)
        total = 0
        for i in range(CONCURRENCY_HOLDERS):
            pid, count = holders[2 * i], holders[2 * i + 1]
            if count <= 0:
                continue
            if pid != self._pid and not _alive(pid):
                _PAIR.pack_into(self._map, at + i * 16, 0, 0)  # its requests died with it
                continue
            total += count
        return total

    def _hold(self, at: int) -> None:
        free = None
        for i in range(CONCURRENCY_HOLDERS):
            pid, count = _PAIR.unpack_from(self._map, at + i * 16)
            if pid == self._pid:
                _PAIR.pack_into(self._map, at + i * 16, pid, count + 1)
                return
            if free is None and (count <= 0 or pid == 0):
                free = i
        if free is None:
            raise _Full
        _PAIR.pack_into(self._map, at + free * 16, self._pid, 1)

    def _release(self, at: int) -> None:
        for i in range(CONCURRENCY_HOLDERS):
            pid, count = _PAIR.unpack_from(self._map, at + i * 16)
            if pid == self._pid and count > 0:
                _PAIR.pack_into(self._map, at + i * 16, pid, count - 1)
                return

    # tpm: 60 one-second buckets of (second, tokens)
    def _buckets(self, at: int, now: float) -> list[tuple[int, int]]:
        """The (second, tokens) buckets still in the window, oldest first."""
        values = _BUCKETS.unpack_from(self._map, at)
        since = int(now) - WINDOW
        return sorted(
            (stamp, tokens)
            for stamp, tokens in zip(values[0::2], values[1::2], strict=True)
            if tokens and stamp > since
        )

    def _window_sum(self, at: int, now: float) -> tuple[int, float]:
        """Tokens in the window, and the seconds until it is empty again."""
        buckets = self._buckets(at, now)
        used = sum(tokens for _, tokens in buckets)
        reset = max(buckets[-1][0] + WINDOW - now, 0.0) if buckets else 0.0
        return used, reset

    def _window_wait(self, at: int, now: float, limit: int) -> float:
        """Seconds until enough tokens have left the window to be under `limit`."""
        buckets = self._buckets(at, now)
        used = sum(tokens for _, tokens in buckets)
        for stamp, tokens in buckets:
            used -= tokens
            if used < limit:
                return max(stamp + WINDOW - now, 0.0)
        return WINDOW

    def _charge_window(self, at: int, now: float, tokens: int) -> None:
        second = int(now)
        place = at + (second % 60) * 16
        stamp, held = _PAIR.unpack_from(self._map, place)
        _PAIR.pack_into(self._map, place, second, (held if stamp == second else 0) + tokens)

    # daily and monthly: (period, value)
    def _period_value(self, at: int, period: int) -> int:
        stamp, value = _PAIR.unpack_from(self._map, at)
        return value if stamp == period else 0

    def _charge_period(self, at: int, period: int, amount: int) -> None:
        _PAIR.pack_into(self._map, at, period, self._period_value(at, period) + amount)

    # --- cells ---------------------------------------------------------------------------

    def _cell(self, key: str, kind: str, size: int) -> int:
        """The offset of the cell (`size` entries of 8 or 16 bytes, by kind), made on
        first use."""
        name = (key, kind, size)
        at = self._cells.get(name)
        if at is None:
            at = self._find_or_make(_cell_id(key, kind, size), _bytes_for(kind, size))
            self._cells[name] = at
        return at

    def _find_or_make(self, cell: bytes, length: int) -> int:
        slot = int.from_bytes(cell[:8], "little") % SLOTS
        for _ in range(SLOTS):
            place = _TABLE + slot * _SLOT.size
            found, offset, _size = _SLOT.unpack_from(self._map, place)
            if found == cell:
                return offset
            if offset == 0:
                top = _HEADER.unpack_from(self._map, 0)[1]
                if top + length > _HEAP + HEAP_BYTES:
                    raise _Full
                _SLOT.pack_into(self._map, place, cell, top, length)
                _HEADER.pack_into(self._map, 0, MAGIC, top + length)
                return top
            slot = (slot + 1) % SLOTS
        raise _Full

    def _locked(self) -> _FileLock:
        return _FileLock(self._fd, self._lock)

    def _say_full(self) -> None:
        now = time.monotonic()
        if now - self._full_said > 60.0:
            self._full_said = now
            log.warning("limit store %s is full: limits are not enforced for new keys", self.path)


def _bytes_for(kind: str, size: int) -> int:
    if kind == "rpm":
        return 8 + size * 8
    return size * 16


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FileLock:
    __slots__ = ("fd", "lock")

    def __init__(self, fd: int, lock: threading.Lock) -> None:
        self.fd = fd
        self.lock = lock

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.lock.release()
