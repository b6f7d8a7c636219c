"""Upstream `chat.completion.chunk` SSE -> ir events (`StreamDecoder`).

* Streams: the first tool call streams live; later calls are buffered and emitted,
  in index order, at the finish chunk. That keeps ir blocks sequential whatever the
  upstream interleaves. Content arriving after a tool call started is held likewise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.openai_chat.common import _FINISH_FROM_WIRE, _decode, _encode, _new_id
from router.protocols.openai_chat.errors import _error_from_payload
from router.protocols.openai_chat.response import parse_usage
from router.protocols.sse import SSEParser


class _Delta(msgspec.Struct):
    content: Any = None
    refusal: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: Any = None


class _Choice(msgspec.Struct):
    index: Any = 0
    delta: _Delta | None = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    """The fields of a `chat.completion.chunk` the decoder reads; msgspec skips the rest
    (fingerprints, logprobs...) without building them. A chunk whose shape does not fit
    is read as plain JSON and brought to this form by `_chunk_from_dict`."""

    id: Any = None
    model: Any = None
    created: Any = None
    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_DELTA_FIELDS = _Delta.__struct_fields__


def _chunk_from_dict(chunk: dict[str, Any]) -> _Chunk:
    """What the decoder reads of an odd-shaped chunk: choices and deltas that are not
    objects are left out, as if absent."""
    choices = [
        _Choice(
            index=choice.get("index", 0),
            delta=_Delta(**{k: delta.get(k) for k in _DELTA_FIELDS})
            if isinstance(delta := choice.get("delta"), dict)
            else None,
            finish_reason=choice.get("finish_reason"),
        )
        for choice in chunk.get("choices") or ()
        if isinstance(choice, dict)
    ]
    return _Chunk(
        id=chunk.get("id"),
        model=chunk.get("model"),
        created=chunk.get("created"),
        choices=choices,
        usage=chunk.get("usage"),
        error=chunk.get("error"),
    )


@dataclass(slots=True)
class _Call:
    """One upstream tool call (by `index`) while its fragments arrive."""

    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    started: bool = False


class StreamDecoder:
    """Chat completion chunks -> ir events.

    The first tool call streams live. Anything after it (further calls, late content)
    is held until the finish chunk and then emitted in order, so ir blocks stay
    sequential even when the upstream interleaves `tool_calls[].index`."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._done = False
        self._calls: dict[int, _Call] = {}
        self._live: int | None = None  # upstream index of the call streaming live
        self._held: list[ir.TextDelta | ir.ThinkingDelta] = []
        self._finish: str | None = None
        self._usage: ir.Usage | None = None
        self._saw_call = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.feed(chunk):
            if not self._done:
                self._on_data(sse.data, events)
        return events

    def close(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.close():
            if not self._done:
                self._on_data(sse.data, events)
        if not self._done:
            if self._finish is not None:
                self._end(events)
            else:
                self._done = True
                events.append(ir.Error(502, "bad_gateway", "upstream stream ended early"))
        return events

    def _on_data(self, data: str, events: list[ir.Event]) -> None:
        if not data:
            return
        if data.startswith("[DONE]"):
            self._end(events)
            return
        try:
            chunk = _decode_chunk(data)
        except msgspec.ValidationError:  # valid JSON of another shape
            document = _decode(data)
            if not isinstance(document, dict):
                return
            chunk = _chunk_from_dict(document)
        except msgspec.DecodeError:
            self._fail(events, ir.Error(502, "bad_gateway", "upstream sent malformed JSON"))
            return
        if chunk.error:
            self._fail(events, _error_from_payload(chunk.error, 500))
            return
        if not self._started:
            self._start(chunk.id, chunk.model, chunk.created, events)
        usage = chunk.usage
        if isinstance(usage, dict):
            self._usage = parse_usage(usage)
        for choice in chunk.choices or ():
            if choice.index == 0:
                self._on_choice(choice, events)

    def _start(self, id: Any, model: Any, created: Any, events: list[ir.Event]) -> None:
        self._started = True
        events.append(
            ir.Start(id=id or _new_id("chatcmpl-"), model=model or "", created=created or 0)
        )

    def _on_choice(self, choice: _Choice, events: list[ir.Event]) -> None:
        # truthiness first: most fields of most chunks are absent or null
        delta = choice.delta
        if delta is not None:
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning and isinstance(reasoning, str):
                self._content(ir.ThinkingDelta(reasoning), events)
            text = delta.content
            if text and isinstance(text, str):
                self._content(ir.TextDelta(text), events)
            text = delta.refusal
            if text and isinstance(text, str):
                self._content(ir.TextDelta(text), events)
            calls = delta.tool_calls
            if calls and isinstance(calls, list):
                for position, fragment in enumerate(calls):
                    if isinstance(fragment, dict):
                        self._fragment(fragment, position, events)
        reason = choice.finish_reason
        if reason and isinstance(reason, str):
            self._finish = reason
            self._flush(events)

    def _content(self, event: ir.TextDelta | ir.ThinkingDelta, events: list[ir.Event]) -> None:
        if self._calls:
            self._held.append(event)
        else:
            events.append(event)

    def _fragment(self, fragment: dict[str, Any], position: int, events: list[ir.Event]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            index = position
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call()
            if self._live is None and len(self._calls) == 1:
                self._live = index
        if not call.id and fragment.get("id"):
            call.id = fragment["id"]
        function = fragment.get("function") or {}
        if not call.name and function.get("name"):
            call.name = function["name"]
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = _encode(arguments).decode()
        if index != self._live:
            if arguments:
                call.arguments.append(arguments)
            return
        if call.started:
            if arguments:
                events.append(ir.ToolCallDelta(arguments))
            return
        if arguments:
            call.arguments.append(arguments)
        if call.name:
            self._emit_call(call, events)

    def _emit_call(self, call: _Call, events: list[ir.Event]) -> None:
        call.started = True
        self._saw_call = True
        events.append(ir.ToolCallStart(call.id or _new_id("call_"), call.name or ""))
        if call.arguments:
            events.append(ir.ToolCallDelta("".join(call.arguments)))
            call.arguments.clear()

    def _flush(self, events: list[ir.Event]) -> None:
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.started:
                self._emit_call(call, events)
        self._calls.clear()
        self._live = None
        events.extend(self._held)
        self._held.clear()

    def _end(self, events: list[ir.Event]) -> None:
        if not self._started:
            self._start(None, None, None, events)
        self._flush(events)
        self._done = True
        reason = _FINISH_FROM_WIRE.get(self._finish or "stop", "stop")
        if reason == "stop" and self._saw_call:
            reason = "tool_calls"
        events.append(ir.Finish(reason, self._usage or ir.Usage()))

    def _fail(self, events: list[ir.Event], error: ir.Error) -> None:
        self._done = True
        events.append(error)
