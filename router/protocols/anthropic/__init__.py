"""Anthropic Messages (`POST /v1/messages`) <-> ir, one module per section of
`router.protocols.interface.WireProtocol`:

    common        NAME and the protocol's constant facts, shared helpers and tables
    signatures    other protocols' reasoning signatures, carried as "<origin>:<signature>"
    request_in    client body -> ir.Request; streaming clients always get SSE
    request_out   ir.Request -> upstream body (max_tokens, thinking budget, tool ids)
    response      upstream body -> ir.Response -> client body, usage
    stream_in     upstream stream bytes -> ir events (StreamDecoder)
    stream_out    ir events -> client stream bytes (StreamEncoder)
    errors        upstream error -> ir.Error -> client error body or `event: error`
    counting      the `/v1/messages/count_tokens` bodies (COUNTING)
    models        the model-list shape
"""

from router.protocols.anthropic.common import (
    ACCEPTS_IMAGE_URLS,
    FORWARDED_HEADERS,
    MODEL_IN_BODY,
    NAME,
    SIGNS_TOOL_CALLS,
)
from router.protocols.anthropic.counting import (
    COUNTING,
    build_count_request,
    count_body,
    count_from,
    parse_count_request,
)
from router.protocols.anthropic.errors import (
    error_body,
    parse_error,
    rate_limit_headers,
    stream_error,
)
from router.protocols.anthropic.models import model_list
from router.protocols.anthropic.request_in import parse_request, sse_requested
from router.protocols.anthropic.request_out import (
    build_request,
    default_max_tokens,
    sanitize_tool_id,
    thinking_budget,
)
from router.protocols.anthropic.response import (
    build_response,
    build_usage,
    parse_response,
    parse_usage,
    usage_of,
)
from router.protocols.anthropic.signatures import unwrap_signature, wrap_signature
from router.protocols.anthropic.stream_in import StreamDecoder
from router.protocols.anthropic.stream_out import StreamEncoder, stream_media_type

__all__ = [
    "ACCEPTS_IMAGE_URLS",
    "COUNTING",
    "FORWARDED_HEADERS",
    "MODEL_IN_BODY",
    "NAME",
    "SIGNS_TOOL_CALLS",
    "StreamDecoder",
    "StreamEncoder",
    "build_count_request",
    "build_request",
    "build_response",
    "build_usage",
    "count_body",
    "count_from",
    "default_max_tokens",
    "error_body",
    "model_list",
    "parse_count_request",
    "parse_error",
    "parse_request",
    "parse_response",
    "parse_usage",
    "rate_limit_headers",
    "sanitize_tool_id",
    "sse_requested",
    "stream_error",
    "stream_media_type",
    "thinking_budget",
    "unwrap_signature",
    "usage_of",
    "wrap_signature",
]
