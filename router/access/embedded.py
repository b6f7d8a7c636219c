"""The embedded limit store: counters in one memory-mapped file in the state dir, shared
by every worker (and every server) of the host that uses that state dir. Each admission
or settlement takes an exclusive `flock` on the file for a few microseconds, so counts
are exact across processes, and nothing waits on the disk: the file lives in the page
cache and the kernel writes it back when it likes, which also keeps daily and monthly
budgets across restarts.

Layout: a header, a table of cells (open addressing on a 16-byte id), and a heap the
cells are carved from. A cell is never moved or freed, so each process remembers where
its cells are. A full table or heap fails open, with a warning: a limit must not take
the gateway down.

A client key has two cells, and an admission reads and writes each in one go:
* its record: the running totals of every limit but rpm (the requests in flight, the
  tokens of the last minute, this month's requests, today's tokens), the (pid, count)
  of each process holding concurrency slots (so the slots of a process that died can be
  let go), and 60 one-second token buckets;
* for rpm, a ring of its last `rpm` admission times, with where the window starts and
  how many are in it (entries leave from the start as they age: amortized O(1)).
Changing a key's limits keeps its counts; only a new rpm starts a new ring."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from router.access.keys import Limits
from router.access.limits import ADMITTED, Admission, Calendar, Ready, grantable
from router.protocols import ir

log = logging.getLogger("router.limits")

FILE_NAME = "limits.bin"
MAGIC = b"RLIMITS3"
SLOTS = 1 << 17  # cells: two per key with rpm, one without
# sparse: only the pages of cells in use take memory or disk. A key's record is 2 KiB,
# its rpm ring 8 bytes per request of its rpm (80 KiB for 10,000 a minute)
HEAP_BYTES = 256 << 20
WINDOW = 60.0  # seconds, for rpm and tpm
CONCURRENCY_HOLDERS = 64  # processes that may hold slots of one key at once
CONCURRENCY_RETRY = 1.0  # seconds a refused request is told to wait for a free slot
SETTLE_DELAY = 0.005  # seconds a noted settlement waits for an admission to ride on

_HEADER = struct.Struct("<8sQ")  # magic, heap top (offset of the first free byte)
_SLOT = struct.Struct("<16sQQ")  # cell id, offset, size
_TABLE = 64
_HEAP = _TABLE + SLOTS * _SLOT.size

# a key's record: in flight; tokens in the window, the last second expired, the newest
# second; (month, requests); (day, tokens); then the holders and the token buckets
_RECORD = struct.Struct("<8q")
_HOLDERS_AT = _RECORD.size
_HOLDERS = struct.Struct(f"<{CONCURRENCY_HOLDERS * 2}q")
_BUCKETS_AT = _HOLDERS_AT + _HOLDERS.size
_BUCKETS = struct.Struct("<120q")  # 60 x (second, tokens)
_RECORD_BYTES = _BUCKETS_AT + _BUCKETS.size
_RING = struct.Struct("<QQQ")  # next to write, first in the window, how many in it
_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_PAIR = struct.Struct("<qq")

# (pid, file) -> record -> [offset, count] of this process's (pid, count) holder
_CLAIMED: dict[tuple[int, int, int], dict[int, list[int]]] = {}
_MEMO = 10_000  # keys whose cells a process remembers before it starts over

_End = tuple[Limits, int, float]  # a request's end: the limits it was admitted under,
# its tokens, when


def _cell_id(*parts: object) -> bytes:
    name = "\0".join(str(part) for part in parts)
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


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
        stat = os.fstat(self._fd)
        # record -> this process's holder and its count, shared by every store of the
        # process on this file (the count is this process's to write: the file's copy
        # is for the others to see; a holder under our pid that no store here claimed
        # is a predecessor's that had the same pid)
        self._slots = _CLAIMED.setdefault((self._pid, stat.st_dev, stat.st_ino), {})
        self._records: dict[str, int] = {}
        self._rings: dict[tuple[str, int], int] = {}
        self._by_key: dict[str, tuple[Limits, int, int | None]] = {}  # the last Limits' cells
        self._settling: list[tuple[str, Limits, int, float]] = []  # noted, not counted yet
        self._flush: asyncio.TimerHandle | None = None
        self._calendar = Calendar()
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

    def admit(self, key: str, limits: Limits, request_id: str) -> Ready:
        return Ready(self.admit_now(key, limits))

    def grant(self, key: str, limits: Limits, lease_id: str, want: int, peak: int) -> Ready:
        return Ready(self.admit_now(key, limits, want, peak))

    def give_back(
        self, key: str, limits: Limits, lease: Admission, lease_id: str, used: int
    ) -> None:
        """Uncount a lease's unused admissions: their slots and month's requests, and
        their rpm entries while they are the newest (else they stay for their minute: a
        key far from its limits can spare them)."""
        unused = lease.granted - used
        if unused <= 0:
            return
        with self._locked():
            try:
                cells = self._by_key.get(key)
                if cells is None or cells[0] is not limits:
                    cells = self._cells_of(key, limits)
            except _Full:
                return
            self._give_back(limits, cells[1], cells[2], lease.mark, unused)

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

    def admit_now(self, key: str, limits: Limits, want: int = 1, peak: int = 0) -> Admission:
        if not limits.limited:
            return ADMITTED
        now = self.now()
        self._lock.acquire()  # flock does not exclude threads sharing the fd
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            cells = self._by_key.get(key)
            if cells is None or cells[0] is not limits:
                cells = self._cells_of(key, limits)  # _Full: the noted ends stay noted
            ends = self._settle_noted(key) if self._settling else None
            return self._admit(limits, cells[1], cells[2], now, ends, want, peak)
        except _Full:
            self._say_full()
            return ADMITTED
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._lock.release()

    # --- counting, under the lock --------------------------------------------------------

    def _admit(
        self,
        limits: Limits,
        at: int,
        ring: int | None,
        now: float,
        ends: list[_End] | None,
        want: int = 1,
        peak: int = 0,
    ) -> Admission:
        """Refuse, or count the request in every limit of `limits`, in one pass, after the
        ends of this key's earlier requests noted since the last pass; up to `want` of
        them for a lease (see limits.LeasingStore.grant)."""
        memory = self._map
        flight, tokens, through, newest, month, requests, day, spent = _RECORD.unpack_from(
            memory, at
        )
        changed = bool(ends)  # the record is written once, at the end, when it changed
        if ends:
            flight, tokens, through, newest, day, spent = self._ended(
                at, ends, flight, tokens, through, newest, day, spent
            )
        wait, exceeded = 0.0, ""  # of the refusal that frees up last

        rpm = limits.rpm or 1
        cursor = first = count = 0
        if ring is not None:
            cursor, first, count = _RING.unpack_from(memory, ring)
            if count:
                since, moved = now - WINDOW, False
                oldest = _F64.unpack_from(memory, ring + 24 + first * 8)[0]
                while oldest <= since:
                    first, count, moved = (first + 1) % rpm, count - 1, True
                    if not count:
                        break
                    oldest = _F64.unpack_from(memory, ring + 24 + first * 8)[0]
                if moved:
                    _RING.pack_into(memory, ring, cursor, first, count)
                if count >= rpm:
                    wait, exceeded = oldest + WINDOW - now, "rpm"

        concurrency = limits.concurrency
        if concurrency and flight >= concurrency:
            flight = self._recount(at)
            if flight >= concurrency and (not exceeded or wait < CONCURRENCY_RETRY):
                wait, exceeded = CONCURRENCY_RETRY, "concurrency"

        monthly, days = limits.monthly_requests, None
        if monthly:
            days = self._calendar.at(now)
            if month != days.month:
                month, requests = days.month, 0
            if requests >= monthly and (not exceeded or days.month_end - now > wait):
                wait, exceeded = days.month_end - now, "monthly_requests"

        tpm, daily = limits.tpm, limits.daily_tokens
        tokens_reset = 0.0
        if tpm:
            if through < int(now) - int(WINDOW):
                tokens, through = self._expire(at, now, tokens, through)
                changed = True
            if tokens:
                tokens_reset = newest + WINDOW - now
                tokens_reset = tokens_reset if tokens_reset > 0.0 else 0.0
            if tokens >= tpm:
                tpm_wait = self._window_wait(at, now, tokens, tpm)
                if not exceeded or tpm_wait > wait:
                    wait, exceeded = tpm_wait, "tpm"
        if daily:
            days = self._calendar.at(now)
            if day != days.day:
                day, spent = days.day, 0
            if spent >= daily and (not exceeded or days.day_end - now > wait):
                wait, exceeded = days.day_end - now, "daily_tokens"

        admitted = not exceeded
        granted = 1
        if admitted:
            if want > 1:
                granted = grantable(
                    want,
                    rpm - count if ring is not None else None,
                    concurrency - flight if concurrency else None,
                    monthly - requests if monthly else None,
                    peak=peak,
                    tokens_left=_tokens_left(tpm, tokens, daily, spent),
                )
            if concurrency:  # first: it can fail (_Full), and then nothing is counted
                flight = flight - self._hold(at, granted) + granted
            if ring is not None:
                for _ in range(granted):
                    _F64.pack_into(memory, ring + 24 + cursor * 8, now)
                    cursor = (cursor + 1) % rpm
                count += granted
                _RING.pack_into(memory, ring, cursor, first, count)
            if monthly:
                requests += granted
            changed = changed or bool(concurrency or monthly)
        if changed:
            _RECORD.pack_into(
                memory, at, flight, tokens, through, newest, month, requests, day, spent
            )

        # the rates the protocol's headers show: rpm, else the month; tpm, else the day
        requests_limit = requests_left = requests_reset = None
        if ring is not None:
            requests_limit, requests_left = rpm, rpm - count
            if admitted:
                requests_reset = WINDOW  # the newest admission is this one
            elif count:
                newest_at = (cursor - 1) % rpm
                requests_reset = _F64.unpack_from(memory, ring + 24 + newest_at * 8)[0]
                requests_reset = max(requests_reset + WINDOW - now, 0.0)
            else:
                requests_reset = 0.0
        elif monthly and days is not None:
            requests_limit, requests_left = monthly, max(monthly - requests, 0)
            requests_reset = days.month_end - now
        tokens_limit = tokens_left = None
        if tpm:
            tokens_limit, tokens_left = tpm, tpm - tokens if tokens < tpm else 0
        elif daily and days is not None:
            tokens_limit, tokens_left = daily, max(daily - spent, 0)
            tokens_reset = days.day_end - now
        if requests_limit is None and tokens_limit is None:
            rates = None  # concurrency alone: no header family shows it
        else:
            rates = ir.RateLimits(
                requests_limit,
                requests_left,
                requests_reset,
                tokens_limit,
                tokens_left,
                tokens_reset if tokens_limit is not None else None,
            )
        if admitted:
            return Admission(True, rates=rates, granted=granted, mark=now)
        return Admission(False, exceeded, max(wait, 0.001), rates)

    def _give_back(
        self, limits: Limits, at: int, ring: int | None, granted_at: float, unused: int
    ) -> None:
        memory = self._map
        flight, tokens, through, newest, month, requests, day, spent = _RECORD.unpack_from(
            memory, at
        )
        if limits.concurrency:
            flight -= self._release(at, unused)
        if limits.monthly_requests and month == self._calendar.at(granted_at).month:
            requests = max(requests - unused, 0)
        _RECORD.pack_into(memory, at, flight, tokens, through, newest, month, requests, day, spent)
        if ring is None:
            return
        rpm = limits.rpm or 1
        cursor, first, count = _RING.unpack_from(memory, ring)
        if count < unused:
            return
        for back in range(1, unused + 1):  # ours only while nothing came after them
            if _F64.unpack_from(memory, ring + 24 + (cursor - back) % rpm * 8)[0] != granted_at:
                return
        _RING.pack_into(memory, ring, (cursor - unused) % rpm, first, count - unused)

    def _settle_noted(self, keep: str | None = None) -> list[_End]:
        """Under the lock: free the slots and charge the tokens of the noted ends, but
        those of `keep`, returned for the admission of that key to count in its pass."""
        noted, self._settling = self._settling, []
        by_key: dict[str, list[_End]] = {}
        for key, limits, used, at_time in noted:
            ends = by_key.get(key)
            if ends is None:
                ends = by_key[key] = []
            ends.append((limits, used, at_time))
        kept = by_key.pop(keep, []) if keep is not None else []
        memory = self._map
        for key, ends in by_key.items():  # each key's record read and written once
            try:
                at = self._record(key)
            except _Full:
                self._say_full()
                continue
            flight, tokens, through, newest, month, requests, day, spent = _RECORD.unpack_from(
                memory, at
            )
            flight, tokens, through, newest, day, spent = self._ended(
                at, ends, flight, tokens, through, newest, day, spent
            )
            _RECORD.pack_into(
                memory, at, flight, tokens, through, newest, month, requests, day, spent
            )
        return kept

    def _ended(
        self,
        at: int,
        ends: Iterable[_End],
        flight: int,
        tokens: int,
        through: int,
        newest: int,
        day: int,
        spent: int,
    ) -> tuple[int, int, int, int, int, int]:
        """The record's counts once `ends` are counted: (in flight, tokens in the window,
        last second expired, newest second, day, its tokens). Writes the buckets and this
        process's holder; the caller writes the record."""
        memory = self._map
        for limits, used, at_time in ends:
            if limits.concurrency:
                flight -= self._release(at)
            if used > 0 and limits.tpm:
                if through < int(at_time) - int(WINDOW):
                    tokens, through = self._expire(at, at_time, tokens, through)
                second = int(at_time)
                place = at + _BUCKETS_AT + (second % 60) * 16
                stamp, held = _PAIR.unpack_from(memory, place)
                if stamp != second:
                    tokens -= held  # a second that left the window, not expired yet
                    held = 0
                _PAIR.pack_into(memory, place, second, held + used)
                tokens += used
                if second > newest:
                    newest = second
            if used > 0 and limits.daily_tokens:
                today = self._calendar.at(at_time).day
                if day != today:
                    day, spent = today, 0
                spent += used
        return flight, tokens, through, newest, day, spent

    # concurrency: the total in the record, then (pid, count) per process holding slots
    def _recount(self, at: int) -> int:
        """The total in flight again, letting go of the slots of dead processes."""
        holders = _HOLDERS.unpack_from(self._map, at + _HOLDERS_AT)
        total = 0
        for i in range(CONCURRENCY_HOLDERS):
            pid, count = holders[2 * i], holders[2 * i + 1]
            if count <= 0:
                continue
            place = at + _HOLDERS_AT + i * 16
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
            slot = self._slots.get(at)
            return slot is None or slot[0] != place
        return not _alive(pid)

    def _claim(self, at: int) -> tuple[list[int], int]:
        """A holder for this process in the record, and the slots of a predecessor with
        our pid let go on the way (for the caller to take off the total)."""
        free = None
        for i in range(CONCURRENCY_HOLDERS):
            place = at + _HOLDERS_AT + i * 16
            pid, count = _PAIR.unpack_from(self._map, place)
            if pid == self._pid:  # a predecessor's with the same pid: its slots are gone
                free, gone = place, max(count, 0)
                break
            # a place never used, or left by a process that died holding nothing; never
            # a live process's, even at 0: its count is that process's to write
            if free is None and (pid == 0 or (count <= 0 and not _alive(pid))):
                free = place
        else:
            if free is None:
                raise _Full
            gone = 0
        _PAIR.pack_into(self._map, free, self._pid, 0)
        slot = self._slots[at] = [free, 0]
        return slot, gone

    def _hold(self, at: int, slots: int = 1) -> int:
        """Take `slots` slots; the predecessor's slots let go (see _claim)."""
        slot, gone = self._slots.get(at), 0
        if slot is None:
            slot, gone = self._claim(at)
        slot[1] += slots
        _PAIR.pack_into(self._map, slot[0], self._pid, slot[1])
        return gone

    def _release(self, at: int, slots: int = 1) -> int:
        """Give back up to `slots` of this process's slots: how many it held of them."""
        slot = self._slots.get(at)
        if slot is None or slot[1] <= 0:
            return 0
        freed = min(slots, slot[1])
        slot[1] -= freed
        _PAIR.pack_into(self._map, slot[0], self._pid, slot[1])
        return freed

    # tpm: 60 buckets of (second, tokens) after the record
    def _expire(self, at: int, now: float, tokens: int, through: int) -> tuple[int, int]:
        """(tokens in the window, last second expired) once the seconds that left the
        window are gone from `tokens` and their buckets emptied."""
        edge = int(now) - int(WINDOW)  # this second and the ones before have left
        if through >= edge:
            return tokens, through
        for second in range(max(through + 1, edge - 59), edge + 1):
            place = at + _BUCKETS_AT + (second % 60) * 16
            stamp, held = _PAIR.unpack_from(self._map, place)
            if held and stamp <= edge:
                tokens -= held
                _PAIR.pack_into(self._map, place, 0, 0)
        return max(tokens, 0), edge

    def _window_wait(self, at: int, now: float, used: int, limit: int) -> float:
        """Seconds until enough tokens have left the window to be under `limit` (only
        for a refusal: it sorts the buckets)."""
        values = _BUCKETS.unpack_from(self._map, at + _BUCKETS_AT)
        buckets = sorted(
            (stamp, held) for stamp, held in zip(values[0::2], values[1::2], strict=True) if held
        )
        for stamp, held in buckets:
            used -= held
            if used < limit:
                return max(stamp + WINDOW - now, 0.0)
        return WINDOW

    # --- cells ---------------------------------------------------------------------------

    def _cells_of(self, key: str, limits: Limits) -> tuple[Limits, int, int | None]:
        """`key`'s record and (with rpm) ring, made on first use and remembered."""
        ring = None
        if limits.rpm:
            ring = self._rings.get((key, limits.rpm))
            if ring is None:
                cell = _cell_id(key, "rpm", limits.rpm)
                ring = self._find_or_make(cell, _RING.size + limits.rpm * 8)
                if len(self._rings) > _MEMO:
                    self._rings.clear()
                self._rings[(key, limits.rpm)] = ring
        cells = (limits, self._record(key), ring)
        if len(self._by_key) > _MEMO:
            self._by_key.clear()
        self._by_key[key] = cells
        return cells

    def _record(self, key: str) -> int:
        at = self._records.get(key)
        if at is None:
            at = self._find_or_make(_cell_id(key, "record"), _RECORD_BYTES)
            if len(self._records) > _MEMO:
                self._records.clear()
            self._records[key] = at
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


def _tokens_left(tpm: int | None, tokens: int, daily: int | None, spent: int) -> int | None:
    """What the tightest token budget has left (None: none)."""
    left = None
    if tpm:
        left = tpm - tokens
    if daily and (left is None or daily - spent < left):
        left = daily - spent
    return left


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
