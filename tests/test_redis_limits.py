"""The Redis limit store against a real redis-server, and the guard that falls back to
the local (embedded) store when Redis is away."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.access.embedded import EmbeddedLimits
from router.access.gate import Admitting, Refused
from router.access.guarded import UNAVAILABLE, GuardedLimits
from router.access.keys import NO_LIMITS, ClientKey, Limits
from router.access.limits import ADMITTED, Admission
from router.access.redis_limits import RedisLimits
from router.compiler.compile import compile_config
from router.records.outcome import Trace
from router.server.translate import Inbound, prepare
from tests.conftest import write_config
from tests.gateway import free_port
from tests.redis_server import RedisServer

KEY = "team-a"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


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


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def admit_all(store: Any, limits: Limits, *ids: str) -> list[Admission]:
    return [await store.admit(KEY, limits, request_id) for request_id in ids]


async def settle(store: RedisLimits, limits: Limits, request_id: str, tokens: int) -> None:
    store.settle(KEY, limits, request_id, tokens)
    await store.drain()


# --- exact across processes -------------------------------------------------------------


def _admit_in_process(
    url: str,
    limits: dict[str, int],
    count: int,
    barrier: Any,
    results: Any,
) -> None:
    """A separate OS process with its own event loop and RedisLimits: `count`
    admissions at once, after every process is ready; puts the admitted ids."""

    async def admit() -> list[str]:
        store = RedisLimits(url)
        await store.ping()
        ids = [f"{os.getpid()}-{i}" for i in range(count)]
        barrier.wait(30)
        admissions = await asyncio.gather(
            *(store.admit(KEY, Limits(**limits), request_id) for request_id in ids)
        )
        await store.aclose()
        return [request_id for request_id, a in zip(ids, admissions, strict=True) if a.allowed]

    results.put(asyncio.run(admit()))


def admit_from_processes(
    url: str, limits: dict[str, int], processes: int = 4, each: int = 25
) -> list[str]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_admit_in_process, args=(url, limits, each, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        admitted = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    assert all(worker.exitcode == 0 for worker in workers)
    return [request_id for ids in admitted for request_id in ids]


def test_rpm_is_exact_across_processes(redis: RedisServer) -> None:
    admitted = admit_from_processes(redis.url, {"rpm": 30})
    assert len(admitted) == 30

    async def after() -> None:
        store = RedisLimits(redis.url)
        refused = await store.admit(KEY, Limits(rpm=30), "late")
        assert not refused.allowed and refused.exceeded == "rpm"
        assert refused.rates is not None and refused.rates.requests_remaining == 0
        await store.aclose()

    run(after)


def test_concurrency_is_exact_across_processes_and_settle_frees_a_slot(
    redis: RedisServer,
) -> None:
    limits = Limits(concurrency=4)
    admitted = admit_from_processes(redis.url, {"concurrency": 4})
    assert len(admitted) == 4

    async def after() -> None:
        store = RedisLimits(redis.url)
        refused = await store.admit(KEY, limits, "fifth")
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "concurrency",
            1.0,
        )
        await settle(store, limits, admitted[0], 0)  # settled by another process's id
        assert (await store.admit(KEY, limits, "fifth")).allowed
        assert not (await store.admit(KEY, limits, "sixth")).allowed
        await store.aclose()

    run(after)


# --- each limit, its Retry-After and its rates -------------------------------------------


def test_rpm_window_retry_after_and_rates(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(rpm=3)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        remaining = []
        for request_id in ("a", "b", "c"):
            admission = await store.admit(KEY, limits, request_id)
            assert admission.allowed and admission.rates is not None
            remaining.append(admission.rates.requests_remaining)
            assert admission.rates.requests_limit == 3
            assert admission.rates.requests_reset == 60.0  # all three back in 60 s
            assert admission.rates.tokens_limit is None
            clock.move(10)
        assert remaining == [2, 1, 0]

        refused = await store.admit(KEY, limits, "d")  # at 12:00:30
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (False, "rpm", 30.0)
        assert refused.rates is not None
        assert (refused.rates.requests_remaining, refused.rates.requests_reset) == (0, 50.0)

        clock.move(29.5)
        assert (await store.admit(KEY, limits, "e")).retry_after == 0.5
        clock.move(0.5)  # "a" leaves the window
        admitted = await store.admit(KEY, limits, "f")
        assert admitted.allowed and admitted.rates is not None
        assert admitted.rates.requests_remaining == 0
        refused = await store.admit(KEY, limits, "g")
        assert (refused.exceeded, refused.retry_after) == ("rpm", 10.0)  # "b" is next out
        await store.aclose()

    run(scenario)


def test_a_refusal_counts_nothing(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(rpm=2, concurrency=1, monthly_requests=10)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        assert (await store.admit(KEY, limits, "a")).allowed
        refused = await store.admit(KEY, limits, "b")
        assert (refused.allowed, refused.exceeded) == (False, "concurrency")
        await settle(store, limits, "a", 0)
        admitted = await store.admit(KEY, limits, "c")  # "b" took no rpm slot
        assert admitted.allowed and admitted.rates is not None
        assert admitted.rates.requests_remaining == 0  # rpm's, not the month's
        month = await store.client.get(f"router:limits:{{{KEY}}}:month:2026-03")
        assert month == b"2"
        await store.aclose()

    run(scenario)


def test_concurrency_slots_of_a_lost_server_expire_with_their_lease(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(concurrency=1)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock, lease=600)
        assert (await store.admit(KEY, limits, "never-settled")).allowed
        clock.move(599)
        assert not (await store.admit(KEY, limits, "b")).allowed
        clock.move(1)
        assert (await store.admit(KEY, limits, "c")).allowed
        await store.aclose()

    run(scenario)


def test_daily_tokens_are_refused_once_spent_and_reopen_at_utc_midnight(
    redis: RedisServer,
) -> None:
    clock = Clock("2026-03-14T23:59:00")
    limits = Limits(daily_tokens=1000)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        first = await store.admit(KEY, limits, "a")
        assert first.allowed and first.rates is not None
        assert (first.rates.tokens_limit, first.rates.tokens_remaining) == (1000, 1000)
        assert first.rates.tokens_reset == 60.0
        assert first.rates.requests_limit is None
        await settle(store, limits, "a", 600)
        second = await store.admit(KEY, limits, "b")
        assert second.allowed and second.rates is not None
        assert second.rates.tokens_remaining == 400
        await settle(store, limits, "b", 500)  # may finish over the budget

        clock.move(30)
        refused = await store.admit(KEY, limits, "c")
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "daily_tokens",
            30.0,
        )
        assert refused.rates is not None and refused.rates.tokens_remaining == 0

        clock.set("2026-03-15T00:00:00")
        reopened = await store.admit(KEY, limits, "d")
        assert reopened.allowed and reopened.rates is not None
        assert (reopened.rates.tokens_remaining, reopened.rates.tokens_reset) == (1000, 86400.0)
        ttl = await store.client.pttl(f"router:limits:{{{KEY}}}:day:2026-03-14")
        assert 0 < ttl <= (60 + 86400) * 1000  # gone a day after its day
        await store.aclose()

    run(scenario)


def test_tpm_is_refused_once_spent_and_reopens_as_old_seconds_leave(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=1000)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        assert (await store.admit(KEY, limits, "a")).allowed
        await settle(store, limits, "a", 600)  # second 0
        clock.move(10)
        second = await store.admit(KEY, limits, "b")
        assert second.allowed and second.rates is not None
        assert (second.rates.tokens_remaining, second.rates.tokens_reset) == (400, 50.0)
        await settle(store, limits, "b", 500)  # second 10: 1100 in the window

        clock.move(5)
        refused = await store.admit(KEY, limits, "c")
        assert (refused.exceeded, refused.retry_after) == ("tpm", 45.0)  # second 0 leaves
        assert refused.rates is not None
        assert (refused.rates.tokens_remaining, refused.rates.tokens_reset) == (0, 55.0)

        clock.set("2026-03-14T12:00:59.500")
        assert (await store.admit(KEY, limits, "d")).retry_after == 0.5
        clock.set("2026-03-14T12:01:00")
        reopened = await store.admit(KEY, limits, "e")
        assert reopened.allowed and reopened.rates is not None
        assert reopened.rates.tokens_remaining == 500
        await store.aclose()

    run(scenario)


def test_tpm_retry_after_waits_for_enough_seconds_to_leave(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=500)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        for tokens in (600, 500, 300):  # seconds 0, 10 and 20
            store.settle(KEY, limits, "x", tokens)
            await store.drain()
            clock.move(10)
        refused = await store.admit(KEY, limits, "a")  # at 30 s: 1400 in the window
        # second 0 leaving still leaves 800; after second 10 too, 300
        assert (refused.exceeded, refused.retry_after) == ("tpm", 40.0)

        clock.move(100)  # a quiet minute: the budget is whole again
        admission = await store.admit(KEY, limits, "b")
        assert admission.allowed and admission.rates is not None
        assert (admission.rates.tokens_remaining, admission.rates.tokens_reset) == (500, 0.0)
        await store.aclose()

    run(scenario)


@pytest.mark.parametrize(
    ("start", "month", "next_month", "month_seconds"),
    [
        ("2026-01-31T23:59:58", "2026-01", "2026-02-01T00:00:00", 28 * 86400),
        ("2026-12-31T23:59:58", "2026-12", "2027-01-01T00:00:00", 31 * 86400),
    ],
)
def test_monthly_requests_reset_at_the_utc_month_start(
    redis: RedisServer, start: str, month: str, next_month: str, month_seconds: int
) -> None:
    clock = Clock(start)
    limits = Limits(monthly_requests=3)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        admissions = await admit_all(store, limits, "a", "b", "c")
        assert all(a.allowed for a in admissions)
        rates = [a.rates for a in admissions]
        assert [r.requests_remaining for r in rates if r] == [2, 1, 0]
        assert {r.requests_reset for r in rates if r} == {2.0}
        refused = await store.admit(KEY, limits, "d")
        assert (refused.allowed, refused.exceeded, refused.retry_after) == (
            False,
            "monthly_requests",
            2.0,
        )
        ttl = await store.client.pttl(f"router:limits:{{{KEY}}}:month:{month}")
        assert 2000 < ttl <= 2000 + 86400 * 1000

        clock.set(next_month)
        admitted = await store.admit(KEY, limits, "e")
        assert admitted.allowed and admitted.rates is not None
        assert admitted.rates.requests_remaining == 2
        assert admitted.rates.requests_reset == float(month_seconds)
        await store.aclose()

    run(scenario)


def test_the_limit_furthest_off_is_the_one_reported(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(rpm=1, daily_tokens=10)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        assert (await store.admit(KEY, limits, "a")).allowed
        await settle(store, limits, "a", 10)
        refused = await store.admit(KEY, limits, "b")  # rpm frees in 60 s, tokens at midnight
        assert (refused.exceeded, refused.retry_after) == ("daily_tokens", 12 * 3600.0)
        assert refused.rates is not None
        assert (refused.rates.requests_remaining, refused.rates.tokens_remaining) == (0, 0)
        await store.aclose()

    run(scenario)


def test_keys_are_counted_apart_under_one_hash_tag(redis: RedisServer) -> None:
    limits = Limits(rpm=1, concurrency=1, tpm=100, daily_tokens=100, monthly_requests=5)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        assert (await store.admit("a", limits, "1")).allowed
        assert (await store.admit("b", limits, "2")).allowed
        assert not (await store.admit("a", limits, "3")).allowed
        store.settle("a", limits, "3", 5)  # "1" stays in flight
        await store.drain()
        found = await store.client.keys("router:limits:*")
        names = sorted(name.decode() for name in found)
        today = time.gmtime()
        day, month = time.strftime("%Y-%m-%d", today), time.strftime("%Y-%m", today)
        assert [name for name in names if name.startswith("router:limits:{a}:")] == sorted(
            f"router:limits:{{a}}:{suffix}"
            for suffix in ("rpm", "inflight", "tpm", f"day:{day}", f"month:{month}")
        )
        assert all([await store.client.pttl(name) > 0 for name in names])
        await store.aclose()

    run(scenario)


def test_a_key_without_limits_never_reaches_redis() -> None:
    async def scenario() -> None:
        store = RedisLimits(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
        assert await store.admit(KEY, NO_LIMITS, "a") is ADMITTED
        store.settle(KEY, NO_LIMITS, "a", 100)
        store.settle(KEY, Limits(rpm=5), "a", 100)  # nothing to settle for rpm
        await store.drain()
        await store.aclose()

    run(scenario)


def test_more_requests_at_once_than_connections_wait_for_one(redis: RedisServer) -> None:
    limits = Limits(rpm=1000, concurrency=1000)

    async def scenario() -> None:
        store = RedisLimits(redis.url, connections=8)
        ids = [f"a{i}" for i in range(300)]
        admissions = await asyncio.gather(*(store.admit(KEY, limits, i) for i in ids))
        assert all(a.allowed for a in admissions)
        for request_id in ids:
            store.settle(KEY, limits, request_id, 0)
        await store.drain()
        assert await store.client.zcard(f"router:limits:{{{KEY}}}:inflight") == 0
        assert await store.client.zcard(f"router:limits:{{{KEY}}}:rpm") == 300
        await store.aclose()

    run(scenario)


def test_a_redis_restart_reloads_the_script_and_the_connections(redis: RedisServer) -> None:
    limits = Limits(rpm=100)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        await asyncio.gather(*(store.admit(KEY, limits, f"a{i}") for i in range(5)))
        redis.kill()
        redis.start()  # no scripts, and every pooled connection broken
        admissions = await asyncio.gather(*(store.admit(KEY, limits, f"b{i}") for i in range(5)))
        assert all(a.allowed for a in admissions)
        await store.aclose()

    run(scenario)


# --- the guard ---------------------------------------------------------------------------


def guard_of(
    redis: RedisServer, tmp_path: Path, fail_closed: bool = False, timeout: float = 0.25
) -> GuardedLimits:
    return GuardedLimits(
        RedisLimits(redis.url, timeout=timeout),
        EmbeddedLimits(tmp_path / "limits.bin"),
        fail_closed,
    )


def finish(guard: GuardedLimits) -> None:
    guard.close()
    guard.local.close()  # the guard's caller owns it


async def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_guard_counts_on_redis_while_it_answers(redis: RedisServer, tmp_path: Path) -> None:
    limits = Limits(rpm=2)

    async def scenario() -> None:
        guard = guard_of(redis, tmp_path)
        assert await guard.admit(KEY, NO_LIMITS, "free") is ADMITTED
        assert [a.allowed for a in await admit_all(guard, limits, "a", "b", "c")] == [
            True,
            True,
            False,
        ]
        assert await redis_count(redis, KEY) == 2
        assert (guard.remote_up, guard.fallbacks) == (True, 0)
        finish(guard)

    run(scenario)


async def redis_count(redis: RedisServer, key: str) -> int:
    store = RedisLimits(redis.url)
    count = int(await store.client.zcard(f"router:limits:{{{key}}}:rpm"))
    await store.aclose()
    return count


def test_redis_killed_the_guard_falls_back_then_returns(
    redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(rpm=1000, concurrency=1)

    async def scenario() -> None:
        guard = guard_of(redis, tmp_path)
        assert (await guard.admit(KEY, limits, "on-redis")).allowed
        redis.kill()
        started = time.monotonic()
        admissions = await admit_all(guard, limits, "local-1", "local-2")
        assert time.monotonic() - started < 1.0
        # the local store counts now: one slot, taken by local-1
        assert [a.allowed for a in admissions] == [True, False]
        assert admissions[1].exceeded == "concurrency"
        assert (guard.remote_up, guard.fallbacks) == (False, 2)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "limit store unavailable" in warnings[0].getMessage()

        guard.settle(KEY, limits, "on-redis", 0)  # admitted by Redis: not the local slot
        assert not (await guard.admit(KEY, limits, "local-3")).allowed
        guard.settle(KEY, limits, "local-1", 0)  # admitted locally: frees the local slot
        assert (await guard.admit(KEY, limits, "local-4")).allowed
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

        await asyncio.sleep(2)  # retries at 0.5 s, 1.5 s: both fail
        redis.start()
        waited = await wait_for(lambda: guard.remote_up, timeout=5)
        assert waited < 3.0  # the next retry, 2 s after the last one
        # counted on Redis again (a new, empty one: it kept nothing)
        assert (await guard.admit(KEY, limits, "on-redis-again")).allowed
        assert not (await guard.admit(KEY, limits, "refused-by-redis")).allowed
        assert await redis_count(redis, KEY) == 1
        assert guard.fallbacks == 4
        guard.settle(KEY, limits, "local-4", 0)  # still the local store's to settle
        assert (await guard.local.admit(KEY, limits, "local-5")).allowed
        finish(guard)

    with caplog.at_level(logging.INFO, logger="router.access"):
        run(scenario)
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_redis_killed_with_fail_closed_the_guard_refuses(
    redis: RedisServer, tmp_path: Path
) -> None:
    limits = Limits(rpm=1000)

    async def scenario() -> None:
        guard = guard_of(redis, tmp_path, fail_closed=True)
        assert (await guard.admit(KEY, limits, "a")).allowed
        redis.kill()
        assert await guard.admit(KEY, limits, "b") == UNAVAILABLE
        assert UNAVAILABLE.exceeded == "unavailable" and UNAVAILABLE.retry_after == 1
        assert await guard.admit(KEY, NO_LIMITS, "free") is ADMITTED  # no limits: no store
        assert (guard.remote_up, guard.fallbacks) == (False, 1)
        redis.start()
        await wait_for(lambda: guard.remote_up, timeout=3)
        assert (await guard.admit(KEY, limits, "c")).allowed
        finish(guard)

    run(scenario)


def test_a_hung_redis_costs_a_request_at_most_its_timeout(
    redis: RedisServer, tmp_path: Path
) -> None:
    limits = Limits(rpm=1000)

    async def scenario() -> None:
        guard = guard_of(redis, tmp_path, timeout=1.0)
        assert (await guard.admit(KEY, limits, "a")).allowed
        redis.pause()
        try:
            started = time.monotonic()
            slow = await asyncio.gather(*(guard.admit(KEY, limits, f"b{i}") for i in range(20)))
            assert 1.0 <= time.monotonic() - started < 2.0  # one timeout, all at once
            assert all(a.allowed for a in slow) and not guard.remote_up
            started = time.monotonic()
            assert (await guard.admit(KEY, limits, "c")).allowed  # no wait on Redis now
            assert time.monotonic() - started < 0.5
        finally:
            redis.resume()
        await wait_for(lambda: guard.remote_up, timeout=3)
        finish(guard)

    run(scenario)


# --- metrics -------------------------------------------------------------------------


class _Health:
    def __init__(self, remote_up: bool, fallbacks: int) -> None:
        self.remote_up = remote_up
        self.fallbacks = fallbacks


def _tick_in_process(directory: str, remote_up: bool, fallbacks: tuple[int, ...]) -> None:
    """A worker (its own process, as under `router serve`) ticking its gauges."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from router.records.metrics import WorkerGauges

    health = _Health(remote_up, 0)
    gauges = WorkerGauges(lambda: None, lambda: 0, lambda: health)
    for count in fallbacks:
        health.fallbacks = count
        gauges.tick()


