"""Stages 3-8 for one request: resolve, then try each target of the chain and each healthy
instance of its pool until one answers; translate the answer back.

Failover policy, in one place:
* A retryable failure (connect error, timeout, 408, 429, 5xx, an error event before the
  first content of a stream; or the route's `retry_on` statuses) moves on at once to the
  next healthy instance of the pool, then to the next target of the chain (re-translated
  from the client's request when its protocol differs). `max_attempts` caps the total.
* Any other upstream error (400, 401, 403, 404, 422, ...) goes back to the client at once,
  with its status, in the client's protocol.
* Retry-After: the instance that sent it is skipped by every request until it has passed.
  When no other instance or target is left and it is at most RETRY_AFTER_WAIT_MAX
  seconds, the request waits it out once and tries that instance again; a longer one
  goes back to the client (429 with Retry-After), whose SDK knows how to back off.
* Every response, answer or error, carries x-router-provider / -instance / -attempts
  as far as they are known."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from router.access.gate import scoped_route
from router.compiler.plan import Instance, Plan, Provider, Route, Target
from router.compiler.probe import mapped_body, resolve
from router.pool.health import HEALTH
from router.pool.select import Unconfigured, instances_for, none_available
from router.protocols import ir
from router.providers.base import Call
from router.providers.upstream import AttemptFailed, attempt, upstream_wait
from router.server import respond
from router.server.respond import Reply
from router.server.translate import Inbound, Prepared, prepare

RETRY_AFTER_WAIT_MAX = 2.0  # seconds
# Upstream failures after every attempt, as the client sees them: a 429 stays a 429 so
# the client backs off; other upstream errors become gateway errors.
_EXHAUSTED_STATUS = {429: 429, 503: 503, 504: 504, 408: 504}
_now = time.perf_counter


class Exhausted(Exception):
    """The request ends without an answer: every attempt failed, or one failed in a way
    not worth retrying. `error` is final (its status is what the client gets) and
    `headers` the x-router-* trace."""

    def __init__(
        self, error: ir.Error, attempts: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts
        self.headers = dict(headers or {"x-router-attempts": str(attempts)})


class ClientGone(Exception):
    """The client disconnected while its request was being dispatched."""


@dataclass(slots=True)
class _Waitable:
    """A rate-limited attempt that may be retried once its Retry-After has passed."""

    target: Target
    provider: Provider
    instance: Instance
    prepared: Prepared
    retry_after: float


@dataclass(slots=True)
class _Run:
    """One request's walk over its chain."""

    plan: Plan
    inbound: Inbound
    route: Route
    attempts: int = 0
    provider: str | None = None
    instance: str | None = None
    last_error: ir.Error | None = None
    waitable: _Waitable | None = None
    client_request: ir.Request | None = None

    @property
    def spent(self) -> bool:
        return self.route.max_attempts is not None and self.attempts >= self.route.max_attempts

    def headers(self) -> dict[str, str]:
        headers = {
            "x-router-attempts": str(self.attempts),
            "x-router-generation": self.plan.generation,
        }
        if self.provider is not None:
            headers["x-router-provider"] = self.provider
        if self.instance is not None:
            headers["x-router-instance"] = self.instance
        return headers

    async def walk(self) -> Reply:
        for target in self.route.targets:
            if self.spent:
                break
            provider = self.plan.providers[target.provider]
            self.provider, self.instance = provider.name, None
            prepared = await self._prepare(target, provider)
            instances = instances_for(provider, prepared.model)
            if not instances:
                self.last_error = none_available(provider, prepared.model)
            for instance in instances:
                if self.spent:
                    break
                admitting = self.inbound.admitting
                if admitting is not None and not admitting.answered:
                    await admitting.wait()  # Refused: over a limit, nothing sent
                outcome = await self._try(target, provider, instance, prepared)
                if outcome is not None:
                    return outcome
        outcome = await self._wait_out_rate_limit()
        if outcome is not None:
            return outcome
        raise self._exhausted()

    async def _prepare(self, target: Target, provider: Provider) -> Prepared:
        inbound = self.inbound
        client_body = mapped_body(target.pipeline, inbound)
        unmapped = client_body is inbound.body
        # the ir form parsed for an earlier target is the client's body as sent: only a
        # target whose pipeline leaves that body alone may reuse it
        parsed = self.client_request if unmapped else None
        try:
            prepared = await prepare(inbound, target, provider, client_body, parsed)
        except ir.Error as error:
            raise Exhausted(error, self.attempts, self.headers()) from None
        if prepared.request is not None and unmapped:
            self.client_request = prepared.request
        if (inbound.strict or self.route.strict) and prepared.dropped:
            dropped = ", ".join(sorted(set(prepared.dropped)))
            message = f"strict mode: cannot carry {dropped} to provider {provider.name}"
            raise Exhausted(
                ir.Error(400, "invalid_request", message), self.attempts, self.headers()
            )
        return prepared

    async def _try(
        self, target: Target, provider: Provider, instance: Instance, prepared: Prepared
    ) -> Reply | None:
        self.attempts += 1
        self.provider, self.instance = provider.name, instance.id
        health = HEALTH.of(provider.name, instance.id)
        health.begin(provider.health, time.time())
        started = _now()
        try:
            result = await attempt(
                provider,
                self._call(provider, instance, prepared),
                passthrough=prepared.passthrough,
                retry_on=self.route.retry_on,
            )
            reply = respond.build(self.inbound, provider, prepared, result, health, target.pipeline)
        except AttemptFailed as failure:
            self._note(provider, instance, prepared, started, failure.error)
            health.record_failure(provider.health, failure.error, failure.retryable)
            self._failed(target, provider, instance, prepared, failure)
            return None
        except BaseException:
            health.release()
            raise
        self._note(provider, instance, prepared, started)
        reply.headers.update(self.headers())
        dropped = sorted(set(prepared.dropped))
        if dropped:
            reply.headers["x-router-dropped"] = header_text(",".join(dropped))
        self._answered(prepared, dropped)
        return reply

    def _answered(self, prepared: Prepared, dropped: list[str]) -> None:
        trace = self.inbound.trace
        if trace is not None:
            trace.dropped = tuple(dropped)
            if trace.exchange is not None:
                trace.exchange.upstream = prepared.body

    def _call(self, provider: Provider, instance: Instance, prepared: Prepared) -> Call:
        return Call(
            provider=provider,
            instance=instance,
            model=prepared.model,
            stream=self.inbound.stream,
            request=prepared.request,
            body=prepared.body,
            headers=prepared.headers,
            query=prepared.query,
        )

    def _note(
        self,
        provider: Provider,
        instance: Instance,
        prepared: Prepared,
        started: float,
        error: ir.Error | None = None,
    ) -> None:
        trace = self.inbound.trace
        if trace is not None:
            trace.attempt(
                provider.name, instance.id, provider.protocol, prepared.model, started, error
            )

    def _failed(
        self,
        target: Target,
        provider: Provider,
        instance: Instance,
        prepared: Prepared,
        failure: AttemptFailed,
    ) -> None:
        error = failure.error
        if not failure.retryable:
            raise Exhausted(error, self.attempts, self.headers())
        self.last_error = error
        wait = error.retry_after if error.status == 429 else None
        if wait is not None and (self.waitable is None or wait < self.waitable.retry_after):
            self.waitable = _Waitable(target, provider, instance, prepared, wait)

    async def _wait_out_rate_limit(self) -> Reply | None:
        waitable = self.waitable
        if waitable is None or waitable.retry_after > RETRY_AFTER_WAIT_MAX or self.spent:
            return None
        self.waitable = None
        started = time.perf_counter()
        await asyncio.sleep(waitable.retry_after)  # the upstream's wait, not the gateway's
        upstream_wait().since(started)
        return await self._try(
            waitable.target, waitable.provider, waitable.instance, waitable.prepared
        )

    def _exhausted(self) -> Exhausted:
        if isinstance(self.last_error, Unconfigured) and not self.attempts:
            return Exhausted(self.last_error, 0, self.headers())  # no upstream failed
        error = self.last_error or ir.Error(
            503, "unavailable", "no provider could take the request"
        )
        status = _EXHAUSTED_STATUS.get(error.status, 502)
        final = ir.Error(
            status,
            ir.error_kind_for_status(status),
            f"all upstream attempts failed; last: {error.message}",
            retry_after=error.retry_after,
        )
        return Exhausted(final, self.attempts, self.headers())


async def dispatch(plan: Plan, inbound: Inbound) -> Reply:
    route = scoped_route(resolve(plan, inbound).route, inbound.key)
    if inbound.trace is not None:
        inbound.trace.route = route.name
    return await _Run(plan, inbound, route).walk()


# what a header value can hold as it is: printable ASCII, less the escape character itself
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_text(value: str) -> str:
    """`value` for a response header. Dropped field names are what the client wrote, and
    a control or non-Latin-1 character in one would fail the response after the answer
    was made: such a value is percent-encoded (`tools.%0A`)."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=_HEADER_SAFE)
