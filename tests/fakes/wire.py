"""Shared pieces of the protocol modules: stream events, framings, the protocol base."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .http import Request
from .replies import Conversation, Reply


@dataclass
class Event:
    """One stream event: `name` is the SSE `event:` line (None: data-only)."""

    data: Any
    name: str | None = None


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Framing:
    """How a list of events becomes bytes on the wire."""

    content_type = "text/event-stream; charset=utf-8"

    def start(self) -> bytes:
        return b""

    def event(self, event: Event, index: int) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        return b""


class NamedSSE(Framing):
    """`event: <type>` + `data: <json>` (Anthropic, OpenAI Responses)."""

    def event(self, event: Event, index: int) -> bytes:
        head = f"event: {event.name}\n" if event.name else ""
        return f"{head}data: {dumps(event.data)}\n\n".encode()


class DataSSE(Framing):
    """`data: <json>` only (OpenAI Chat with `[DONE]`, Gemini with CRLF and no marker)."""

    def __init__(self, done_marker: bool, newline: str = "\n") -> None:
        self.done_marker = done_marker
        self.newline = newline

    def event(self, event: Event, index: int) -> bytes:
        nl = self.newline
        return f"data: {dumps(event.data)}{nl}{nl}".encode()

    def end(self) -> bytes:
        return f"data: [DONE]{self.newline}{self.newline}".encode() if self.done_marker else b""


class JsonArray(Framing):
    """Gemini's streamGenerateContent without alt=sse: one JSON array, sent piece by piece."""

    content_type = "application/json; charset=utf-8"

    def start(self) -> bytes:
        return b"["

    def event(self, event: Event, index: int) -> bytes:
        sep = ",\r\n" if index else ""
        return f"{sep}{json.dumps(event.data, indent=2, ensure_ascii=False)}".encode()

    def end(self) -> bytes:
        return b"]"


@dataclass
class Context:
    """Per-request facts a protocol module needs while rendering."""

    request: Request
    body: dict[str, Any]
    model: str
    seed: str
    created: int = field(default_factory=lambda: int(time.time()))
    stream: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Wire:
    """Base of the four protocol modules."""

    name = "base"
    #: id prefix of tool calls
    call_prefix = "call_"

    def authenticate(self, request: Request, api_key: str | None) -> bool:
        raise NotImplementedError

    def error_body(self, status: int, message: str, param: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, ctx: Context) -> Conversation:
        raise NotImplementedError

    def render(self, reply: Reply, conv: Conversation, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, reply: Reply, conv: Conversation, ctx: Context) -> list[Event]:
        raise NotImplementedError

    def framing(self, ctx: Context) -> Framing:
        return NamedSSE()

    def stream_error(self, status: int, message: str, seq: int) -> Event:
        raise NotImplementedError

    def is_stream(self, ctx: Context) -> bool:
        return bool(ctx.body.get("stream"))


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def default_message(status: int) -> str:
    return {
        400: "Invalid request.",
        401: "Invalid authentication credentials.",
        403: "Permission denied.",
        404: "Not found.",
        408: "Request timed out.",
        413: "Request too large.",
        429: "Rate limit exceeded, please retry later.",
        500: "Internal server error.",
        502: "Bad gateway.",
        503: "Service unavailable.",
        504: "Gateway timeout.",
        529: "Overloaded.",
    }.get(status, f"HTTP {status}.")
