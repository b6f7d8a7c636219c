"""Per-instance health: consecutive errors, a circuit that opens after `max_errors`, a
single half-open probe after `recover_after`, and a cool-down while an upstream's
`Retry-After` runs. `HEALTH` is this process's book of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from router.compiler.plan import HealthPolicy
from router.protocols import ir

# Upstream rejections that say the instance itself is broken (its key), not the request.
INSTANCE_FAULTS = frozenset({401, 403})
# A Retry-After longer than this is not taken at its word (a broken header must not park
# an instance for days); the circuit breaker handles longer outages.
MAX_COOLDOWN = 3600.0


@dataclass(slots=True)
class LastError:
    at: float
    status: int | None
    message: str


@dataclass(slots=True)
class InstanceHealth:
    consecutive_errors: int = 0
    successes: int = 0
    failures: int = 0
    last_error: LastError | None = None
    last_used: float = 0.0
    down_since: float | None = None  # set while the circuit is open
    probing: bool = False  # the one half-open probe is in flight
    cooldown_until: float = 0.0  # not selected before this time (upstream Retry-After)

    def available(self, policy: HealthPolicy, now: float) -> bool:
        if now < self.cooldown_until:
            return False
        if self.down_since is None:
            return True
        return not self.probing and now - self.down_since >= policy.recover_after

    def begin(self, policy: HealthPolicy, now: float) -> None:
        self.last_used = now
        if self.down_since is not None:
            self.probing = True

    def succeed(self) -> None:
        self.successes += 1
        self.consecutive_errors = 0
        self.down_since = None
        self.probing = False

    def fail(
        self,
        policy: HealthPolicy,
        status: int | None,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        now = time.time()
        self.failures += 1
        self.consecutive_errors += 1
        self.last_error = LastError(now, status, message)
        if retry_after:
            self.cooldown_until = max(self.cooldown_until, now + min(retry_after, MAX_COOLDOWN))
        if self.probing or self.consecutive_errors >= policy.max_errors:
            self.down_since = now
        self.probing = False

    def record_failure(self, policy: HealthPolicy, error: ir.Error, retryable: bool) -> None:
        """Count a failed attempt against the instance, unless the upstream only rejected
        the request (400, 404, 422...): then the instance is fine and the call is neutral."""
        if retryable or error.status in INSTANCE_FAULTS:
            self.fail(policy, error.status, error.message, error.retry_after)
        else:
            self.release()

    def release(self) -> None:
        """The call ended without a verdict on the instance (client went away, or the
        upstream rejected the request itself): free the probe slot."""
        self.probing = False

    @property
    def healthy(self) -> bool:
        return self.down_since is None

    def recovers_at(self, policy: HealthPolicy) -> float | None:
        """When the circuit lets a probe through (None while closed)."""
        return None if self.down_since is None else self.down_since + policy.recover_after


@dataclass(slots=True)
class HealthBook:
    """Health per (provider, instance id), process-wide. A config reload builds new
    Instance objects but keeps this book, so an instance whose provider and id are
    unchanged keeps its state."""

    entries: dict[tuple[str, str], InstanceHealth] = field(default_factory=dict)

    def of(self, provider: str, instance: str) -> InstanceHealth:
        key = (provider, instance)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = InstanceHealth()
        return entry

    def reset(self, provider: str | None = None) -> None:
        for key in list(self.entries):
            if provider is None or key[0] == provider:
                del self.entries[key]


HEALTH = HealthBook()
