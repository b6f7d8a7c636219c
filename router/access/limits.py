"""The limit store interface: one admission per request before it is sent, one
settlement after its last byte. Two stores implement it, `embedded` (a shared memory
file: exact across every worker of the host) and `redis_limits` (Lua: exact across
servers); `guarded` puts the local one behind Redis for when Redis is away, and
`leases` puts each behind leases, so a busy key far from its limits is admitted without
asking the store each time.

Counting, the same in every store:
* rpm: requests admitted in the last 60 s (a sliding window, exact);
* concurrency: admitted requests not settled yet;
* monthly_requests: requests admitted since the UTC month began;
* tpm and daily_tokens: tokens (input + output) the upstream reported, charged at
  settlement. A request is refused while the budget is already spent; requests admitted
  together may each finish over it, since their tokens are not known in advance."""

from __future__ import annotations

import calendar
import time
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from router.access.keys import Limits
from router.protocols import ir


@dataclass(slots=True)  # not frozen: made on every admission, and frozen costs
class Admission:
    allowed: bool
    exceeded: str | None = None  # the limit that refused it ("rpm", ...)
    retry_after: float | None = None  # seconds until it could be admitted
    rates: ir.RateLimits | None = None  # for the protocol's rate-limit headers
    granted: int = 1  # admissions counted: more than 1 for a lease (see leases)
    mark: float = 0.0  # for a lease, when it was granted (the store's time; 0: unknown)
    # a lease's rate-limit headers as the last protocol that asked writes them: every
    # request admitted from it shows the same
    shown: tuple[object, dict[str, str]] | None = None


ADMITTED = Admission(True)


class Ready:
    """An admission decided already, awaited like one under way."""

    __slots__ = ("admission",)

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def __await__(self) -> Generator[Any, None, Admission]:
        return self.admission
        yield  # a generator that returns at once


class LimitStore(Protocol):
    def admit(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        """Count the request against `key`'s limits, or refuse it (nothing counted).
        The admission is under way when this returns (a remote store has sent it), so
        the caller can do other work before awaiting the answer."""
        ...

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        """The admitted request `request_id` ended having used `tokens`: free its
        concurrency slot and charge its tokens. Never blocks the event loop."""
        ...

    def close(self) -> None: ...


class LeasingStore(LimitStore, Protocol):
    """A store that can count several admissions at once, for `leases.Leasing`."""

    def grant(
        self, key: str, limits: Limits, lease_id: str, want: int, peak: int
    ) -> Awaitable[Admission]:
        """Admit like `admit`, counting up to `want` admissions at once while the key is
        far from its limits (see SPREAD): the answer's `granted` says how many. They are
        the members `lease_id:0` .. `lease_id:<granted - 1>`, each settled as a request
        of that id. `peak` is the most tokens a request of the key has used lately (0:
        unknown), for how many a token budget allows."""
        ...

    def give_back(
        self, key: str, limits: Limits, lease: Admission, lease_id: str, used: int
    ) -> None:
        """The admissions of a lease from `used` on were never used: uncount them."""
        ...


SPREAD = 64  # a lease takes at most this share of what a limit has left (1/SPREAD)


def grantable(want: int, *left: int | None, peak: int = 0, tokens_left: int | None = None) -> int:
    """How many admissions of `want` a lease may count: each limit's `left` (None: not
    limited) shared SPREAD ways, and a token budget by `peak` tokens a request (unknown:
    1). At least 1: the caller has admitted one already."""
    granted = want
    for remaining in left:
        if remaining is not None and remaining // SPREAD < granted:
            granted = remaining // SPREAD
    if tokens_left is not None:
        allowed = tokens_left // (peak * SPREAD) if peak > 0 else 1
        if allowed < granted:
            granted = allowed
    return granted if granted > 1 else 1


class Calendar:
    """The UTC day and month of a time, worked out once a day: as numbers (days since
    the epoch, months since year 0) and as names (`2026-03-14`, `2026-03`)."""

    __slots__ = ("day", "day_end", "day_name", "day_start", "month", "month_end", "month_name")

    def __init__(self) -> None:
        self.day_start = self.day_end = self.month_end = 0.0
        self.day = self.month = 0
        self.day_name = self.month_name = ""

    def at(self, now: float) -> Calendar:
        if not self.day_start <= now < self.day_end:
            self.day = int(now // 86400)
            self.day_start = self.day * 86400.0
            self.day_end = self.day_start + 86400.0
            moment = time.gmtime(self.day_start)
            self.day_name = time.strftime("%Y-%m-%d", moment)
            self.month_name = time.strftime("%Y-%m", moment)
            self.month = moment.tm_year * 12 + moment.tm_mon - 1
            year, month = divmod(self.month + 1, 12)
            self.month_end = float(calendar.timegm((year, month + 1, 1, 0, 0, 0)))
        return self
