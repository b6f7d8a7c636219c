"""Reading the Claude Code CLI's stdout (`--output-format stream-json --verbose`).

Lines, one JSON object each: `system` (subtype `init` lists the model and the tools the
model will be offered; `status`, `thinking_tokens` ...), `stream_event` (with
`--include-partial-messages`: the Anthropic stream events `message_start`,
`content_block_start`/`_delta`/`_stop`, `message_delta`, `message_stop`), `assistant`
(each finished content block; API failures come as a synthetic message with an `error`
tag such as `authentication_failed` or `rate_limit`), `user` (tool results the CLI
produced) and finally one `result` (`subtype`, `is_error`, `api_error_status`, `result`
text, `structured_output`, `stop_reason`, `usage` summed over the run's API calls).
Unknown line types are ignored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from router.protocols import ir
from router.providers import claude_code_emulation as emulation
from router.providers.claude_code_emulation import STRUCTURED_TOOL, Emulation

_AUTH_TAGS = frozenset({"authentication_failed", "oauth_org_not_allowed"})
_AUTH_WORDS = re.compile(r"api key|x-api-key|not logged in|/login|authenticat|unauthori", re.I)
_RATE_WORDS = re.compile(r"rate limit|too many requests|\b429\b", re.I)
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "stop",
}


class AnswerReader:
    """Consumes the CLI's stdout lines. `feed` returns the stream events each line
    produces (plain-text streams only); `response` / `final_events` give the answer."""

    def __init__(self, mode: Emulation, model: str, live_text: bool, want_thinking: bool) -> None:
        self.mode = mode
        self.model = model
        self.live_text = live_text  # plain-text streams: text deltas go out as they come
        self.want_thinking = want_thinking
        self.message_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.error_tag: str | None = None
        self.assistant_texts: dict[str, str] = {}  # message id -> its text
        self.thinking: list[str] = []
        self.started = False
        self.streamed_text = False
        self.block: str | None = None  # kind of the last streamed block
        self.pending_break = False
        self.input_usage: ir.Usage | None = None

    # each line ----------------------------------------------------------------------

    def feed(self, line: dict[str, Any]) -> list[ir.Event]:
        kind = line.get("type")
        if kind == "system" and line.get("subtype") == "init":
            self._check_tools(line.get("tools") or [])
            self.model = str(line.get("model") or self.model)
        elif kind == "assistant":
            self._on_assistant(line)
        elif kind == "result":
            self.result = line
        elif kind == "stream_event":
            return self._on_stream_event(line.get("event") or {})
        return []

    def _check_tools(self, tools: list[Any]) -> None:
        extra = [t for t in tools if t != STRUCTURED_TOOL]
        if extra:
            raise ir.Error(500, "api_error", f"claude offered its own tools {extra}; run stopped")

    def _on_assistant(self, line: dict[str, Any]) -> None:
        message = line.get("message") or {}
        if line.get("error"):  # a synthetic message describing an API failure
            self.error_tag = str(line["error"])
            return
        self.message_id = self.message_id or message.get("id")
        texts = []
        for block in message.get("content") or []:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text") or "")
            elif kind == "thinking":
                self.thinking.append(block.get("thinking") or "")
            elif kind == "tool_use" and block.get("name") != STRUCTURED_TOOL:
                raise ir.Error(500, "api_error", f"claude tried to use tool {block.get('name')!r}")
        if any(texts):
            key = str(message.get("id") or len(self.assistant_texts))
            self.assistant_texts[key] = self.assistant_texts.get(key, "") + "".join(texts)

    def _on_stream_event(self, event: dict[str, Any]) -> list[ir.Event]:
        kind = event.get("type")
        if kind == "message_start":
            return self._on_message_start(event.get("message") or {})
        if kind == "content_block_start":
            block = (event.get("content_block") or {}).get("type")
            if block in ("text", "thinking") and block == self.block:
                self.pending_break = True
            return []
        if kind == "content_block_delta":
            return self._on_delta(event.get("delta") or {})
        return []

    def _on_message_start(self, message: dict[str, Any]) -> list[ir.Event]:
        if self.started:
            return []
        self.started = True
        self.message_id = self.message_id or message.get("id")
        self.model = str(message.get("model") or self.model)
        usage = usage_from(message.get("usage") or {})
        self.input_usage = usage
        return [
            self._start(
                ir.Usage(
                    input_tokens=usage.input_tokens,
                    cached_tokens=usage.cached_tokens,
                    cache_creation_tokens=usage.cache_creation_tokens,
                )
            )
        ]

    def _on_delta(self, delta: dict[str, Any]) -> list[ir.Event]:
        kind = delta.get("type")
        if kind == "text_delta" and self.live_text:
            return self._block_event("text", ir.TextDelta(delta.get("text") or ""))
        if kind == "thinking_delta" and self.want_thinking:
            return self._block_event("thinking", ir.ThinkingDelta(delta.get("thinking") or ""))
        return []

    def _block_event(self, kind: str, event: ir.Event) -> list[ir.Event]:
        events: list[ir.Event] = []
        if self.pending_break and self.block == kind:
            events.append(ir.BlockBreak())
        self.pending_break = False
        self.block = kind
        if kind == "text":
            self.streamed_text = True
        events.append(event)
        return events

    def _start(self, usage: ir.Usage | None = None) -> ir.Start:
        return ir.Start(
            id=self.response_id(), model=self.model, usage=usage, created=int(time.time())
        )

    # the end ------------------------------------------------------------------------

    def check_exit(self, returncode: int | None, stderr: str) -> None:
        """Raise the error the run ended with, if any."""
        result = self.result
        if result is None:
            raise exit_error(returncode, stderr)
        failed = result.get("is_error") or result.get("subtype") != "success"
        if failed and self._plain_answer() is None:
            raise result_error(result, self.error_tag, stderr)

    def _plain_answer(self) -> str | None:
        """With tool emulation, a model that answered in plain text instead of through
        StructuredOutput (the CLI then ends at max turns, or without structured_output)
        still answered: its first text, when a text answer is allowed."""
        result = self.result or {}
        if (
            self.mode.mode == "tools"
            and "text" in self.mode.choices
            and "structured_output" not in result
            and result.get("subtype") in ("success", "error_max_turns")
            and self.assistant_texts
        ):
            return next(iter(self.assistant_texts.values()))
        return None

    def answer_parts(self) -> tuple[list[ir.Part], ir.FinishReason]:
        result = self.result or {}
        finish = _FINISH.get(str(result.get("stop_reason")), "stop")
        if self.mode.mode == "text":
            return [ir.Text(str(result.get("result") or ""))], finish
        plain = self._plain_answer()
        if plain is not None:
            return [ir.Text(plain)], "stop"
        if "structured_output" not in result:
            raise ir.Error(502, "bad_gateway", "claude returned no structured output")
        parts, emulated = emulation.parse_answer(self.mode, result["structured_output"])
        return parts, "length" if finish == "length" else emulated

    def usage(self) -> ir.Usage:
        result = self.result or {}
        if isinstance(result.get("usage"), dict):
            return usage_from(result["usage"])
        return self.input_usage or ir.Usage()

    def response_id(self) -> str:
        if self.message_id:
            return str(self.message_id)
        session = (self.result or {}).get("session_id")
        return f"cc-{session}" if session else f"cc-{emulation.new_call_id()[5:]}"

    def response(self) -> ir.Response:
        parts: list[ir.Part] = []
        if self.want_thinking and any(self.thinking):
            parts.append(ir.Thinking(text="".join(self.thinking)))
        answer, finish = self.answer_parts()
        parts += answer
        return ir.Response(
            id=self.response_id(),
            model=self.model,
            parts=parts,
            finish=finish,
            usage=self.usage(),
            created=int(time.time()),
        )

    def final_events(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        if not self.started:
            self.started = True
            events.append(self._start())
        parts, finish = self.answer_parts()
        if self.live_text and self.streamed_text:
            parts = []  # the text already went out as deltas
        for part in parts:
            events += self._part_events(part)
        events.append(ir.Finish(finish, self.usage()))
        return events

    def _part_events(self, part: ir.Part) -> list[ir.Event]:
        """A buffered answer part as stream events (each tool call whole)."""
        if isinstance(part, ir.Text):
            return self._block_event("text", ir.TextDelta(part.text)) if part.text else []
        if isinstance(part, ir.ToolCall):
            self.block = "tool"
            return [ir.ToolCallStart(part.id, part.name), ir.ToolCallDelta(part.arguments)]
        return []


def usage_from(usage: Mapping[str, Any]) -> ir.Usage:
    """Anthropic usage (input excludes cache reads/writes) in ir's convention."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    return ir.Usage(
        input_tokens=int(usage.get("input_tokens") or 0) + cached + created,
        output_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=cached,
        cache_creation_tokens=created,
    )


