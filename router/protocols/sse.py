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
        # Only the complete lines are decoded, in one piece (a line end never falls
        # inside a UTF-8 sequence); the partial last line waits for the next chunk.
        buffer = self._buffer + chunk if self._buffer else chunk
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        text = buffer[:end].decode("utf-8")
        if "\r" in text:
            return self._lines([line.rstrip("\r") for line in text.split("\n")])
        if self._data or self._event is not None:  # an event is open: finish it line by line
            return self._lines(text.split("\n"))
        return self._blocks(text)

    def _blocks(self, text: str) -> list[SSEvent]:
        """Whole events at a time: most are one `data: ...` line (the last block may
        still be open, and goes line by line)."""
        events: list[SSEvent] = []
        *blocks, last = text.split("\n\n")
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                events.append(SSEvent(None, block[6:]))
            elif block:
                events += self._lines([*block.split("\n"), ""])
        return events + self._lines(last.split("\n"))

    def close(self) -> list[SSEvent]:
        """Flush a final event that was not followed by a blank line."""
        events = self.feed(b"\n") if self._buffer else []
        return events + self._lines([""])

    def _lines(self, lines: list[str]) -> list[SSEvent]:
        events: list[SSEvent] = []
        data, event = self._data, self._event
        for line in lines:
            if line.startswith("data:"):  # most lines
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line:
                if data or event is not None:
                    events.append(SSEvent(event, data[0] if len(data) == 1 else "\n".join(data)))
                    data, event = [], None
            elif line[0] == ":":
                continue
            else:
                name, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
        self._data, self._event = data, event
        return events


def data_line(payload: object) -> bytes:
    """`data: <json>\\n\\n` (OpenAI Chat, Gemini)."""
    return b"data: " + _encode_json(payload) + b"\n\n"


def named_event(name: str, payload: object) -> bytes:
    """`event: <name>\\ndata: <json>\\n\\n` (Anthropic, Responses)."""
    return b"event: " + name.encode() + b"\ndata: " + _encode_json(payload) + b"\n\n"
