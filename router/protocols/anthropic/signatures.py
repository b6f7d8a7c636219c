"""Signatures from other providers, carried through Anthropic clients.

They reach Anthropic clients as "<origin>:<signature>" (a real Anthropic signature is
base64, never contains ":"), so that when the client sends the block back it is
recognised as foreign instead of failing upstream. Redacted thinking has a native
block (`redacted_thinking`), whose `data` carries another protocol's redacted data the
same way."""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import NAME


def _wrap_signature(signature: str | None, origin: str | None) -> str:
    """The signature an Anthropic client sees for a block produced by `origin`."""
    if not signature:
        return ""
    if origin is None or origin == NAME:
        return signature
    return f"{origin}:{signature}"


def _unwrap_signature(signature: Any) -> tuple[str | None, str | None]:
    """(signature, origin) of a signature an Anthropic client sent back."""
    if not isinstance(signature, str) or not signature:
        return None, None
    origin, sep, rest = signature.partition(":")
    if sep and origin in ir.PROTOCOLS and origin != NAME:
        return rest, origin
    return signature, NAME


def wrap_signature(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The interface's form of `_wrap_signature`: None for no signature. `redacted` changes
    nothing: redacted data is wrapped like a signature, and the caller puts it in a
    `redacted_thinking` block's `data` instead of a `thinking` block's `signature`."""
    return _wrap_signature(value, origin) or None


def unwrap_signature(value: Any) -> tuple[str | None, str | None, bool]:
    """The interface's form of `_unwrap_signature`: (signature, origin, False). Redacted
    thinking comes back in its own block type, so the value never says it is redacted."""
    signature, origin = _unwrap_signature(value)
    return signature, origin, False
