"""Choosing instances of a pool: enabled, configured, serving the model, healthy (or due
a half-open probe), least recently used first."""

from __future__ import annotations

import time

from router.compiler.plan import Instance, Provider
from router.pool.health import HEALTH, HealthBook
from router.protocols import ir

# the one instance of a built-in pool (echo) that lists none
IMPLICIT_INSTANCE = Instance(id="default")


def instances_for(provider: Provider, model: str, book: HealthBook = HEALTH) -> list[Instance]:
    """Instances to try for a call to `model`, in order."""
    if not provider.instances and provider.built_in:
        return [IMPLICIT_INSTANCE]
    return candidates(book, provider, model)


def candidates(book: HealthBook, provider: Provider, model: str) -> list[Instance]:
    """Instances to try for this call, in order. Usage is recorded when a caller
    `begin`s an attempt, so concurrent requests rotate."""
    now = time.time()
    eligible = []
    for position, instance in enumerate(provider.instances):
        if not instance.enabled or instance.unconfigured or not instance.serves(model):
            continue
        health = book.of(provider.name, instance.id)
        if health.available(provider.health, now):
            eligible.append((health.last_used, position, instance))
    eligible.sort(key=lambda item: (item[0], item[1]))  # never used: in config order
    return [instance for _, _, instance in eligible]


def rate_limited_for(book: HealthBook, provider: Provider, model: str) -> float | None:
    """Seconds until the first instance that would serve `model` but sits out an
    upstream Retry-After is back; None when none does."""
    now = time.time()
    waits = [
        book.of(provider.name, instance.id).cooldown_until - now
        for instance in provider.instances
        if instance.enabled and not instance.unconfigured and instance.serves(model)
    ]
    waits = [wait for wait in waits if wait > 0]
    return min(waits) if waits else None


class Unconfigured(ir.Error):
    """The pool has no instance that could ever take a call: a configuration matter, not
    an upstream failure."""


def none_available(provider: Provider, model: str, book: HealthBook = HEALTH) -> ir.Error:
    """Why no instance of `provider` can take a call to `model` now."""
    if not provider.available:
        return Unconfigured(
            503, "unavailable", f"provider {provider.name} {_why_unusable(provider)}"
        )
    wait = rate_limited_for(book, provider, model)
    if wait is not None:
        message = f"provider {provider.name}: every instance is rate-limited"
        return ir.Error(429, "rate_limit", message, retry_after=wait)
    return ir.Error(503, "unavailable", f"provider {provider.name}: no healthy instance")


def _why_unusable(provider: Provider) -> str:
    """Why none of the pool's instances can take traffic, as an operator would fix it."""
    if not provider.instances:
        return "has no instance"
    if not any(instance.enabled for instance in provider.instances):
        return "has every instance disabled"
    reasons: dict[str, None] = {}
    for instance in provider.instances:
        if instance.enabled:
            reasons.update(dict.fromkeys(map(_unconfigured_reason, instance.unconfigured)))
    return f"has no configured instance ({'; '.join(reasons)})"


def _unconfigured_reason(reason: str) -> str:
    if reason.startswith("file:"):
        return f"credentials file {reason[5:]} does not exist"
    return f"{reason} is not set"
