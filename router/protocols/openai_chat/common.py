"""NAME, the protocol's constant facts, and what several sections share."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from router.protocols import ir

NAME = "openai-chat"
ACCEPTS_IMAGE_URLS = True
MODEL_IN_BODY = True
SIGNS_TOOL_CALLS = False
FORWARDED_HEADERS: tuple[str, ...] = ()

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_FINISH_FROM_WIRE: dict[str, ir.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_FINISH_TO_WIRE = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _drop(req: ir.Request, name: str) -> None:
    if name not in req.dropped:
        req.dropped.append(name)


def _arguments_text(value: Any) -> str:
    if isinstance(value, str):
        return value or "{}"
    if value is None:
        return "{}"
    return _encode(value).decode()


def _client_id(upstream_id: str) -> str:
    if not upstream_id:
        return _new_id("chatcmpl-")
    return upstream_id if upstream_id.startswith("chatcmpl-") else "chatcmpl-" + upstream_id
