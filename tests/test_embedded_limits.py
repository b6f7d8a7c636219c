"""The embedded limit store against real files and real OS processes: counters in one
memory-mapped file, an flock per operation, exact across every process that opens the
same path. The counting rules are the ones tests/test_redis_limits.py holds the Redis
store to (router/access/limits.py): the same scenarios, the same answers."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.access import embedded
from router.access.embedded import FILE_NAME, MAGIC, EmbeddedLimits
from router.access.keys import NO_LIMITS, Limits
from router.access.limits import ADMITTED, Admission

KEY = "team-a"


def utc(moment: str) -> float:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, moment: str) -> None:
        self.time = utc(moment)

    def __call__(self) -> float:
        return self.time

    def move(self, seconds: float) -> None:
        self.time += seconds

    def set(self, moment: str) -> None:
        self.time = utc(moment)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / FILE_NAME


@contextmanager
def opened(path: Path, now: Callable[[], float] = time.time) -> Iterator[EmbeddedLimits]:
    store = EmbeddedLimits(path, now=now)
    try:
        yield store
    finally:
        store.close()


def admit_all(store: EmbeddedLimits, limits: Limits, count: int, key: str = KEY) -> list[Admission]:
    return [store.admit_now(key, limits) for _ in range(count)]


def head(path: Path) -> bytes:
    """The file's header and the start of its table (the file is large and sparse)."""
    with path.open("rb") as file:
        return file.read(64)


async def awaited(answer: Awaitable[Admission]) -> Admission:
    return await answer


def remaining(admission: Admission) -> tuple[int | None, int | None]:
    assert admission.rates is not None
    return admission.rates.requests_remaining, admission.rates.tokens_remaining


# --- exact across processes -------------------------------------------------------------


def _admit_in_process(
    path: str, limits: dict[str, int], count: int, barrier: Any, results: Any, release: Any
) -> None:
    """A separate OS process with its own EmbeddedLimits on the file: `count` admissions
    at once, after every process is ready; puts the admitted ids, then holds its
    concurrency slots (alive, nothing settled) until released."""
    store = EmbeddedLimits(Path(path))
    ids = [f"{os.getpid()}-{i}" for i in range(count)]

    async def admit() -> list[str]:
        barrier.wait(30)
        admissions = await asyncio.gather(
            *(store.admit(KEY, Limits(**limits), request_id) for request_id in ids)
        )
        return [request_id for request_id, a in zip(ids, admissions, strict=True) if a.allowed]

    results.put(asyncio.run(admit()))
    release.wait(30)
    store.close()


def _stop(workers: list[Any]) -> None:
    for worker in workers:
        worker.join(10)
        if worker.is_alive():
            worker.kill()
            worker.join(5)


def collect(results: Any, workers: list[Any], timeout: float = 60) -> Any:
    """The next result; fails as soon as a worker has died without giving one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            crashed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not crashed, f"a worker died: exit codes {crashed}"
    raise AssertionError(f"no result within {timeout} s")


@contextmanager
def admitting_processes(
    path: Path, limits: dict[str, int], processes: int = 4, each: int = 25
) -> Iterator[list[str]]:
    """The ids admitted by `processes` processes, `each` admissions apiece; the processes
    stay alive until the block ends, and are joined (reaped) after it."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    release = context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=_admit_in_process, args=(str(path), limits, each, barrier, results, release)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        admitted = [collect(results, workers) for _ in workers]
        yield [request_id for ids in admitted for request_id in ids]
    finally:
        release.set()
        _stop(workers)
    assert [worker.exitcode for worker in workers] == [0] * processes


def test_rpm_is_exact_across_processes(path: Path) -> None:
    with admitting_processes(path, {"rpm": 30}) as admitted:
        assert len(admitted) == 30
    with opened(path) as store:
        refused = store.admit_now(KEY, Limits(rpm=30))
        assert (refused.allowed, refused.exceeded) == (False, "rpm")
        assert 0.0 < (refused.retry_after or 0) <= 60.0
        assert remaining(refused) == (0, None)


