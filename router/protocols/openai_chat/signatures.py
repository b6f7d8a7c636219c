"""Reasoning signatures: none are carried.

* Thinking: parsed from the de-facto `reasoning_content` (or `reasoning`) field that
  OpenAI-compatible servers (DeepSeek, vLLM, OpenRouter...) use, and emitted to Chat
  clients as `reasoning_content`. Chat requests cannot carry thinking back upstream, so
  `build_request` leaves it out (Anthropic/Gemini signatures would be useless anyway).
"""

from __future__ import annotations

from typing import Any


def wrap_signature(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """None: a Chat client has no field to carry a reasoning signature back."""
    return None


def unwrap_signature(value: Any) -> tuple[str | None, str | None, bool]:
    """(None, None, False): a Chat client never carries a reasoning signature back."""
    return None, None, False
