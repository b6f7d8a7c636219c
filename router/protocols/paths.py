"""The client endpoints: one table of (path, protocol, kind, stream flag), from which the
server's routes, the fast path's matcher, the protocol of an error before routing and
`router explain --path` are all derived. Every path also exists under `/{provider}`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["generate", "count"]

DEFAULT_PROTOCOL = "openai-chat"  # when nothing in a request names one (admin API too)
_MODEL = "{model}"  # where a path names the model


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # as clients call it, `{model}` where the URL names the model
    protocol: str
    kind: Kind
    stream: bool | None = None  # fixed by the path; None: the body's `stream` says

    @property
    def prefix(self) -> str:
        """The path up to `{model}` (the whole path when it names none)."""
        return self.path.partition(_MODEL)[0]

    @property
    def action(self) -> str:
        """What follows `{model}` (`:generateContent`); empty when it names none."""
        return self.path.partition(_MODEL)[2]


def _gemini(root: str) -> tuple[Endpoint, ...]:
    base = f"{root}/models/{_MODEL}"
    return (
        Endpoint(f"{base}:generateContent", "gemini", "generate", stream=False),
        Endpoint(f"{base}:streamGenerateContent", "gemini", "generate", stream=True),
        Endpoint(f"{base}:countTokens", "gemini", "count"),
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/v1/chat/completions", "openai-chat", "generate"),
    Endpoint("/v1/responses", "openai-responses", "generate"),
    Endpoint("/v1/messages", "anthropic", "generate"),
    Endpoint("/v1/messages/count_tokens", "anthropic", "count"),
    *_gemini("/v1beta"),
    *_gemini("/v1"),  # google-genai 3.x calls these
)
# The model lists answer in the shape the caller's auth suggests (`list_protocol`).
MODEL_LISTS = ("/v1/models", "/v1beta/models")
API_ROOTS = ("v1", "v1beta")

_FIXED: Mapping[str, Endpoint] = {e.path: e for e in ENDPOINTS if not e.action}
_BY_PREFIX: Mapping[str, Mapping[str, Endpoint]] = {
    prefix: {e.action: e for e in ENDPOINTS if e.prefix == prefix}
    for prefix in sorted({e.prefix for e in ENDPOINTS if e.action})
}


@dataclass(frozen=True, slots=True)
class Match:
    endpoint: Endpoint
    provider: str | None  # the /{provider} prefix
    model: str | None  # the model the URL names


def match(path: str) -> Match | None:
    """The endpoint `path` calls, with its provider prefix and URL model; None if none."""
    found = _match(path, None)
    if found is not None:
        return found
    slash = path.find("/", 1)
    if slash < 2:
        return None
    return _match(path[slash:], path[1:slash])


def _match(path: str, provider: str | None) -> Match | None:
    endpoint = _FIXED.get(path)
    if endpoint is not None:
        return Match(endpoint, provider, None)
    for prefix, actions in _BY_PREFIX.items():
        if path.startswith(prefix):
            model, colon, action = path[len(prefix) :].rpartition(":")
            endpoint = actions.get(colon + action)
            if endpoint is not None and model and "/" not in model:
                return Match(endpoint, provider, model)
    return None


def split_model_action(model_action: str) -> tuple[str, str]:
    """Gemini's `{model}:{action}` path segment -> (model, ":action")."""
    model, colon, action = model_action.rpartition(":")
    return (model, colon + action) if colon else (model_action, "")


def protocol_for_path(path: str, headers: Mapping[str, str] | None = None) -> str:
    """Which protocol a request to `path` speaks, for errors raised before dispatch (an
    unknown path, a body too large): its endpoint's; else that of Gemini's API root, or
    of an endpoint the path contains; else Anthropic's for an `anthropic-version` header."""
    found = match(path)
    if found is not None:
        return found.endpoint.protocol
    if "/v1beta/" in path:
        return "gemini"
    for endpoint in ENDPOINTS:
        if (endpoint.action or endpoint.path) in path:
            return endpoint.protocol
    if headers and "anthropic-version" in headers:
        return "anthropic"
    return DEFAULT_PROTOCOL


def list_protocol(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """`GET /v1/models` is ambiguous: answer in Gemini's shape for Gemini-style auth,
    Anthropic's when an anthropic-version header is present, OpenAI's otherwise."""
    if "/v1beta/" in path or "x-goog-api-key" in headers or "key" in query:
        return "gemini"
    if "anthropic-version" in headers:
        return "anthropic"
    return DEFAULT_PROTOCOL
