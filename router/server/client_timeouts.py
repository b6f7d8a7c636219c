"""How long a client may take to send its request. A client sending a byte a second must
not hold a connection (and what it has sent so far) for ever: its headers must arrive
within ROUTER_HEADER_TIMEOUT seconds (Granian's HTTP/1 header read timeout, which closes
the connection; set by `router serve`) and then its body within ROUTER_BODY_TIMEOUT
seconds (the gateway's own body reading, which answers 408 in the client's protocol)."""

from __future__ import annotations

import math
import os

from router.protocols import ir

DEFAULT_SECONDS = 30.0
MAX_HEADER_SECONDS = 60.0  # Granian takes 1 ms to 60 s


def seconds_from_env(name: str, default: float, maximum: float | None = None) -> float:
    """The number of seconds the variable `name` sets; ValueError naming it when bad."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g} seconds, not {raw!r}")
    return value


def header_timeout() -> float:
    return seconds_from_env("ROUTER_HEADER_TIMEOUT", DEFAULT_SECONDS, MAX_HEADER_SECONDS)


def body_timeout() -> float:
    return seconds_from_env("ROUTER_BODY_TIMEOUT", DEFAULT_SECONDS)


def _worker_body_timeout() -> float:
    try:
        return body_timeout()
    except ValueError:  # `router serve` refuses to start on it; a bare Granian gets this
        return DEFAULT_SECONDS


BODY_TIMEOUT = _worker_body_timeout()  # read once per process


def body_too_slow() -> ir.Error:
    return ir.Error(
        408, "timeout", f"the request body did not arrive within {BODY_TIMEOUT:g} seconds"
    )
