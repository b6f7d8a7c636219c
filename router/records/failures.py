"""The log of failures, a sink of outcome records: a warning for each upstream attempt
that failed, as `router.dispatch` has always logged them."""

from __future__ import annotations

import logging

from router.records.outcome import Outcome

log = logging.getLogger("router.dispatch")


def log_failed_attempts(outcome: Outcome) -> None:
    for number, attempt in enumerate(outcome.attempts, 1):
        if attempt.error is not None:
            log.warning(
                "attempt %d: %s/%s failed: %s",
                number,
                attempt.provider,
                attempt.instance,
                attempt.message,
            )
