"""Reasoning signatures of other providers, carried through Responses clients.

Another provider's reasoning signature (Anthropic thinking signature or redacted
payload, Gemini thoughtSignature) reaches Responses clients in `encrypted_content` as
"<origin>:<signature>" ("<origin>:redacted:<data>"); OpenAI's own is base64 and never
contains ":". A client replaying the item gives it back to that provider intact, so a
Claude tool loop keeps its signed thinking instead of having thinking turned off.
"""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.openai_responses.common import NAME

_REDACTED = "redacted:"


def wrap_encrypted(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The `encrypted_content` a Responses client sees for reasoning made by `origin`."""
    if not value:
        return None
    if origin is None or origin == NAME:
        return value
    return f"{origin}:{_REDACTED if redacted else ''}{value}"


def unwrap_encrypted(value: Any) -> tuple[str | None, str, bool]:
    """(signature or redacted data, origin, redacted) of an `encrypted_content` sent back."""
    if not isinstance(value, str) or not value:
        return None, NAME, False
    origin, sep, rest = value.partition(":")
    if not sep or origin not in ir.PROTOCOLS or origin == NAME:
        return value, NAME, False
    if rest.startswith(_REDACTED):
        return rest.removeprefix(_REDACTED), origin, True
    return rest, origin, False


def wrap_signature(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The interface's name for `wrap_encrypted`."""
    return wrap_encrypted(value, origin, redacted)


def unwrap_signature(value: Any) -> tuple[str | None, str | None, bool]:
    """The interface's name for `unwrap_encrypted` (whose origin is never None: a value
    that names no other protocol is this one's)."""
    return unwrap_encrypted(value)
