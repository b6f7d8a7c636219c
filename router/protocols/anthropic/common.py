"""Anthropic Messages: the protocol's constant facts and the helpers and tables shared
by several sections (errors of the request parsers, ids, dropped fields, stop reasons)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from router.protocols import ir

NAME = "anthropic"
ACCEPTS_IMAGE_URLS = True
MODEL_IN_BODY = True
SIGNS_TOOL_CALLS = False
# Client headers passed on when client and upstream both speak Anthropic.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_STOP_FROM_WIRE: dict[str, ir.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_TO_WIRE = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _drop(req: ir.Request, name: str) -> None:
    if name not in req.dropped:
        req.dropped.append(name)


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = _decode(arguments) if arguments else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _client_id(upstream_id: str) -> str:
    if not upstream_id:
        return _new_id("msg_")
    return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id


def _stop_reason(finish: str, stop_sequence: str | None, saw_call: bool) -> str:
    reason = _STOP_TO_WIRE[finish]
    if reason == "end_turn":
        if saw_call:
            return "tool_use"
        if stop_sequence:
            return "stop_sequence"
    return reason
