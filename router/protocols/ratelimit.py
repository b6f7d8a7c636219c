"""Shared formatting of rate-limit header values, for the protocol packages that send
rate-limit headers (each package names its own headers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from router.protocols import ir

Names = tuple[str, str, str]  # the headers of one family: limit, remaining, reset


def headers(
    rates: ir.RateLimits, requests: Names, tokens: Names, reset: Callable[[float], str]
) -> dict[str, str]:
    """The headers of both families (a family whose limit is None is left out), with
    each reset written by `reset`."""
    out: dict[str, str] = {}
    if rates.requests_limit is not None:
        out[requests[0]] = str(rates.requests_limit)
        if rates.requests_remaining is not None:
            out[requests[1]] = str(rates.requests_remaining)
        if rates.requests_reset is not None:
            out[requests[2]] = reset(rates.requests_reset)
    if rates.tokens_limit is not None:
        out[tokens[0]] = str(rates.tokens_limit)
        if rates.tokens_remaining is not None:
            out[tokens[1]] = str(rates.tokens_remaining)
        if rates.tokens_reset is not None:
            out[tokens[2]] = reset(rates.tokens_reset)
    return out


def duration(seconds: float) -> str:
    """Seconds as OpenAI writes a reset: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = int(seconds + 0.5)
    written = _DURATIONS.get(whole)
    if written is None:
        written = _written(whole)
        if whole <= 3600:  # the resets of a minute's window, often asked
            _DURATIONS[whole] = written
    return written


_DURATIONS: dict[int, str] = {}


def _written(whole: int) -> str:
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def moment_after(seconds: float) -> str:
    """The RFC 3339 time `seconds` from now, as Anthropic writes a reset."""
    second = int(time.time() + seconds)
    written = _MOMENTS.get(second)
    if written is None:
        if len(_MOMENTS) > 4096:
            _MOMENTS.clear()
        moment = datetime.fromtimestamp(second, UTC)
        written = _MOMENTS[second] = moment.isoformat().replace("+00:00", "Z")
    return written


_MOMENTS: dict[int, str] = {}
