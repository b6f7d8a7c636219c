"""HTTP adapters for the four wire protocols, authenticated by API key."""

from __future__ import annotations

from router.compiler.plan import Instance
from router.protocols import anthropic, gemini
from router.providers.base import Call, CountCall, WireAdapter
from router.providers.http import post_json

COUNT_TIMEOUT = 30.0  # seconds
_GEMINI_VERSIONS = frozenset({"v1beta", "v1", "v1alpha"})


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

    counts_tokens = True

    def _host(self, instance: Instance) -> str:
        return (instance.base_url or self.default_base).rstrip("/").removesuffix("/v1")

    def url(self, call: Call) -> str:
        url = self._host(call.instance) + "/v1/messages"
        return f"{url}?{call.query}" if call.query else url

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        headers = {"anthropic-version": "2023-06-01"}
        if instance.api_key:
            headers["x-api-key"] = instance.api_key.value
        return headers

    async def count_tokens(self, call: CountCall) -> int:
        """`/v1/messages/count_tokens`: an Anthropic client's body as it is (less what
        the count takes no part of), anything else translated."""
        client = call.client_headers
        headers = {
            "content-type": "application/json",
            "anthropic-version": client.get("anthropic-version", "2023-06-01"),
        }
        if call.client_protocol == self.protocol:
            if "anthropic-beta" in client:
                headers["anthropic-beta"] = client["anthropic-beta"]
            body = {k: v for k, v in call.client_body.items() if k not in ("max_tokens", "stream")}
            body["model"] = call.model
        else:
            body = anthropic.build_count_request(call.request)
        if call.instance.api_key:
            headers["x-api-key"] = call.instance.api_key.value
        url = self._host(call.instance) + "/v1/messages/count_tokens"
        answer = await post_json(
            call.instance, url, body, headers, anthropic.parse_error, COUNT_TIMEOUT
        )
        return anthropic.count_from(answer)


class GeminiAPIAdapter(WireAdapter):
    """`base_url` is the API root: a host alone (https://generativelanguage.googleapis.com)
    gets /v1beta appended; one that ends in an API version (/v1beta, /v1, /v1alpha) is
    taken as it is."""

    protocol = "gemini"
    default_base = "https://generativelanguage.googleapis.com/v1beta"

    def _root(self, instance: Instance) -> str:
        base = (instance.base_url or self.default_base).rstrip("/")
        if base.rpartition("/")[2] in _GEMINI_VERSIONS:
            return base
        return base + "/v1beta"

    def url(self, call: Call) -> str:
        base = self._root(call.instance)
        if call.stream:
            return f"{base}/models/{call.model}:streamGenerateContent?alt=sse"
        return f"{base}/models/{call.model}:generateContent"

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        return {"x-goog-api-key": instance.api_key.value} if instance.api_key else {}

    counts_tokens = True

    async def count_tokens(self, call: CountCall) -> int:
        """`models/{model}:countTokens` with a `generateContentRequest`, so the system
        instruction and the tools are counted too."""
        base = self._root(call.instance)
        url = f"{base}/models/{call.model.removeprefix('models/')}:countTokens"
        headers = {"content-type": "application/json", **self.auth_headers(call.instance)}
        body = gemini.build_count_request(call.request)
        answer = await post_json(
            call.instance, url, body, headers, gemini.parse_error, COUNT_TIMEOUT
        )
        return gemini.count_from(answer)
