"""Leases (router/access/leases.py) on both real stores: a busy key far from its limits
is admitted from admissions counted in advance; near a limit it is counted one by one;
what a lease did not use is given back; each leased request settles its own slot."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.access import leases
from router.access.embedded import _RECORD, FILE_NAME, EmbeddedLimits
from router.access.guarded import GuardedLimits
from router.access.keys import Limits
from router.access.leases import Leasing
from router.access.limits import SPREAD, Admission, grantable
from router.access.redis_limits import PREFIX, RedisLimits
from tests.gateway import free_port
from tests.redis_server import RedisServer
from tests.test_embedded_limits import _stop, collect
from tests.test_redis_limits import _ReplyDropper

KEY = "team-a"
FAR = Limits(rpm=64_000, concurrency=64_000, monthly_requests=10_000_000)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


class Counting:
    """A store's grants, counted (the store itself does the work)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.grants: list[int] = []  # admissions granted, per grant that admitted

        self.admits = 0  # admissions asked of the store one by one
        self.given_back: list[int] = []  # unused admissions, per lease given back
        self.closes = True  # close the store when the Leasing closes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def admit(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        self.admits += 1
        return self.store.admit(key, limits, request_id)

    def grant(
        self, key: str, limits: Limits, lease_id: str, want: int, peak: int
    ) -> Awaitable[Admission]:
        answer = self.store.grant(key, limits, lease_id, want, peak)

        async def counted() -> Admission:
            admission = await answer
            if admission.allowed:
                self.grants.append(admission.granted)
            return admission

        return counted()

    def give_back(
        self, key: str, limits: Limits, lease: Admission, lease_id: str, used: int
    ) -> None:
        self.store.give_back(key, limits, lease, lease_id, used)
        self.given_back.append(lease.granted - used)

    def close(self) -> None:
        if self.closes:
            self.store.close()


async def admit_many(store: Leasing, limits: Limits, count: int, prefix: str = "r") -> list[str]:
    """`count` admissions at once; the ids admitted."""
    ids = [f"{prefix}{i}" for i in range(count)]
    answers = await asyncio.gather(*(store.admit(KEY, limits, rid) for rid in ids))
    return [rid for rid, answer in zip(ids, answers, strict=True) if answer.allowed]


async def after_the_term() -> None:
    await asyncio.sleep(leases.TERM + 0.1)


def test_grantable_shares_what_each_limit_has_left() -> None:
    assert grantable(500, 64_000) == 500  # far: all that is wanted
    assert grantable(500, 6_400) == 100  # 1/SPREAD of what is left
    assert grantable(500, 6_400, 640) == 10  # the tightest limit
    assert grantable(500, 100) == 1  # near: one, the exact path
    assert grantable(500, None, tokens_left=1_000_000) == 1  # tokens a request unknown
    assert grantable(500, None, peak=100, tokens_left=SPREAD * 100 * 7) == 7


# --- the embedded store ------------------------------------------------------------------


def record(store: EmbeddedLimits, key: str = KEY) -> tuple[int, ...]:
    """(in flight, tokens, through, newest, month, requests, day, spent) of `key`."""
    return _RECORD.unpack_from(store._map, store._record(key))


def counts_in(path: Path) -> tuple[int, ...]:
    """The record of KEY in the file at `path`, read by a store of its own."""
    store = EmbeddedLimits(path)
    try:
        return record(store)
    finally:
        store.close()


