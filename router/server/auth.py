"""Admin credentials: how an admin key is checked (client keys: router.access.gate)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from router.access.gate import presented_key
from router.compiler.plan import Secret
from router.protocols import ir


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
