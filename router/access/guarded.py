"""The shared limit store (Redis) with the local one behind it, for when Redis is away.

While the remote store answers, every admission is counted there. When it fails
(refused connection, timeout, any error) the request is counted on the local store
instead (exact across this host's workers, no longer across servers), a warning is
logged (at most one a minute) and a fallback counted; later requests stay on the local
store while reconnection is tried in the background, 0.5 s after the failure and then
at doubling intervals up to 10 s, one attempt at a time. With `fail_closed` a request
that cannot be counted remotely is refused instead. Redis never makes a request fail.

A request is settled by the store that admitted it. Counts made on one store during an
outage do not carry over to the other. `close()` closes the remote store only: the local
one is shared with the configuration without Redis and stays its owner's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from router.access.keys import Limits
from router.access.limits import ADMITTED, Admission, LimitStore, Ready

log = logging.getLogger("router.access")

UNAVAILABLE = Admission(False, exceeded="unavailable", retry_after=1)


class RemoteLimitStore(LimitStore, Protocol):
    async def ping(self) -> None:
        """Return when the store answers, raise otherwise."""
        ...


class GuardedLimits:
    first_backoff = 0.5
    max_backoff = 10.0
    warn_every = 60.0

    def __init__(self, remote: RemoteLimitStore, local: LimitStore, fail_closed: bool) -> None:
        self.remote = remote
        self.local = local
        self.fail_closed = fail_closed
        self.remote_up = True  # the gauge router_limits_remote_up
        self.fallbacks = 0  # admissions decided without the remote store
        self._local_ids: set[str] = set()  # admitted by the local store, not settled yet
        self._backoff = self.first_backoff
        self._retry: asyncio.TimerHandle | None = None
        self._probe: asyncio.Task[None] | None = None
        self._warned_at = -self.warn_every
        self._closed = False

    def admit(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        if not limits:
            return Ready(ADMITTED)
        if self.remote_up:
            try:
                sent = self.remote.admit(key, limits, request_id)
            except Exception as exc:
                return self._instead(exc, key, limits, request_id)
            if isinstance(sent, Ready):  # decided already (from a lease): nothing can fail
                return sent
            return self._remote_answer(sent, key, limits, request_id)
        return self._local(key, limits, request_id)

    async def _remote_answer(
        self, sent: Awaitable[Admission], key: str, limits: Limits, request_id: str
    ) -> Admission:
        try:
            return await sent
        except Exception as exc:
            return await self._instead(exc, key, limits, request_id)

    def _instead(
        self, exc: Exception, key: str, limits: Limits, request_id: str
    ) -> Awaitable[Admission]:
        """The remote store failed this admission: the local store decides it."""
        self._remote_failed(exc)
        # Redis may have counted it before the answer was lost: free that slot (sent
        # once it is reachable) rather than hold it for a lease
        self.remote.settle(key, limits, request_id, 0)
        return self._local(key, limits, request_id)

    def _local(self, key: str, limits: Limits, request_id: str) -> Awaitable[Admission]:
        self.fallbacks += 1
        if self.fail_closed:
            return Ready(UNAVAILABLE)
        return self._local_answer(self.local.admit(key, limits, request_id), request_id)

    async def _local_answer(self, sent: Awaitable[Admission], request_id: str) -> Admission:
        admission = await sent
        if admission.allowed:
            self._local_ids.add(request_id)
        return admission

    def settle(self, key: str, limits: Limits, request_id: str, tokens: int) -> None:
        if not limits:
            return
        if self._local_ids and request_id in self._local_ids:
            self._local_ids.discard(request_id)
            self.local.settle(key, limits, request_id, tokens)
        else:
            self.remote.settle(key, limits, request_id, tokens)

    def _remote_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self.warn_every:
            self._warned_at = now
            log.warning(
                "limit store unavailable (%s: %s): %s",
                type(exc).__name__,
                exc,
                "refusing limited keys (fail_closed)"
                if self.fail_closed
                else "counting limits on this server only",
            )
        if self.remote_up:
            self.remote_up = False
            self._backoff = self.first_backoff
            self._retry_later()

    def _retry_later(self) -> None:
        if self._closed or self._retry is not None or self._probe is not None:
            return  # one attempt at a time
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(self._backoff, self._start_probe)

    def _start_probe(self) -> None:
        self._retry = None
        if not self._closed:
            self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.remote.ping()
        except Exception:
            self._backoff = min(self._backoff * 2, self.max_backoff)
            self._probe = None
            self._retry_later()
            return
        self._probe = None
        if not self.remote_up:
            self.remote_up = True
            log.info("limit store reachable again: limits are shared across servers")

    def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        self.remote.close()  # the local store is the caller's: it serves without Redis too
