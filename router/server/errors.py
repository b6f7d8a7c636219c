"""Errors in the client's own protocol: shape and HTTP status, never a stack trace."""

from __future__ import annotations

import msgspec
from litestar import Response

from router.protocols import ir, module_for
from router.protocols.paths import protocol_for_path

_encode = msgspec.json.Encoder().encode

__all__ = ["error_parts", "error_response", "protocol_for_path"]


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