def test_concurrency_is_exact_across_processes_and_dead_holders_are_let_go(path: Path) -> None:
    limits = Limits(concurrency=4)
    with admitting_processes(path, {"concurrency": 4}) as admitted:
        assert len(admitted) == 4
        with opened(path) as store:  # the holders are alive: their slots stay taken
            refused = store.admit_now(KEY, limits)
            assert (refused.allowed, refused.exceeded, refused.retry_after) == (
                False,
                "concurrency",
                1.0,
            )
    with opened(path) as store:  # the holders exited without settling
        assert [a.allowed for a in admit_all(store, limits, 5)] == [True] * 4 + [False]


def test_monthly_requests_are_exact_across_processes(path: Path) -> None:
    with admitting_processes(path, {"monthly_requests": 10}) as admitted:
        assert len(admitted) == 10
    with opened(path) as store:
        refused = store.admit_now(KEY, Limits(monthly_requests=10))
        assert (refused.allowed, refused.exceeded) == (False, "monthly_requests")
        assert remaining(refused) == (0, None)


def test_no_admission_is_lost_between_processes(path: Path) -> None:
    """Every admission read-modify-writes the same counters: without the lock, processes
    admitting at once would overwrite each other's counts."""
    limits = {"rpm": 100_000, "monthly_requests": 1_000_000}
    with admitting_processes(path, limits, each=1000) as admitted:
        assert len(admitted) == 4000
    with opened(path) as store:
        assert remaining(store.admit_now(KEY, Limits(**limits))) == (100_000 - 4001, None)
        month = store.admit_now(KEY, Limits(monthly_requests=1_000_000))
        assert remaining(month) == (1_000_000 - 4002, None)


