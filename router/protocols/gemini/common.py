"""Gemini's constant facts and the helpers several sections share.

Decisions worth knowing:

* Tool-call ids. Gemini 2.x sends none, Gemini 3 sends ids that must be echoed. In a
  client request, a `functionCall` without id gets `gcall_<n>` (n counts calls in the
  request, so the same history always gets the same ids); a `functionResponse` without id
  takes the id of the earliest unanswered call of the same name. In upstream responses a
  call without id gets a random `gcall_<hex>` so ids stay unique across turns. Upstream,
  an id goes back on `functionCall`/`functionResponse` only when Gemini made it: the call
  sits in a model turn carrying a real thought signature (so it came from Gemini) and the
  id is not one of our `gcall_` ids. Any other id is left out, because endpoints that never
  issue ids reject the field ("Unknown name \"id\""); those pair calls and responses by
  order and name.
* Thought signatures. A `functionCall`'s `thoughtSignature` travels in
  `ToolCall.signature`, a text part's in `Text.signature` (streams: `TextDelta("",
  signature=...)` when it arrives on an empty text part), a thought part's in
  `Thinking.signature` with origin "gemini". Gemini 3 validates the signature on the first
  `functionCall` of each model turn: when no call in a model turn has one (the history
  came from another provider, or from a client that cannot carry signatures and whose
  call the server's signature cache no longer knows), the first call gets Google's
  documented bypass value `skip_thought_signature_validator`.
* Tool results. `functionResponse.response` is the result text when that is a JSON
  object, else `{"output": text}` (`{"error": text}` when `is_error`); parsing inverts
  this. Images in a result follow as `inlineData` parts in the same user turn (accepted by
  every model, unlike Gemini 3's `functionResponse.parts`); parsing reads them back as
  user images, and `functionResponse.parts` images as result images.
* Schemas. Tool parameters go out reduced to Gemini's `Schema` in `parameters`, and
  structured output reduced in `responseSchema` (with `propertyOrdering`), not as
  `parametersJsonSchema`/`responseJsonSchema`: the reduced form is accepted by every
  Gemini model and endpoint (API, Vertex, Code Assist), the full forms only by newer ones.
  Incoming `parametersJsonSchema`/`responseJsonSchema` are taken as they are; incoming
  Gemini `Schema`s are converted back to JSON Schema.
* `safetySettings`, `cachedContent` and penalties cannot travel and are reported in
  `Request.dropped`. Image URLs are not fetched by Gemini (`ACCEPTS_IMAGE_URLS = False`);
  a URL that reaches the builder anyway is sent as `fileData`.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from router.protocols import ir

NAME = "gemini"
ACCEPTS_IMAGE_URLS = False
MODEL_IN_BODY = False  # the model is named by the URL; so is the stream flag
SIGNS_TOOL_CALLS = True  # Gemini 3 tool calls carry thoughtSignatures to replay
FORWARDED_HEADERS: tuple[str, ...] = ()
SKIP_SIGNATURE = "skip_thought_signature_validator"

_decode = msgspec.json.decode
_encode = msgspec.json.encode

_FINISH_FROM_GEMINI: dict[str, ir.FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}
_FINISH_TO_GEMINI = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "error": "OTHER",
}


def _invalid(message: str) -> ir.Error:
    return ir.Error(400, "invalid_request", message)


_SYNTHETIC_ID = "gcall_"


def _random_call_id() -> str:
    return _SYNTHETIC_ID + uuid.uuid4().hex[:24]


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def standard_base64(data: str) -> str:
    """Gemini's JSON bytes may be URL-safe and unpadded (google-genai sends them so);
    the intermediate form, like every other protocol, carries standard padded base64."""
    data = data.replace("-", "+").replace("_", "/")
    return data + "=" * (-len(data) % 4)


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature:
        part["thoughtSignature"] = signature
    return part


def _arguments(arguments: str) -> dict[str, Any]:
    """Tool arguments as the object Gemini wants; unparsable text (e.g. cut off by a token
    limit) becomes {}."""
    try:
        value = _decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
