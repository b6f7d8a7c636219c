"""Upstream body -> ir.Response -> client body, and the usage object both carry."""

from __future__ import annotations

import time
from typing import Any

from router.protocols import ir
from router.protocols.openai_chat.common import (
    _FINISH_FROM_WIRE,
    _FINISH_TO_WIRE,
    _arguments_text,
    _client_id,
    _new_id,
)
from router.protocols.openai_chat.errors import _error_from_payload


def parse_usage(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    cached = prompt.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
    return ir.Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=cached,
        cache_creation_tokens=prompt.get("cache_write_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


def usage_of(body: dict[str, Any]) -> ir.Usage | None:
    """The usage an answer body reports; None when it reports none."""
    usage = body.get("usage")
    return parse_usage(usage) if isinstance(usage, dict) else None


def build_usage(usage: ir.Usage) -> dict[str, Any]:
    prompt: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_creation_tokens:
        prompt["cache_write_tokens"] = usage.cache_creation_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("error"):
        raise _error_from_payload(body["error"], 502)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ir.Error(502, "bad_gateway", "upstream response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    parts: list[ir.Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ir.Thinking(text=reasoning))
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(ir.Text(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(ir.Text(refusal))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            ir.ToolCall(
                call.get("id") or _new_id("call_"),
                function.get("name") or "",
                _arguments_text(function.get("arguments")),
            )
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.append(
            ir.ToolCall(
                _new_id("call_"), legacy.get("name") or "", _arguments_text(legacy.get("arguments"))
            )
        )
    finish = _FINISH_FROM_WIRE.get(choice.get("finish_reason") or "stop", "stop")
    if finish == "stop" and any(isinstance(p, ir.ToolCall) for p in parts):
        finish = "tool_calls"
    return ir.Response(
        id=body.get("id") or _new_id("chatcmpl-"),
        model=body.get("model") or "",
        parts=parts,
        finish=finish,
        usage=parse_usage(body.get("usage")),
        created=body.get("created") or 0,
    )


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    text = "".join(p.text for p in resp.parts if isinstance(p, ir.Text))
    thinking = "".join(p.text for p in resp.parts if isinstance(p, ir.Thinking) and not p.redacted)
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in resp.parts
        if isinstance(p, ir.ToolCall)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if thinking:
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = calls
    message["refusal"] = None
    finish = _FINISH_TO_WIRE[resp.finish]
    if calls and finish == "stop":
        finish = "tool_calls"
    return {
        "id": _client_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": resp.model or req.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": build_usage(resp.usage),
    }
