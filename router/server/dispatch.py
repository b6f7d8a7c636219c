"""Stages 3-8 for one request: resolve, then try each target of the chain and each healthy
instance of its pool until one answers; translate the answer back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from router.compiler.plan import Instance, Plan, Provider, Route
from router.pool.health import HealthBook
from router.pool.select import candidates
from router.protocols import ir, module_for
from router.providers.base import Call, IRAdapter, WireAdapter
from router.providers.registry import adapter_for
from router.server import respond
from router.server.translate import Inbound, Prepared, mapped_client_body, prepare, to_ir
from router.server.upstream import AttemptFailed, PrimedStream, call_ir, call_wire

log = logging.getLogger("router.dispatch")

HEALTH = HealthBook()
_DEFAULT_INSTANCE = Instance(id="default")


@dataclass(slots=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: object = None  # AsyncIterator[bytes] when streaming
    media_type: str = "application/json"
    upstream_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Exhausted(Exception):
    def __init__(self, error: ir.Error, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


async def dispatch(plan: Plan, inbound: Inbound) -> Outcome:
    started = time.perf_counter()
    resolution = plan.resolve(
        protocol=inbound.protocol,
        model=inbound.model,
        headers=inbound.headers,
        body=inbound.body,
        path_provider=inbound.path_provider,
    )
    route = resolution.route
    strict = inbound.strict or route.strict
    attempts = 0
    last_error: ir.Error | None = None
    client_request: ir.Request | None = None
    max_attempts = route.max_attempts or 1_000_000

    for target in route.targets:
        provider = plan.providers[target.provider]
        client_body = mapped_client_body(inbound, target.pipeline)
        prepared = await prepare(inbound, target, provider, client_body, client_request)
        if prepared.request is not None and client_body is inbound.body:
            client_request = prepared.request
        if strict and prepared.dropped:
            raise ir.Error(
                400,
                "invalid_request",
                f"strict mode: cannot carry {', '.join(sorted(set(prepared.dropped)))} "
                f"to provider {provider.name}",
            )
        instances = instances_for(provider, prepared.model)
        if not instances:
            last_error = ir.Error(503, "unavailable", f"provider {provider.name}: no healthy instance")
            continue
        for instance in instances:
            if attempts >= max_attempts:
                break
            attempts += 1
            health = HEALTH.of(provider.name, instance.id)
            health.begin(provider.health, time.time())
            upstream_started = time.perf_counter()
            try:
                result = await _attempt(provider, instance, prepared, inbound, route)
            except AttemptFailed as failure:
                health.fail(provider.health, failure.error.status, failure.error.message)
                log.warning(
                    "attempt %d: %s/%s failed: %s", attempts, provider.name, instance.id, failure.error
                )
                if not failure.retryable:
                    raise failure.error from None
                last_error = failure.error
                continue
            except BaseException:
                health.release()
                raise
            upstream_seconds = time.perf_counter() - upstream_started
            outcome = respond.build(
                inbound, provider, prepared, result, health, target.pipeline
            )
            outcome.headers.update(_trace_headers(provider, instance, attempts, prepared))
            outcome.headers["x-router-generation"] = plan.generation
            outcome.upstream_seconds = upstream_seconds
            outcome.started = started
            return outcome
    raise Exhausted(
        last_error or ir.Error(503, "unavailable", "no provider could take the request"), attempts
    )


def instances_for(provider: Provider, model: str) -> list[Instance]:
    if not provider.instances and provider.type == "echo":
        return [_DEFAULT_INSTANCE]
    return candidates(HEALTH, provider, model)


async def _attempt(
    provider: Provider, instance: Instance, prepared: Prepared, inbound: Inbound, route: Route
):
    try:
        adapter = adapter_for(provider)
    except ir.Error as error:
        raise AttemptFailed(error, True) from None
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
    if isinstance(adapter, IRAdapter):
        return await call_ir(
            adapter, call, timeout=provider.timeout, first_token_timeout=provider.first_token_timeout
        )
    assert isinstance(adapter, WireAdapter)
    return await call_wire(
        adapter,
        call,
        module_for(provider.protocol),
        passthrough=prepared.passthrough,
        timeout=provider.timeout,
        first_token_timeout=provider.first_token_timeout,
        retry_on=route.retry_on,
    )


def _trace_headers(
    provider: Provider, instance: Instance, attempts: int, prepared: Prepared
) -> dict[str, str]:
    headers = {
        "x-router-provider": provider.name,
        "x-router-instance": instance.id,
        "x-router-attempts": str(attempts),
    }
    if prepared.dropped:
        headers["x-router-dropped"] = ",".join(sorted(set(prepared.dropped)))
    return headers


__all__ = ["HEALTH", "Exhausted", "Outcome", "PrimedStream", "dispatch", "to_ir"]
