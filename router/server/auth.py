"""Client and admin credentials: where a key is read from and how it is checked."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from router.compiler.plan import Secret
from router.protocols import ir


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the client sent: Bearer, x-api-key, x-goog-api-key or ?key=."""
    authorization = headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or query.get("key")


def key_matches(presented: str, keys: Iterable[Secret]) -> bool:
    return matching_key(presented, keys) is not None


def matching_key(presented: str, keys: Iterable[Secret]) -> int | None:
    """The position of the configured key `presented` is, compared in constant time with
    every key (no early exit); None when it is none of them."""
    candidate = presented.encode()
    found = None
    for position, key in enumerate(keys):
        if hmac.compare_digest(candidate, key.value.encode()):
            found = position
    return found


def check_client(
    keys: tuple[Secret, ...], headers: Mapping[str, str], query: Mapping[str, str]
) -> str | None:
    """The name of the client key presented; 401 unless it is a configured one. No keys
    configured: open, and None."""
    if not keys:
        return None
    presented = presented_key(headers, query)
    if presented is None:
        raise ir.Error(401, "authentication", "missing API key")
    position = matching_key(presented, keys)
    if position is None:
        raise ir.Error(401, "authentication", "invalid API key")
    return keys[position].name or f"key {position + 1}"


def check_admin(
    keys: tuple[Secret, ...], headers: Mapping[str, str], query: Mapping[str, str]
) -> None:
    """Management endpoints need an admin key; without one configured they are off."""
    if not keys:
        raise ir.Error(
            403, "permission", "management API disabled: set ADMIN_API_KEY or auth.admin_keys"
        )
    presented = presented_key(headers, query)
    if presented is None or not key_matches(presented, keys):
        raise ir.Error(401, "authentication", "invalid or missing admin key")