# --- errors ------------------------------------------------------------------------


def result_error(result: Mapping[str, Any], tag: str | None, stderr: str) -> ir.Error:
    """The ir.Error for an `is_error` result line."""
    status = result.get("api_error_status")
    message = str(result.get("result") or "; ".join(map(str, result.get("errors") or [])))
    message = message or f"claude ended with {result.get('subtype')}"
    if status == 401 or tag in _AUTH_TAGS:
        return ir.Error(401, "authentication", message)
    if status == 403 or tag == "billing_error":
        return ir.Error(403, "permission", message)
    if status == 429 or tag == "rate_limit":
        return ir.Error(429, "rate_limit", message)
    if status == 529 or tag == "overloaded":
        return ir.Error(529, "overloaded", message)
    if isinstance(status, int) and 400 <= status < 500:
        return ir.Error(status, ir.error_kind_for_status(status), message)
    if tag == "invalid_request":
        return ir.Error(400, "invalid_request", message)
    if status is None and not tag and _AUTH_WORDS.search(message + " " + stderr):
        return ir.Error(401, "authentication", message)
    return ir.Error(502, "bad_gateway", message)


def exit_error(returncode: int | None, stderr: str) -> ir.Error:
    """The ir.Error for a run that ended without a result line."""
    tail = stderr[-500:] or "no output"
    message = f"claude exited with code {returncode} without an answer: {tail}"
    if _AUTH_WORDS.search(stderr):
        return ir.Error(401, "authentication", message)
    if _RATE_WORDS.search(stderr):
        return ir.Error(429, "rate_limit", message)
    return ir.Error(502, "bad_gateway", message)
