"""The token-count endpoint: the gateway exposes none for Responses."""

from __future__ import annotations

from router.protocols.interface import TokenCounting

COUNTING: TokenCounting | None = None
