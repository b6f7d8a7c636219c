"""The provider types: one table, the only place a type's name is written.

The compiler takes each type's upstream protocol and instance keys from here, the
registry its adapter, and `schemas/providers.schema.json` lists the same names (a test
fails when they disagree). Adapters are named, not imported, so compiling a config does
not load every adapter's dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_OAUTH_KEYS = ("credentials", "project", "token_url", "auth_url", "client_id", "client_secret")


@dataclass(frozen=True, slots=True)
class ProviderType:
    name: str
    # the wire protocol spoken upstream; "ir": the adapter takes the intermediate form
    protocol: str
    adapter: str  # "module:Class", imported on first use
    keys: frozenset[str] = frozenset()  # instance keys that only this type uses
    built_in: bool = False  # serves without instances (one implicit "default")


PROVIDER_TYPES: tuple[ProviderType, ...] = (
    ProviderType("openai-custom", "openai-chat", "router.providers.wire:OpenAIChatAdapter"),
    ProviderType(
        "openaiResponses-custom",
        "openai-responses",
        "router.providers.wire:OpenAIResponsesAdapter",
    ),
    ProviderType("claude-custom", "anthropic", "router.providers.wire:AnthropicAdapter"),
    ProviderType(
        "claudeCode-custom",
        "ir",
        "router.providers.claude_code:ClaudeCodeAdapter",
        keys=frozenset({"command", "args", "env", "max_turns", "queue_timeout", "runtime_dir"}),
    ),
    ProviderType(
        "gemini-cli-oauth",
        "gemini",
        "router.providers.code_assist:CodeAssistAdapter",
        keys=frozenset(_OAUTH_KEYS),
    ),
    ProviderType(
        "gemini-antigravity",
        "gemini",
        "router.providers.antigravity:AntigravityAdapter",
        keys=frozenset({*_OAUTH_KEYS, "base_urls"}),
    ),
    ProviderType("gemini-api", "gemini", "router.providers.wire:GeminiAPIAdapter"),
    ProviderType("echo", "ir", "router.providers.echo:EchoAdapter", built_in=True),
)

BY_NAME: Mapping[str, ProviderType] = {kind.name: kind for kind in PROVIDER_TYPES}
