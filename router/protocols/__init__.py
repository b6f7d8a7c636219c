"""Protocol modules: one per wire protocol, each converting to and from `ir`.

Every module (`openai_chat`, `openai_responses`, `anthropic`, `gemini`) exposes the same
surface, so the server can treat them alike:

    NAME: str                                   # "openai-chat", ... (see ir.PROTOCOLS)
    ACCEPTS_IMAGE_URLS: bool                    # False: the server inlines http(s) images first
    parse_request(body: dict) -> ir.Request     # client body -> ir   (raises ir.Error 400)
    build_request(req: ir.Request) -> dict      # ir -> upstream body (appends req.dropped)
    parse_response(body: dict) -> ir.Response   # upstream body -> ir
    build_response(resp: ir.Response, req: ir.Request) -> dict   # ir -> client body
    StreamDecoder()                             # upstream stream bytes -> ir events
        .feed(chunk: bytes) -> list[ir.Event]
        .close() -> list[ir.Event]              # at upstream EOF; errors if unfinished
    StreamEncoder(req: ir.Request, **options)   # ir events -> client stream bytes
        .content_type: str
        .encode(event: ir.Event) -> bytes
    parse_error(status: int, body: bytes) -> ir.Error   # upstream error -> ir
    error_body(err: ir.Error) -> dict           # ir error -> client body (status: err.status)
    stream_error(err: ir.Error) -> bytes        # the mid-stream error event, on its own
    model_list(models: list[str]) -> dict       # the protocol's model-list shape

Gemini carries the model and the stream flag in the URL, not the body: its
`parse_request` leaves `model` empty and `stream` False for the caller to fill in, and
its `StreamEncoder` takes `sse: bool` (SSE with alt=sse, one JSON array without).
"""

from __future__ import annotations

from types import ModuleType

_MODULES: dict[str, ModuleType] = {}


def module_for(protocol: str) -> ModuleType:
    module = _MODULES.get(protocol)
    if module is None:
        # imported on first use: the protocol modules import this package
        from router.protocols import anthropic, gemini, openai_chat, openai_responses

        _MODULES.update(
            {
                "openai-chat": openai_chat,
                "openai-responses": openai_responses,
                "anthropic": anthropic,
                "gemini": gemini,
            }
        )
        module = _MODULES[protocol]
    return module
