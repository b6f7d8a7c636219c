"""Upstream response body -> ir.Response -> client response body, and usage.

A refusal becomes text with finish reason `content_filter`.
"""

from __future__ import annotations

import time
from typing import Any

from router.protocols import ir
from router.protocols.openai_responses.common import NAME, _new_id, _reasoning_item
from router.protocols.openai_responses.errors import _error_from_object
from router.protocols.openai_responses.request_in import _thinking_from_item
from router.protocols.openai_responses.request_out import (
    _format_body,
    _tool_body,
    _tool_choice_body,
)
from router.protocols.openai_responses.signatures import wrap_encrypted


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("status") == "failed":
        raise _error_from_object(body.get("error"), "upstream response failed")
    resp = ir.Response(
        id=str(body.get("id") or _new_id("resp_")),
        model=str(body.get("model") or ""),
        created=int(body.get("created_at") or 0),
        usage=_usage_from(body.get("usage")),
    )
    refused = False
    for item in body.get("output") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    resp.parts.append(ir.Text(str(part.get("text", ""))))
                elif part.get("type") == "refusal":
                    refused = True
                    resp.parts.append(ir.Text(str(part.get("refusal", ""))))
        elif kind == "function_call":
            resp.parts.append(
                ir.ToolCall(
                    str(item.get("call_id") or item.get("id") or _new_id("call_")),
                    str(item.get("name", "")),
                    item.get("arguments") or "{}",
                )
            )
        elif kind == "reasoning":
            resp.parts.append(_thinking_from_item(item))
    has_calls = any(isinstance(p, ir.ToolCall) for p in resp.parts)
    resp.finish = _finish_from(
        body.get("status"), body.get("incomplete_details"), has_calls, refused
    )
    return resp


def _finish_from(status: Any, details: Any, has_calls: bool, refused: bool) -> ir.FinishReason:
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    if has_calls:
        return "tool_calls"
    return "content_filter" if refused else "stop"


def _usage_from(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    return ir.Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=int(inputs.get("cached_tokens") or 0),
        cache_creation_tokens=int(inputs.get("cache_write_tokens") or 0),
        reasoning_tokens=int(outputs.get("reasoning_tokens") or 0),
    )


def usage_of(body: dict[str, Any]) -> ir.Usage | None:
    """The usage an answer body reports; None when it reports none."""
    usage = body.get("usage")
    return _usage_from(usage) if isinstance(usage, dict) else None


def _usage_body(usage: ir.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_creation_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    output = _output_items(resp.parts)
    status, reason, error = _status_for(resp.finish)
    return _response_object(
        req,
        response_id=_response_id(resp.id),
        model=resp.model or req.model,
        created=resp.created or int(time.time()),
        status=status,
        output=output,
        usage=_usage_body(resp.usage),
        incomplete_reason=reason,
        error=error,
    )


def _response_id(upstream_id: str | None) -> str:
    if upstream_id and upstream_id.startswith("resp_"):
        return upstream_id
    return _new_id("resp_")


def _status_for(finish: ir.FinishReason) -> tuple[str, str | None, dict[str, Any] | None]:
    if finish == "length":
        return "incomplete", "max_output_tokens", None
    if finish == "content_filter":
        return "incomplete", "content_filter", None
    if finish == "error":
        return "failed", None, {"code": "server_error", "message": "the model failed"}
    return "completed", None, None


def _output_items(parts: list[ir.Part]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in parts:
        if isinstance(part, ir.Text):
            if part.text:
                texts.append(part.text)
            continue
        if texts:
            items.append(_message_item(_new_id("msg_"), texts, "completed"))
            texts = []
        if isinstance(part, ir.ToolCall):
            items.append(
                _function_call_item(_new_id("fc_"), part.id, part.name, part.arguments, "completed")
            )
        elif isinstance(part, ir.Thinking):
            own = part.origin == NAME
            payload = part.data if part.redacted else part.signature
            encrypted = wrap_encrypted(payload, part.origin, part.redacted)
            if part.text or encrypted:
                item_id = part.id if own and part.id else _new_id("rs_")
                items.append(_reasoning_item(item_id, part.text, encrypted))
    if texts:
        items.append(_message_item(_new_id("msg_"), texts, "completed"))
    return items


def _message_item(item_id: str, texts: list[str], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text) for text in texts],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _response_object(
    req: ir.Request,
    *,
    response_id: str,
    model: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full Response object, echoing the request fields the SDK's model requires."""
    reasoning = None
    if req.reasoning is not None:
        reasoning = {
            "effort": req.reasoning.effort if req.reasoning.enabled else "none",
            "summary": "auto" if req.reasoning.include_thoughts else None,
        }
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": "\n\n".join(req.system) if req.system else None,
        "max_output_tokens": req.max_tokens,
        "metadata": req.metadata or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": reasoning,
        "store": False,
        "temperature": req.temperature,
        "text": {"format": _format_body(req.output)},
        "tool_choice": _tool_choice_body(req.tool_choice) or "auto",
        "tools": [_tool_body(tool) for tool in req.tools],
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": req.user,
    }
    if status == "completed":
        body["completed_at"] = int(time.time())
    return body
