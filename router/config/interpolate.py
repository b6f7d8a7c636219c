"""`${VAR}` and `${VAR:-default}` in scalar strings. `$$` is a literal `$`.

A variable that is unset (or empty) with no default becomes the empty string and is
reported in `missing`: for a secret that makes the instance "unconfigured", elsewhere it is
a warning."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\{[^}]*\}?)")


@dataclass(frozen=True, slots=True)
class Interpolated:
    value: str
    missing: tuple[str, ...] = ()  # referenced without a default, unset or empty
    variables: tuple[str, ...] = ()  # every variable referenced
    error: str | None = None  # malformed reference


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    if "$" not in text:
        return Interpolated(text)
    missing: list[str] = []
    variables: list[str] = []
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole, name, has_default, default = match.group(1, 2, 3, 4)
        if whole == "$":
            return "$"
        if name is None:
            errors.append(
                f"malformed variable reference {match.group(0)!r} "
                "(use ${NAME} or ${NAME:-default}; $$ for a literal $)"
            )
            return match.group(0)
        variables.append(name)
        value = env.get(name, "")
        if value:
            return value
        if has_default:
            return default
        missing.append(name)
        return ""

    value = _TOKEN.sub(replace, text)
    return Interpolated(value, tuple(missing), tuple(variables), errors[0] if errors else None)
