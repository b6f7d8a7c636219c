"""Anthropic Messages: ir events -> client stream bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import _client_id, _encode, _stop_reason
from router.protocols.anthropic.errors import stream_error
from router.protocols.anthropic.response import build_usage
from router.protocols.anthropic.signatures import _wrap_signature
from router.protocols.sse import named_event

_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
# `"delta":{...,"<field>":` of the hot deltas, followed by the JSON string and `}}\n\n`
_TEXT_DELTA = b',"delta":{"type":"text_delta","text":'
_THINKING_DELTA = b',"delta":{"type":"thinking_delta","thinking":'


@dataclass(slots=True)
class _OpenBlock:
    index: int
    kind: str  # "text" | "thinking" | "tool"
    signature: str = ""


class StreamEncoder:
    """ir events -> Messages stream events for Anthropic clients.

    States: before `message_start` -> in message (at most one block open) -> done
    (`message_stop` or `error` sent). Blocks are numbered 0, 1, ... in start order and
    every start has its stop; a thinking block's signature goes out just before its
    stop. `sse` is accepted for the interface and ignored: the stream is always SSE."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, *, sse: bool = True, **options: Any) -> None:
        self._req = req
        self._started = False
        self._done = False
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._saw_call = False
        self._handlers = {
            ir.Start: self._on_start,
            ir.TextDelta: self._on_text,
            ir.ThinkingDelta: self._on_thinking,
            ir.ThinkingSignature: self._on_signature,
            ir.RedactedThinking: self._on_redacted,
            ir.ToolCallStart: self._on_tool_start,
            ir.ToolCallDelta: self._on_tool_delta,
            ir.BlockBreak: self._on_break,
            ir.Finish: self._on_finish,
            ir.Error: self._on_error,
        }

    def encode(self, event: ir.Event) -> bytes:
        if self._done:
            return b""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else b""

    # message framing

    def _message_start(
        self, upstream_id: str = "", model: str = "", usage: ir.Usage | None = None
    ) -> bytes:
        self._started = True
        wire_usage = build_usage(usage or ir.Usage())
        wire_usage["output_tokens"] = 0
        message = {
            "id": _client_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": model or self._req.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": wire_usage,
        }
        return named_event("message_start", {"type": "message_start", "message": message})

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._message_start()

    def _on_start(self, event: ir.Start) -> bytes:
        if self._started:
            return b""
        return self._message_start(event.id, event.model, event.usage)

    # blocks

    def _open_block(self, kind: str, content_block: dict[str, Any]) -> bytes:
        out = self._ensure_started() + self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = _OpenBlock(index, kind)
        return out + named_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": content_block},
        )

    def _close_block(self) -> bytes:
        block = self._open
        if block is None:
            return b""
        self._open = None
        out = b""
        if block.kind == "thinking" and block.signature:
            out = self._delta(
                block.index, {"type": "signature_delta", "signature": block.signature}
            )
        return out + named_event(
            "content_block_stop", {"type": "content_block_stop", "index": block.index}
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _DELTA_HEAD + str(index).encode() + b',"delta":' + _encode(delta) + b"}\n\n"

    def _string_delta(self, index: int, head: bytes, text: str) -> bytes:
        """`_delta` for a delta of one string field, without building the dict."""
        return _DELTA_HEAD + str(index).encode() + head + _encode(text) + b"}}\n\n"

    def _in_block(self, kind: str, content_block: dict[str, Any]) -> tuple[bytes, int]:
        if self._open is not None and self._open.kind == kind:
            return b"", self._open.index
        out = self._open_block(kind, content_block)
        assert self._open is not None
        return out, self._open.index

    def _on_text(self, event: ir.TextDelta) -> bytes:
        if not event.text:
            return b""
        block = self._open
        if block is not None and block.kind == "text":
            return self._string_delta(block.index, _TEXT_DELTA, event.text)
        out, index = self._in_block("text", {"type": "text", "text": ""})
        return out + self._string_delta(index, _TEXT_DELTA, event.text)

    def _in_thinking(self) -> tuple[bytes, _OpenBlock]:
        block = self._open
        out = b""
        if block is not None and block.kind == "thinking" and block.signature:
            out = self._close_block()  # a signed thinking block is complete
        out += self._in_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})[0]
        assert self._open is not None
        return out, self._open

    def _on_thinking(self, event: ir.ThinkingDelta) -> bytes:
        if not event.text:
            return b""
        out, block = self._in_thinking()
        return out + self._string_delta(block.index, _THINKING_DELTA, event.text)

    def _on_signature(self, event: ir.ThinkingSignature) -> bytes:
        out, block = self._in_thinking()
        block.signature = _wrap_signature(event.signature, event.origin)
        return out

    def _on_redacted(self, event: ir.RedactedThinking) -> bytes:
        data = _wrap_signature(event.data, event.origin)
        out = self._open_block("redacted", {"type": "redacted_thinking", "data": data})
        return out + self._close_block()

    def _on_tool_start(self, event: ir.ToolCallStart) -> bytes:
        self._saw_call = True
        return self._open_block(
            "tool", {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
        )

    def _on_tool_delta(self, event: ir.ToolCallDelta) -> bytes:
        block = self._open
        if block is None or block.kind != "tool" or not event.arguments:
            return b""
        return self._delta(
            block.index, {"type": "input_json_delta", "partial_json": event.arguments}
        )

    def _on_break(self, event: ir.BlockBreak) -> bytes:
        return self._close_block()

    # endings

    def _on_finish(self, event: ir.Finish) -> bytes:
        out = self._ensure_started() + self._close_block()
        self._done = True
        usage = event.usage
        wire_usage: dict[str, Any] = {"output_tokens": usage.output_tokens}
        if usage.input_tokens:  # corrects message_start when input arrived only at the end
            wire_usage.update(build_usage(usage))
            wire_usage["output_tokens"] = usage.output_tokens
        elif usage.reasoning_tokens:
            wire_usage["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
        delta = {
            "stop_reason": _stop_reason(event.reason, event.stop_sequence, self._saw_call),
            "stop_sequence": event.stop_sequence,
        }
        out += named_event(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": wire_usage}
        )
        return out + named_event("message_stop", {"type": "message_stop"})

    def _on_error(self, event: ir.Error) -> bytes:
        self._done = True
        return stream_error(event)


def stream_media_type(sse: bool) -> str:
    """Anthropic streams are always SSE."""
    return "text/event-stream"
