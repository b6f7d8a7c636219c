"""Google Gemini `generateContent` / `streamGenerateContent` <-> ir.

Gemini names the model and the stream flag in the URL (`MODEL_IN_BODY = False`), streams
SSE with `alt=sse` and one JSON array without, and signs tool calls with thought
signatures a later turn must replay. One module per section, as in every protocol package
(see `router.protocols.interface`):

    common.py       constants, shared helpers; the decisions worth knowing
    signatures.py   other providers' reasoning signatures, carried as `thoughtSignature`
    request_in.py   client body -> ir.Request; sse_requested
    request_out.py  ir.Request -> upstream body
    response.py     upstream body -> ir.Response -> client body, usage
    stream_in.py    upstream stream bytes -> ir events (StreamDecoder)
    stream_out.py   ir events -> client stream bytes (StreamEncoder)
    errors.py       upstream error -> ir.Error -> client error body or stream chunk
    counting.py     `models.countTokens` bodies (COUNTING)
    models.py       the model-list shape
    schema.py       JSON Schema <-> Gemini's `Schema` dialect (to_gemini / from_gemini)
"""

from __future__ import annotations

from router.protocols.gemini.common import (
    ACCEPTS_IMAGE_URLS,
    FORWARDED_HEADERS,
    MODEL_IN_BODY,
    NAME,
    SIGNS_TOOL_CALLS,
    SKIP_SIGNATURE,
    standard_base64,
)
from router.protocols.gemini.counting import (
    COUNTING,
    build_count_request,
    count_body,
    count_from,
    parse_count_request,
)
from router.protocols.gemini.errors import error_body, parse_error, rate_limit_headers, stream_error
from router.protocols.gemini.models import model_list
from router.protocols.gemini.request_in import parse_request, sse_requested
from router.protocols.gemini.request_out import build_request
from router.protocols.gemini.response import build_response, parse_response, usage_of
from router.protocols.gemini.signatures import unwrap_signature, wrap_signature
from router.protocols.gemini.stream_in import StreamDecoder
from router.protocols.gemini.stream_out import StreamEncoder, stream_media_type

__all__ = [
    "ACCEPTS_IMAGE_URLS",
    "COUNTING",
    "FORWARDED_HEADERS",
    "MODEL_IN_BODY",
    "NAME",
    "SIGNS_TOOL_CALLS",
    "SKIP_SIGNATURE",
    "StreamDecoder",
    "StreamEncoder",
    "build_count_request",
    "build_request",
    "build_response",
    "count_body",
    "count_from",
    "error_body",
    "model_list",
    "parse_count_request",
    "parse_error",
    "parse_request",
    "parse_response",
    "rate_limit_headers",
    "sse_requested",
    "standard_base64",
    "stream_error",
    "stream_media_type",
    "unwrap_signature",
    "usage_of",
    "wrap_signature",
]
