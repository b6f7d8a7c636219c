"""OpenAI Chat Completions (`POST /v1/chat/completions`) <-> ir.

One module per section, as every protocol package (see `router.protocols.interface`):

    common.py       NAME, the constant facts, helpers shared by the sections
    signatures.py   reasoning signatures: none, Chat has no field to carry one back
    request_in.py   client body -> ir.Request; a Chat stream is always SSE
    request_out.py  ir.Request -> upstream body
    response.py     upstream body -> ir.Response -> client body, usage
    stream_in.py    upstream chunks -> ir events (StreamDecoder)
    stream_out.py   ir events -> `chat.completion.chunk` SSE (StreamEncoder)
    errors.py       upstream error -> ir.Error -> client error body or stream chunk
    counting.py     COUNTING: None, Chat has no token-count endpoint
    models.py       the model-list shape
"""

from __future__ import annotations

from router.protocols.openai_chat.common import (
    ACCEPTS_IMAGE_URLS,
    FORWARDED_HEADERS,
    MODEL_IN_BODY,
    NAME,
    SIGNS_TOOL_CALLS,
)
from router.protocols.openai_chat.counting import COUNTING
from router.protocols.openai_chat.errors import (
    error_body,
    parse_error,
    rate_limit_headers,
    stream_error,
)
from router.protocols.openai_chat.models import model_list
from router.protocols.openai_chat.request_in import parse_request, split_data_url, sse_requested
from router.protocols.openai_chat.request_out import build_request, image_url, reasoning_effort
from router.protocols.openai_chat.response import (
    build_response,
    build_usage,
    parse_response,
    parse_usage,
    usage_of,
)
from router.protocols.openai_chat.signatures import unwrap_signature, wrap_signature
from router.protocols.openai_chat.stream_in import StreamDecoder
from router.protocols.openai_chat.stream_out import StreamEncoder, stream_media_type

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
    "build_usage",
    "error_body",
    "image_url",
    "model_list",
    "parse_error",
    "parse_request",
    "parse_response",
    "parse_usage",
    "rate_limit_headers",
    "reasoning_effort",
    "split_data_url",
    "sse_requested",
    "stream_error",
    "stream_media_type",
    "unwrap_signature",
    "usage_of",
    "wrap_signature",
]
