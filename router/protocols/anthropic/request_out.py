"""Anthropic Messages: ir.Request -> upstream body.

Decisions worth knowing (see also the functions):

* Default `max_tokens` when the client gave none: claude-3-5/3-7 8192, other claude-3
  4096, later Claude models 16384, non-Claude models (Anthropic-compatible servers)
  4096. With thinking on it is raised to budget + 4096.
* Reasoning -> `thinking: {type: enabled, budget_tokens}` (every thinking-capable Claude
  accepts it). Effort -> budget: minimal 1024, low 2048, medium 8192, high 16384,
  xhigh/max 24576; "on, no effort or budget" (adaptive, Gemini includeThoughts) ->
  medium. The budget is kept below `max_tokens`. Thinking is left out (and "reasoning"
  reported) for Claude 3.x before 3.7, and turned off for the request when a tool is
  forced (Anthropic refuses both), when the final assistant turn has a `tool_use`
  but no signed Anthropic thinking block in front of it (a client that cannot carry
  Anthropic signatures, e.g. OpenAI Chat, in a tool loop), or when `max_tokens` leaves
  no room for the minimum budget; history thinking blocks are then stripped too, and
  "reasoning" is reported in every one of these cases (so strict mode refuses them
  rather than answer without the thinking asked for). With thinking on, `temperature`
  != 1, `top_k` and `top_p` < 0.95 are dropped (reported), as Anthropic rejects them.
* Structured output -> `output_config.format` (the current name; requests may use the
  older top-level `output_format`, both are read). JSON mode has no native form: it
  becomes an instruction appended to the system prompt.
* Tool ids must match ^[a-zA-Z0-9_-]+$: other characters become "_" plus a short hash
  of the original id, the same mapping for the call and its result.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import NAME, _drop, _tool_input

_EFFORT_BUDGET = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 24576,
}
_MIN_BUDGET = 1024
_ANSWER_ROOM = 4096  # tokens left for the visible answer above a thinking budget

_JSON_MODE_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def default_max_tokens(model: str) -> int:
    name = model.rsplit("/", 1)[-1].lower()
    if "claude" not in name:
        return 4096
    if "claude-3-5" in name or "claude-3-7" in name or "claude-3.5" in name:
        return 8192
    if "claude-3" in name or "claude-2" in name or "claude-instant" in name:
        return 4096
    return 16384


def _supports_thinking(model: str) -> bool:
    """False for the Claude models from before extended thinking (3.7 has it)."""
    name = model.rsplit("/", 1)[-1].lower()
    if "claude-3-7" in name:
        return True
    return not any(old in name for old in ("claude-3", "claude-2", "claude-instant"))


def thinking_budget(reasoning: ir.Reasoning | None) -> int | None:
    """The token budget an ir reasoning request asks for (None: thinking off)."""
    if reasoning is None or not reasoning.enabled:
        return None
    if reasoning.budget_tokens is not None:
        if reasoning.budget_tokens <= 0:
            return None
        return max(_MIN_BUDGET, reasoning.budget_tokens)
    if reasoning.effort in ("none",):
        return None
    return _EFFORT_BUDGET.get(reasoning.effort or "medium", _EFFORT_BUDGET["medium"])


def sanitize_tool_id(call_id: str) -> str:
    if _TOOL_ID.match(call_id):
        return call_id
    digest = hashlib.blake2s(call_id.encode(), digest_size=4).hexdigest()
    return f"{_TOOL_ID_BAD.sub('_', call_id)}_{digest}"


def build_request(req: ir.Request) -> dict[str, Any]:
    messages = _build_messages(req)
    budget = thinking_budget(req.reasoning)
    asked = budget is not None
    if budget is not None and not _supports_thinking(req.model):
        budget = None
        _drop(req, "reasoning")
    if budget is not None and not _thinking_allowed(req, messages):
        budget = None
    max_tokens = req.max_tokens
    if max_tokens is None:
        max_tokens = default_max_tokens(req.model)
        if budget is not None:
            max_tokens = max(max_tokens, budget + _ANSWER_ROOM)
    elif budget is not None:
        budget = min(budget, max_tokens - _ANSWER_ROOM)
        if budget < _MIN_BUDGET:
            budget = _MIN_BUDGET if max_tokens > _MIN_BUDGET else None
    if budget is None:
        _strip_thinking(messages)
        if asked:
            _drop(req, "reasoning")  # asked for, but this request goes without thinking
    system = _build_system(req)
    if not messages and system:  # Anthropic needs a message; OpenAI allows system-only
        messages, system = [{"role": "user", "content": system}], []
    body: dict[str, Any] = {"model": req.model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    _build_sampling(req, body, thinking=budget is not None)
    if req.stop:
        stops = [s for s in req.stop if s.strip()]
        if len(stops) < len(req.stop):
            _drop(req, "stop")  # Anthropic rejects whitespace-only stop sequences
        if stops:
            body["stop_sequences"] = stops
    if req.tools:
        body["tools"] = [_build_tool(tool) for tool in req.tools]
        choice = _build_tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice
    if req.output is not None and req.output.kind == "json_schema" and req.output.schema:
        body["output_config"] = {"format": {"type": "json_schema", "schema": req.output.schema}}
    if req.seed is not None:
        _drop(req, "seed")
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.metadata and any(key != "user_id" for key in req.metadata):
        _drop(req, "metadata")  # Anthropic metadata holds only user_id
    if req.stream:
        body["stream"] = True
    return body


def _build_system(req: ir.Request) -> list[dict[str, Any]]:
    blocks = [{"type": "text", "text": text} for text in req.system if text.strip()]
    if req.output is not None and req.output.kind == "json_object":
        blocks.append({"type": "text", "text": _JSON_MODE_INSTRUCTION})
    return blocks


def _build_sampling(req: ir.Request, body: dict[str, Any], thinking: bool) -> None:
    # With thinking on Anthropic accepts only temperature 1, top_p >= 0.95 and no top_k.
    if req.temperature is not None:
        if thinking and req.temperature != 1:
            _drop(req, "temperature")
        elif req.temperature > 1:  # OpenAI allows up to 2, Anthropic up to 1
            body["temperature"] = 1.0
            _drop(req, "temperature")
        else:
            body["temperature"] = req.temperature
    if req.top_p is not None:
        if not thinking or req.top_p >= 0.95:
            body["top_p"] = req.top_p
        else:
            _drop(req, "top_p")
    if req.top_k is not None:
        if not thinking:
            body["top_k"] = req.top_k
        else:
            _drop(req, "top_k")


def _build_tool(tool: ir.Tool) -> dict[str, Any]:
    schema = dict(tool.parameters) if tool.parameters else {}
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = schema
    if tool.strict:
        out["strict"] = True
    return out


def _build_tool_choice(req: ir.Request) -> dict[str, Any] | None:
    choice = req.tool_choice
    out: dict[str, Any] | None = None
    if choice is not None:
        if choice.mode == "required":
            out = {"type": "any"}
        elif choice.mode == "tool":
            out = {"type": "tool", "name": choice.name}
        else:
            out = {"type": choice.mode}
    if req.parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def _thinking_allowed(req: ir.Request, messages: list[dict[str, Any]]) -> bool:
    """Anthropic refuses thinking with a forced tool, and in a tool loop whose final
    assistant turn does not start with a (signed) thinking block."""
    if req.tool_choice is not None and req.tool_choice.mode in ("required", "tool"):
        return False
    for msg in reversed(messages):
        if msg["role"] != "assistant":
            continue
        content = msg["content"]
        if any(block["type"] == "tool_use" for block in content):
            return content[0]["type"] in ("thinking", "redacted_thinking")
        return True
    return True


def _strip_thinking(messages: list[dict[str, Any]]) -> None:
    for msg in messages:
        if msg["role"] == "assistant":
            msg["content"] = [
                b for b in msg["content"] if b["type"] not in ("thinking", "redacted_thinking")
            ]
    messages[:] = _merged([m for m in messages if m["content"]])


def _merged(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive same-role turns merged (roles must alternate), tool results first."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if out and out[-1]["role"] == msg["role"]:
            out[-1]["content"].extend(msg["content"])
        else:
            out.append(msg)
    for msg in out:
        content = msg["content"]
        if msg["role"] == "user" and any(b["type"] == "tool_result" for b in content):
            results = [b for b in content if b["type"] == "tool_result"]
            msg["content"] = results + [b for b in content if b["type"] != "tool_result"]
    return out


def _build_messages(req: ir.Request) -> list[dict[str, Any]]:
    built: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "assistant":
            content = _assistant_blocks(msg.parts)
            role = "assistant"
        else:  # a system message mid-conversation becomes user text here
            content = _user_blocks(msg.parts, req)
            role = "user"
        if content:
            built.append({"role": role, "content": content})
    return _merged(built)


def _text_block(text: str) -> dict[str, Any] | None:
    return {"type": "text", "text": text} if text.strip() else None


def _build_image(image: ir.Image) -> dict[str, Any]:
    if image.data is not None:
        source = {
            "type": "base64",
            "media_type": image.media_type or _sniff_image_type(image.data),
            "data": image.data,
        }
    else:
        source = {"type": "url", "url": image.url or ""}
    return {"type": "image", "source": source}


_IMAGE_MAGIC = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lG", "image/gif"))


def _sniff_image_type(data: str) -> str:
    for prefix, media_type in _IMAGE_MAGIC:
        if data.startswith(prefix):
            return media_type
    return "image/webp" if data.startswith("UklGR") else "image/png"


def _build_document(file: ir.File) -> dict[str, Any]:
    if file.data is not None:
        source: dict[str, Any] = {
            "type": "base64",
            "media_type": file.media_type or "application/pdf",
            "data": file.data,
        }
    elif file.file_id:
        source = {"type": "file", "file_id": file.file_id}
    else:
        source = {"type": "url", "url": file.url or ""}
    out: dict[str, Any] = {"type": "document", "source": source}
    if file.filename:
        out["title"] = file.filename
    return out


def _user_blocks(parts: list[ir.Part], req: ir.Request) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.Text):
            block = _text_block(part.text)
            if block is not None:
                blocks.append(block)
        elif isinstance(part, ir.Image):
            blocks.append(_build_image(part))
        elif isinstance(part, ir.File):
            blocks.append(_build_document(part))
        elif isinstance(part, ir.ToolResult):
            blocks.append(_build_tool_result(part))
    return blocks


def _build_tool_result(result: ir.ToolResult) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_tool_id(result.call_id)}
    content: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, ir.Text):
            block = _text_block(part.text)
            if block is not None:
                content.append(block)
        elif isinstance(part, ir.Image):
            content.append(_build_image(part))
    if content:
        out["content"] = content
    if result.is_error:
        out["is_error"] = True
    return out


def _assistant_blocks(parts: list[ir.Part]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.Text):
            block = _text_block(part.text)
            if block is not None:
                blocks.append(block)
        elif isinstance(part, ir.ToolCall):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": sanitize_tool_id(part.id),
                    "name": part.name,
                    "input": _tool_input(part.arguments),
                }
            )
        elif isinstance(part, ir.Thinking) and part.origin == NAME:
            if part.redacted and part.data:
                blocks.append({"type": "redacted_thinking", "data": part.data})
            elif not part.redacted and part.signature:
                blocks.append(
                    {"type": "thinking", "thinking": part.text, "signature": part.signature}
                )
    return blocks
