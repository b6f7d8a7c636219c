"""Errors in the client's own protocol: shape and HTTP status, never a stack trace."""

from __future__ import annotations

import msgspec
from litestar import Response

from router.protocols import ir, module_for

_encode = msgspec.json.Encoder().encode


def protocol_for_path(path: str, headers: dict[str, str] | None = None) -> str:
    """Which protocol a request to `path` speaks, for errors raised before dispatch."""
    if "/v1beta/" in path or ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    if "/v1/messages" in path:
        return "anthropic"
    if "/v1/responses" in path:
        return "openai-responses"
    if headers and "anthropic-version" in headers:
        return "anthropic"
    return "openai-chat"


def error_parts(
    protocol: str, error: ir.Error, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of `error` in `protocol`'s shape."""
    body = module_for(protocol).error_body(error)
    out = dict(headers or {})
    if error.retry_after is not None:
        out["retry-after"] = str(int(error.retry_after + 0.999))
    status = error.status if 400 <= error.status < 600 else 500
    return status, _encode(body), out


def error_response(
    protocol: str, error: ir.Error, headers: dict[str, str] | None = None
) -> Response:
    status, body, out = error_parts(protocol, error, headers)
    return Response(body, status_code=status, media_type="application/json", headers=out)
