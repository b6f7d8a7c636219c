"""The admin API's JSON answers (errors go through router.server.errors)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response

_encode = msgspec.json.Encoder().encode


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        _encode(document), status_code=status, media_type="application/json", headers=headers
    )
