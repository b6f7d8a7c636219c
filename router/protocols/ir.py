"""The intermediate form every protocol converts to and from.

A protocol module knows its own wire format and this module, nothing else. Translation
from protocol A to protocol B is always `A -> ir -> B`.

Conventions every protocol module follows:

* Tool-call arguments travel as JSON *text* (`ToolCall.arguments`), exactly as received,
  so nothing is reformatted on the way through. Builders that need an object parse it.
* Leading system/developer instructions live in `Request.system`, in order. A system
  message found after the first user/assistant turn stays in `Request.messages` with
  role "system" at its position; targets with a single system slot turn it into user text.
* Tool results are `ToolResult` parts inside a "user" message. Builders for protocols
  with a separate tool role (OpenAI Chat) split them out.
* Thinking carries the protocol that produced its signature (`Thinking.origin`), because
  signatures do not transfer between providers: a builder drops a foreign signature (and,
  for Anthropic, the whole signed block) rather than sending an invalid one.
* Fields the inbound protocol had but the intermediate form cannot carry, and fields the
  outbound protocol cannot express, are appended to `Request.dropped` by name (the wire
  name as the client sent it, e.g. "logprobs", "n"). The server reports them in the
  `x-router-dropped` header, or rejects the request when it is strict.

Streams are sequences of `Event`s. The contract between decoders and encoders:

* `Start` comes first, exactly once.
* Content is a sequence of blocks; a block begins implicitly with the first
  `TextDelta`/`ThinkingDelta` after a block of another kind, or explicitly with
  `ToolCallStart`, `RedactedThinking`, or `BlockBreak`. Deltas always refer to the block
  open at that moment, so decoders must serialize interleaved upstream tool calls.
* `ThinkingSignature` closes the current thinking block's signature (it comes after that
  block's deltas, before the next block).
* `Finish` comes last, exactly once, with the final usage, unless an `Error` ends the
  stream instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Protocol = Literal["openai-chat", "openai-responses", "anthropic", "gemini"]
PROTOCOLS: tuple[str, ...] = ("openai-chat", "openai-responses", "anthropic", "gemini")

Role = Literal["user", "assistant", "system"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


# --- content parts -----------------------------------------------------------------


@dataclass(slots=True)
class Text:
    text: str
    # Gemini 3 may attach a thoughtSignature to a text part; it must go back unchanged.
    signature: str | None = None


@dataclass(slots=True)
class Image:
    """An image given inline (`data`, base64, with `media_type`) or by `url`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    detail: str | None = None  # OpenAI's "low" | "high" | "auto"


@dataclass(slots=True)
class File:
    """A document (PDF etc.), inline or by URL/file id. Carried where the target can."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = "{}"  # JSON text
    # Gemini thoughtSignature attached to the functionCall part (origin "gemini").
    signature: str | None = None


@dataclass(slots=True)
class ToolResult:
    call_id: str
    name: str | None = None  # Gemini needs it; builders look it up from earlier calls
    content: list[Text | Image] = field(default_factory=list)
    is_error: bool = False


@dataclass(slots=True)
class Thinking:
    """Reasoning output. `redacted` blocks carry their opaque payload in `data`."""

    text: str = ""
    signature: str | None = None
    origin: str | None = None  # protocol that produced the signature / data
    redacted: bool = False
    data: str | None = None  # redacted_thinking payload
    id: str | None = None  # Responses reasoning item id
    # For origin "openai-responses", `signature` holds the item's encrypted_content.


Part = Text | Image | File | ToolCall | ToolResult | Thinking


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)


# --- request -----------------------------------------------------------------------


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # when mode == "tool"


@dataclass(slots=True)
class OutputFormat:
    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(slots=True)
class Reasoning:
    """What the client asked for. `effort` is low|medium|high (minimal/none/max kept
    verbatim); `budget_tokens` a token budget; `enabled=False` means explicitly off."""

    enabled: bool = True
    effort: str | None = None
    budget_tokens: int | None = None
    include_thoughts: bool = True


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    output: OutputFormat | None = None
    reasoning: Reasoning | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage
    user: str | None = None
    metadata: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)


# --- response ----------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """Token counts in one convention: `input_tokens` INCLUDES cached tokens
    (OpenAI/Gemini style); `cached_tokens` is the cache-read part of it and
    `cache_creation_tokens` the cache-write part. `output_tokens` INCLUDES
    `reasoning_tokens`."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: list[Part] = field(default_factory=list)
    finish: FinishReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    created: int = 0  # unix seconds


@dataclass(slots=True)
class RateLimits:
    """A client key's limits as the protocol's rate-limit headers show them; None: that
    family has no limit. Resets are seconds from now."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None


@dataclass(slots=True)
class Error(Exception):
    """An error in protocol-neutral terms. `kind` is one of ERROR_KINDS."""

    status: int
    kind: str
    message: str
    param: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.message}"


# kind -> default HTTP status
ERROR_KINDS: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "unprocessable": 422,
    "rate_limit": 429,
    "api_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
    "overloaded": 529,
}


def error_kind_for_status(status: int) -> str:
    """The canonical kind for an HTTP status seen from an upstream."""
    for kind, code in ERROR_KINDS.items():
        if code == status:
            return kind
    if status == 408:
        return "timeout"
    if 400 <= status < 500:
        return "invalid_request"
    return "api_error"


# --- stream events -----------------------------------------------------------------


@dataclass(slots=True)
class Start:
    id: str
    model: str
    usage: Usage | None = None  # input tokens, when the upstream knows them up front
    created: int = 0


@dataclass(slots=True)
class TextDelta:
    text: str
    signature: str | None = None  # Gemini thoughtSignature on a text part


@dataclass(slots=True)
class ThinkingDelta:
    text: str
    origin: str | None = None
    id: str | None = None  # Responses reasoning item id (origin "openai-responses")


@dataclass(slots=True)
class ThinkingSignature:
    signature: str
    origin: str | None = None
    id: str | None = None  # Responses reasoning item id (origin "openai-responses")


@dataclass(slots=True)
class RedactedThinking:
    data: str
    origin: str | None = None
    id: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    id: str
    name: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    arguments: str


@dataclass(slots=True)
class BlockBreak:
    """Force a new block even if the next delta has the same kind (e.g. two text
    blocks in a row upstream)."""


@dataclass(slots=True)
class Finish:
    reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    stop_sequence: str | None = None


Event = (
    Start
    | TextDelta
    | ThinkingDelta
    | ThinkingSignature
    | RedactedThinking
    | ToolCallStart
    | ToolCallDelta
    | BlockBreak
    | Finish
    | Error
)
