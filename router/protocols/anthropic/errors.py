"""Anthropic Messages: upstream error -> ir.Error -> client error body or stream event."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocols import ir, ratelimit
from router.protocols.anthropic.common import _decode
from router.protocols.sse import named_event

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "overloaded_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}
_KIND_OF_TYPE = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "permission",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "api_error": "api_error",
    "timeout_error": "timeout",
    "overloaded_error": "overloaded",
}


def _error_from_payload(payload: Any, default_status: int) -> ir.Error:
    """An Anthropic `error` object ({type, message}) -> ir.Error; status from its type."""
    if not isinstance(payload, dict):
        message = payload if isinstance(payload, str) and payload else "upstream error"
        return ir.Error(default_status, ir.error_kind_for_status(default_status), message)
    kind = _KIND_OF_TYPE.get(str(payload.get("type")))
    status = ir.ERROR_KINDS[kind] if kind else default_status
    message = payload.get("message")
    return ir.Error(
        status,
        kind or ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else "upstream error",
    )


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        payload = _decode(body) if body else None
    except msgspec.DecodeError:
        payload = None
    message: Any = None
    kind: str | None = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = _KIND_OF_TYPE.get(str(error.get("type")))
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"upstream returned HTTP {status}"
    if kind is None or ir.ERROR_KINDS.get(kind) != status:
        kind = ir.error_kind_for_status(status)
    return ir.Error(status, kind, message)


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(err.kind, "api_error"), "message": err.message},
    }


def stream_error(err: ir.Error, sequence: int = 0) -> bytes:
    """The mid-stream `event: error` (`sequence` is not needed: Anthropic events carry no
    sequence number)."""
    return named_event("error", error_body(err))


_REQUESTS = (
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
)
_TOKENS = (
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
)


def rate_limit_headers(rates: ir.RateLimits) -> dict[str, str]:
    """Anthropic's `anthropic-ratelimit-*` headers for a client key's limits."""
    return ratelimit.headers(rates, _REQUESTS, _TOKENS, ratelimit.moment_after)
