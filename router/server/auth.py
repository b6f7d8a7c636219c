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
    """Constant-time comparison against every configured key (no early exit)."""
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.value.encode())
    return matched


def check_client(
    keys: tuple[Secret, ...], headers: Mapping[str, str], query: Mapping[str, str]
) -> None:
    """Raise 401 unless a configured client key was presented. No keys: open."""
    if not keys:
        return
    presented = presented_key(headers, query)
    if presented is None:
        raise ir.Error(401, "authentication", "missing API key")
    if not key_matches(presented, keys):
        raise ir.Error(401, "authentication", "invalid API key")


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