def test_a_busy_key_far_from_its_limits_is_admitted_from_leases(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Counting(EmbeddedLimits(tmp_path / FILE_NAME))
        leased = Leasing(store)  # type: ignore[arg-type]
        admitted = [
            rid
            for rid in [f"r{i}" for i in range(200)]
            if (await leased.admit(KEY, FAR, rid)).allowed
        ]
        assert len(admitted) == 200
        assert store.grants and max(store.grants) > 1
        assert len(store.grants) + store.admits < 40  # most from a lease, not the file
        # every lease counted in full while held; in flight: the 200 and what is unused
        flight, *_, requests, _, _ = record(store.store)
        assert flight == requests >= 200
        for rid in admitted[:150]:
            leased.settle(KEY, FAR, rid, 0)
        await after_the_term()  # the lease ran out: its unused admissions given back
        store.store.flush()
        flight, *_, requests, _, _ = record(store.store)
        assert (flight, requests) == (50, 200)
        probe = store.store.admit_now(KEY, FAR)  # the rpm ring gave its unused back too
        assert probe.rates is not None and probe.rates.requests_remaining == 64_000 - 201
        leased.close()

    run(scenario)


def test_near_a_limit_admissions_are_counted_one_by_one_and_exact(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Counting(EmbeddedLimits(tmp_path / FILE_NAME))
        leased = Leasing(store)  # type: ignore[arg-type]
        limits = Limits(rpm=60, concurrency=1000)
        admitted = await admit_many(leased, limits, 100)
        assert len(admitted) == 60
        assert store.grants and all(granted == 1 for granted in store.grants)  # 60 / 64
        refused = await leased.admit(KEY, limits, "late")
        assert (refused.allowed, refused.exceeded) == (False, "rpm")
        leased.close()

    run(scenario)


def test_a_lease_shrinks_as_the_limit_nears(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Counting(EmbeddedLimits(tmp_path / FILE_NAME))
        leased = Leasing(store)  # type: ignore[arg-type]
        limits = Limits(rpm=6_400)
        admitted = [
            rid
            for rid in [f"r{i}" for i in range(7_000)]
            if (await leased.admit(KEY, limits, rid)).allowed
        ]
        assert len(admitted) == 6_400  # one process: nothing wasted, nothing over
        assert max(store.grants) <= 6_400 // SPREAD
        assert store.grants[-1] == 1
        leased.close()

    run(scenario)


def test_token_budgets_lease_only_once_a_requests_tokens_are_known(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Counting(EmbeddedLimits(tmp_path / FILE_NAME))
        clock = [time.monotonic()]
        leased = Leasing(store, clock=lambda: clock[0])  # type: ignore[arg-type]
        limits = Limits(daily_tokens=10_000_000)
        for rid in ("a", "b", "c", "d"):
            assert (await leased.admit(KEY, limits, rid)).allowed
        assert store.grants == [1]  # unknown: one at a time (and no more asked this term)
        leased.settle(KEY, limits, "a", 100)  # 100 a request: 10^7 / (100 * 64) = 1562
        clock[0] += leases.TERM
        for rid in ("e", "f", "g", "h", "i"):
            assert (await leased.admit(KEY, limits, rid)).allowed
        assert max(store.grants) > 1
        leased.close()

    run(scenario)


def _lease_in_process(
    path: str, limits: dict[str, int], count: int, barrier: Any, results: Any
) -> None:
    async def admit() -> int:
        leased = Leasing(EmbeddedLimits(Path(path)))
        barrier.wait(30)
        allowed = 0
        for i in range(count):
            if (await leased.admit(KEY, Limits(**limits), f"{os.getpid()}-{i}")).allowed:
                allowed += 1
        leased.close()
        return allowed

    results.put(asyncio.run(admit()))


def test_leases_of_several_processes_never_admit_over_the_limit(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes, rpm = 4, 6_400
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(
            target=_lease_in_process,
            args=(str(tmp_path / FILE_NAME), {"rpm": rpm}, 2_500, barrier, results),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        admitted = sum(collect(results, workers) for _ in workers)
    finally:
        _stop(workers)
    assert admitted <= rpm  # never over
    # under only by leases' unused entries left behind another process's (a lease is
    # at most 1/SPREAD of what was left; a few per process)
    assert admitted >= rpm // 2


# --- Redis ---------------------------------------------------------------------------------


async def card(store: RedisLimits, name: str) -> int:
    return int(await store.client.zcard(f"{PREFIX}{{{KEY}}}:{name}"))


async def month_count(store: RedisLimits) -> int:
    names = [name async for name in store.client.scan_iter(f"{PREFIX}{{{KEY}}}:month:*")]
    assert len(names) == 1
    return int(await store.client.get(names[0]))


def test_redis_leases_count_members_each_settled_and_the_unused_given_back(
    redis: RedisServer,
) -> None:
    async def scenario() -> None:
        remote = RedisLimits(redis.url)
        store = Counting(remote)
        leased = Leasing(store)  # type: ignore[arg-type]
        await leased.admit(KEY, FAR, "first")  # a key seen once: no lease yet
        admitted = ["first"] + await admit_many(leased, FAR, 99)
        assert len(admitted) == 100
        assert store.grants and max(store.grants) > 1
        # the others waited for the grant and took from it
        assert len(store.grants) + store.admits < 20
        # each lease's members counted in full while held
        assert await card(remote, "rpm") == await card(remote, "inflight") >= 100
        for rid in admitted[:60]:
            leased.settle(KEY, FAR, rid, 0)  # each frees its own member
        await after_the_term()
        await remote.drain()
        assert await card(remote, "rpm") == 100  # the unused given back
        assert await card(remote, "inflight") == 40
        assert await month_count(remote) == 100
        for rid in admitted[60:]:
            leased.settle(KEY, FAR, rid, 0)
        await remote.drain()
        assert await card(remote, "inflight") == 0
        leased.close()
        await remote.aclose()

    run(scenario)


def test_redis_near_a_limit_is_exact_with_leasing(redis: RedisServer) -> None:
    async def scenario() -> None:
        remote = RedisLimits(redis.url)
        store = Counting(remote)
        leased = Leasing(store)  # type: ignore[arg-type]
        limits = Limits(rpm=30, concurrency=100)
        await leased.admit(KEY, limits, "first")
        admitted = ["first"] + await admit_many(leased, limits, 99)
        assert len(admitted) == 30
        assert all(granted == 1 for granted in store.grants)
        await after_the_term()
        await remote.drain()
        assert await card(remote, "rpm") == 30
        leased.close()
        await remote.aclose()

    run(scenario)


def test_a_lease_outlives_the_request_that_asked_for_it(redis: RedisServer) -> None:
    """The request whose admission asked for the lease goes away while it is granted:
    the others still take from the lease, and its unused part is given back."""

    async def scenario() -> None:
        remote = RedisLimits(redis.url)
        leased = Leasing(remote)
        await leased.admit(KEY, FAR, "first")
        asker = asyncio.ensure_future(leased.admit(KEY, FAR, "asker"))  # type: ignore[arg-type]
        others = [asyncio.ensure_future(leased.admit(KEY, FAR, f"o{i}")) for i in range(5)]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        asker.cancel()
        assert all(answer.allowed for answer in await asyncio.gather(*others))
        for i in range(5):
            leased.settle(KEY, FAR, f"o{i}", 0)
        leased.settle(KEY, FAR, "first", 0)
        await after_the_term()
        await remote.drain()
        assert await card(remote, "inflight") == 0  # the asker's admission never taken
        assert await card(remote, "rpm") == 6
        leased.close()
        await remote.aclose()

    run(scenario)


def test_the_lease_ends_when_the_keys_limits_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        embedded = EmbeddedLimits(tmp_path / FILE_NAME)
        leased = Leasing(embedded)
        for i in range(10):
            assert (await leased.admit(KEY, FAR, f"r{i}")).allowed
        raised = Limits(rpm=64_000, concurrency=64_000, monthly_requests=20_000_000)
        assert (await leased.admit(KEY, raised, "after")).allowed  # the old lease given back
        embedded.flush()
        flight, *_, requests, _, _ = record(embedded)
        assert (flight, requests) == (11, 11)
        leased.close()

    run(scenario)


def test_a_lease_is_used_for_one_term_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        embedded = EmbeddedLimits(tmp_path / FILE_NAME)
        clock = [time.monotonic()]
        leased = Leasing(embedded, clock=lambda: clock[0])
        for i in range(10):
            assert (await leased.admit(KEY, FAR, f"r{i}")).allowed
        held = record(embedded)[0]
        assert held > 10  # a lease
        clock[0] += leases.TERM  # its term is over: the next admission asks the store again
        later = await leased.admit(KEY, FAR, "later")
        assert later.allowed and later.granted > 1  # a new lease, as many as the last term saw
        flight = record(embedded)[0]
        assert flight == 10 + later.granted  # the old lease's unused part given back
        leased.close()

    run(scenario)


def test_a_lease_out_of_its_term_is_given_back_before_the_next_is_taken(tmp_path: Path) -> None:
    """Requests waiting for a grant that find its lease out of its term ask for the
    next one; the old one's unused part is given back first, not lost."""

    async def scenario() -> None:
        embedded = EmbeddedLimits(tmp_path / FILE_NAME)
        clock = [time.monotonic()]
        leased = Leasing(embedded, clock=lambda: clock[0])
        assert (await leased.admit(KEY, FAR, "r1")).allowed
        second = leased.admit(KEY, FAR, "r2")  # asks for a lease
        third = leased.admit(KEY, FAR, "r3")  # waits for it
        assert (await second).allowed
        clock[0] += leases.TERM
        assert (await third).allowed  # the lease is out of its term: the next one
        for rid in ("r1", "r2", "r3"):
            leased.settle(KEY, FAR, rid, 0)
        leased.close()  # gives back the last lease's unused part, and counts the ends
        flight, *_, requests, _, _ = counts_in(tmp_path / FILE_NAME)
        assert (flight, requests) == (0, 3)

    run(scenario)


def test_a_redis_give_back_rides_on_the_keys_next_admission(redis: RedisServer) -> None:
    async def scenario() -> None:
        remote = RedisLimits(redis.url)
        store = Counting(remote)
        clock = [time.monotonic()]
        leased = Leasing(store, clock=lambda: clock[0])  # type: ignore[arg-type]
        await leased.admit(KEY, FAR, "first")
        admitted = ["first"] + await admit_many(leased, FAR, 9)
        assert len(admitted) == 10
        assert not store.given_back and not remote._returning
        clock[0] += leases.TERM  # the lease is out of its term, partly unused
        later = leased.admit(KEY, FAR, "later")  # gives it back, and asks for the next
        assert store.given_back and store.given_back[0] > 0  # noted ...
        assert not remote._returning  # ... and gone out already, in that grant's script
        assert (await later).allowed
        for rid in [*admitted, "later"]:
            leased.settle(KEY, FAR, rid, 0)
        leased.close()
        await remote.drain()
        assert await card(remote, "inflight") == 0
        assert await card(remote, "rpm") == 11
        assert await month_count(remote) == 11
        await remote.aclose()

    run(scenario)


def test_a_grant_whose_reply_was_lost_leaves_no_member_behind(redis: RedisServer) -> None:
    """A grant sent again after its reply was lost is known by its members: answered
    with what the first run counted, counting nothing twice (else the second run,
    against counts holding the first's, could grant fewer and leave the rest behind)."""
    limits = Limits(rpm=64 * 15, concurrency=64 * 15, monthly_requests=64 * 15)

    async def scenario() -> None:
        proxy = _ReplyDropper(redis.port)
        remote = RedisLimits(await proxy.start())
        await remote.ping()
        proxy.drop_next = True  # the grant runs in Redis; its answer is lost
        lease = await remote.grant(KEY, limits, "lease-x", 15, 0)
        assert lease.allowed and lease.granted == 15  # the first run's, not 945 / 64
        assert await card(remote, "rpm") == await card(remote, "inflight") == 15
        assert await month_count(remote) == 15  # counted once
        remote.give_back(KEY, limits, lease, "lease-x", 0)
        await remote.drain()
        assert await card(remote, "rpm") == 0
        assert await card(remote, "inflight") == 0
        assert await month_count(remote) == 0
        await remote.aclose()
        proxy.close()

    run(scenario)


def test_the_guard_falls_back_to_the_local_leases_when_redis_is_away(tmp_path: Path) -> None:
    async def scenario() -> None:
        embedded = EmbeddedLimits(tmp_path / FILE_NAME)
        local = Leasing(embedded)
        remote = RedisLimits(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
        guard = GuardedLimits(Leasing(remote), local, fail_closed=False)
        ids = [f"r{i}" for i in range(50)]
        answers = [await guard.admit(KEY, FAR, rid) for rid in ids]
        assert all(answer.allowed for answer in answers)
        assert not guard.remote_up and guard.fallbacks == 50
        assert record(embedded)[0] >= 49  # counted locally, in leases after the first
        for rid in ids:
            guard.settle(KEY, FAR, rid, 0)
        guard.close()
        local.close()
        flight, *_, requests, _, _ = counts_in(tmp_path / FILE_NAME)
        assert (flight, requests) == (0, 50)

    run(scenario)


def test_closing_while_a_grant_is_on_its_way(redis: RedisServer) -> None:
    """A Leasing closed (its Redis URL changed) while requests wait for a grant: the
    grant is given back, not installed, and the waiters are counted one by one; no
    new lease is asked for."""

    async def scenario() -> None:
        remote = RedisLimits(redis.url)
        store = Counting(remote)
        store.closes = False  # the requests still on their way use it
        leased = Leasing(store)  # type: ignore[arg-type]
        await leased.admit(KEY, FAR, "first")
        waiting = [leased.admit(KEY, FAR, f"w{i}") for i in range(5)]  # the first asks
        leased.close()
        answers = await asyncio.gather(*waiting)
        assert all(answer.allowed for answer in answers)
        assert len(store.grants) == 1  # the one on its way; none after the close
        assert store.admits == 1 + 5  # "first", then each waiter on its own
        await remote.drain()
        assert await card(remote, "inflight") == 6  # the grant's members all given back
        for rid in ["first"] + [f"w{i}" for i in range(5)]:
            leased.settle(KEY, FAR, rid, 0)
        await remote.drain()
        assert await card(remote, "inflight") == 0
        await remote.aclose()

    run(scenario)


def test_a_leases_headers_are_each_protocols_own(tmp_path: Path) -> None:
    """Requests of one lease share its rate-limit headers as the last protocol that
    asked writes them: an Anthropic request after an OpenAI one gets Anthropic's."""
    from router.access.gate import Admitting
    from router.access.keys import ClientKey
    from router.protocols import anthropic, openai_chat
    from router.records.outcome import Trace

    async def scenario() -> None:
        leased = Leasing(EmbeddedLimits(tmp_path / FILE_NAME))
        key = ClientKey(KEY, "0" * 64, limits=FAR)
        for i in range(64):  # a busy key: the last asks for a lease of 64, 63 left
            assert (await leased.admit(KEY, FAR, f"warm{i}")).allowed
        shown = []
        for protocol in (openai_chat, openai_chat, anthropic, anthropic, openai_chat):
            trace = Trace(protocol.NAME, "/")
            admitting = Admitting(leased, key, trace, protocol.rate_limit_headers)
            assert admitting.answered  # from the lease, at once
            shown.append(admitting.headers)
        assert shown[0] is shown[1] and shown[2] is shown[3]  # built once, then shared
        assert "x-ratelimit-limit-requests" in shown[0]
        assert "anthropic-ratelimit-requests-limit" in shown[2]
        assert not any(name.startswith("anthropic-") for name in shown[0])
        assert shown[4] == shown[0]  # OpenAI's again after Anthropic's
        leased.close()

    run(scenario)
