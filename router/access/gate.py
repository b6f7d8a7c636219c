"""What the request path asks of access control, in order: whose key this is (401), may
it use this model (403), may it reach these pools (403), is it within its limits (429).
Each refusal is an ir.Error, so the client gets it in its own protocol."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from router.access.embedded import FILE_NAME, EmbeddedLimits
from router.access.keys import ClientKey, Limits, digest
from router.access.leases import Leasing
from router.access.limits import Admission, LimitStore, Ready
from router.protocols import ir

if TYPE_CHECKING:
    from router.access.guarded import GuardedLimits
    from router.compiler.plan import Plan, Route
    from router.records.outcome import Trace

log = logging.getLogger("router.limits")


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the client sent: Bearer, x-api-key, x-goog-api-key or ?key=."""
    authorization = headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or query.get("key")


def identify(
    plan: Plan,
    runtime: Mapping[str, ClientKey],
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> ClientKey | None:
    """The client key presented; 401 unless it is a known, live one. With no client key
    configured anywhere the gateway is open: None."""
    key = known_key(plan, runtime, headers, query)
    if key is not None:
        check_live(key)
    return key


def known_key(
    plan: Plan,
    runtime: Mapping[str, ClientKey],
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> ClientKey | None:
    """The client key presented, live or not; 401 unless it is a known one. None when
    the gateway is open (no client key configured anywhere)."""
    if not plan.auth.keys and not runtime:
        return None
    presented = presented_key(headers, query)
    if presented is None:
        raise ir.Error(401, "authentication", "missing API key")
    hashed = digest(presented)
    key = plan.auth.keys.get(hashed) or runtime.get(hashed)
    if key is None:
        raise ir.Error(401, "authentication", "invalid API key")
    return key


def check_live(key: ClientKey) -> None:
    """401 for a revoked or expired key."""
    if key.revoked:
        raise ir.Error(401, "authentication", f"API key {key.name!r} has been revoked")
    if key.expires is not None and key.expired(time.time()):
        raise ir.Error(401, "authentication", f"API key {key.name!r} has expired")


def check_model(key: ClientKey | None, model: str) -> None:
    if key is not None and not key.may_use_model(model):
        raise ir.Error(
            403, "permission", f"API key {key.name!r} may not use model {model!r}", param="model"
        )


def scoped_route(route: Route, key: ClientKey | None) -> Route:
    """`route` with only the targets `key` may reach; 403 naming the pools when none is
    left. Path prefixes and the override header resolve to one-target routes, so this
    covers them too."""
    if key is None or key.providers is None:
        return route
    allowed = tuple(target for target in route.targets if key.may_use_pool(target.provider))
    if len(allowed) == len(route.targets):
        return route
    if not allowed:
        pools = ", ".join(sorted({target.provider for target in route.targets}))
        raise ir.Error(403, "permission", f"API key {key.name!r} may not use provider {pools}")
    return replace(route, targets=allowed)


def check_pool(key: ClientKey | None, pool: str) -> None:
    if key is not None and not key.may_use_pool(pool):
        raise ir.Error(403, "permission", f"API key {key.name!r} may not use provider {pool}")


class Refused(Exception):
    """Over a limit: the error and the protocol's rate-limit headers."""

    def __init__(self, error: ir.Error, headers: dict[str, str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers = headers


@dataclass(slots=True)
class Ticket:
    """An admitted request of a limited key, settled once when it ends."""

    store: LimitStore
    key: str
    limits: Limits
    request_id: str

    def settle(self, usage: ir.Usage | None) -> None:
        tokens = usage.total_tokens if usage is not None else 0
        self.store.settle(self.key, self.limits, self.request_id, tokens)


class Admitting:
    """A limited key's admission, asked for as soon as the request is read and answered
    before its first upstream call: a remote store's round trip overlaps the request's
    routing and translation. Once admitted, the trace's ticket settles it."""

    __slots__ = ("_answer", "_started", "headers", "headers_for", "key", "store", "trace")

    def __init__(
        self,
        store: LimitStore,
        key: ClientKey,
        trace: Trace,
        headers_for: Callable[[ir.RateLimits], dict[str, str]],
    ) -> None:
        self.store, self.key, self.trace, self.headers_for = store, key, trace, headers_for
        self.headers: dict[str, str] | None = None  # the rate-limit headers, once answered
        self._started = False  # its answer awaited (a store gives back what a cancelled
        # wait took: see abandon)
        self._answer = answer = store.admit(key.name, key.limits, trace.id)
        if isinstance(answer, Ready):  # decided already: taken now (Refused over a limit)
            self.take(answer.admission)

    @property
    def answered(self) -> bool:
        return self.headers is not None

    async def wait(self) -> dict[str, str]:
        """The protocol's rate-limit headers; Refused over a limit."""
        if self.headers is None:
            self._started = True
            self.take(await self._answer)
        return self.headers  # type: ignore[return-value]

    def take(self, admission: Admission) -> None:
        rates, shown = admission.rates, admission.shown
        if rates is None:
            self.headers = {}
        elif shown is not None and shown[0] is self.headers_for:
            self.headers = shown[1]  # a lease's (the reply copies them)
        else:
            self.headers = self.headers_for(rates)
            if admission.granted > 1:
                admission.shown = (self.headers_for, self.headers)
        if not admission.allowed:
            raise Refused(refusal(admission, self.key), self.headers)
        limits = self.key.limits
        if limits.settles:
            self.trace.ticket = Ticket(self.store, self.key.name, limits, self.trace.id)

    def abandon(self) -> None:
        """The request ended before its answer was waited for: settle it once it comes.
        (A wait that was cancelled is the store's to settle: its answer can be awaited
        only once.)"""
        if self.headers is None and not self._started:
            self.headers = {}
            task = asyncio.ensure_future(self._settle_when_answered())
            _ABANDONED.add(task)
            task.add_done_callback(_ABANDONED.discard)

    async def _settle_when_answered(self) -> None:
        try:
            admission = await self._answer
        except Exception:  # the store failed it: nothing was counted here
            return
        if admission.allowed and self.key.limits.settles:
            self.store.settle(self.key.name, self.key.limits, self.trace.id, 0)


_ABANDONED: set[asyncio.Future[None]] = set()  # held until done (the loop holds weakly)


def refusal(admission: Admission, key: ClientKey) -> ir.Error:
    if admission.exceeded == "unavailable":
        return ir.Error(
            503, "unavailable", "the limit store is unavailable", retry_after=admission.retry_after
        )
    return ir.Error(
        429,
        "rate_limit",
        f"API key {key.name!r} is over its {admission.exceeded} limit",
        retry_after=admission.retry_after,
    )


class LimitStores:
    """The limit store of this worker for a Plan: the embedded one, or Redis guarded by
    it when `state.redis` is set. Made on first use; a new Redis URL makes a new one."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._local: Leasing | None = None  # the embedded store, leased
        self._remote: GuardedLimits | None = None
        self._remote_url: str | None = None

    def for_plan(self, plan: Plan) -> LimitStore:
        redis = plan.state.redis
        if redis is None:
            if self._remote is not None:  # the config no longer names a Redis
                self._remote.close()
                self._remote = self._remote_url = None
            return self._local or self.local()
        if self._remote is None or self._remote_url != redis.value:
            self._remote = self._guarded(redis.value, plan.state.fail_closed)
            self._remote_url = redis.value
        return self._remote

    @property
    def guarded(self) -> GuardedLimits | None:
        """The Redis store with its local fallback, while the config names a Redis."""
        return self._remote

    def local(self) -> Leasing:
        """The embedded store behind leases: what serves without Redis, or when it is away."""
        if self._local is None:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._local = Leasing(EmbeddedLimits(self.state_dir / FILE_NAME))
        return self._local

    def _guarded(self, url: str, fail_closed: bool) -> GuardedLimits:
        from router.access.guarded import GuardedLimits
        from router.access.redis_limits import RedisLimits

        if self._remote is not None:
            self._remote.close()
        return GuardedLimits(Leasing(RedisLimits(url)), self.local(), fail_closed)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        if self._local is not None:
            self._local.close()  # and the embedded store
