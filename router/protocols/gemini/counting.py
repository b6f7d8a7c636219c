"""The bodies of Gemini's `models.countTokens` endpoint (COUNTING)."""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.gemini.common import _invalid
from router.protocols.gemini.request_in import _camel, _get, parse_request
from router.protocols.gemini.request_out import build_request
from router.protocols.interface import TokenCounting

_COUNT_REQUEST_KEYS = ("contents", "systemInstruction", "tools", "toolConfig", "generationConfig")
_COUNTED_KEYS = ("contents", "systemInstruction", "tools")


def parse_count_request(body: dict[str, Any]) -> ir.Request:
    """A client's `countTokens` body: `{generateContentRequest: {...}}`, or the contents
    (with, as Vertex clients send them, systemInstruction and tools) at the top level."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    inner = _get(body, "generateContentRequest")
    if isinstance(inner, dict):
        return parse_request({k: v for k, v in inner.items() if _camel(k) != "model"})
    request = {k: v for k, v in body.items() if _camel(k) in _COUNT_REQUEST_KEYS}
    request.setdefault("contents", [])
    return parse_request(request)


def build_count_request(req: ir.Request) -> dict[str, Any]:
    """The `models.countTokens` body for `req`: a `generateContentRequest` (whose `model`
    the API requires), so the count covers the system instruction and the function
    declarations as well as the contents."""
    body = build_request(req)
    inner: dict[str, Any] = {"model": "models/" + req.model.removeprefix("models/")}
    inner.update((key, body[key]) for key in _COUNTED_KEYS if key in body)
    return {"generateContentRequest": inner}


def count_from(body: Any) -> int:
    """`totalTokens` of a countTokens answer (proto3 JSON leaves a zero out)."""
    total = body.get("totalTokens", 0) if isinstance(body, dict) else None
    if not isinstance(total, int) or isinstance(total, bool):
        raise ir.Error(502, "bad_gateway", "countTokens answered without totalTokens")
    return total


def count_body(tokens: int) -> dict[str, Any]:
    """The countTokens answer for a Gemini client."""
    return {"totalTokens": tokens}


COUNTING = TokenCounting(
    parse_request=parse_count_request,
    build_request=build_count_request,
    count_from=count_from,
    answer=count_body,
)
