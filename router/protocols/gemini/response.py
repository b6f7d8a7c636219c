"""Upstream Gemini body -> ir.Response -> client Gemini body, and usage."""

from __future__ import annotations

import time
import uuid
from typing import Any

from router.protocols import ir
from router.protocols.gemini.common import (
    _FINISH_FROM_GEMINI,
    _FINISH_TO_GEMINI,
    NAME,
    _arguments,
    _encode,
    _random_call_id,
    _signed,
    _str,
    standard_base64,
)
from router.protocols.gemini.errors import _error_from_object
from router.protocols.gemini.signatures import wrap_signature


def _unwrap(body: Any) -> Any:
    """Code Assist wraps each response as {"response": {...}, "traceId": ...}."""
    if (
        isinstance(body, dict)
        and "candidates" not in body
        and isinstance(body.get("response"), dict)
    ):
        return body["response"]
    return body


def parse_response(body: dict[str, Any]) -> ir.Response:
    body = _unwrap(body)
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if isinstance(body.get("error"), dict):
        raise _error_from_object(body["error"], 502)
    resp = ir.Response(
        id=_str(body, "responseId") or "resp_" + uuid.uuid4().hex[:24],
        model=_str(body, "modelVersion") or "",
        usage=_usage_from(body.get("usageMetadata")),
        created=int(time.time()),
    )
    candidate = _first_candidate(body)
    content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
    for part in content.get("parts") or []:
        parsed = _response_part(part) if isinstance(part, dict) else None
        if parsed is not None:
            resp.parts.append(parsed)
    has_calls = any(isinstance(p, ir.ToolCall) for p in resp.parts)
    resp.finish = _finish_from(candidate.get("finishReason"), has_calls, body)
    return resp


def _first_candidate(body: dict[str, Any]) -> dict[str, Any]:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    return {}


def _response_part(part: dict[str, Any]) -> ir.Part | None:
    signature = _str(part, "thoughtSignature")
    call = part.get("functionCall")
    if isinstance(call, dict):
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        return ir.ToolCall(
            _str(call, "id") or _random_call_id(),
            str(call.get("name", "")),
            _encode(args).decode(),
            signature=signature,
        )
    if isinstance(part.get("text"), str):
        if part.get("thought") is True:
            return ir.Thinking(text=part["text"], signature=signature, origin=NAME)
        return ir.Text(part["text"], signature=signature)
    if isinstance(part.get("inlineData"), dict) and isinstance(part["inlineData"].get("data"), str):
        return ir.Image(
            media_type=_str(part["inlineData"], "mimeType"),
            data=standard_base64(part["inlineData"]["data"]),
        )
    if signature:
        return ir.Text("", signature=signature)
    return None


def _blocked(body: dict[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _finish_from(reason: Any, has_calls: bool, body: dict[str, Any]) -> ir.FinishReason:
    if reason is None and _blocked(body):
        return "content_filter"
    finish = _FINISH_FROM_GEMINI.get(str(reason), "stop")
    if has_calls and finish == "stop":
        return "tool_calls"
    return finish


def _usage_from(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    return ir.Usage(
        input_tokens=int(usage.get("promptTokenCount") or 0)
        + int(usage.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(usage.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(usage.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def usage_of(body: dict[str, Any]) -> ir.Usage | None:
    """The usage an answer body reports; None when it reports none."""
    body = _unwrap(body)
    usage = body.get("usageMetadata") if isinstance(body, dict) else None
    return _usage_from(usage) if isinstance(usage, dict) else None


def _usage_body(usage: ir.Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(usage.output_tokens - usage.reasoning_tokens, 0),
        "totalTokenCount": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        body["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cached_tokens:
        body["cachedContentTokenCount"] = usage.cached_tokens
    return body


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    show_thoughts = req.reasoning is not None and req.reasoning.include_thoughts
    parts = [p for p in (_client_part(part, show_thoughts) for part in resp.parts) if p]
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts or [{"text": ""}]},
        "finishReason": _FINISH_TO_GEMINI[resp.finish],
        "index": 0,
    }
    return {
        "candidates": [candidate],
        "usageMetadata": _usage_body(resp.usage),
        "modelVersion": resp.model or req.model,
        "responseId": resp.id,
    }


def _client_part(part: ir.Part, show_thoughts: bool) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return _signed({"text": part.text}, part.signature) if part.text or part.signature else None
    if isinstance(part, ir.Thinking):
        signature = _carried_signature(part, show_thoughts)
        text = part.text if show_thoughts and not part.redacted else ""
        return _signed({"text": text, "thought": True}, signature) if text or signature else None
    if isinstance(part, ir.ToolCall):
        call = {"id": part.id, "name": part.name, "args": _arguments(part.arguments)}
        return _signed({"functionCall": call}, part.signature)
    if isinstance(part, ir.Image) and part.data is not None:
        return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
    return None


def _carried_signature(part: ir.Thinking, show_thoughts: bool) -> str | None:
    """Another provider's signature only goes with its text (see signatures.py)."""
    if part.origin != NAME and not show_thoughts:
        return None
    value = part.data if part.redacted else part.signature
    return wrap_signature(value, part.origin, part.redacted)
