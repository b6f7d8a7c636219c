"""The control side of the fake: scripted behaviours (FIFO) and the request log."""

from __future__ import annotations

import fnmatch
import time
from typing import Any
from urllib.parse import parse_qsl

from .http import Request

MATCHERS = {"path", "protocol", "model", "stream"}
BEHAVIOURS = {
    "status",  # answer with this HTTP status (and the protocol's error body unless "body")
    "body",  # answer exactly this JSON value (or string)
    "content_type",  # content type for "body" given as a string
    "headers",  # extra response headers
    "retry_after",  # Retry-After header (seconds)
    "reset",  # close the socket with RST, no response
    "hang",  # sleep this many seconds before doing anything else
    "cut_after",  # stream: send N events, then close without the terminal event
    "reset_after",  # stream: send N events, then RST
    "stream_error",  # stream: 200, then an error event before any content ("failed":
    # Responses sends response.created, response.in_progress, response.failed instead)
    "error_after",  # stream: N events, then an error event, then end
    "error_status",  # status whose error type is used in stream errors (default 500)
    "error_message",  # message of scripted errors
    "delay_between_events",  # seconds between stream events
    "first_event_delay",  # seconds between the stream's headers and its first event
    "chunk_size",  # split the stream's bytes into HTTP chunks of this many bytes
    "reply",  # replace the reply text (still rendered in the protocol's format)
    "sse",  # stream exactly these events: strings (raw) or {"event"?, "data"}
    "malformed_json",  # 200 whose JSON is broken (stream: every event's JSON)
    "malformed_sse",  # stream: data lines without their field name, and bytes that are
    # not UTF-8; non-stream: an event stream where JSON was asked for
    "no_final",  # stream: every event but the last (and no [DONE]), then a clean end
    "huge",  # the reply text is this many characters (replies.huge_text)
    "cut_chunked",  # N whole events (non-stream: none), then half of the next HTTP
    # chunk, then close
    "stall_after",  # N events (non-stream: half the body), then wait "stall" seconds
    "stall",  # how long "stall_after" waits (default 60; ends early if the client leaves)
    "times",  # apply this behaviour to this many matching requests (default 1)
}


class ScriptError(ValueError):
    pass


class Script:
    """Behaviours for the next matching requests, first in first out."""

    def __init__(self) -> None:
        self.queue: list[dict[str, Any]] = []

    def add(self, items: Any) -> int:
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise ScriptError("expected a JSON list of behaviours")
        for item in items:
            if not isinstance(item, dict):
                raise ScriptError(f"behaviour must be an object: {item!r}")
            unknown = set(item) - BEHAVIOURS - MATCHERS
            if unknown:
                raise ScriptError(f"unknown behaviour keys: {sorted(unknown)}")
            self.queue.append(dict(item))
        return len(self.queue)

    @staticmethod
    def matches(item: dict[str, Any], path: str, protocol: str, model: str, stream: bool) -> bool:
        pattern = item.get("path")
        if pattern is not None and not (
            path == pattern or ("*" in pattern and fnmatch.fnmatchcase(path, pattern))
        ):
            return False
        if item.get("protocol") not in (None, protocol):
            return False
        if item.get("model") is not None and not fnmatch.fnmatchcase(model, item["model"]):
            return False
        return item.get("stream") in (None, stream)

    def take(self, path: str, protocol: str, model: str, stream: bool) -> dict[str, Any]:
        for i, item in enumerate(self.queue):
            if self.matches(item, path, protocol, model, stream):
                times = int(item.get("times", 1))
                if times > 1:
                    item["times"] = times - 1
                else:
                    self.queue.pop(i)
                return {k: v for k, v in item.items() if k not in MATCHERS and k != "times"}
        return {}

    def clear(self) -> None:
        self.queue.clear()


class RequestLog:
    """Every request the fake received (control requests excluded)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, request: Request) -> dict[str, Any]:
        raw = None
        try:
            body: Any = request.json()
        except ValueError:
            body = None
            raw = request.body.decode("utf-8", "replace")
            if "x-www-form-urlencoded" in request.headers.get("content-type", ""):
                body = dict(parse_qsl(raw, keep_blank_values=True))
        entry: dict[str, Any] = {
            "id": len(self.entries),
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "query_string": request.query_string,
            "headers": dict(request.headers),
            "body": body,
            "raw_body": raw,
            "protocol": None,
            "model": None,
            "stream": False,
            "behaviour": {},
            "status": None,
            "events_sent": 0,
            "completed": False,
            "disconnected": False,
        }
        self.entries.append(entry)
        return entry

    def clear(self) -> None:
        self.entries.clear()
