"""Anthropic Messages: the `/v1/messages/count_tokens` bodies."""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import _invalid
from router.protocols.anthropic.request_in import parse_request
from router.protocols.anthropic.request_out import build_request
from router.protocols.interface import TokenCounting

_COUNTED_KEYS = ("messages", "system", "tools", "tool_choice", "thinking")


def parse_count_request(body: dict[str, Any]) -> ir.Request:
    """A client's `/v1/messages/count_tokens` body (a Messages body without max_tokens)."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    return parse_request({**body, "max_tokens": 1, "stream": False})


def build_count_request(req: ir.Request) -> dict[str, Any]:
    """The `/v1/messages/count_tokens` body for `req`: the fields it accepts."""
    body = build_request(req)
    return {"model": req.model, **{k: body[k] for k in _COUNTED_KEYS if k in body}}


def count_from(body: Any) -> int:
    total = body.get("input_tokens") if isinstance(body, dict) else None
    if not isinstance(total, int) or isinstance(total, bool):
        raise ir.Error(502, "bad_gateway", "count_tokens answered without input_tokens")
    return total


def count_body(tokens: int) -> dict[str, Any]:
    """The count_tokens answer for an Anthropic client."""
    return {"input_tokens": tokens}


COUNTING = TokenCounting(
    parse_request=parse_count_request,
    build_request=build_count_request,
    count_from=count_from,
    answer=count_body,
)
