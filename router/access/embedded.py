"""The embedded limit store: counters in one memory-mapped file in the state dir, shared
by every worker (and every server) of the host that uses that state dir. Each admission
or settlement takes an exclusive `flock` on the file for a few microseconds, so counts
are exact across processes, and nothing waits on the disk: the file lives in the page
cache and the kernel writes it back when it likes, which also keeps daily and monthly
budgets across restarts.

Layout: a header, a table of cells (open addressing on a 16-byte id of key, limit and
size), and a heap the cells are carved from. A cell is never moved or freed, so each
process remembers where its cells are. A full table or heap fails open, with a warning:
a limit must not take the gateway down.

Each cell keeps its running totals, so an admission costs the same whatever the limits:
* rpm: a ring of the last `rpm` admission times, with where the window starts and how
  many are in it (entries leave from the start as they age: amortized O(1));
* concurrency: the total in flight, and how many each process holds (so the slots of a
  process that died can be let go);
* tpm: 60 one-second buckets, their total, and the last second expired;
* daily and monthly: (period, value)."""

from __future__ import annotations

import asyncio
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
MAGIC = b"RLIMITS2"
SLOTS = 16384
HEAP_BYTES = 64 * 1024 * 1024
WINDOW = 60.0  # seconds, for rpm and tpm
CONCURRENCY_HOLDERS = 64  # processes that may hold slots of one key at once
CONCURRENCY_RETRY = 1.0  # seconds a refused request is told to wait for a free slot
SETTLE_DELAY = 0.005  # seconds a noted settlement waits for an admission to ride on

_HEADER = struct.Struct("<8sQ")  # magic, heap top (offset of the first free byte)
_SLOT = struct.Struct("<16sQQ")  # cell id, offset, size
_TABLE = 64
_HEAP = _TABLE + SLOTS * _SLOT.size
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_PAIR = struct.Struct("<qq")
_RING = struct.Struct("<QQQ")  # next to write, first in the window, how many in it
_HOLDERS = struct.Struct(f"<{CONCURRENCY_HOLDERS * 2}q")
_TPM = struct.Struct("<qqq")  # tokens in the window, last second expired, newest second
_BUCKETS = struct.Struct("<120q")


