"""HTTP adapters for the four wire protocols, authenticated by API key."""

from __future__ import annotations

from router.compiler.plan import Instance
from router.providers.base import Call, WireAdapter


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


class OpenAIChatAdapter(WireAdapter):
    protocol = "openai-chat"
    default_base = "https://api.openai.com/v1"

    def url(self, call: Call) -> str:
        return _join(call.instance.base_url or self.default_base, "/chat/completions")

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        return {"authorization": f"Bearer {instance.api_key.value}"} if instance.api_key else {}


class OpenAIResponsesAdapter(OpenAIChatAdapter):
    protocol = "openai-responses"

    def url(self, call: Call) -> str:
        return _join(call.instance.base_url or self.default_base, "/responses")


class AnthropicAdapter(WireAdapter):
    """`base_url` is the host (with or without a trailing /v1); /v1/messages is appended."""

    protocol = "anthropic"
    default_base = "https://api.anthropic.com"

    def url(self, call: Call) -> str:
        base = (call.instance.base_url or self.default_base).rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        url = base + "/v1/messages"
        return f"{url}?{call.query}" if call.query else url

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        headers = {"anthropic-version": "2023-06-01"}
        if instance.api_key:
            headers["x-api-key"] = instance.api_key.value
        return headers


class GeminiAPIAdapter(WireAdapter):
    protocol = "gemini"
    default_base = "https://generativelanguage.googleapis.com/v1beta"

    def url(self, call: Call) -> str:
        base = call.instance.base_url or self.default_base
        if call.stream:
            return _join(base, f"/models/{call.model}:streamGenerateContent?alt=sse")
        return _join(base, f"/models/{call.model}:generateContent")

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        return {"x-goog-api-key": instance.api_key.value} if instance.api_key else {}
