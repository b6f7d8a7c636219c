"""Prometheus metrics, a sink of outcome records, exact across the workers of a server:
prometheus-client's multiprocess mode, its files in `PROMETHEUS_MULTIPROC_DIR` (set by
`router serve` before the workers start; without it, one process's registry).

The sink's thread folds each batch of records into plain counters and applies them
once, so a request costs the event loop one append. Label values come from the config
(protocols, routes, pools, instances) and from status codes and error kinds, never from
what a client sends, except the upstream model: beyond MAX_MODELS distinct names per
worker the rest count as `other`. Key names are those of configured or runtime keys
(`none` for a request without one), never the key."""

from __future__ import annotations

import asyncio
import os
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from router.compiler.plan import Plan
from router.pool.health import HEALTH
from router.records.outcome import Outcome
from router.records.threaded import ThreadedSink

MAX_MODELS = 100
NONE = "none"  # the label of what a request never reached (no route, no upstream)
_TOKEN_KINDS = ("input", "output", "cached", "reasoning")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The metric families (created once per process, after the multiprocess dir is
    known: prometheus-client reads it when a metric is made)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the multiprocess mode has none either

        self.requests = Counter(
            "router_requests", "Client requests", ["protocol", "route", "provider", "status"]
        )
        self.attempts = Counter(
            "router_upstream_attempts",
            "Upstream attempts",
            ["provider", "instance", "outcome"],
        )
        self.duration = Histogram(
            "router_request_duration_seconds",
            "Client request duration, to the last byte",
            ["protocol", "provider"],
            buckets=_LATENCY_BUCKETS,
        )
        self.ttfb = Histogram(
            "router_time_to_first_byte_seconds",
            "Time to the first byte of a stream",
            ["protocol", "provider"],
            buckets=_LATENCY_BUCKETS,
        )
        self.overhead = Histogram(
            "router_overhead_seconds",
            "Time spent in the gateway, upstream waits excluded (x-router-overhead-ms)",
            buckets=_OVERHEAD_BUCKETS,
        )
        self.tokens = Counter(
            "router_tokens", "Tokens as the upstreams reported them", ["provider", "model", "kind"]
        )
        self.key_requests = Counter(
            "router_key_requests", "Client requests by client key name", ["key", "status"]
        )
        self.key_tokens = Counter(
            "router_key_tokens", "Tokens (input, output) by client key name", ["key", "kind"]
        )
        self.healthy = Gauge(
            "router_instance_healthy",
            "1 while an instance's circuit is closed (the least of all workers)",
            ["provider", "instance"],
            multiprocess_mode="livemin",
        )
        self.reloads = Counter("router_config_reloads", "Config reloads", ["result"])
        self.generation = Gauge(
            "router_config_generation_info",
            "The config generation being served",
            ["generation"],
            multiprocess_mode="livemax",
        )
        self.dropped = Counter("router_records_dropped", "Outcome records dropped by a sink")
        self.limits_remote_up = Gauge(
            "router_limits_remote_up",
            "1 while the shared limit store answers (the least of all workers)",
            ["store"],
            multiprocess_mode="livemin",
        )
        self.limits_fallbacks = Counter(
            "router_limits_fallback",
            "Limit admissions decided without the shared limit store (local store or refused)",
            ["store"],
        )


_METRICS: Metrics | None = None


_MADE = threading.Lock()


def metrics() -> Metrics:
    global _METRICS
    if _METRICS is None:
        with _MADE:  # the sinks' threads may ask first at the same time
            if _METRICS is None:
                _METRICS = Metrics()
    return _METRICS


def exposition() -> tuple[bytes, str]:
    """The text of every metric, summed over the server's workers, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client import REGISTRY as registry

    metrics()  # this process's families exist even before its first request
    if multiprocess():
        from prometheus_client import multiprocess as shared

        registry = CollectorRegistry()
        shared.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exit() -> None:
    """This worker's live gauges no longer count."""
    if multiprocess():
        from prometheus_client import multiprocess as shared

        shared.mark_process_dead(os.getpid())


