"""Shared formatting of rate-limit header values, for the protocol packages that send
rate-limit headers (each package names its own headers)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """Seconds as OpenAI writes a reset: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def moment_after(seconds: float) -> str:
    """The RFC 3339 time `seconds` from now, as Anthropic writes a reset."""
    moment = datetime.fromtimestamp(time.time() + seconds, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
