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
    text: str = ""  # as written, references and all (what `router compile` shows)


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    if "$" not in text:
        return Interpolated(text, text=text)
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
    error = errors[0] if errors else None
    return Interpolated(value, tuple(missing), tuple(variables), error, text)


_AUTH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_-]* +")  # `Bearer ` before a reference


def mask_literals(text: str, mask: str) -> str:
    """A secret's `text` as written, for display: references keep their variable names,
    everything written literally (their defaults included) becomes `mask`, except an auth
    scheme word in front (`Bearer ${TOKEN}` stays as is)."""
    shown: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        text = "".join(literal)
        if text:
            scheme = not shown and _AUTH_SCHEME.fullmatch(text)
            shown.append(text if scheme else mask)
        literal.clear()

    position = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[position : match.start()])
        name, has_default, default = match.group(2, 3, 4)
        if name is None:  # `$$` or a malformed reference: literal text
            literal.append(match.group(0))
        else:
            flush()
            tail = (":-" + (mask if default else "")) if has_default else ""
            shown.append(f"${{{name}{tail}}}")
        position = match.end()
    literal.append(text[position:])
    flush()
    return "".join(shown)