def test_the_limit_store_metrics_add_up_over_the_workers(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_tick_in_process, args=(str(tmp_path), True, (0, 0))),
        context.Process(target=_tick_in_process, args=(str(tmp_path), False, (2, 5))),
        context.Process(target=_tick_in_process, args=(str(tmp_path), True, (1, 1))),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    assert 'router_limits_remote_up{store="redis"} 0.0' in text  # the least of the workers
    assert 'router_limits_fallback_total{store="redis"} 6.0' in text


# --- settlements riding on admissions, and admissions under way ---------------------------


async def in_flight(store: RedisLimits) -> int:
    return int(await store.client.zcard(f"router:limits:{{{KEY}}}:inflight"))


async def freed(store: RedisLimits, seconds: float = 1.0) -> bool:
    """Whether no request of KEY is in flight within `seconds` (settlements noted
    meanwhile are sent)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while await in_flight(store):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
        await store.drain()
    return True


def test_a_settlement_goes_out_by_itself_when_no_admission_comes(redis: RedisServer) -> None:
    limits = Limits(concurrency=1)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        assert (await store.admit(KEY, limits, "a")).allowed
        store.settle(KEY, limits, "a", 0)  # noted: it waits a moment for an admission
        for _ in range(100):
            if await in_flight(store) == 0:
                break
            await asyncio.sleep(0.01)
        assert await in_flight(store) == 0  # sent within moments, with no drain asked
        await store.aclose()

    run(scenario)


def test_settlements_of_a_key_ride_on_its_next_admission(redis: RedisServer) -> None:
    limits = Limits(concurrency=2, tpm=1000)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        assert (await store.admit(KEY, limits, "a")).allowed
        assert (await store.admit(KEY, limits, "b")).allowed
        store.settle(KEY, limits, "a", 300)
        store.settle(KEY, limits, "b", 200)
        # the next admission carries both: their slots are free and tokens counted in it
        third = await store.admit(KEY, limits, "c")
        assert third.allowed and third.rates is not None
        assert third.rates.tokens_remaining == 500
        assert await in_flight(store) == 1  # only "c"
        assert (await store.admit(KEY, limits, "d")).allowed
        assert not (await store.admit(KEY, limits, "e")).allowed
        await store.aclose()

    run(scenario)


def test_an_admission_abandoned_before_its_answer_frees_its_slot_once_answered(
    redis: RedisServer,
) -> None:
    """A client that goes away while its key's admission is on its way to Redis: the
    admission is still counted there, so it is settled when the answer comes."""
    limits = Limits(concurrency=1)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        await store.ping()
        key = ClientKey(KEY, "0" * 64, limits=limits)
        trace = Trace("openai-chat", "/v1/chat/completions")
        admitting = Admitting(store, key, trace, lambda rates: {})
        assert not admitting.answered  # sent, not answered yet
        admitting.abandon()
        assert await freed(store)
        assert (await store.admit(KEY, limits, "next")).allowed
        await store.aclose()

    run(scenario)


def test_a_refused_admission_under_way_raises_with_the_protocols_headers(
    redis: RedisServer,
) -> None:
    limits = Limits(rpm=1)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        key = ClientKey(KEY, "0" * 64, limits=limits)
        first = Admitting(store, key, Trace("openai-chat", "/v1"), lambda rates: {"n": "1"})
        assert await first.wait() == {"n": "1"} and first.answered
        second = Admitting(store, key, Trace("openai-chat", "/v1"), lambda rates: {"n": "2"})
        with pytest.raises(Refused) as refused:
            await second.wait()
        assert refused.value.error.status == 429 and refused.value.headers == {"n": "2"}
        assert refused.value.error.retry_after is not None
        await store.aclose()

    run(scenario)


def test_the_database_named_in_the_urls_query_is_the_one_counted_in(redis: RedisServer) -> None:
    """`?db=3`, as redis-py reads it, holds for the request path's own channel too."""
    limits = Limits(rpm=10)

    async def scenario() -> None:
        store = RedisLimits(f"redis://127.0.0.1:{redis.port}/?db=3")
        assert (await store.admit(KEY, limits, "a")).allowed
        default = RedisLimits(redis.url)  # db 0
        name = f"router:limits:{{{KEY}}}:rpm"
        assert await store.client.zcard(name) == 1
        assert await default.client.zcard(name) == 0
        await store.aclose()
        await default.aclose()

    run(scenario)