Cells = tuple[int | None, int | None, int | None, int | None, int | None]  # rpm .. daily
_CLAIMED: dict[tuple[int, int, int], dict[int, int]] = {}  # (pid, file) -> cell -> slot


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
        self._pid = os.getpid()
        self._lock = threading.Lock()  # flock does not exclude threads sharing the fd
        with self._locked():
            self._prepare()
        self._map = mmap.mmap(self._fd, _HEAP + HEAP_BYTES)
        self._cells: dict[tuple[str, str, int], int] = {}
        stat = os.fstat(self._fd)
        # concurrency cell -> this process's (pid, count), shared by every store of the
        # process on this file (a slot under our pid that no store here claimed is a
        # predecessor's that had the same pid)
        self._slots = _CLAIMED.setdefault((self._pid, stat.st_dev, stat.st_ino), {})
        self._by_limits: dict[tuple[str, Limits], Cells] = {}
        self._by_key: dict[str, tuple[Limits, Cells]] = {}  # the last Limits of each key
        self._settling: list[tuple[str, Limits, int, float]] = []  # noted, not counted yet
        self._flush: asyncio.TimerHandle | None = None
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
        self.flush()
        self._map.close()
        os.close(self._fd)

    # --- the interface -----------------------------------------------------------------

    async def admit(self, key: str, limits: Limits, request_id: str) -> Admission:
        return self.admit_now(key, limits)

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        """Noted now, counted with the next admission of this process (under the lock it
        takes anyway) or within SETTLE_DELAY: a slot is freed a moment late, never early,
        and a worker under load takes the file lock once per request, not twice."""
        if not limits.settles:
            return
        self._settling.append((key, limits, tokens, self.now()))
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: at once
            self.flush()
            return
        self._flush = loop.call_later(SETTLE_DELAY, self.flush)

    def flush(self) -> None:
        """Count the settlements noted so far."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._settling:
            return
        self._lock.acquire()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._settle_noted()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._lock.release()

    def admit_now(self, key: str, limits: Limits) -> Admission:
        if not limits.limited:
            return ADMITTED
        now = self.now()
        self._lock.acquire()  # flock does not exclude threads sharing the fd
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self._settling:
                self._settle_noted()
            return self._admit(key, limits, now)
        except _Full:
            self._say_full()
            return ADMITTED
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._lock.release()

    def _settle_noted(self) -> None:
        """Under the lock: free the slots and charge the tokens of the noted ends."""
        noted, self._settling = self._settling, []
        for key, limits, tokens, at in noted:
            try:
                _, concurrency, _, tpm, daily = self._cells_of(key, limits)
                if concurrency is not None:
                    self._release(concurrency)
                if tokens > 0 and tpm is not None:
                    self._charge_window(tpm, at, tokens)
                if tokens > 0 and daily is not None:
                    self._charge_period(daily, _day(at), tokens)
            except _Full:
                self._say_full()

    def _cells_of(self, key: str, limits: Limits) -> Cells:
        """The offsets of `key`'s cells for `limits` (None: no such limit), made on first
        use and remembered."""
        found = self._by_key.get(key)
        if found is not None and found[0] is limits:  # the same key's Limits: one lookup
            return found[1]
        cells = self._by_limits.get((key, limits))
        if cells is None:
            cells = (
                self._cell(key, "rpm", limits.rpm) if limits.rpm else None,
                self._cell(key, "concurrency", CONCURRENCY_HOLDERS) if limits.concurrency else None,
                self._cell(key, "monthly", 1) if limits.monthly_requests else None,
                self._cell(key, "tpm", 60) if limits.tpm else None,
                self._cell(key, "daily", 1) if limits.daily_tokens else None,
            )
            if len(self._by_limits) > 10_000:
                self._by_limits.clear()
            self._by_limits[(key, limits)] = cells
        if len(self._by_key) > 10_000:
            self._by_key.clear()
        self._by_key[key] = (limits, cells)
        return cells

    # --- counting, under the lock --------------------------------------------------------

    def _admit(self, key: str, limits: Limits, now: float) -> Admission:
        rpm, concurrency, monthly, tpm, daily = self._cells_of(key, limits)
        month = _month(now) if monthly is not None else 0
        today = _day(now) if daily is not None else 0
        tokens_used, tokens_reset = None, None
        if tpm is not None:
            tokens_used, tokens_reset = self._window_sum(tpm, now)
        elif daily is not None:
            tokens_used = self._period_value(daily, today)
            tokens_reset = (today + 1) * 86400.0 - now
        window = self._ring_advance(rpm, limits.rpm or 1, now) if rpm is not None else None

        refusals: list[tuple[float, str]] = []  # (wait, limit)
        if rpm is not None and window is not None and window[2] >= (limits.rpm or 0):
            refusals.append((self._ring_entry(rpm, window[1]) + WINDOW - now, "rpm"))
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
            if rpm is not None and window is not None:
                window = self._ring_push(rpm, limits.rpm or 1, window, now)
            if concurrency is not None:
                self._hold(concurrency)
            if monthly is not None:
                self._charge_period(monthly, month, 1)
        rates = self._rates(limits, now, rpm, window, monthly, month, tokens_used, tokens_reset)
        if refusal is None:
            return Admission(True, rates=rates)
        wait, exceeded = refusal
        return Admission(False, exceeded, max(wait, 0.001), rates)

    def _full(self, at: int, limit: int) -> bool:
        """Whether `limit` requests are in flight; dead holders are let go first."""
        return _I64.unpack_from(self._map, at)[0] >= limit and self._recount(at) >= limit

    def _rates(
        self,
        limits: Limits,
        now: float,
        rpm: int | None,
        window: tuple[int, int, int] | None,
        monthly: int | None,
        month: int,
        tokens_used: int | None,
        tokens_reset: float | None,
    ) -> ir.RateLimits | None:
        requests_limit = requests_remaining = None
        requests_reset: float | None = None
        if rpm is not None and window is not None and limits.rpm:
            cursor, _, in_window = window
            requests_limit, requests_remaining = limits.rpm, limits.rpm - in_window
            requests_reset = 0.0
            if in_window:
                newest = self._ring_entry(rpm, (cursor - 1) % limits.rpm)
                requests_reset = max(newest + WINDOW - now, 0.0)
        elif monthly is not None and limits.monthly_requests:
            requests_limit = limits.monthly_requests
            requests_remaining = limits.monthly_requests - self._period_value(monthly, month)
            requests_reset = _next_month(now) - now
        tokens_limit = limits.tpm or limits.daily_tokens
        if requests_limit is None and tokens_limit is None:
            return None  # concurrency alone: no header family shows it
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

    # rpm: a ring of the last `rpm` admission times
    def _ring_entry(self, at: int, index: int) -> float:
        return _F64.unpack_from(self._map, at + _RING.size + index * 8)[0]

    def _ring_advance(self, at: int, size: int, now: float) -> tuple[int, int, int]:
        """(next, first, count) once the admissions older than the window have left."""
        cursor, first, count = _RING.unpack_from(self._map, at)
        since, moved = now - WINDOW, False
        while count and self._ring_entry(at, first) <= since:
            first, count, moved = (first + 1) % size, count - 1, True
        if moved:
            _RING.pack_into(self._map, at, cursor, first, count)
        return cursor, first, count

    def _ring_push(
        self, at: int, size: int, window: tuple[int, int, int], now: float
    ) -> tuple[int, int, int]:
        cursor, first, count = window
        _F64.pack_into(self._map, at + _RING.size + cursor * 8, now)
        window = ((cursor + 1) % size, first, count + 1)
        _RING.pack_into(self._map, at, *window)
        return window

    # concurrency: the total, then (pid, count) per process holding slots
    def _recount(self, at: int) -> int:
        """The total in flight again, letting go of the slots of dead processes."""
        holders = _HOLDERS.unpack_from(self._map, at + 8)
        total = 0
        for i in range(CONCURRENCY_HOLDERS):
            pid, count = holders[2 * i], holders[2 * i + 1]
            if count <= 0:
                continue
            place = at + 8 + i * 16
            if self._stale(at, pid, place):
                _PAIR.pack_into(self._map, place, 0, 0)  # its requests died with it
                continue
            total += count
        _I64.pack_into(self._map, at, total)
        return total

    def _stale(self, at: int, pid: int, place: int) -> bool:
        """Whether the holder `pid` at `place` is gone: a dead process, or one that had
        this process's pid before (a restart reusing pids) and so is not this one's."""
        if pid == self._pid:
            return self._slots.get(at) != place
        return not _alive(pid)

    def _own_slot(self, at: int) -> int:
        """The offset of this process's (pid, count) in the cell, claimed when needed."""
        place = self._slots.get(at)
        if place is not None and _PAIR.unpack_from(self._map, place)[0] == self._pid:
            return place
        free = None
        for i in range(CONCURRENCY_HOLDERS):
            place = at + 8 + i * 16
            pid, count = _PAIR.unpack_from(self._map, place)
            if pid == self._pid:  # a predecessor's with the same pid: its slots are gone
                if count > 0:
                    held = _I64.unpack_from(self._map, at)[0]
                    _I64.pack_into(self._map, at, max(held - count, 0))
                _PAIR.pack_into(self._map, place, self._pid, 0)
                self._slots[at] = place
                return place
            if free is None and (pid == 0 or count <= 0):
                free = place
        if free is None:
            raise _Full
        _PAIR.pack_into(self._map, free, self._pid, 0)
        self._slots[at] = free
        return free

    def _hold(self, at: int) -> None:
        place = self._own_slot(at)
        count = _PAIR.unpack_from(self._map, place)[1]
        _PAIR.pack_into(self._map, place, self._pid, max(count, 0) + 1)
        _I64.pack_into(self._map, at, max(_I64.unpack_from(self._map, at)[0], 0) + 1)

    def _release(self, at: int) -> None:
        place = self._own_slot(at)
        count = _PAIR.unpack_from(self._map, place)[1]
        if count > 0:
            _PAIR.pack_into(self._map, place, self._pid, count - 1)
            _I64.pack_into(self._map, at, max(_I64.unpack_from(self._map, at)[0] - 1, 0))

    # tpm: the total, the last second expired, the newest second; 60 (second, tokens)
    def _expire(self, at: int, now: float) -> tuple[int, int]:
        """(tokens in the window, newest second) once the seconds that left it are gone."""
        total, through, newest = _TPM.unpack_from(self._map, at)
        edge = int(now) - int(WINDOW)  # this second and the ones before have left
        if through >= edge:
            return total, newest
        for second in range(max(through + 1, edge - 59), edge + 1):
            place = at + _TPM.size + (second % 60) * 16
            stamp, tokens = _PAIR.unpack_from(self._map, place)
            if tokens and stamp <= edge:
                total -= tokens
                _PAIR.pack_into(self._map, place, 0, 0)
        total = max(total, 0)
        _TPM.pack_into(self._map, at, total, edge, newest)
        return total, newest

    def _window_sum(self, at: int, now: float) -> tuple[int, float]:
        """Tokens in the window, and the seconds until it is empty again."""
        used, newest = self._expire(at, now)
        return used, max(newest + WINDOW - now, 0.0) if used else 0.0

    def _window_wait(self, at: int, now: float, limit: int) -> float:
        """Seconds until enough tokens have left the window to be under `limit` (only
        for a refusal: it sorts the buckets)."""
        used, _ = self._expire(at, now)
        values = _BUCKETS.unpack_from(self._map, at + _TPM.size)
        buckets = sorted(
            (stamp, tokens)
            for stamp, tokens in zip(values[0::2], values[1::2], strict=True)
            if tokens
        )
        for stamp, tokens in buckets:
            used -= tokens
            if used < limit:
                return max(stamp + WINDOW - now, 0.0)
        return WINDOW

    def _charge_window(self, at: int, now: float, tokens: int) -> None:
        total, _ = self._expire(at, now)
        second = int(now)
        place = at + _TPM.size + (second % 60) * 16
        stamp, held = _PAIR.unpack_from(self._map, place)
        if stamp != second:
            total -= held  # a second that left the window, not expired yet
            held = 0
        _PAIR.pack_into(self._map, place, second, held + tokens)
        through = _TPM.unpack_from(self._map, at)[1]
        _TPM.pack_into(self._map, at, max(total, 0) + tokens, through, second)

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
        return _RING.size + size * 8
    if kind == "concurrency":
        return 8 + size * 16
    if kind == "tpm":
        return _TPM.size + size * 16
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
