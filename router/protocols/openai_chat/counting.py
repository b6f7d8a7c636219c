"""Token counting: Chat has no token-count endpoint."""

from __future__ import annotations

from router.protocols.interface import TokenCounting

COUNTING: TokenCounting | None = None
