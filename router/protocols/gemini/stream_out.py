"""ir events -> a Gemini client's stream: SSE (`alt=sse`) or one JSON array."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.protocols import ir
from router.protocols.gemini.common import (
    _FINISH_TO_GEMINI,
    NAME,
    _arguments,
    _encode,
    _signed,
)
from router.protocols.gemini.errors import error_body
from router.protocols.gemini.response import _usage_body
from router.protocols.gemini.signatures import wrap_signature
from router.protocols.sse import data_line


@dataclass(slots=True)
class _PendingCall:
    id: str
    name: str
    signature: str | None
    arguments: list[str] = field(default_factory=list)

    def part(self) -> dict[str, Any]:
        call = {"id": self.id, "name": self.name, "args": _arguments("".join(self.arguments))}
        return _signed({"functionCall": call}, self.signature)


class StreamEncoder:
    """SSE (`sse=True`, for `alt=sse`): one `data: <chunk>` event per chunk. Otherwise
    one JSON array streamed element by element. Tool calls are buffered until their
    block ends, because Gemini sends each `functionCall` part whole."""

    def __init__(self, req: ir.Request, sse: bool = True, **options: Any) -> None:
        self.content_type = "text/event-stream" if sse else "application/json"
        self._sse = sse
        self._req = req
        self._show_thoughts = req.reasoning is not None and req.reasoning.include_thoughts
        self._id = ""
        self._model = req.model
        self._opened = False  # array mode: "[" written
        self._ended = False
        self._call: _PendingCall | None = None
        self._prompt_tokens: int | None = None

    def encode(self, event: ir.Event) -> bytes:
        if self._ended:
            return b""
        if isinstance(event, ir.Start):
            self._id = event.id
            self._model = event.model or self._req.model
            if event.usage is not None:
                self._prompt_tokens = event.usage.input_tokens
            return b""
        if isinstance(event, ir.Finish):
            return self._finish(event)
        if isinstance(event, ir.Error):
            self._ended = True
            self._call = None
            return self._write(error_body(event), last=True)
        if isinstance(event, ir.ToolCallStart):
            flushed = self._flush_call()
            self._call = _PendingCall(event.id, event.name, event.signature)
            return flushed
        if isinstance(event, ir.ToolCallDelta):
            if self._call is not None:
                self._call.arguments.append(event.arguments)
            return b""
        parts = self._content_parts(event)
        flushed = self._flush_call()
        return flushed + (self._write(self._chunk(parts)) if parts else b"")

    def _content_parts(self, event: ir.Event) -> list[dict[str, Any]]:
        if isinstance(event, ir.TextDelta):
            if event.text or event.signature:
                return [_signed({"text": event.text}, event.signature)]
        elif isinstance(event, ir.ThinkingDelta):
            if event.text and self._show_thoughts:
                return [{"text": event.text, "thought": True}]
        elif isinstance(event, ir.ThinkingSignature):
            return self._signature_part(event.signature, event.origin)
        elif isinstance(event, ir.RedactedThinking):
            return self._signature_part(event.data, event.origin, redacted=True)
        return []

    def _signature_part(
        self, value: str, origin: str | None, redacted: bool = False
    ) -> list[dict[str, Any]]:
        """A thought part with the signature; another provider's only with its text shown."""
        if origin != NAME and not self._show_thoughts:
            return []
        signature = wrap_signature(value, origin, redacted)
        return [{"text": "", "thought": True, "thoughtSignature": signature}] if signature else []

    def _flush_call(self) -> bytes:
        call, self._call = self._call, None
        return self._write(self._chunk([call.part()])) if call else b""

    def _finish(self, event: ir.Finish) -> bytes:
        parts = [self._call.part()] if self._call else [{"text": ""}]
        self._call = None
        self._ended = True
        chunk = self._chunk(parts, finish=_FINISH_TO_GEMINI[event.reason])
        chunk["usageMetadata"] = _usage_body(event.usage)
        return self._write(chunk, last=True)

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": self._model}
        if self._prompt_tokens is not None:  # like Gemini: usage so far on every chunk
            chunk["usageMetadata"] = {
                "promptTokenCount": self._prompt_tokens,
                "totalTokenCount": self._prompt_tokens,
            }
        if self._id:
            chunk["responseId"] = self._id
        return chunk

    def _write(self, chunk: dict[str, Any], last: bool = False) -> bytes:
        if self._sse:
            return data_line(chunk)
        prefix = b"," if self._opened else b"["
        self._opened = True
        return prefix + _encode(chunk) + (b"]" if last else b"\n")


def stream_media_type(sse: bool) -> str:
    """SSE with `alt=sse`, else one JSON array (as `StreamEncoder.content_type`)."""
    return "text/event-stream" if sse else "application/json"
