"""ir events -> `chat.completion.chunk` SSE for Chat clients (`StreamEncoder`)."""

from __future__ import annotations

import time
from typing import Any

from router.protocols import ir
from router.protocols.openai_chat.common import _FINISH_TO_WIRE, _client_id, _encode
from router.protocols.openai_chat.errors import stream_error
from router.protocols.openai_chat.response import build_usage
from router.protocols.sse import data_line

_DONE = b"data: [DONE]\n\n"
_CHUNK_TAIL = b',"finish_reason":null}]}\n\n'


class StreamEncoder:
    """ir events -> `chat.completion.chunk` SSE for Chat clients.

    States: not started -> streaming (role sent) -> done (finish, usage, [DONE] or an
    error sent). Role goes out once; each tool call's id/type/name only in its first
    fragment; the usage chunk, when asked for, is the last before [DONE]."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, *, sse: bool = True, **options: Any) -> None:
        self._req = req
        self._include_usage = req.include_usage
        self._head = b""  # `data: {"id":...,"choices":[{"index":0,"delta":`
        self._id = ""
        self._model = req.model
        self._created = 0
        self._started = False
        self._done = False
        self._tool_index = -1
        self._saw_call = False
        self._start_usage: ir.Usage | None = None
        self._handlers = {
            ir.Start: self._on_start,
            ir.TextDelta: self._on_text,
            ir.ThinkingDelta: self._on_thinking,
            ir.ToolCallStart: self._on_tool_start,
            ir.ToolCallDelta: self._on_tool_delta,
            ir.Finish: self._on_finish,
            ir.Error: self._on_error,
        }

    def encode(self, event: ir.Event) -> bytes:
        if self._done:
            return b""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else b""

    def _begin(self, upstream_id: str = "", model: str = "", created: int = 0) -> bytes:
        self._started = True
        self._id = _client_id(upstream_id)
        self._model = model or self._req.model
        self._created = created or int(time.time())
        self._head = (
            b'data: {"id":'
            + _encode(self._id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _encode(self._model)
            + b',"choices":[{"index":0,"delta":'
        )
        return self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._head + _encode(delta) + _CHUNK_TAIL

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._begin()

    def _on_start(self, event: ir.Start) -> bytes:
        if self._started:
            return b""
        self._start_usage = event.usage
        return self._begin(event.id, event.model, event.created)

    def _on_text(self, event: ir.TextDelta) -> bytes:
        if not event.text:
            return b""
        return self._ensure_started() + self._chunk({"content": event.text})

    def _on_thinking(self, event: ir.ThinkingDelta) -> bytes:
        if not event.text:
            return b""
        return self._ensure_started() + self._chunk({"reasoning_content": event.text})

    def _on_tool_start(self, event: ir.ToolCallStart) -> bytes:
        self._tool_index += 1
        self._saw_call = True
        call = {
            "index": self._tool_index,
            "id": event.id,
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        return self._ensure_started() + self._chunk({"tool_calls": [call]})

    def _on_tool_delta(self, event: ir.ToolCallDelta) -> bytes:
        if self._tool_index < 0 or not event.arguments:
            return b""
        fragment = {"index": self._tool_index, "function": {"arguments": event.arguments}}
        return self._chunk({"tool_calls": [fragment]})

    def _on_finish(self, event: ir.Finish) -> bytes:
        out = self._ensure_started()
        self._done = True
        reason = _FINISH_TO_WIRE[event.reason]
        if reason == "stop" and self._saw_call:
            reason = "tool_calls"
        out += self._head + b'{},"finish_reason":' + _encode(reason) + b"}]}\n\n"
        if self._include_usage:
            usage = event.usage
            start = self._start_usage
            if not usage.input_tokens and start is not None and start.input_tokens:
                # the upstream reported input only up front (Anthropic's message_start)
                usage = ir.Usage(
                    start.input_tokens,
                    usage.output_tokens,
                    start.cached_tokens,
                    start.cache_creation_tokens,
                    usage.reasoning_tokens,
                )
            out += data_line(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": build_usage(usage),
                }
            )
        return out + _DONE

    def _on_error(self, event: ir.Error) -> bytes:
        self._done = True
        return stream_error(event)


def stream_media_type(sse: bool) -> str:
    """Always SSE: Chat has no other stream framing."""
    return "text/event-stream"