def test_a_wait_cancelled_with_its_admission_on_the_way_frees_the_slot(
    redis: RedisServer,
) -> None:
    """The client goes away while the request waits for its admission: Redis counts
    the admission anyway, so its slot is given back after it."""
    limits = Limits(concurrency=1)

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        await store.ping()
        key = ClientKey(KEY, "0" * 64, limits=limits)
        admitting = Admitting(store, key, Trace("openai-chat", "/v1"), lambda rates: {})
        waiting = asyncio.ensure_future(admitting.wait())
        await asyncio.sleep(0)  # waiting on the reply now
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        admitting.abandon()  # as the endpoint does: a no-op here, the store has it
        assert await freed(store)
        assert (await store.admit(KEY, limits, "next")).allowed
        await store.aclose()

    run(scenario)


def test_the_tpm_wait_counts_the_tokens_settled_in_the_same_script(redis: RedisServer) -> None:
    clock = Clock("2026-03-14T12:00:00")
    limits = Limits(tpm=100)

    async def scenario() -> None:
        store = RedisLimits(redis.url, now=clock)
        assert (await store.admit(KEY, limits, "a")).allowed
        await settle(store, limits, "a", 30)  # second 0
        clock.move(30)
        assert (await store.admit(KEY, limits, "b")).allowed
        store.settle(KEY, limits, "b", 200)  # second 30, riding on the next admission
        refused = await store.admit(KEY, limits, "c")
        # second 0 leaving leaves 200, still over: second 30 must leave, at 90
        assert (refused.exceeded, refused.retry_after) == ("tpm", 60.0)
        await store.aclose()

    run(scenario)


