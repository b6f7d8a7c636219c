"""Durations as written in config: `500ms`, `60s`, `5m`, `1h`, `1d`, or a plain number of
seconds. Compound forms (`1m30s`) are accepted too."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
_WHOLE = re.compile(rf"(?:{_PART})+|\d+(?:\.\d+)?")
_PARTS = re.compile(_PART)

# kept in sync with `$defs/duration` in the schemas
PATTERN = r"^\s*((\d+(\.\d+)?(ms|s|m|h|d))+|\d+(\.\d+)?)\s*$"


def parse_duration(value: object) -> float:
    """Seconds. Raises ValueError for anything that is not a non-negative duration."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 60s, 5m, 1h)")
    if text[-1].isdigit():
        return float(text)
    return sum(float(n) * _UNITS[unit] for n, unit in _PARTS.findall(text))
