"""Upstream error -> ir.Error -> client error body or mid-stream `error` event."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocols import ir, ratelimit
from router.protocols.openai_responses.common import _decode
from router.protocols.sse import named_event

_TYPE_BY_KIND = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "timeout": "timeout",
}
_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
    "invalid_request_error": 400,
    "model_not_found": 404,
}


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _TYPE_BY_KIND.get(err.kind, "server_error"),
            "param": err.param,
            "code": err.kind,
        }
    }


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _error_from_object(error, f"upstream HTTP {status}", status)
    text = body.decode("utf-8", "replace").strip()[:1000] if body else ""
    return ir.Error(status, ir.error_kind_for_status(status), text or f"upstream HTTP {status}")


def _error_from_object(error: Any, fallback: str, status: int | None = None) -> ir.Error:
    """An `{code, message, param}` error object; without an HTTP status (errors inside a
    stream or a failed response) the status follows from `code`."""
    if not isinstance(error, dict):
        return ir.Error(502, "bad_gateway", fallback)
    if status is None:
        code = error.get("code")
        status = _CODE_STATUS.get(code, 500) if isinstance(code, str) else 500
    message = error.get("message")
    param = error.get("param")
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else fallback,
        param=param if isinstance(param, str) else None,
    )


def stream_error(err: ir.Error, sequence: int = 0) -> bytes:
    """The `error` event that ends a relayed upstream stream, after `sequence` events."""
    inner = error_body(err)["error"]
    payload = {
        "type": "error",
        "code": inner.get("code"),
        "message": inner.get("message"),
        "param": inner.get("param"),
        "sequence_number": sequence,
    }
    return named_event("error", payload)


_REQUESTS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_TOKENS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def rate_limit_headers(rates: ir.RateLimits) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for a client key's limits."""
    return ratelimit.headers(rates, _REQUESTS, _TOKENS, ratelimit.duration)