class _ReplyDropper:
    """A TCP proxy to Redis that, when told, cuts the connection instead of passing on
    the next reply (the command ran, its answer was lost)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.drop_next = False
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def up() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)

        async def down() -> None:
            while data := await redis_r.read(65536):
                if self.drop_next:
                    self.drop_next = False
                    client_w.transport.abort()
                    redis_w.close()
                    return
                client_w.write(data)

        await asyncio.gather(up(), down(), return_exceptions=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def test_a_lost_reply_does_not_count_the_settlements_riding_on_it_twice(
    redis: RedisServer,
) -> None:
    limits = Limits(daily_tokens=10_000, concurrency=10)

    async def scenario() -> None:
        proxy = _ReplyDropper(redis.port)
        store = RedisLimits(await proxy.start())
        assert (await store.admit(KEY, limits, "a")).allowed
        store.settle(KEY, limits, "a", 200)  # noted: rides on the next admission
        proxy.drop_next = True  # that admission runs in Redis; its answer is lost
        again = await store.admit(KEY, limits, "b")  # sent once more, on a new connection
        assert again.allowed and again.rates is not None
        day = store._calendar.day_name
        spent = await store.client.get(f"router:limits:{{{KEY}}}:day:{day}")
        assert spent == b"200"  # counted once
        await store.drain()
        assert await in_flight(store) == 1  # "a" freed; "b" (sent twice, one member)
        await store.aclose()
        proxy.close()

    run(scenario)


def test_no_image_is_fetched_for_a_request_over_its_keys_limit(
    redis: RedisServer, tmp_path: Path
) -> None:
    """An upstream that takes only inline images makes the gateway fetch image URLs;
    a request whose admission is still on its way waits for it first, so a request
    over its key's limit fetches nothing."""
    config = write_config(
        tmp_path / "config",
        {
            "providers.yaml": """
                providers:
                  gem:
                    type: gemini-api
                    instances: [{ id: g1, base_url: "http://127.0.0.1:9", api_key: k }]
            """,
            "routes.yaml": "default: gem\n",
        },
    )
    plan, diagnostics = compile_config(config, env={})
    assert plan is not None, diagnostics
    limits = Limits(rpm=1)
    image = {"type": "image_url", "image_url": {"url": "http://10.255.255.1/cat.png"}}
    body = {"model": "gemini-x", "messages": [{"role": "user", "content": [image]}]}

    async def scenario() -> None:
        store = RedisLimits(redis.url)
        key = ClientKey(KEY, "0" * 64, limits=limits)
        first = Admitting(store, key, Trace("openai-chat", "/v1"), lambda rates: {})
        assert await first.wait() == {}
        over = Admitting(store, key, Trace("openai-chat", "/v1"), lambda rates: {})
        inbound = Inbound("openai-chat", body, {}, {}, "gemini-x", False, key=key)
        inbound.admitting = over
        target = plan.default_route.targets[0]
        with pytest.raises(Refused):  # not the fetch's own refusal of a private address
            await prepare(inbound, target, plan.providers["gem"], body, None)
        await store.aclose()

    run(scenario)
