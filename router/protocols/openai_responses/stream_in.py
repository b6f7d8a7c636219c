"""Upstream Responses SSE -> ir events. Interleaved upstream output items come out
serialized, one whole item after another in the order they were added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.openai_responses.common import NAME, _decode, _new_id
from router.protocols.openai_responses.errors import _error_from_object
from router.protocols.openai_responses.request_in import _thinking_from_item
from router.protocols.openai_responses.response import _finish_from, _usage_from
from router.protocols.sse import SSEParser


@dataclass(slots=True)
class _Item:
    """One upstream output item. Its events queue up until it is the active item, so
    interleaved upstream items come out serialized."""

    kind: str
    id: str | None
    pending: list[Any] = field(default_factory=list)
    done: bool = False
    texts_seen: set[int] = field(default_factory=set)
    thinking_seen: bool = False
    summary_parts: int = 0
    args_seen: bool = False


@dataclass(slots=True)
class _NewBlock:
    kind: str  # "text" | "thinking"


class StreamDecoder:
    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._ended = False
        self._items: dict[int, _Item] = {}
        self._queue: list[int] = []  # output indexes not yet fully emitted, added order
        self._out: list[ir.Event] = []
        self._last_block: str | None = None
        self._next_block: str | None = None
        self._saw_call = False
        self._refused = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        for event in self._sse.feed(chunk):
            self._handle(event.event, event.data)
        return self._take()

    def close(self) -> list[ir.Event]:
        for event in self._sse.close():
            self._handle(event.event, event.data)
        if not self._ended:
            self._flush_all()
            self._end(
                ir.Error(502, "bad_gateway", "upstream stream ended before response.completed")
            )
        return self._take()

    def _take(self) -> list[ir.Event]:
        out, self._out = self._out, []
        return out

    def _end(self, event: ir.Event) -> None:
        self._ended = True
        self._out.append(event)

    def _handle(self, name: str | None, data: str) -> None:
        if self._ended or not data or data == "[DONE]":
            return
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            self._end(ir.Error(502, "bad_gateway", "upstream sent invalid JSON in its stream"))
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or name
        if kind == "error":
            self._flush_all()
            self._end(_error_from_object(payload.get("error", payload), "upstream stream error"))
            return
        response = payload.get("response")
        if not self._started:
            self._start(response if isinstance(response, dict) else {})
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, payload)

    def _start(self, response: dict[str, Any]) -> None:
        self._started = True
        self._out.append(
            ir.Start(
                id=str(response.get("id") or _new_id("resp_")),
                model=str(response.get("model") or ""),
                created=int(response.get("created_at") or 0),
            )
        )

    # -- item bookkeeping --

    def _item(self, payload: dict[str, Any]) -> tuple[int, _Item] | None:
        index = payload.get("output_index")
        if not isinstance(index, int):
            return None
        item = self._items.get(index)
        if item is None:
            raw = payload.get("item") if isinstance(payload.get("item"), dict) else {}
            item = self._add_item(index, raw)
        return index, item

    def _add_item(self, index: int, raw: dict[str, Any]) -> _Item:
        item = _Item(kind=str(raw.get("type") or "message"), id=raw.get("id"))
        self._items[index] = item
        self._queue.append(index)
        if item.kind == "function_call":
            self._saw_call = True
            self._push(
                index,
                ir.ToolCallStart(
                    str(raw.get("call_id") or raw.get("id") or _new_id("call_")),
                    str(raw.get("name", "")),
                ),
            )
        elif item.kind == "reasoning":
            self._push(index, _NewBlock("thinking"))
        return item

    def _push(self, index: int, event: Any) -> None:
        if self._queue and self._queue[0] == index:
            self._emit(event)
        else:
            self._items[index].pending.append(event)

    def _emit(self, event: Any) -> None:
        if isinstance(event, _NewBlock):
            self._next_block = event.kind
            return
        if isinstance(event, ir.ToolCallStart):
            self._last_block, self._next_block = "tool", None
        elif self._next_block is not None:
            if self._last_block == self._next_block:
                self._out.append(ir.BlockBreak())
            self._last_block, self._next_block = self._next_block, None
        self._out.append(event)

    def _finish_item(self, index: int) -> None:
        self._items[index].done = True
        while self._queue and self._items[self._queue[0]].done:
            self._queue.pop(0)
            if self._queue:
                head = self._items[self._queue[0]]
                for event in head.pending:
                    self._emit(event)
                head.pending.clear()

    def _flush_all(self) -> None:
        for index in list(self._queue):
            self._finish_item(index)

    # -- event handlers --

    def _on_item_added(self, payload: dict[str, Any]) -> None:
        index = payload.get("output_index")
        raw = payload.get("item")
        if isinstance(index, int) and index not in self._items and isinstance(raw, dict):
            self._add_item(index, raw)

    def _on_part_added(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if found:
            self._push(found[0], _NewBlock("text"))

    def _on_text_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str):
            index, item = found
            item.texts_seen.add(int(payload.get("content_index") or 0))
            if payload.get("type") == "response.refusal.delta":
                self._refused = True
            if delta:
                self._push(index, ir.TextDelta(delta))

    def _on_text_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if not found:
            return
        index, item = found
        content_index = int(payload.get("content_index") or 0)
        text = payload.get("text", payload.get("refusal"))
        if payload.get("type") == "response.refusal.done":
            self._refused = True
        if content_index not in item.texts_seen and isinstance(text, str) and text:
            item.texts_seen.add(content_index)
            self._push(index, ir.TextDelta(text))

    def _on_summary_part_added(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if found:
            index, item = found
            if item.summary_parts and item.thinking_seen:
                self._push(index, ir.ThinkingDelta("\n\n", NAME, item.id))
            item.summary_parts += 1

    def _on_thinking_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str) and delta:
            index, item = found
            item.thinking_seen = True
            self._push(index, ir.ThinkingDelta(delta, NAME, item.id))

    def _on_arguments_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str) and delta:
            index, item = found
            item.args_seen = True
            self._push(index, ir.ToolCallDelta(delta))

    def _on_arguments_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        arguments = payload.get("arguments")
        if found and not found[1].args_seen and isinstance(arguments, str) and arguments:
            found[1].args_seen = True
            self._push(found[0], ir.ToolCallDelta(arguments))

    def _on_item_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        raw = payload.get("item")
        if not found or not isinstance(raw, dict):
            return
        index, item = found
        if item.kind == "message":
            self._complete_message(index, item, raw)
        elif item.kind == "reasoning":
            self._complete_reasoning(index, item, raw)
        elif item.kind == "function_call" and not item.args_seen:
            arguments = raw.get("arguments")
            if isinstance(arguments, str) and arguments:
                self._push(index, ir.ToolCallDelta(arguments))
        self._finish_item(index)

    def _complete_message(self, index: int, item: _Item, raw: dict[str, Any]) -> None:
        for content_index, part in enumerate(raw.get("content") or []):
            if content_index in item.texts_seen or not isinstance(part, dict):
                continue
            text = part.get("text", part.get("refusal"))
            if part.get("type") == "refusal":
                self._refused = True
            if isinstance(text, str) and text:
                self._push(index, _NewBlock("text"))
                self._push(index, ir.TextDelta(text))

    def _complete_reasoning(self, index: int, item: _Item, raw: dict[str, Any]) -> None:
        thinking = _thinking_from_item(raw)
        item_id = item.id or thinking.id
        if not item.thinking_seen and (thinking.text or thinking.signature):
            self._push(index, ir.ThinkingDelta(thinking.text, NAME, item_id))
        if thinking.signature:
            self._push(index, ir.ThinkingSignature(thinking.signature, NAME, item_id))

    def _on_completed(self, payload: dict[str, Any]) -> None:
        response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
        self._flush_all()
        if payload.get("type") == "response.failed":
            self._end(_error_from_object(response.get("error"), "upstream response failed"))
            return
        finish = _finish_from(
            response.get("status", "completed"),
            response.get("incomplete_details"),
            self._saw_call,
            self._refused,
        )
        if payload.get("type") == "response.incomplete" and finish not in (
            "length",
            "content_filter",
        ):
            finish = "length"
        self._end(ir.Finish(finish, _usage_from(response.get("usage"))))


_HANDLERS = {
    "response.output_item.added": StreamDecoder._on_item_added,
    "response.content_part.added": StreamDecoder._on_part_added,
    "response.output_text.delta": StreamDecoder._on_text_delta,
    "response.refusal.delta": StreamDecoder._on_text_delta,
    "response.output_text.done": StreamDecoder._on_text_done,
    "response.refusal.done": StreamDecoder._on_text_done,
    "response.reasoning_summary_part.added": StreamDecoder._on_summary_part_added,
    "response.reasoning_summary_text.delta": StreamDecoder._on_thinking_delta,
    "response.reasoning_text.delta": StreamDecoder._on_thinking_delta,
    "response.function_call_arguments.delta": StreamDecoder._on_arguments_delta,
    "response.function_call_arguments.done": StreamDecoder._on_arguments_done,
    "response.output_item.done": StreamDecoder._on_item_done,
    "response.completed": StreamDecoder._on_completed,
    "response.incomplete": StreamDecoder._on_completed,
    "response.failed": StreamDecoder._on_completed,
}
