"""Upstream Gemini stream bytes (SSE or one JSON array), in any chunking -> ir events."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.gemini.common import NAME, _decode, _encode, _random_call_id, _str
from router.protocols.gemini.errors import _error_from_object
from router.protocols.gemini.response import (
    _blocked,
    _finish_from,
    _first_candidate,
    _unwrap,
    _usage_from,
)
from router.protocols.sse import SSEParser


class _JsonArraySplitter:
    """Splits the streamed JSON array form (no `alt=sse`) into top-level objects,
    whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: bytes) -> list[bytes]:
        objects: list[bytes] = []
        for byte in chunk:
            if self._depth == 0 and byte != ord("{"):
                continue  # `[`, `,`, `]` and whitespace between elements
            self._buffer.append(byte)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == ord("\\"):
                    self._escaped = True
                elif byte == ord('"'):
                    self._in_string = False
            elif byte == ord('"'):
                self._in_string = True
            elif byte in (ord("{"), ord("[")):
                self._depth += 1
            elif byte in (ord("}"), ord("]")):
                self._depth -= 1
                if self._depth == 0:
                    objects.append(bytes(self._buffer))
                    self._buffer.clear()
        return objects


class StreamDecoder:
    """Gemini streams end with the chunk holding `finishReason` and nothing after it, so
    `Finish` is emitted at `close()` (usage from the last `usageMetadata` seen)."""

    def __init__(self) -> None:
        self._mode: str | None = None
        self._sse = SSEParser()
        self._array = _JsonArraySplitter()
        self._out: list[ir.Event] = []
        self._started = False
        self._ended = False
        self._finish: ir.FinishReason | None = None
        self._usage = ir.Usage()
        self._saw_call = False
        self._saw_content = False
        self._block: str | None = None
        self._thinking_signed = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        if self._mode is None:
            stripped = chunk.lstrip()
            if not stripped:
                return []
            self._mode = "array" if stripped[:1] == b"[" else "sse"
        if self._mode == "array":
            for raw in self._array.feed(chunk):
                self._chunk(raw)
        else:
            for event in self._sse.feed(chunk):
                self._chunk(event.data)
        return self._take()

    def close(self) -> list[ir.Event]:
        if self._mode == "sse":
            for event in self._sse.close():
                self._chunk(event.data)
        if not self._ended:
            if self._finish is None and not self._saw_content:
                self._end(ir.Error(502, "bad_gateway", "upstream stream ended without content"))
            elif self._finish is None:  # cut short: every Gemini stream ends with one
                self._end(ir.Error(502, "bad_gateway", "upstream stream ended early"))
            else:
                self._ensure_started({})
                reason = self._finish or "stop"
                if reason == "stop" and self._saw_call:
                    reason = "tool_calls"
                self._end(ir.Finish(reason, self._usage))
        return self._take()

    def _take(self) -> list[ir.Event]:
        out, self._out = self._out, []
        return out

    def _end(self, event: ir.Event) -> None:
        self._ended = True
        self._out.append(event)

    def _chunk(self, raw: str | bytes) -> None:
        if self._ended or not raw or raw == "[DONE]":
            return
        try:
            payload = _unwrap(_decode(raw))
        except msgspec.DecodeError:
            self._end(ir.Error(502, "bad_gateway", "upstream sent invalid JSON in its stream"))
            return
        if not isinstance(payload, dict):
            return
        if isinstance(payload.get("error"), dict):
            self._end(_error_from_object(payload["error"], 500))
            return
        self._ensure_started(payload)
        if isinstance(payload.get("usageMetadata"), dict):
            self._usage = _usage_from(payload["usageMetadata"])
        candidate = _first_candidate(payload)
        content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
        for part in content.get("parts") or []:
            if isinstance(part, dict):
                self._part(part)
        reason = candidate.get("finishReason")
        if reason is not None:
            self._finish = _finish_from(reason, False, payload)
        elif not candidate and _blocked(payload):
            self._finish = "content_filter"

    def _ensure_started(self, payload: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        usage = payload.get("usageMetadata")
        prompt = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        self._out.append(
            ir.Start(
                id=_str(payload, "responseId") or "resp_" + uuid.uuid4().hex[:24],
                model=_str(payload, "modelVersion") or "",
                usage=ir.Usage(input_tokens=int(prompt)) if isinstance(prompt, int) else None,
                created=int(time.time()),
            )
        )

    def _part(self, part: dict[str, Any]) -> None:
        signature = _str(part, "thoughtSignature")
        call = part.get("functionCall")
        if isinstance(call, dict):
            self._call(call, signature)
        elif isinstance(part.get("text"), str):
            if part.get("thought") is True:
                self._thought(part["text"], signature)
            elif part["text"] or signature:
                self._saw_content = True
                self._block = "text"
                self._out.append(ir.TextDelta(part["text"], signature=signature))
        elif signature:
            self._saw_content = True
            self._block = "text"
            self._out.append(ir.TextDelta("", signature=signature))

    def _thought(self, text: str, signature: str | None) -> None:
        if not text and not signature:
            return
        self._saw_content = True
        if self._block == "thinking" and self._thinking_signed:
            self._out.append(ir.BlockBreak())
            self._block = None
        if text or self._block != "thinking":
            self._out.append(ir.ThinkingDelta(text, origin=NAME))
            if self._block != "thinking":
                self._thinking_signed = False
            self._block = "thinking"
        if signature:
            self._out.append(ir.ThinkingSignature(signature, origin=NAME))
            self._thinking_signed = True

    def _call(self, call: dict[str, Any], signature: str | None) -> None:
        self._saw_content = self._saw_call = True
        self._block = "tool"
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        self._out.append(
            ir.ToolCallStart(
                _str(call, "id") or _random_call_id(),
                str(call.get("name", "")),
                signature=signature,
            )
        )
        self._out.append(ir.ToolCallDelta(_encode(args).decode()))
