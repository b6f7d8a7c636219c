"""Upstream Gemini error -> ir.Error -> a Gemini client's error body or stream chunk."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.gemini.common import _decode, _str
from router.protocols.sse import data_line

_STATUS_BY_KIND = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "unprocessable": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "bad_gateway": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
}
_KIND_BY_STATUS = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "INTERNAL": "api_error",
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "timeout",
}


def error_body(err: ir.Error) -> dict[str, Any]:
    status = _STATUS_BY_KIND.get(err.kind) or (
        "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT"
    )
    return {"error": {"code": err.status, "message": err.message, "status": status}}


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _error_from_object(error, status)
    text = body.decode("utf-8", "replace").strip()[:1000] if body else ""
    return ir.Error(status, ir.error_kind_for_status(status), text or f"upstream HTTP {status}")


def _error_from_object(error: dict[str, Any], status: int) -> ir.Error:
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    kind = _KIND_BY_STATUS.get(str(error.get("status")), ir.error_kind_for_status(status))
    message = _str(error, "message") or f"upstream HTTP {status}"
    return ir.Error(status, kind, message, retry_after=_retry_delay(error.get("details")))


def _retry_delay(details: Any) -> float | None:
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def stream_error(err: ir.Error, sequence: int = 0) -> bytes:
    """Gemini has no error event: a relayed SSE stream ends with a chunk holding the error
    body. `sequence` is not needed."""
    return data_line(error_body(err))


def rate_limit_headers(rates: ir.RateLimits) -> dict[str, str]:
    """None: Gemini's API sends no rate-limit headers (a 429 says when to retry)."""
    return {}
