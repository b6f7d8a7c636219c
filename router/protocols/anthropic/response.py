"""Anthropic Messages: upstream body -> ir.Response -> client body, and usage."""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import (
    _STOP_FROM_WIRE,
    NAME,
    _client_id,
    _encode,
    _new_id,
    _stop_reason,
    _tool_input,
)
from router.protocols.anthropic.errors import _error_from_payload
from router.protocols.anthropic.signatures import _wrap_signature


def _usage_numbers(usage: dict[str, Any]) -> tuple[int, int, int, int | None, int | None]:
    details = usage.get("output_tokens_details") or {}
    return (
        usage.get("input_tokens") or 0,
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0,
        usage.get("output_tokens"),
        details.get("thinking_tokens") if isinstance(details, dict) else None,
    )


def parse_usage(usage: Any) -> ir.Usage:
    """Anthropic usage -> ir: `input_tokens` there excludes cache reads and writes."""
    if not isinstance(usage, dict):
        return ir.Usage()
    fresh, read, written, output, thinking = _usage_numbers(usage)
    return ir.Usage(
        input_tokens=fresh + read + written,
        output_tokens=output or 0,
        cached_tokens=read,
        cache_creation_tokens=written,
        reasoning_tokens=thinking or 0,
    )


def usage_of(body: dict[str, Any]) -> ir.Usage | None:
    """The usage an answer body reports; None when it reports none."""
    usage = body.get("usage")
    return parse_usage(usage) if isinstance(usage, dict) else None


def build_usage(usage: ir.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": max(
            0, usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens
        ),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("type") == "error" or isinstance(body.get("error"), dict):
        raise _error_from_payload(body.get("error"), 502)
    content = body.get("content")
    if not isinstance(content, list):
        raise ir.Error(502, "bad_gateway", "upstream response has no content")
    parts: list[ir.Part] = []
    for block in content:
        part = _response_part(block) if isinstance(block, dict) else None
        if part is not None:
            parts.append(part)
    finish = _STOP_FROM_WIRE.get(body.get("stop_reason") or "end_turn", "stop")
    return ir.Response(
        id=body.get("id") or _new_id("msg_"),
        model=body.get("model") or "",
        parts=parts,
        finish=finish,
        stop_sequence=body.get("stop_sequence"),
        usage=parse_usage(body.get("usage")),
    )


def _response_part(block: dict[str, Any]) -> ir.Part | None:
    kind = block.get("type")
    if kind == "text":
        return ir.Text(block.get("text") or "")
    if kind == "tool_use":
        return ir.ToolCall(
            block.get("id") or _new_id("toolu_"),
            block.get("name") or "",
            _encode(block.get("input") or {}).decode(),
        )
    if kind == "thinking":
        return ir.Thinking(
            text=block.get("thinking") or "", signature=block.get("signature") or None, origin=NAME
        )
    if kind == "redacted_thinking":
        return ir.Thinking(redacted=True, data=block.get("data"), origin=NAME)
    return None  # server tool blocks, etc.


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in resp.parts:
        if isinstance(part, ir.Text):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": _tool_input(part.arguments),
                }
            )
        elif isinstance(part, ir.Thinking):
            if part.redacted:
                data = _wrap_signature(part.data, part.origin)
                content.append({"type": "redacted_thinking", "data": data})
            else:
                signature = _wrap_signature(part.signature, part.origin)
                content.append({"type": "thinking", "thinking": part.text, "signature": signature})
    saw_call = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _client_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model or req.model,
        "content": content,
        "stop_reason": _stop_reason(resp.finish, resp.stop_sequence, saw_call),
        "stop_sequence": resp.stop_sequence,
        "usage": build_usage(resp.usage),
    }
