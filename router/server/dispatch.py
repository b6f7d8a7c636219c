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
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from router.compiler.plan import Instance, Plan, Provider, Route, Target
from router.pool.health import HealthBook, InstanceHealth
from router.pool.select import candidates, rate_limited_for
from router.protocols import ir, module_for
from router.providers.base import Call, IRAdapter, WireAdapter
from router.providers.registry import adapter_for
from router.server import respond
from router.server.translate import (
    Inbound,
    Prepared,
    mapped_client_body,
    prepare,
    resolve,
    to_ir,
)
from router.server.upstream import (
    Answer,
    AttemptFailed,
    PrimedStream,
    call_ir,
    call_wire,
    upstream_wait,
)

log = logging.getLogger("router.dispatch")

HEALTH = HealthBook()
_DEFAULT_INSTANCE = Instance(id="default")
RETRY_AFTER_WAIT_MAX = 2.0  # seconds
# Upstream failures after every attempt, as the client sees them: a 429 stays a 429 so
# the client backs off; other upstream errors become gateway errors.
_EXHAUSTED_STATUS = {429: 429, 503: 503, 504: 504, 408: 504}
# Upstream rejections that say the instance itself is broken (its key), not the request.
_INSTANCE_FAULTS = frozenset({401, 403})

T = TypeVar("T")
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(slots=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: object = None  # AsyncIterator[bytes] when streaming
    media_type: str = "application/json"


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

    async def walk(self) -> Outcome:
        for target in self.route.targets:
            if self.spent:
                break
            provider = self.plan.providers[target.provider]
            self.provider, self.instance = provider.name, None
            prepared = await self._prepare(target, provider)
            instances = instances_for(provider, prepared.model)
            if not instances:
                self.last_error = _none_available(provider, prepared.model)
            for instance in instances:
                if self.spent:
                    break
                outcome = await self._try(target, provider, instance, prepared)
                if outcome is not None:
                    return outcome
        outcome = await self._wait_out_rate_limit()
        if outcome is not None:
            return outcome
        raise self._exhausted()

    async def _prepare(self, target: Target, provider: Provider) -> Prepared:
        inbound = self.inbound
        client_body = mapped_client_body(inbound, target.pipeline)
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
    ) -> Outcome | None:
        self.attempts += 1
        self.provider, self.instance = provider.name, instance.id
        health = HEALTH.of(provider.name, instance.id)
        health.begin(provider.health, time.time())
        try:
            result = await _attempt(provider, instance, prepared, self.inbound, self.route)
            outcome = respond.build(
                self.inbound, provider, prepared, result, health, target.pipeline
            )
        except AttemptFailed as failure:
            self._failed(target, provider, instance, prepared, health, failure)
            return None
        except BaseException:
            health.release()
            raise
        outcome.headers.update(self.headers())
        if prepared.dropped:
            outcome.headers["x-router-dropped"] = ",".join(sorted(set(prepared.dropped)))
        return outcome

    def _failed(
        self,
        target: Target,
        provider: Provider,
        instance: Instance,
        prepared: Prepared,
        health: InstanceHealth,
        failure: AttemptFailed,
    ) -> None:
        error = failure.error
        log.warning(
            "attempt %d: %s/%s failed: %s", self.attempts, provider.name, instance.id, error
        )
        record_failure(health, provider, failure)
        if not failure.retryable:
            raise Exhausted(error, self.attempts, self.headers())
        self.last_error = error
        wait = error.retry_after if error.status == 429 else None
        if wait is not None and (self.waitable is None or wait < self.waitable.retry_after):
            self.waitable = _Waitable(target, provider, instance, prepared, wait)

    async def _wait_out_rate_limit(self) -> Outcome | None:
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


def _none_available(provider: Provider, model: str) -> ir.Error:
    wait = rate_limited_for(HEALTH, provider, model)
    if wait is not None:
        message = f"provider {provider.name}: every instance is rate-limited"
        return ir.Error(429, "rate_limit", message, retry_after=wait)
    return ir.Error(503, "unavailable", f"provider {provider.name}: no healthy instance")


def record_failure(health: InstanceHealth, provider: Provider, failure: AttemptFailed) -> None:
    """Count a failed attempt against the instance, unless the upstream only rejected
    the request (400, 404, 422...): then the instance is fine and the call is neutral."""
    error = failure.error
    if failure.retryable or error.status in _INSTANCE_FAULTS:
        health.fail(provider.health, error.status, error.message, error.retry_after)
    else:
        health.release()


async def dispatch(plan: Plan, inbound: Inbound) -> Outcome:
    resolution = resolve(plan, inbound)
    return await _Run(plan, inbound, resolution.route).walk()


def instances_for(provider: Provider, model: str) -> list[Instance]:
    if not provider.instances and provider.type == "echo":
        return [_DEFAULT_INSTANCE]
    return candidates(HEALTH, provider, model)


async def _attempt(
    provider: Provider, instance: Instance, prepared: Prepared, inbound: Inbound, route: Route
) -> Answer | PrimedStream:
    call = Call(
        provider=provider,
        instance=instance,
        model=prepared.model,
        stream=inbound.stream,
        request=prepared.request,
        body=prepared.body,
        headers=prepared.headers,
        query=prepared.query,
    )
    return await attempt(provider, call, passthrough=prepared.passthrough, retry_on=route.retry_on)


async def attempt(
    provider: Provider,
    call: Call,
    *,
    passthrough: bool = False,
    retry_on: frozenset[int | str] = frozenset(),
    timeout: float | None = None,
) -> Answer | PrimedStream:
    """One call through the provider's adapter, bounded by its timeouts (or `timeout`)."""
    try:
        adapter = adapter_for(provider)
    except ir.Error as error:
        raise AttemptFailed(error, True) from None
    timeout = timeout or provider.timeout
    if isinstance(adapter, IRAdapter):
        return await call_ir(
            adapter,
            call,
            timeout=timeout,
            first_token_timeout=provider.first_token_timeout,
            retry_on=retry_on,
        )
    assert isinstance(adapter, WireAdapter)
    return await call_wire(
        adapter,
        call,
        module_for(provider.protocol),
        passthrough=passthrough,
        timeout=timeout,
        first_token_timeout=provider.first_token_timeout,
        retry_on=retry_on,
    )


# Fast calls finish before anyone could notice a disconnect: only watch for one after this
# long, so they do not pay for a watcher task.
WATCH_DISCONNECT_AFTER = 0.2  # seconds


class DisconnectWatch:
    """Waits for the ASGI `http.disconnect` and then cancels the request's task."""

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.watcher: asyncio.Future[Mapping[str, Any]] | None = None
        self.gone = False

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self.receive())
        self.watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: asyncio.Future[Mapping[str, Any]]) -> None:
        if watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result().get("type") == "http.disconnect":
            self.gone = True
            self.task.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.remove_done_callback(self._on_message)
            self.watcher.cancel()


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so the upstream call in it) if the client
    disconnects first; then raise ClientGone. Call only after the request body was read,
    when the next ASGI message can only be `http.disconnect`."""
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch(task, receive)
    timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER, watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        watch.stop()


__all__ = [
    "HEALTH",
    "ClientGone",
    "DisconnectWatch",
    "Exhausted",
    "Outcome",
    "PrimedStream",
    "attempt",
    "cancel_on_disconnect",
    "dispatch",
    "record_failure",
    "to_ir",
]
