"""Upstream error -> ir.Error -> client error body, or the mid-stream error chunk."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocols import ir, ratelimit
from router.protocols.openai_chat.common import _decode
from router.protocols.sse import data_line

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "server_error",
    "bad_gateway": "server_error",
    "unavailable": "server_error",
    "timeout": "timeout",
    "overloaded": "server_error",
}
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "timeout": 504,
}


def _text_of(body: bytes, status: int) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else f"upstream returned HTTP {status}"


def _error_from_payload(payload: Any, default_status: int) -> ir.Error:
    """An `{"message","type","param","code"}` object (or a bare string) -> ir.Error."""
    if not isinstance(payload, dict):
        message = payload if isinstance(payload, str) and payload else "upstream error"
        return ir.Error(default_status, ir.error_kind_for_status(default_status), message)
    code = payload.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else None
    status = status or _STATUS_OF_TYPE.get(str(payload.get("type")), default_status)
    message = payload.get("message")
    param = payload.get("param")
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else "upstream error",
        param if isinstance(param, str) else None,
    )


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        payload = _decode(body) if body else None
    except msgspec.DecodeError:
        payload = None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    message: Any = None
    param: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message, param = error.get("message"), error.get("param")
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not isinstance(message, str) or not message:
        message = _text_of(body, status)
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message,
        param if isinstance(param, str) else None,
    )


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _ERROR_TYPES.get(err.kind, "server_error"),
            "param": err.param,
            "code": err.kind,
        }
    }


def stream_error(err: ir.Error, sequence: int = 0) -> bytes:
    """The mid-stream error chunk (`data: {"error": ...}`)."""
    return data_line(error_body(err))


_REQUESTS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_TOKENS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def rate_limit_headers(rates: ir.RateLimits) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for a client key's limits."""
    return ratelimit.headers(rates, _REQUESTS, _TOKENS, ratelimit.duration)
