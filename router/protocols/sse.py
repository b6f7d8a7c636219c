"""Server-sent events: an incremental parser for upstream streams and the encoders for
client streams. The parser accepts any chunking, CRLF or LF line ends, and comments."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

_encode_json = msgspec.json.Encoder().encode


@dataclass(slots=True)
class SSEvent:
    event: str | None
    data: str


class SSEParser:
    """Feed bytes as they arrive; get back complete events."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEvent]:
        self._buffer += chunk
        events: list[SSEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            line = self._buffer[:newline].rstrip(b"\r").decode("utf-8")
            self._buffer = self._buffer[newline + 1 :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEvent]:
        """Flush a final event that was not followed by a blank line."""
        events = self.feed(b"\n") if self._buffer else []
        event = self._line("")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: str) -> SSEvent | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = SSEvent(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def data_line(payload: object) -> bytes:
    """`data: <json>\\n\\n` (OpenAI Chat, Gemini)."""
    return b"data: " + _encode_json(payload) + b"\n\n"


def named_event(name: str, payload: object) -> bytes:
    """`event: <name>\\ndata: <json>\\n\\n` (Anthropic, Responses)."""
    return b"event: " + name.encode() + b"\ndata: " + _encode_json(payload) + b"\n\n"
