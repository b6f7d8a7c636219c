"""ir events -> client Responses SSE: `response.created`, one output item at a time,
then `response.completed`, `response.incomplete` or `response.failed`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from router.protocols import ir
from router.protocols.openai_responses.common import NAME, _new_id, _reasoning_item
from router.protocols.openai_responses.errors import error_body
from router.protocols.openai_responses.response import (
    _function_call_item,
    _message_item,
    _response_id,
    _response_object,
    _status_for,
    _text_part,
    _usage_body,
)
from router.protocols.openai_responses.signatures import wrap_encrypted
from router.protocols.sse import named_event


@dataclass(slots=True)
class _OpenItem:
    kind: str  # "message" | "reasoning" | "function_call"
    index: int
    id: str
    text: str = ""
    encrypted: str | None = None
    call_id: str = ""
    name: str = ""


class StreamEncoder:
    """State machine: idle -> started -> (one open output item at a time) -> ended."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, *, sse: bool = True, **options: Any) -> None:
        self._req = req
        self._seq = 0
        self._started = False
        self._ended = False
        self._id = ""
        self._model = req.model
        self._created = 0
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None

    def encode(self, event: ir.Event) -> bytes:
        if self._ended:
            return b""
        chunks: list[bytes] = []
        if isinstance(event, ir.Start):
            self._start(chunks, event)
            return b"".join(chunks)
        if not self._started:
            self._start(chunks, ir.Start(id="", model=self._req.model))
        if isinstance(event, ir.TextDelta):
            self._text(chunks, event.text)
        elif isinstance(event, ir.ThinkingDelta):
            self._thinking(chunks, event)
        elif isinstance(event, ir.ThinkingSignature):
            self._signature(chunks, event)
        elif isinstance(event, ir.RedactedThinking):
            self._redacted(chunks, event)
        elif isinstance(event, ir.ToolCallStart):
            self._close(chunks)
            self._open_call(chunks, event)
        elif isinstance(event, ir.ToolCallDelta):
            self._arguments(chunks, event.arguments)
        elif isinstance(event, ir.BlockBreak):
            self._close(chunks)
        elif isinstance(event, ir.Finish):
            self._finish(chunks, event)
        elif isinstance(event, ir.Error):
            self._error(chunks, event)
        return b"".join(chunks)

    def _send(self, chunks: list[bytes], kind: str, payload: dict[str, Any]) -> None:
        payload = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        chunks.append(named_event(kind, payload))

    def _snapshot(
        self,
        status: str,
        usage: dict[str, Any] | None = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return _response_object(
            self._req,
            response_id=self._id,
            model=self._model,
            created=self._created,
            status=status,
            output=list(self._output),
            usage=usage,
            incomplete_reason=reason,
            error=error,
        )

    def _start(self, chunks: list[bytes], event: ir.Start) -> None:
        if self._started:
            return
        self._started = True
        self._id = _response_id(event.id)
        self._model = event.model or self._req.model
        self._created = event.created or int(time.time())
        snapshot = self._snapshot("in_progress")
        self._send(chunks, "response.created", {"response": snapshot})
        self._send(chunks, "response.in_progress", {"response": snapshot})

    def _ref(self, item: _OpenItem) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index}

    def _open_item(
        self, chunks: list[bytes], kind: str, item_id: str, body: dict[str, Any]
    ) -> _OpenItem:
        item = _OpenItem(kind=kind, index=len(self._output), id=item_id)
        self._output.append(body)  # placeholder, replaced when the item is done
        self._open = item
        self._send(chunks, "response.output_item.added", {"output_index": item.index, "item": body})
        return item

    # -- text --

    def _text(self, chunks: list[bytes], text: str) -> None:
        if not text:
            return
        item = self._open
        if item is None or item.kind != "message":
            self._close(chunks)
            item_id = _new_id("msg_")
            item = self._open_item(
                chunks,
                "message",
                item_id,
                {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            )
            self._send(
                chunks,
                "response.content_part.added",
                {
                    **self._ref(item),
                    "content_index": 0,
                    "part": _text_part(""),
                },
            )
        item.text += text
        self._send(
            chunks,
            "response.output_text.delta",
            {
                **self._ref(item),
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _close_message(self, chunks: list[bytes], item: _OpenItem) -> None:
        ref = {**self._ref(item), "content_index": 0}
        self._send(chunks, "response.output_text.done", {**ref, "text": item.text, "logprobs": []})
        self._send(chunks, "response.content_part.done", {**ref, "part": _text_part(item.text)})
        self._output[item.index] = _message_item(item.id, [item.text], "completed")

    # -- reasoning --

    def _thinking(self, chunks: list[bytes], event: ir.ThinkingDelta) -> None:
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close(chunks)
            own_id = event.id if event.origin == NAME and event.id else None
            item = self._open_reasoning(chunks, own_id)
        if not event.text:
            return
        if not item.text:
            self._send(
                chunks,
                "response.reasoning_summary_part.added",
                {
                    **self._ref(item),
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        item.text += event.text
        self._send(
            chunks,
            "response.reasoning_summary_text.delta",
            {
                **self._ref(item),
                "summary_index": 0,
                "delta": event.text,
            },
        )

    def _open_reasoning(self, chunks: list[bytes], item_id: str | None) -> _OpenItem:
        item_id = item_id or _new_id("rs_")
        return self._open_item(
            chunks, "reasoning", item_id, {"id": item_id, "type": "reasoning", "summary": []}
        )

    def _signature(self, chunks: list[bytes], event: ir.ThinkingSignature) -> None:
        own = event.origin == NAME
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close(chunks)
            item = self._open_reasoning(chunks, event.id if own else None)
        item.encrypted = wrap_encrypted(event.signature, event.origin)
        self._close(chunks)

    def _redacted(self, chunks: list[bytes], event: ir.RedactedThinking) -> None:
        self._close(chunks)
        encrypted = wrap_encrypted(event.data, event.origin, redacted=True)
        if encrypted:
            item = self._open_reasoning(chunks, event.id if event.origin == NAME else None)
            item.encrypted = encrypted
            self._close(chunks)

    def _close_reasoning(self, chunks: list[bytes], item: _OpenItem) -> None:
        if item.text:
            ref = {**self._ref(item), "summary_index": 0}
            self._send(chunks, "response.reasoning_summary_text.done", {**ref, "text": item.text})
            self._send(
                chunks,
                "response.reasoning_summary_part.done",
                {
                    **ref,
                    "part": {"type": "summary_text", "text": item.text},
                },
            )
        self._output[item.index] = _reasoning_item(item.id, item.text, item.encrypted)

    # -- function calls --

    def _open_call(self, chunks: list[bytes], event: ir.ToolCallStart) -> None:
        item_id = _new_id("fc_")
        item = self._open_item(
            chunks,
            "function_call",
            item_id,
            _function_call_item(item_id, event.id, event.name, "", "in_progress"),
        )
        item.call_id, item.name = event.id, event.name

    def _arguments(self, chunks: list[bytes], delta: str) -> None:
        item = self._open
        if item is None or item.kind != "function_call" or not delta:
            return
        item.text += delta
        self._send(
            chunks, "response.function_call_arguments.delta", {**self._ref(item), "delta": delta}
        )

    def _close_call(self, chunks: list[bytes], item: _OpenItem) -> None:
        self._send(
            chunks,
            "response.function_call_arguments.done",
            {**self._ref(item), "name": item.name, "arguments": item.text},
        )
        self._output[item.index] = _function_call_item(
            item.id, item.call_id, item.name, item.text, "completed"
        )

    # -- lifecycle --

    def _close(self, chunks: list[bytes]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        if item.kind == "message":
            self._close_message(chunks, item)
        elif item.kind == "reasoning":
            self._close_reasoning(chunks, item)
        else:
            self._close_call(chunks, item)
        self._send(
            chunks,
            "response.output_item.done",
            {"output_index": item.index, "item": self._output[item.index]},
        )

    def _finish(self, chunks: list[bytes], event: ir.Finish) -> None:
        self._close(chunks)
        self._ended = True
        status, reason, error = _status_for(event.reason)
        snapshot = self._snapshot(status, _usage_body(event.usage), reason, error)
        kind = {
            "completed": "response.completed",
            "incomplete": "response.incomplete",
            "failed": "response.failed",
        }[status]
        self._send(chunks, kind, {"response": snapshot})

    def _error(self, chunks: list[bytes], err: ir.Error) -> None:
        self._close(chunks)
        self._ended = True
        code = error_body(err)["error"]["code"]
        self._send(chunks, "error", {"code": code, "message": err.message, "param": err.param})
        failed = {
            "code": "rate_limit_exceeded" if err.status == 429 else "server_error",
            "message": err.message,
        }
        self._send(chunks, "response.failed", {"response": self._snapshot("failed", error=failed)})


def stream_media_type(sse: bool) -> str:
    """Responses streams are always SSE."""
    return "text/event-stream"
