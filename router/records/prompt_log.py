"""The prompt log, as the seed has it: `PROMPT_LOG_MODE=console|file|none` (default none)
and `PROMPT_LOG_FILENAME` (default logs/conversation.log). One JSON line per request:
the record's id, the client's request body, the body sent upstream, and the answer (a
stream assembled into its text, reasoning and tool calls).

Secrets never reach it: no headers but an allow-list, `data:` URLs and base64 blobs
replaced by `<media type, N bytes>`, values of secret-looking keys `***` (inside JSON
written as a string too, as tool-call arguments are), every entry
cut at 64 KiB (saying so when cut). The file rotates when it passes 100 MiB, keeping 3
older ones; a file moved away by logrotate is reopened at the next batch."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO, Any

import msgspec

from router.compiler.plan import SECRET_NAME
from router.protocols import ir, module_for
from router.records import outcome as records
from router.records.outcome import Outcome
from router.records.threaded import ThreadedSink, log

DEFAULT_FILENAME = "logs/conversation.log"
ENTRY_BYTES = 64 * 1024
MAX_BYTES = 100 * 1024 * 1024
BACKUPS = 3
HEADERS = ("user-agent", "anthropic-version", "anthropic-beta", "content-type")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]{256,}={0,2}$")
_DATA_URL = re.compile(r"^data:([^;,]*)(;base64)?,", re.IGNORECASE)
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def redact(value: Any, key: str = "") -> Any:
    """`value` with media blobs summarised and secret-looking keys' values hidden."""
    if key and isinstance(value, str) and SECRET_NAME.search(key):
        return "***"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return _redact_text(value)
    return value


def _redact_text(text: str) -> str:
    if text.startswith("{") and text.endswith("}"):  # JSON in a string: tool arguments
        try:
            inner = _decode(text)
        except (msgspec.DecodeError, RecursionError):
            inner = None
        if isinstance(inner, dict):
            return _encode(redact(inner)).decode()
    found = _DATA_URL.match(text)
    if found:
        media = found.group(1) or "data"
        return f"<{media}, {len(text) - found.end()} bytes>"
    if len(text) >= 256 and _BASE64.match(text):
        return f"<base64, {len(text)} bytes>"
    return text


def _cut(entry: Any) -> Any:
    text = _encode(entry)
    if len(text) <= ENTRY_BYTES:
        return entry
    shown = text[:ENTRY_BYTES].decode(errors="ignore")
    return {"cut": f"{len(text)} bytes, the first {ENTRY_BYTES} shown", "head": shown}


def _json(body: bytes) -> Any:
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body[:ENTRY_BYTES].decode(errors="replace")


def assembled(protocol: str, chunks: list[bytes]) -> dict[str, Any]:
    """A client stream, read back with its protocol's decoder: text, reasoning, calls."""
    decoder = module_for(protocol).StreamDecoder()
    events: list[ir.Event] = []
    try:
        for chunk in chunks:
            events.extend(decoder.feed(chunk))
        events.extend(decoder.close())
    except Exception as exc:  # a stream the client was sent but our decoder cannot read
        log.debug("prompt log: stream not assembled: %s", exc)
    text, reasoning, calls = [], [], []
    for event in events:
        if isinstance(event, ir.TextDelta):
            text.append(event.text)
        elif isinstance(event, ir.ThinkingDelta):
            reasoning.append(event.text)
        elif isinstance(event, ir.ToolCallStart):
            calls.append({"id": event.id, "name": event.name, "arguments": ""})
        elif isinstance(event, ir.ToolCallDelta) and calls:
            calls[-1]["arguments"] += event.arguments
    return {"text": "".join(text), "reasoning": "".join(reasoning), "tool_calls": calls}


def entry(outcome: Outcome) -> dict[str, Any]:
    exchange = outcome.exchange
    assert exchange is not None
    if outcome.stream and outcome.status == 200:
        answer: Any = assembled(outcome.protocol, exchange.answer)
    else:
        answer = _json(b"".join(exchange.answer))
    return {
        "id": outcome.id,
        "time": outcome.time,
        "protocol": outcome.protocol,
        "model": outcome.model,
        "status": outcome.status,
        "headers": {k: v for k, v in exchange.headers.items() if k in HEADERS},
        "request": _cut(redact(exchange.request)),
        "upstream": _cut(redact(_json(exchange.upstream))) if exchange.upstream else None,
        "answer": _cut(redact(answer)),
    }


class PromptLog(ThreadedSink):
    name = "prompts"
    interval = 0.2

    def __init__(self, path: Path | None, console: IO[str] | None = None) -> None:
        super().__init__()
        self.path = path
        self.console = console

    def handle(self, batch: list[Outcome]) -> None:
        lines = b"".join(_encode(entry(o)) + b"\n" for o in batch if o.exchange is not None)
        if self.console is not None:
            self.console.write(lines.decode())
            self.console.flush()
            return
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as out:
                out.write(lines)
                size = out.tell()
            if size > MAX_BYTES:
                self._rotate()
        except OSError as exc:
            log.warning("prompt log: cannot write %s: %s", self.path, exc)

    def _rotate(self) -> None:
        assert self.path is not None
        for index in range(BACKUPS - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


def from_environment() -> PromptLog | None:
    mode = os.environ.get("PROMPT_LOG_MODE", "none").lower()
    if mode == "console":
        sink = PromptLog(None, console=sys.stderr)
    elif mode == "file":
        sink = PromptLog(Path(os.environ.get("PROMPT_LOG_FILENAME") or DEFAULT_FILENAME))
    else:
        return None
    records.KEEP_BODIES = True  # from now on, requests keep their bodies for it
    return sink
