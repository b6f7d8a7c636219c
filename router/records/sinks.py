"""Sinks of outcome records. A sink is a callable taking one `Outcome`; it runs on the
event loop right after the request's last byte, so it must not block: one that does I/O
queues the record and does the work elsewhere. A sink that raises is logged and skipped.

Subscribed by default: the failure log (one warning per failed upstream attempt)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.records.outcome import Outcome

log = logging.getLogger("router.records")
failures = logging.getLogger("router.dispatch")

Sink = Callable[["Outcome"], None]
SINKS: list[Sink] = []


def subscribe(sink: Sink) -> None:
    if sink not in SINKS:
        SINKS.append(sink)


def unsubscribe(sink: Sink) -> None:
    if sink in SINKS:
        SINKS.remove(sink)


def publish(outcome: Outcome) -> None:
    for sink in SINKS:
        try:
            sink(outcome)
        except Exception:
            log.exception("outcome sink %r failed", sink)


def log_failed_attempts(outcome: Outcome) -> None:
    """The log of failures: a warning for each upstream attempt that failed."""
    for number, attempt in enumerate(outcome.attempts, 1):
        if attempt.error is not None:
            failures.warning(
                "attempt %d: %s/%s failed: %s",
                number,
                attempt.provider,
                attempt.instance,
                attempt.message,
            )


subscribe(log_failed_attempts)
