"""Anthropic Messages: upstream stream bytes -> ir events."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.anthropic.common import _STOP_FROM_WIRE, NAME, _decode, _encode, _new_id
from router.protocols.anthropic.errors import _error_from_payload
from router.protocols.anthropic.response import parse_usage
from router.protocols.sse import SSEParser

# delta type -> (block kind it belongs to, field, ir event)
_DELTAS: dict[str, tuple[str, str, Any]] = {
    "text_delta": ("text", "text", ir.TextDelta),
    "input_json_delta": ("tool", "partial_json", ir.ToolCallDelta),
    "thinking_delta": ("thinking", "thinking", lambda text: ir.ThinkingDelta(text, NAME)),
    "signature_delta": ("thinking", "signature", lambda sig: ir.ThinkingSignature(sig, NAME)),
}


class StreamDecoder:
    """Messages stream events -> ir events. Blocks arrive one after another upstream;
    each new text/thinking block is preceded by a BlockBreak so two blocks of one kind
    stay two blocks."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._done = False
        self._any_block = False
        self._kinds: dict[int, str] = {}  # block index -> "text" | "thinking" | "tool" | ""
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.feed(chunk):
            if not self._done and sse.data:
                self._on_data(sse.data, events)
        return events

    def close(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.close():
            if not self._done and sse.data:
                self._on_data(sse.data, events)
        if not self._done:
            self._done = True
            if self._stop_reason is not None:  # only message_stop went missing
                events.append(self._finish())
            else:
                events.append(ir.Error(502, "bad_gateway", "upstream stream ended early"))
        return events

    def _on_data(self, data: str, events: list[ir.Event]) -> None:
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            self._done = True
            events.append(ir.Error(502, "bad_gateway", "upstream sent malformed JSON"))
            return
        if not isinstance(payload, dict):
            return
        handler = self._HANDLERS.get(payload.get("type"))
        if handler is not None:
            handler(self, payload, events)

    def _on_message_start(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        if self._started:
            return
        self._started = True
        message = payload.get("message") or {}
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
        events.append(
            ir.Start(
                id=message.get("id") or _new_id("msg_"),
                model=message.get("model") or "",
                usage=parse_usage(usage) if isinstance(usage, dict) else None,
            )
        )

    def _ensure_started(self, events: list[ir.Event]) -> None:
        if not self._started:
            self._on_message_start({}, events)

    def _on_block_start(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._ensure_started(events)
        index = payload.get("index")
        block = payload.get("content_block") or {}
        kind = block.get("type")
        if kind in ("text", "thinking") and self._any_block:
            events.append(ir.BlockBreak())
        if kind == "text":
            self._kinds[index] = "text"
            if block.get("text"):
                events.append(ir.TextDelta(block["text"]))
        elif kind == "thinking":
            self._kinds[index] = "thinking"
            if block.get("thinking"):
                events.append(ir.ThinkingDelta(block["thinking"], NAME))
            if block.get("signature"):
                events.append(ir.ThinkingSignature(block["signature"], NAME))
        elif kind == "tool_use":
            self._kinds[index] = "tool"
            events.append(
                ir.ToolCallStart(block.get("id") or _new_id("toolu_"), block.get("name") or "")
            )
            if block.get("input"):
                events.append(ir.ToolCallDelta(_encode(block["input"]).decode()))
        elif kind == "redacted_thinking":
            self._kinds[index] = ""
            events.append(ir.RedactedThinking(block.get("data") or "", NAME))
        else:  # server tool blocks and the like: not carried
            self._kinds[index] = ""
            return
        self._any_block = True

    def _on_block_delta(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        delta = payload.get("delta") or {}
        spec = _DELTAS.get(delta.get("type"))
        if spec is None or spec[0] != self._kinds.get(payload.get("index")):
            return  # citations, or a delta for a block that is not carried
        value = delta.get(spec[1])
        if isinstance(value, str) and value:
            events.append(spec[2](value))

    def _on_message_delta(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        delta = payload.get("delta") or {}
        if delta.get("stop_reason"):
            self._stop_reason = delta["stop_reason"]
        if delta.get("stop_sequence"):
            self._stop_sequence = delta["stop_sequence"]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _on_message_stop(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._ensure_started(events)
        self._done = True
        events.append(self._finish())

    def _on_error(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._done = True
        events.append(_error_from_payload(payload.get("error"), 500))

    def _finish(self) -> ir.Finish:
        reason = _STOP_FROM_WIRE.get(self._stop_reason or "end_turn", "stop")
        return ir.Finish(reason, parse_usage(self._usage), self._stop_sequence)

    _HANDLERS = {
        "message_start": _on_message_start,
        "content_block_start": _on_block_start,
        "content_block_delta": _on_block_delta,
        "message_delta": _on_message_delta,
        "message_stop": _on_message_stop,
        "error": _on_error,
    }