@contextmanager
def switching_often() -> Iterator[None]:
    """Threads switched every microsecond, so that they interleave inside admissions."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def admit_from_threads(stores: tuple[EmbeddedLimits, ...], limits: Limits, each: int) -> list[bool]:
    """Four threads per store, `each` admissions apiece, started at once."""
    barrier = threading.Barrier(4 * len(stores))
    allowed: list[bool] = []
    lock = threading.Lock()

    def admit(store: EmbeddedLimits) -> None:
        barrier.wait(30)
        admissions = admit_all(store, limits, each)
        with lock:
            allowed.extend(a.allowed for a in admissions)

    threads = [threading.Thread(target=admit, args=(store,)) for store in stores for _ in range(4)]
    with switching_often():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return allowed


def test_threads_of_one_process_are_counted_exactly(path: Path) -> None:
    """Two stores on the file (two open files: flock excludes them) and four threads on
    each (flock does not exclude threads sharing a file: the store's thread lock does)."""
    many = Limits(monthly_requests=1_000_000)
    with opened(path) as store:
        assert admit_from_threads((store,), many, 2000) == [True] * 8000
        assert remaining(store.admit_now(KEY, many)) == (1_000_000 - 8001, None)

    limits = Limits(rpm=30, concurrency=12)
    with opened(path) as first, opened(path) as second:
        allowed = admit_from_threads((first, second), limits, 25)
        assert (len(allowed), allowed.count(True)) == (200, 12)
        for _ in range(12):  # one holder: the process, whichever store settles
            first.settle(KEY, limits, "x", 0)
        admissions = admit_all(second, limits, 13)
        assert [a.allowed for a in admissions] == [True] * 12 + [False]
        assert admissions[-1].exceeded == "concurrency"
        for _ in range(12):
            second.settle(KEY, limits, "x", 0)
        admissions = admit_all(first, limits, 7)  # 24 in the minute: 6 more
        assert [a.allowed for a in admissions] == [True] * 6 + [False]
        assert admissions[-1].exceeded == "rpm"


# --- each limit, its Retry-After and its rates -------------------------------------------


def test_rpm_window_retry_after_and_rates(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(rpm=3)
    with opened(path, clock) as store:
        left = []
        for _ in range(3):
            admission = store.admit_now(KEY, limits)
            assert admission.allowed and admission.rates is not None
            left.append(admission.rates.requests_remaining)
            assert admission.rates.requests_limit == 3
            assert admission.rates.requests_reset == 60.0  # all three back in 60 s
            assert admission.rates.tokens_limit is None
            clock.move(10)
        assert left == [2, 1, 0]

        refused = store.admit_now(KEY, limits)  # at 12:00:30
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (False, "rpm", 30.0)
        assert refused.rates is not None
        assert (refused.rates.requests_remaining, refused.rates.requests_reset) == (0, 50.0)

        clock.move(29.5)
        assert store.admit_now(KEY, limits).retry_after == 0.5
        clock.move(0.5)  # the first admission leaves the window
        admitted = store.admit_now(KEY, limits)
        assert admitted.allowed and remaining(admitted) == (0, None)
        refused = store.admit_now(KEY, limits)
        assert (refused.exceeded, refused.retry_after) == ("rpm", 10.0)  # the second is next

        clock.move(60)  # a quiet minute: the whole budget again
        quiet = store.admit_now(KEY, limits)
        assert quiet.allowed and quiet.rates is not None
        assert (quiet.rates.requests_remaining, quiet.rates.requests_reset) == (2, 60.0)


def test_a_refusal_counts_nothing(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(rpm=2, concurrency=1, monthly_requests=10)
    with opened(path, clock) as store:
        assert store.admit_now(KEY, limits).allowed
        refused = store.admit_now(KEY, limits)
        assert (refused.allowed, refused.exceeded) == (False, "concurrency")
        store.settle(KEY, limits, "a", 0)
        admitted = store.admit_now(KEY, limits)  # the refused one took no rpm slot
        assert admitted.allowed and remaining(admitted) == (0, None)  # rpm's, not the month's
        # two requests this month: a budget of 3 has one left, taken now
        month = store.admit_now(KEY, Limits(monthly_requests=3))
        assert month.allowed and remaining(month) == (0, None)


def test_a_refusal_by_the_month_or_the_day_takes_no_rpm_or_concurrency_slot(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    with opened(path, clock) as store:
        limits = Limits(rpm=5, monthly_requests=1)
        assert store.admit_now(KEY, limits).allowed
        refusals = admit_all(store, limits, 3)
        assert {a.exceeded for a in refusals} == {"monthly_requests"}
        assert remaining(store.admit_now(KEY, Limits(rpm=5))) == (3, None)

        limits = Limits(concurrency=1, daily_tokens=10)
        assert store.admit_now("b", limits).allowed
        store.settle("b", limits, "1", 10)
        assert store.admit_now("b", limits).exceeded == "daily_tokens"
        assert store.admit_now("b", Limits(concurrency=1)).allowed  # the slot is free


def test_settle_frees_a_concurrency_slot(path: Path) -> None:
    limits = Limits(concurrency=2)
    with opened(path) as store:
        assert [a.allowed for a in admit_all(store, limits, 2)] == [True, True]
        refused = store.admit_now(KEY, limits)
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "concurrency",
            1.0,
        )
        store.settle(KEY, limits, "a", 0)
        assert [a.allowed for a in admit_all(store, limits, 2)] == [True, False]
        store.settle(KEY, limits, "b", 0)
        store.settle(KEY, limits, "c", 0)
        store.settle(KEY, limits, "d", 0)  # more than it holds: nothing below zero
        assert [a.allowed for a in admit_all(store, limits, 3)] == [True, True, False]


def _hold_in_process(path: str, count: int, held: Any, release: Any) -> None:
    """Admit `count` requests under concurrency 2, say so, wait, and go without settling.
    (A pipe to wait on, not an Event: a process killed in Event.wait would hang the
    Event's next set.)"""
    store = EmbeddedLimits(Path(path))
    held.put([store.admit_now(KEY, Limits(concurrency=2)).allowed for _ in range(count)])
    release.poll(30)


@pytest.mark.parametrize("ending", ["exits", "is killed"])
def test_the_slots_of_a_holder_that_died_are_freed_at_the_limit(path: Path, ending: str) -> None:
    limits = Limits(concurrency=2)
    context = multiprocessing.get_context("spawn")
    held = context.Queue()
    release, go = context.Pipe(duplex=False)
    holder = context.Process(target=_hold_in_process, args=(str(path), 2, held, release))
    holder.start()
    try:
        assert held.get(timeout=60) == [True, True]
        with opened(path) as store:
            refused = store.admit_now(KEY, limits)  # alive: its slots are its own
            assert (refused.allowed, refused.exceeded) == (False, "concurrency")
            if ending == "exits":
                go.send(True)
            else:
                holder.kill()
            holder.join(30)  # reaped: a zombie still answers kill(pid, 0)
            assert holder.exitcode == (0 if ending == "exits" else -9)
            # at the limit again: the dead holder's slots are let go, this one counted
            assert [a.allowed for a in admit_all(store, limits, 3)] == [True, True, False]
            store.settle(KEY, limits, "a", 0)
            assert store.admit_now(KEY, limits).allowed
    finally:
        go.close()  # ends the holder's wait, if it still waits
        _stop([holder])
        release.close()


def test_daily_tokens_are_refused_once_spent_and_reopen_at_utc_midnight(path: Path) -> None:
    clock = Clock("2026-03-14T23:59:00")
    limits = Limits(daily_tokens=1000)
    with opened(path, clock) as store:
        first = store.admit_now(KEY, limits)
        assert first.allowed and first.rates is not None
        assert (first.rates.tokens_limit, first.rates.tokens_remaining) == (1000, 1000)
        assert first.rates.tokens_reset == 60.0
        assert first.rates.requests_limit is None
        store.settle(KEY, limits, "a", 600)
        second = store.admit_now(KEY, limits)
        assert second.allowed and remaining(second) == (None, 400)
        store.settle(KEY, limits, "b", 500)  # may finish over the budget

        clock.move(30)
        refused = store.admit_now(KEY, limits)
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "daily_tokens",
            30.0,
        )
        assert remaining(refused) == (None, 0)

        clock.set("2026-03-15T00:00:00")
        reopened = store.admit_now(KEY, limits)
        assert reopened.allowed and reopened.rates is not None
        assert (reopened.rates.tokens_remaining, reopened.rates.tokens_reset) == (1000, 86400.0)


def test_tokens_are_charged_at_settlement_only(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=100, daily_tokens=1000)
    with opened(path, clock) as store:
        admissions = admit_all(store, limits, 3)  # admitted together: nothing known yet
        assert [remaining(a) for a in admissions] == [(None, 100)] * 3
        for tokens in (60, 60, 0):  # both finish over the budget; 0 charges nothing
            store.settle(KEY, limits, "x", tokens)
        refused = store.admit_now(KEY, limits)
        assert (refused.exceeded, remaining(refused)) == ("tpm", (None, 0))
        day = store.admit_now(KEY, Limits(daily_tokens=1000))
        assert remaining(day) == (None, 880)


def test_tpm_is_refused_once_spent_and_reopens_as_old_seconds_leave(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=1000)
    with opened(path, clock) as store:
        assert store.admit_now(KEY, limits).allowed
        store.settle(KEY, limits, "a", 600)  # second 0
        clock.move(10)
        second = store.admit_now(KEY, limits)
        assert second.allowed and second.rates is not None
        assert (second.rates.tokens_remaining, second.rates.tokens_reset) == (400, 50.0)
        assert second.rates.requests_limit is None
        store.settle(KEY, limits, "b", 500)  # second 10: 1100 in the window

        clock.move(5)
        refused = store.admit_now(KEY, limits)
        assert (refused.exceeded, refused.retry_after) == ("tpm", 45.0)  # second 0 leaves
        assert refused.rates is not None
        assert (refused.rates.tokens_remaining, refused.rates.tokens_reset) == (0, 55.0)

        clock.set("2026-03-14T12:00:59.500")
        assert store.admit_now(KEY, limits).retry_after == 0.5
        clock.set("2026-03-14T12:01:00")
        reopened = store.admit_now(KEY, limits)
        assert reopened.allowed and remaining(reopened) == (None, 500)


def test_tpm_retry_after_waits_for_enough_seconds_to_leave(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=500)
    with opened(path, clock) as store:
        for tokens in (600, 500, 300):  # seconds 0, 10 and 20
            store.settle(KEY, limits, "x", tokens)
            clock.move(10)
        refused = store.admit_now(KEY, limits)  # at 30 s: 1400 in the window
        # second 0 leaving still leaves 800; after second 10 too, 300
        assert (refused.exceeded, refused.retry_after) == ("tpm", 40.0)
        clock.move(39.9)
        assert store.admit_now(KEY, limits).exceeded == "tpm"
        clock.move(0.1)
        assert remaining(store.admit_now(KEY, limits)) == (None, 200)

        clock.move(100)  # a quiet minute: the budget is whole again
        admission = store.admit_now(KEY, limits)
        assert admission.allowed and admission.rates is not None
        assert (admission.rates.tokens_remaining, admission.rates.tokens_reset) == (500, 0.0)


@pytest.mark.parametrize(
    ("start", "next_month", "month_seconds"),
    [
        ("2026-01-31T23:59:58", "2026-02-01T00:00:00", 28 * 86400),
        ("2026-12-31T23:59:58", "2027-01-01T00:00:00", 31 * 86400),
    ],
)
def test_monthly_requests_reset_at_the_utc_month_start(
    path: Path, start: str, next_month: str, month_seconds: int
) -> None:
    clock = Clock(start)
    limits = Limits(monthly_requests=3)
    with opened(path, clock) as store:
        admissions = admit_all(store, limits, 3)
        assert all(a.allowed for a in admissions)
        rates = [a.rates for a in admissions]
        assert [r.requests_remaining for r in rates if r] == [2, 1, 0]
        assert {r.requests_reset for r in rates if r} == {2.0}
        assert {r.tokens_limit for r in rates if r} == {None}
        refused = store.admit_now(KEY, limits)
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "monthly_requests",
            2.0,
        )

        clock.move(1.5)
        assert store.admit_now(KEY, limits).retry_after == 0.5
        clock.set(next_month)
        admitted = store.admit_now(KEY, limits)
        assert admitted.allowed and admitted.rates is not None
        assert admitted.rates.requests_remaining == 2
        assert admitted.rates.requests_reset == float(month_seconds)


def test_the_limit_furthest_off_is_the_one_reported(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    with opened(path, clock) as store:
        limits = Limits(rpm=1, daily_tokens=10)
        assert store.admit_now(KEY, limits).allowed
        store.settle(KEY, limits, "a", 10)
        refused = store.admit_now(KEY, limits)  # rpm frees in 60 s, tokens at midnight
        assert (refused.exceeded, refused.retry_after) == ("daily_tokens", 12 * 3600.0)
        assert remaining(refused) == (0, 0)

        limits = Limits(rpm=1, tpm=10)
        assert store.admit_now("b", limits).allowed  # at 0 s
        clock.move(20)
        store.settle("b", limits, "b1", 10)  # at 20 s
        clock.move(10)
        refused = store.admit_now("b", limits)  # rpm frees in 30 s, the tokens in 50 s
        assert (refused.exceeded, refused.retry_after) == ("tpm", 50.0)
        clock.move(25)
        refused = store.admit_now("b", limits)
        assert (refused.exceeded, refused.retry_after) == ("tpm", 25.0)

        clock.set("2026-03-31T23:59:30")
        limits = Limits(rpm=1, concurrency=1, monthly_requests=1)
        assert store.admit_now("c", limits).allowed
        clock.move(10)  # concurrency 1 s, the month 20 s, rpm 50 s
        refused = store.admit_now("c", limits)
        assert (refused.exceeded, refused.retry_after) == ("rpm", 50.0)
        clock.set("2026-03-31T23:00:00")
        assert store.admit_now("d", limits).allowed
        refused = store.admit_now("d", limits)  # the month is an hour off
        assert (refused.exceeded, refused.retry_after) == ("monthly_requests", 3600.0)
        store.settle("d", limits, "d1", 0)
        clock.move(60)  # rpm is free; concurrency too; the month is not
        assert store.admit_now("d", limits).exceeded == "monthly_requests"


def test_keys_are_counted_apart(path: Path) -> None:
    limits = Limits(rpm=1, concurrency=1, tpm=100, daily_tokens=100, monthly_requests=5)
    with opened(path) as store:
        assert store.admit_now("a", limits).allowed
        assert store.admit_now("b", limits).allowed
        assert not store.admit_now("a", limits).allowed
        store.settle("a", limits, "3", 100)
        refused = store.admit_now("b", limits)
        assert refused.exceeded == "rpm" and remaining(refused) == (0, 100)
        refused = store.admit_now("a", limits)
        assert remaining(refused) == (0, 0)
        assert store.admit_now("c", limits).allowed


# --- no limits, restarts and other files --------------------------------------------------


def test_a_key_without_limits_never_touches_the_file(path: Path) -> None:
    with opened(path) as store:
        before = head(path)
        other = os.open(path, os.O_RDWR)  # another open file: its flock excludes the store
        fcntl.flock(other, fcntl.LOCK_EX)
        answers: list[object] = []

        def without_limits() -> None:
            answers.append(store.admit_now(KEY, NO_LIMITS))
            answers.append(asyncio.run(awaited(store.admit(KEY, NO_LIMITS, "a"))))
            store.settle(KEY, NO_LIMITS, "a", 100)
            store.settle(KEY, Limits(rpm=5, monthly_requests=5), "a", 100)  # nothing to settle

        def with_limits() -> None:
            answers.append(store.admit_now(KEY, Limits(rpm=5)))

        free, limited = (
            threading.Thread(target=without_limits),
            threading.Thread(target=with_limits),
        )
        try:
            free.start()
            free.join(10)
            assert not free.is_alive()  # done while the file is locked
            assert answers == [ADMITTED, ADMITTED] and answers[0] is ADMITTED
            limited.start()
            limited.join(0.5)
            assert limited.is_alive()  # a limited key waits for the lock
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
            os.close(other)
            limited.join(10)
        assert not limited.is_alive()
        admission = answers[-1]
        assert isinstance(admission, Admission) and admission.allowed
        assert before != head(path)  # the limited key made its cell


def test_counters_survive_a_restart(path: Path) -> None:
    clock = Clock("2026-03-14T12:00:00")
    minute = Limits(rpm=3, tpm=1000)
    month = Limits(monthly_requests=5, daily_tokens=1000)
    with opened(path, clock) as store:
        admit_all(store, minute, 2, key="a")
        admit_all(store, month, 2, key="b")
        store.settle("a", minute, "1", 300)
        store.settle("b", month, "2", 400)
    clock.move(5)
    with opened(path, clock) as store:  # a new server on the same state dir
        assert remaining(store.admit_now("a", minute)) == (0, 700)
        assert store.admit_now("a", minute).exceeded == "rpm"
        assert remaining(store.admit_now("b", month)) == (2, 600)
    with opened(path, clock) as first, opened(path, clock) as second:
        assert remaining(first.admit_now("b", month)) == (1, 600)
        assert remaining(second.admit_now("b", month)) == (0, 600)
        assert first.admit_now("b", month).exceeded == "monthly_requests"


def _fresh_size(directory: Path) -> int:
    directory.mkdir()
    with opened(directory / FILE_NAME):
        pass
    return (directory / FILE_NAME).stat().st_size


@pytest.mark.parametrize("damage", ["magic", "short", "long", "empty", "text"])
def test_a_file_of_another_format_is_started_afresh(
    tmp_path: Path, path: Path, damage: str
) -> None:
    size = _fresh_size(tmp_path / "fresh")
    limits = Limits(rpm=3, monthly_requests=5)
    with opened(path) as store:
        admit_all(store, limits, 3)
        assert store.admit_now(KEY, limits).exceeded == "rpm"
    if damage == "magic":
        with path.open("r+b") as file:
            file.write(b"RLIMITS0")  # another version's file of the same size
    elif damage == "short":
        os.truncate(path, size // 2)
    elif damage == "long":
        os.truncate(path, size + 4096)
    elif damage == "empty":
        os.truncate(path, 0)
    else:
        path.write_bytes(MAGIC + b" not a limit store\n")
    with opened(path) as store:
        assert path.stat().st_size == size
        assert head(path)[: len(MAGIC)] == MAGIC
        admitted = store.admit_now(KEY, limits)
        assert admitted.allowed and remaining(admitted) == (2, None)
        assert remaining(store.admit_now(KEY, Limits(monthly_requests=5))) == (3, None)


def test_slots_under_this_pid_that_no_store_here_claimed_are_a_predecessors(
    tmp_path: Path,
) -> None:
    """A restart can give a worker the pid its crashed predecessor had (containers do):
    the predecessor's slots must not count as this process's forever."""
    path = tmp_path / "limits.bin"
    limits = Limits(concurrency=2)
    before = EmbeddedLimits(path)
    assert before.admit_now("k", limits).allowed
    assert before.admit_now("k", limits).allowed
    assert not before.admit_now("k", limits).allowed  # both slots held, never settled
    before.close()
    embedded._CLAIMED.clear()  # what a new process with the same pid starts from
    after = EmbeddedLimits(path)
    assert after.admit_now("k", limits).allowed
    assert after.admit_now("k", limits).allowed
    assert not after.admit_now("k", limits).allowed
    after.close()


def test_ends_noted_on_the_event_loop_count_in_the_keys_next_admission(path: Path) -> None:
    """On the event loop a settlement is only noted; the key's next admission counts it
    in its own pass (its slot free, its tokens charged) before deciding."""
    limits = Limits(concurrency=1, tpm=1000, daily_tokens=5000)

    async def scenario() -> None:
        with opened(path) as store:
            first = await store.admit(KEY, limits, "a")
            assert first.allowed
            store.settle(KEY, limits, "a", 300)  # noted, not counted yet
            assert store._settling  # the admission below is what counts it
            second = await store.admit(KEY, limits, "b")
            assert second.allowed and remaining(second) == (None, 700)
            store.settle(KEY, limits, "b", 200)
            store.settle("other", Limits(concurrency=1), "x", 0)  # another key's, counted too
            third = await store.admit(KEY, limits, "c")
            assert third.allowed and remaining(third) == (None, 500)
            assert not (await store.admit(KEY, limits, "d")).allowed  # "c" holds the slot
            assert (await store.admit("other", Limits(concurrency=1), "y")).allowed

    asyncio.run(scenario())


def _obey(path: str, commands: Any, answers: Any) -> None:
    """A process with its own store on the file, doing what it is told: "admit" (puts
    whether it was admitted), "settle", "quit"."""
    store = EmbeddedLimits(Path(path))
    limits = Limits(concurrency=2)
    while (command := commands.get(timeout=30)) != "quit":
        if command == "admit":
            answers.put(store.admit_now(KEY, limits).allowed)
        else:
            store.settle(KEY, limits, "x", 0)  # off the event loop: counted at once
            answers.put(True)
    store.close()


def test_a_live_process_that_holds_no_slot_keeps_its_place(path: Path) -> None:
    """A holder at 0 belongs to a live process that may take a slot again: another
    process must not take its place, or one of them would stop being counted."""
    context = multiprocessing.get_context("spawn")
    processes = {}
    for name in "ACB":
        commands, answers = context.Queue(), context.Queue()
        process = context.Process(target=_obey, args=(str(path), commands, answers))
        process.start()
        processes[name] = (process, commands, answers)
    workers = [process for process, _, _ in processes.values()]

    def tell(name: str, command: str) -> object:
        _, commands, answers = processes[name]
        commands.put(command)
        return collect(answers, workers)

    try:
        assert tell("A", "admit") is True
        assert tell("A", "settle") is True  # A's place now says (A, 0)
        assert tell("C", "admit") is True  # C in flight: must not take A's place
        assert tell("A", "admit") is True  # A and C in flight: the limit of 2
        assert tell("B", "admit") is False
        assert tell("A", "settle") is True
        assert tell("B", "admit") is True  # C and B
        assert tell("A", "admit") is False
    finally:
        for _, commands, _ in processes.values():
            commands.put("quit")
        _stop(workers)
