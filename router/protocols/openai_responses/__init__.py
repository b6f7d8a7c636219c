"""OpenAI Responses API (`POST /v1/responses`) <-> ir.

One module per section, as in every protocol package (`router.protocols.interface`):

    common.py       NAME, the protocol's constant facts, shared helpers
    signatures.py   other providers' reasoning signatures, carried in `encrypted_content`
    request_in.py   client body -> ir.Request; streams are always SSE
    request_out.py  ir.Request -> upstream body
    response.py     upstream body -> ir.Response -> client body, usage
    stream_in.py    upstream Responses SSE -> ir events (StreamDecoder)
    stream_out.py   ir events -> client Responses SSE (StreamEncoder)
    errors.py       upstream error -> ir.Error -> client error body or stream event
    counting.py     COUNTING (None: the gateway has no Responses token-count endpoint)
    models.py       the model-list shape
"""

from router.protocols.openai_responses.common import (
    ACCEPTS_IMAGE_URLS,
    FORWARDED_HEADERS,
    MODEL_IN_BODY,
    NAME,
    SIGNS_TOOL_CALLS,
)
from router.protocols.openai_responses.counting import COUNTING
from router.protocols.openai_responses.errors import (
    error_body,
    parse_error,
    rate_limit_headers,
    stream_error,
)
from router.protocols.openai_responses.models import model_list
from router.protocols.openai_responses.request_in import parse_request, sse_requested
from router.protocols.openai_responses.request_out import build_request
from router.protocols.openai_responses.response import build_response, parse_response, usage_of
from router.protocols.openai_responses.signatures import (
    unwrap_encrypted,
    unwrap_signature,
    wrap_encrypted,
    wrap_signature,
)
from router.protocols.openai_responses.stream_in import StreamDecoder
from router.protocols.openai_responses.stream_out import StreamEncoder, stream_media_type

__all__ = [
    "ACCEPTS_IMAGE_URLS",
    "COUNTING",
    "FORWARDED_HEADERS",
    "MODEL_IN_BODY",
    "NAME",
    "SIGNS_TOOL_CALLS",
    "StreamDecoder",
    "StreamEncoder",
    "build_request",
    "build_response",
    "error_body",
    "model_list",
    "parse_error",
    "parse_request",
    "parse_response",
    "rate_limit_headers",
    "sse_requested",
    "stream_error",
    "stream_media_type",
    "unwrap_encrypted",
    "unwrap_signature",
    "usage_of",
    "wrap_encrypted",
    "wrap_signature",
]
