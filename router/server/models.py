"""The model-list endpoints: which models the reachable pools advertise, and in which
protocol's shape to list them."""

from __future__ import annotations

from collections.abc import Mapping

from router.compiler.plan import Plan, Provider
from router.protocols import ir
from router.providers.registry import advertised_models


def protocol_for_list(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """`GET /v1/models` is ambiguous: answer in Gemini's shape for Gemini-style auth,
    Anthropic's when an anthropic-version header is present, OpenAI's otherwise."""
    if "/v1beta/" in path or "x-goog-api-key" in headers or "key" in query:
        return "gemini"
    if "anthropic-version" in headers:
        return "anthropic"
    return "openai-chat"


def reachable(provider: Provider) -> bool:
    if provider.type == "echo":
        return True
    return any(i.enabled and not i.unconfigured for i in provider.instances)


def reachable_models(plan: Plan, only: str | None = None) -> list[str]:
    if only is not None and only not in plan.providers:
        raise ir.Error(404, "not_found", f"unknown provider {only!r}")
    names: dict[str, None] = {}
    for name, provider in sorted(plan.providers.items()):
        if (only is None or name == only) and reachable(provider):
            names.update(dict.fromkeys(advertised_models(provider)))
    return list(names)
