"""Adapter type -> adapter object. Adapters are stateless, or keep their own per-instance
state keyed by instance id, so one object per type serves every pool."""

from __future__ import annotations

from router.compiler.plan import Provider
from router.protocols import ir
from router.providers import antigravity, code_assist
from router.providers.antigravity import AntigravityAdapter
from router.providers.base import IRAdapter, WireAdapter
from router.providers.claude_code import ClaudeCodeAdapter
from router.providers.code_assist import CodeAssistAdapter
from router.providers.echo import EchoAdapter
from router.providers.wire import (
    AnthropicAdapter,
    GeminiAPIAdapter,
    OpenAIChatAdapter,
    OpenAIResponsesAdapter,
)

_ADAPTERS: dict[str, WireAdapter | IRAdapter] = {
    "openai-custom": OpenAIChatAdapter(),
    "openaiResponses-custom": OpenAIResponsesAdapter(),
    "claude-custom": AnthropicAdapter(),
    "gemini-api": GeminiAPIAdapter(),
    "gemini-cli-oauth": CodeAssistAdapter(),
    "gemini-antigravity": AntigravityAdapter(),
    "claudeCode-custom": ClaudeCodeAdapter(),
    "echo": EchoAdapter(),
}


def adapter_for(provider: Provider) -> WireAdapter | IRAdapter:
    adapter = _ADAPTERS.get(provider.type)
    if adapter is None:
        raise ir.Error(501, "api_error", f"provider type {provider.type} is not available yet")
    return adapter


# Models a pool advertises when providers.yaml lists none (the seed's lists).
_DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "gemini-cli-oauth": code_assist.DEFAULT_MODELS,
    "gemini-antigravity": antigravity.DEFAULT_MODELS,
}


def advertised_models(provider: Provider) -> tuple[str, ...]:
    """The pool's `models`, or its adapter's default list when it has none."""
    return provider.models or _DEFAULT_MODELS.get(provider.type, ())