class MetricsSink(ThreadedSink):
    name = "metrics"
    interval = 0.5

    def __init__(self) -> None:
        super().__init__()
        self._models: set[str] = set()

    def handle(self, batch: list[Outcome]) -> None:
        family = metrics()
        requests: Tally[tuple[str, ...]] = Tally()
        attempts: Tally[tuple[str, ...]] = Tally()
        tokens: Tally[tuple[str, ...]] = Tally()
        by_key: Tally[tuple[str, ...]] = Tally()
        key_tokens: Tally[tuple[str, ...]] = Tally()
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        ttfbs: dict[tuple[str, str], list[float]] = defaultdict(list)
        overheads = []
        for outcome in batch:
            provider = outcome.attempts[-1].provider if outcome.attempts else NONE
            route = outcome.route or NONE
            requests[(outcome.protocol, route, provider, str(outcome.status))] += 1
            key = outcome.key or NONE
            by_key[(key, str(outcome.status))] += 1
            for attempt in outcome.attempts:
                attempts[(attempt.provider, attempt.instance, attempt.error or "ok")] += 1
            durations[(outcome.protocol, provider)].append(outcome.duration)
            if outcome.stream and outcome.ttfb is not None:
                ttfbs[(outcome.protocol, provider)].append(outcome.ttfb)
            overheads.append(outcome.overhead)
            usage = outcome.usage
            if usage is not None and outcome.attempts:
                model = self._model_label(outcome.attempts[-1].model)
                counts = (
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_tokens,
                    usage.reasoning_tokens,
                )
                for kind, count in zip(_TOKEN_KINDS, counts, strict=True):
                    if count:
                        tokens[(provider, model, kind)] += count
                key_tokens[(key, "input")] += usage.input_tokens
                key_tokens[(key, "output")] += usage.output_tokens
        _apply(family.requests, requests.items())
        _apply(family.key_requests, by_key.items())
        _apply(family.key_tokens, [(labels, n) for labels, n in key_tokens.items() if n])
        _apply(family.attempts, attempts.items())
        _apply(family.tokens, tokens.items())
        for labels, values in durations.items():
            observe_all(family.duration.labels(*labels), values)
        for labels, values in ttfbs.items():
            observe_all(family.ttfb.labels(*labels), values)
        observe_all(family.overhead, overheads)

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model


class LimitsHealth(Protocol):
    """A limit store with a shared (remote) store in front, as `GuardedLimits` is."""

    remote_up: bool
    fallbacks: int  # so far, by this process


LIMITS_STORE = "redis"  # the `store` label of the limit store metrics


def _no_limits_health() -> LimitsHealth | None:
    return None


class WorkerGauges:
    """What only this process knows, set by `tick()` about once a second: its instances'
    health, the config generation it serves, the records its sinks dropped, and whether
    its limit store reaches the shared one (`limits`: None while it has none). A
    worker ticks it from its event loop (`start()`), not from a thread: a thread of its
    own makes the worker's interpreter switch more than the work is worth."""

    interval = 1.0

    def __init__(
        self,
        plan: Callable[[], Plan | None],
        drops: Callable[[], int],
        limits: Callable[[], LimitsHealth | None] = _no_limits_health,
    ) -> None:
        self.plan = plan
        self.drops = drops  # records dropped so far by every sink of this process
        self.limits = limits
        self._drops_counted = 0
        self._limits_counted: LimitsHealth | None = None  # whose fallbacks are counted
        self._fallbacks_counted = 0
        self._generation: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.tick()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick_again)

    def _tick_again(self) -> None:
        try:
            self.tick()
        finally:
            self._schedule()

    def tick(self) -> None:
        family = metrics()
        dropped = self.drops()
        if dropped > self._drops_counted:
            family.dropped.inc(dropped - self._drops_counted)
            self._drops_counted = dropped
        self._tick_limits(family)
        plan = self.plan()
        if plan is None:
            return
        for provider in plan.providers.values():
            for instance in provider.instances:
                healthy = HEALTH.of(provider.name, instance.id).healthy
                family.healthy.labels(provider.name, instance.id).set(int(healthy))
        if plan.generation != self._generation:
            if self._generation is not None:
                family.generation.labels(self._generation).set(0)
            family.generation.labels(plan.generation).set(1)
            self._generation = plan.generation

    def _tick_limits(self, family: Metrics) -> None:
        guard = self.limits()
        if guard is None:
            return
        family.limits_remote_up.labels(LIMITS_STORE).set(int(guard.remote_up))
        if guard is not self._limits_counted:  # a new store (the config changed)
            self._limits_counted, self._fallbacks_counted = guard, 0
        fallbacks = guard.fallbacks
        if fallbacks > self._fallbacks_counted:
            family.limits_fallbacks.labels(LIMITS_STORE).inc(fallbacks - self._fallbacks_counted)
            self._fallbacks_counted = fallbacks


def _apply(family: Any, counts: Iterable[tuple[tuple[str, ...], int]]) -> None:
    for labels, count in counts:
        family.labels(*labels).inc(count)


def observe_all(histogram: Any, values: list[float]) -> None:
    """`histogram.observe(v)` for each value, counted per bucket first: a batch costs one
    increment per bucket it touches instead of two per value (in multiprocess mode each
    is a write to a shared file). Reads the child's buckets as prometheus-client keeps
    them (non-cumulative, upper bounds ending in +Inf); observes one by one otherwise."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not values:
        return
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(values))


def note_reload(loaded: bool) -> None:
    """A reload was tried (PlanHolder's listener)."""
    metrics().reloads.labels("ok" if loaded else "error").inc()
