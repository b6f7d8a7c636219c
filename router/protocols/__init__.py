"""Protocol packages: one per wire protocol (`openai_chat`, `openai_responses`,
`anthropic`, `gemini`), each converting to and from `ir` and laid out the same way. What
each one offers is the typed `interface.WireProtocol`; `paths` is the table of the client
endpoints that speak them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.protocols.interface import WireProtocol

_PACKAGES: dict[str, WireProtocol] = {}


def module_for(protocol: str) -> WireProtocol:
    """The package of `protocol` (one of ir.PROTOCOLS); KeyError for any other name."""
    package = lookup(protocol)
    if package is None:
        raise KeyError(protocol)
    return package


def lookup(protocol: str) -> WireProtocol | None:
    """The package of `protocol`; None for a name that is no wire protocol (the "ir" of
    in-process adapters)."""
    if not _PACKAGES:
        # imported on first use: the protocol packages import this package
        from router.protocols import anthropic, gemini, openai_chat, openai_responses

        for module in (openai_chat, openai_responses, anthropic, gemini):
            _PACKAGES[module.NAME] = module  # type: ignore[assignment]
    return _PACKAGES.get(protocol)
