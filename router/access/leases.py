"""Leases: admissions counted in advance, so a busy key far from its limits is admitted
without asking the store each time.

A worker that saw a key admitted more than once in the last TERM asks the store for
as many admissions at once as it saw (a lease); the store counts up to that many in
every limit, as it would count so many requests, but only while the key is far from its
limits (each limit gives a lease at most 1/SPREAD of what it has left, a token budget by
the most tokens a request used lately), else one. The worker then admits from the lease
with no round trip and no file lock until it is used up or TERM has passed; what it did
not use is given back to the store. Each request of a lease settles as its own member.

What this changes, and what it does not:
* No limit is ever exceeded: a lease is counted before any of its requests is admitted.
* Near a limit a lease is one admission, the exact path (as `rpm: 30` over two servers).
* Far from them, others may be refused for at most TERM while leases hold admissions
  their workers have not used yet; the rate-limit headers count a lease as used.
* The embedded store takes back a lease's unused rpm entries only while nothing was
  counted after them; otherwise they stay for their minute (the key is far from its
  limit, by the rule above).
* Token budgets are checked when a lease is granted, so requests of a lease may start
  up to TERM after the budget was spent elsewhere (their tokens count all the same)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable

from router.access.keys import Limits
from router.access.limits import ADMITTED, Admission, LeasingStore, Ready

TERM = 0.2  # seconds a lease is used for
MOST = 1024  # admissions in one lease


class _Key:
    """What this worker knows of one key: its admissions lately and its lease."""

    __slots__ = (
        "ends",
        "granting",
        "lease",
        "lease_id",
        "limits",
        "peak",
        "seen",
        "since",
        "single_until",
        "timer",
        "used",
        "want",
    )

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.since, self.seen, self.want = now, 0, 0  # admissions this term; the last term's
        self.peak = 0  # the most tokens a settled request used
        self.lease: Admission | None = None
        self.lease_id = ""
        self.used = 0
        self.ends = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.granting: asyncio.Future[Admission] | None = None
        self.single_until = 0.0  # the store granted one: near a limit, no lease till then


class Leasing:
    """A LimitStore that admits from leases of `store` (see the module's docstring)."""

    def __init__(self, store: LeasingStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._keys: dict[str, _Key] = {}
        self._members: dict[str, str] = {}  # request id -> its lease member, until settled
        self._closed = False
        self._lease_ids = map(f"lease-{secrets.token_hex(6)}-{{}}".format, itertools.count())

    def admit(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        if not limits.limited:
            return Ready(ADMITTED)
        now = self.clock()
        state = self._keys.get(key)
        if state is None or state.limits is not limits:
            state = self._track(key, limits, now, state)
        if now - state.since >= TERM:
            state.want = state.seen if now - state.since < 2 * TERM else 0
            state.since, state.seen = now, 0
        state.seen += 1
        if state.lease is not None:
            if state.used < state.lease.granted and now < state.ends:
                return Ready(self._take(state, request_id))
            self._end(key, state)
        if state.granting is not None:
            return self._after_grant(state, state.granting, key, limits, request_id)
        if not self._ask(state, key, limits, now):
            return self.store.admit(key, limits, request_id)
        return self._after_grant(state, state.granting, key, limits, request_id)

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        member = self._members.pop(request_id, request_id) if self._members else request_id
        state = self._keys.get(key)
        if state is not None and tokens > state.peak:
            state.peak = tokens
        self.store.settle(key, limits, member, tokens)

    def close(self) -> None:
        self._closed = True
        for key, state in list(self._keys.items()):
            self._end(key, state)
        self.store.close()

    async def ping(self) -> None:
        await self.store.ping()  # type: ignore[attr-defined]

    # --- leases ------------------------------------------------------------------------

    def _track(self, key: str, limits: Limits, now: float, old: _Key | None) -> _Key:
        if old is not None:  # the key's limits changed: its lease was counted under the old
            self._end(key, old)
        elif len(self._keys) > 10_000:
            self._forget_idle()
        state = self._keys[key] = _Key(limits, now)
        return state

    def _take(self, state: _Key, request_id: str) -> Admission:
        lease = state.lease
        assert lease is not None
        if state.limits.settles:
            self._members[request_id] = f"{state.lease_id}:{state.used}"
        state.used += 1
        return lease

    def _ask(self, state: _Key, key: str, limits: Limits, now: float) -> bool:
        """Ask the store for a lease, unless the key is not busy or near a limit."""
        self._end(key, state)  # the last lease, used up or out of its term
        want = state.want if state.want > state.seen else state.seen
        if want <= 1 or now < state.single_until or self._closed:
            return False
        lease_id = next(self._lease_ids)  # unique: its members are named after it
        want = min(want, MOST)
        answer = self.store.grant(key, limits, lease_id, want, state.peak)  # sent now
        granting = asyncio.ensure_future(self._grant(answer, state, key, limits, lease_id, want))
        granting.add_done_callback(_seen)
        state.granting = granting
        return True

    async def _grant(
        self,
        answer: Awaitable[Admission],
        state: _Key,
        key: str,
        limits: Limits,
        lease_id: str,
        want: int,
    ) -> Admission:
        try:
            lease = await answer
        except BaseException:
            if limits.rpm or limits.concurrency:
                # it may have been counted: uncount what can be told apart (members)
                failed = Admission(True, granted=want)  # every member it may have made
                self.store.give_back(key, limits, failed, lease_id, 0)
            raise
        finally:
            state.granting = None
        if not lease.allowed:
            return lease
        if self._closed:  # none to install it in: back, if the store still takes it
            with contextlib.suppress(Exception):
                self.store.give_back(key, limits, lease, lease_id, 0)
            return lease
        now = self.clock()
        if self._keys.get(key) is not state:  # its limits changed meanwhile: none of it
            self.store.give_back(key, limits, lease, lease_id, 0)  # is taken (_after_grant)
            return lease
        self._end(key, state)  # (none: leases are asked for one at a time)
        state.lease, state.lease_id, state.used, state.ends = lease, lease_id, 0, now + TERM
        if lease.granted == 1:
            state.single_until = now + TERM
        state.timer = asyncio.get_running_loop().call_later(TERM, self._expire, key, state, lease)
        return lease

    async def _after_grant(
        self,
        state: _Key,
        granting: asyncio.Future[Admission] | None,
        key: str,
        limits: Limits,
        request_id: str,
    ) -> Admission:
        """Wait for the lease being granted (a request going away leaves it to the others)
        and admit from it; when others took it all first, from the next one, or from
        the store on our own when there is none to ask for."""
        while granting is not None:
            answer = await asyncio.shield(granting)
            if not answer.allowed:
                return answer
            lease, now = state.lease, self.clock()
            if lease is not None and state.used < lease.granted and now < state.ends:
                return self._take(state, request_id)
            if state.granting is None and (
                self._keys.get(key) is not state or not self._ask(state, key, limits, now)
            ):
                break
            granting = state.granting
        return await self.store.admit(key, limits, request_id)

    def _expire(self, key: str, state: _Key, lease: Admission) -> None:
        if state.lease is lease:
            state.timer = None
            self._end(key, state)

    def _end(self, key: str, state: _Key) -> None:
        """Give back what the key's lease did not use."""
        lease = state.lease
        if lease is None:
            return
        state.lease = None
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.used < lease.granted:
            self.store.give_back(key, state.limits, lease, state.lease_id, state.used)

    def _forget_idle(self) -> None:
        for key in [key for key, state in self._keys.items() if state.lease is None]:
            if self._keys[key].granting is None:
                del self._keys[key]


def _seen(done: asyncio.Future[Admission]) -> None:
    """A grant's failure is its waiters' to handle: none may be left to read it."""
    if not done.cancelled():
        done.exception()
