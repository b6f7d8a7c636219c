"""Anthropic Messages (`POST /v1/messages`) <-> ir.

Decisions worth knowing (see also the module's functions):

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
* Signatures from other providers reach Anthropic clients as "<origin>:<signature>"
  (a real Anthropic signature is base64, never contains ":"), so that when the client
  sends the block back it is recognised as foreign instead of failing upstream.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.sse import SSEParser, named_event

NAME = "anthropic"
ACCEPTS_IMAGE_URLS = True

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_STOP_FROM_WIRE: dict[str, ir.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_TO_WIRE = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}

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

# Request fields that change nothing about the answer (caching, billing, routing hints).
_IGNORED_FIELDS = frozenset({"cache_control", "service_tier", "inference_geo", "diagnostics"})

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _drop(req: ir.Request, name: str) -> None:
    if name not in req.dropped:
        req.dropped.append(name)


# --- signatures from other providers -------------------------------------------------


def wrap_signature(signature: str | None, origin: str | None) -> str:
    """The signature an Anthropic client sees for a block produced by `origin`."""
    if not signature:
        return ""
    if origin is None or origin == NAME:
        return signature
    return f"{origin}:{signature}"


def unwrap_signature(signature: Any) -> tuple[str | None, str | None]:
    """(signature, origin) of a signature an Anthropic client sent back."""
    if not isinstance(signature, str) or not signature:
        return None, None
    origin, sep, rest = signature.partition(":")
    if sep and origin in ir.PROTOCOLS and origin != NAME:
        return rest, origin
    return signature, NAME


# --- request: wire -> ir ------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> ir.Request:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: field required", "model")
    req = ir.Request(model=model)
    _parse_system(body.get("system"), req)
    _parse_messages(body.get("messages"), req)
    for key, value in body.items():
        if value is None:
            continue
        handler = _FIELD_PARSERS.get(key)
        if handler is not None:
            handler(value, req, body)
        elif key not in _IGNORED_FIELDS:
            _drop(req, key)
    return req


def _system_texts(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        texts = []
        for block in value:
            if not isinstance(block, dict) or not isinstance(block.get("text"), str):
                raise _invalid(f"{where}: blocks must be text blocks", where)
            texts.append(block["text"])
        return texts
    raise _invalid(f"{where}: must be a string or an array of text blocks", where)


def _parse_system(value: Any, req: ir.Request) -> None:
    if value is not None:
        req.system.extend(_system_texts(value, "system"))


def _parse_messages(raw: Any, req: ir.Request) -> None:
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages: at least one message is required", "messages")
    call_names: dict[str, str] = {}
    in_preamble = True
    for i, msg in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise _invalid(f"{where}: must be an object", where)
        role = msg.get("role")
        content = msg.get("content")
        if role == "system":  # Claude Code sends one inside `messages`
            texts = _system_texts(content, f"{where}.content")
            if in_preamble:
                req.system.extend(texts)
            else:
                req.messages.append(ir.Message("system", [ir.Text(t) for t in texts]))
            continue
        if role not in ("user", "assistant"):
            raise _invalid(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
        in_preamble = False
        if isinstance(content, str):
            parts: list[ir.Part] = [ir.Text(content)]
        elif isinstance(content, list):
            parts = _parse_blocks(content, where, call_names, req)
        else:
            raise _invalid(f"{where}.content: must be a string or an array", where)
        req.messages.append(ir.Message(role, parts))


def _parse_blocks(
    blocks: list[Any], where: str, call_names: dict[str, str], req: ir.Request
) -> list[ir.Part]:
    parts: list[ir.Part] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _invalid(f"{where}.content.{j}: must be an object", where)
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise _invalid(f"{where}.content.{j}.text: field required", where)
            parts.append(ir.Text(text))
        elif kind == "image":
            image = _parse_image(block, req)
            if image is not None:
                parts.append(image)
        elif kind == "document":
            parts.extend(_parse_document(block, req))
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _invalid(f"{where}.content.{j}: tool_use needs id and name", where)
            call_names[call_id] = name
            parts.append(ir.ToolCall(call_id, name, _encode(block.get("input") or {}).decode()))
        elif kind == "tool_result":
            parts.append(_parse_tool_result(block, f"{where}.content.{j}", call_names, req))
        elif kind == "thinking":
            signature, origin = unwrap_signature(block.get("signature"))
            text = block.get("thinking")
            parts.append(
                ir.Thinking(
                    text=text if isinstance(text, str) else "", signature=signature, origin=origin
                )
            )
        elif kind == "redacted_thinking":
            data, origin = unwrap_signature(block.get("data"))
            parts.append(ir.Thinking(redacted=True, data=data, origin=origin))
        else:
            _drop(req, f"content.{kind}")
    return parts


def _parse_image(block: dict[str, Any], req: ir.Request) -> ir.Image | None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid("image: source required", "source")
    kind = source.get("type")
    if kind == "base64":
        return ir.Image(media_type=source.get("media_type"), data=source.get("data"))
    if kind == "url":
        return ir.Image(url=source.get("url"))
    _drop(req, f"image.source.{kind}")
    return None


def _parse_document(block: dict[str, Any], req: ir.Request) -> list[ir.Part]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid("document: source required", "source")
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "base64":
        return [
            ir.File(media_type=source.get("media_type"), data=source.get("data"), filename=title)
        ]
    if kind == "url":
        return [ir.File(url=source.get("url"), filename=title)]
    if kind == "file":
        return [ir.File(file_id=source.get("file_id"), filename=title)]
    if kind == "text":
        return [ir.Text(str(source.get("data") or ""))]
    if kind == "content" and isinstance(source.get("content"), (list, str)):
        content = source["content"]
        if isinstance(content, str):
            return [ir.Text(content)]
        return [ir.Text(b["text"]) for b in content if isinstance(b, dict) and "text" in b]
    _drop(req, f"document.source.{kind}")
    return []


def _parse_tool_result(
    block: dict[str, Any], where: str, call_names: dict[str, str], req: ir.Request
) -> ir.ToolResult:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise _invalid(f"{where}.tool_use_id: field required", where)
    content = block.get("content")
    parts: list[ir.Text | ir.Image] = []
    if isinstance(content, str):
        parts.append(ir.Text(content))
    elif isinstance(content, list):
        for item in content:
            if not isinstance(item, dict):
                raise _invalid(f"{where}.content: blocks must be objects", where)
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                parts.append(ir.Text(item["text"]))
            elif item.get("type") == "image":
                image = _parse_image(item, req)
                if image is not None:
                    parts.append(image)
            else:
                _drop(req, f"tool_result.content.{item.get('type')}")
    return ir.ToolResult(
        call_id, call_names.get(call_id), parts, is_error=block.get("is_error") is True
    )


def _parse_tools(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _invalid("tools: must be an array", "tools")
    for tool in value:
        if not isinstance(tool, dict):
            raise _invalid("tools: entries must be objects", "tools")
        kind = tool.get("type")
        if kind not in (None, "custom"):  # server tools (web_search_..., bash_...) stay
            _drop(req, f"tools.{kind}")
            continue
        name = tool.get("name")
        if not isinstance(name, str):
            raise _invalid("tools: each tool needs a name", "tools")
        schema = tool.get("input_schema")
        req.tools.append(
            ir.Tool(
                name=name,
                description=tool.get("description"),
                parameters=schema if isinstance(schema, dict) else None,
                strict=tool.get("strict"),
            )
        )


def _parse_tool_choice(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("tool_choice: must be an object", "tool_choice")
    kind = value.get("type")
    if kind in ("auto", "none"):
        req.tool_choice = ir.ToolChoice(kind)
    elif kind == "any":
        req.tool_choice = ir.ToolChoice("required")
    elif kind == "tool" and isinstance(value.get("name"), str):
        req.tool_choice = ir.ToolChoice("tool", value["name"])
    else:
        raise _invalid("tool_choice: not a valid tool choice", "tool_choice")
    if value.get("disable_parallel_tool_use") is True:
        req.parallel_tool_calls = False


def _parse_thinking(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("thinking: must be an object", "thinking")
    kind = value.get("type")
    if kind == "enabled":
        budget = value.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise _invalid("thinking.budget_tokens: must be an integer", "thinking")
        reasoning = ir.Reasoning(budget_tokens=budget)
    elif kind in ("adaptive", "between_tools"):
        reasoning = ir.Reasoning()
    elif kind == "disabled":
        reasoning = ir.Reasoning(enabled=False)
    else:
        raise _invalid(f"thinking.type: {kind!r} is not supported", "thinking")
    if value.get("display") == "omitted":
        reasoning.include_thoughts = False
    if req.reasoning is not None:  # output_config.effort was read first
        reasoning.effort = req.reasoning.effort
    req.reasoning = reasoning


def _parse_output_config(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("output_config: must be an object", "output_config")
    for key, item in value.items():
        if item is None:
            continue
        if key == "effort" and isinstance(item, str):
            if req.reasoning is None:
                req.reasoning = ir.Reasoning()
            req.reasoning.effort = item
        elif key == "format":
            _parse_output_format(item, req, body)
        else:
            _drop(req, f"output_config.{key}")


def _parse_output_format(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise _invalid("output_format: only type json_schema is supported", "output_format")
    schema = value.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("output_format.schema: must be an object", "output_format")
    req.output = ir.OutputFormat("json_schema", schema=schema)


def _parse_int(name: str, attribute: str | None = None):
    def parse(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"{name}: must be an integer", name)
        setattr(req, attribute or name, value)

    return parse


def _parse_float(name: str):
    def parse(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"{name}: must be a number", name)
        setattr(req, name, value)

    return parse


def _parse_stop_sequences(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _invalid("stop_sequences: must be an array of strings", "stop_sequences")
    req.stop = list(value)


def _parse_stream(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, bool):
        raise _invalid("stream: must be a boolean", "stream")
    req.stream = value


def _parse_metadata(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("metadata: must be an object", "metadata")
    req.metadata = value
    if isinstance(value.get("user_id"), str):
        req.user = value["user_id"]


def _skip(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    pass


_FIELD_PARSERS: dict[str, Any] = {
    "model": _skip,
    "messages": _skip,
    "system": _skip,
    "max_tokens": _parse_int("max_tokens"),
    "temperature": _parse_float("temperature"),
    "top_p": _parse_float("top_p"),
    "top_k": _parse_int("top_k"),
    "stop_sequences": _parse_stop_sequences,
    "stream": _parse_stream,
    "metadata": _parse_metadata,
    "tools": _parse_tools,
    "tool_choice": _parse_tool_choice,
    "output_config": _parse_output_config,  # read in either order with "thinking"
    "output_format": _parse_output_format,
    "thinking": _parse_thinking,
}


# --- request: ir -> wire ------------------------------------------------------------


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


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = _decode(arguments) if arguments else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


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


# --- count_tokens ----------------------------------------------------------------------

_COUNTED_KEYS = ("messages", "system", "tools", "tool_choice", "thinking")


def parse_count_request(body: dict[str, Any]) -> ir.Request:
    """A client's `/v1/messages/count_tokens` body (a Messages body without max_tokens)."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    return parse_request({**body, "max_tokens": 1, "stream": False})


def build_count_request(req: ir.Request) -> dict[str, Any]:
    """The `/v1/messages/count_tokens` body for `req`: the fields it accepts."""
    body = build_request(req)
    return {"model": req.model, **{k: body[k] for k in _COUNTED_KEYS if k in body}}


def count_from(body: Any) -> int:
    total = body.get("input_tokens") if isinstance(body, dict) else None
    if not isinstance(total, int) or isinstance(total, bool):
        raise ir.Error(502, "bad_gateway", "count_tokens answered without input_tokens")
    return total


def count_body(tokens: int) -> dict[str, Any]:
    """The count_tokens answer for an Anthropic client."""
    return {"input_tokens": tokens}


# --- response ------------------------------------------------------------------------


def _usage_numbers(usage: dict[str, Any]) -> tuple[int, int, int, int | None, int | None]:
    details = usage.get("output_tokens_details") or {}
    return (
        usage.get("input_tokens") or 0,
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0,
        usage.get("output_tokens"),
        details.get("thinking_tokens") if isinstance(details, dict) else None,
    )


def parse_usage(usage: Any) -> ir.Usage:
    """Anthropic usage -> ir: `input_tokens` there excludes cache reads and writes."""
    if not isinstance(usage, dict):
        return ir.Usage()
    fresh, read, written, output, thinking = _usage_numbers(usage)
    return ir.Usage(
        input_tokens=fresh + read + written,
        output_tokens=output or 0,
        cached_tokens=read,
        cache_creation_tokens=written,
        reasoning_tokens=thinking or 0,
    )


def build_usage(usage: ir.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": max(
            0, usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens
        ),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("type") == "error" or isinstance(body.get("error"), dict):
        raise _error_from_payload(body.get("error"), 502)
    content = body.get("content")
    if not isinstance(content, list):
        raise ir.Error(502, "bad_gateway", "upstream response has no content")
    parts: list[ir.Part] = []
    for block in content:
        part = _response_part(block) if isinstance(block, dict) else None
        if part is not None:
            parts.append(part)
    finish = _STOP_FROM_WIRE.get(body.get("stop_reason") or "end_turn", "stop")
    return ir.Response(
        id=body.get("id") or _new_id("msg_"),
        model=body.get("model") or "",
        parts=parts,
        finish=finish,
        stop_sequence=body.get("stop_sequence"),
        usage=parse_usage(body.get("usage")),
    )


def _response_part(block: dict[str, Any]) -> ir.Part | None:
    kind = block.get("type")
    if kind == "text":
        return ir.Text(block.get("text") or "")
    if kind == "tool_use":
        return ir.ToolCall(
            block.get("id") or _new_id("toolu_"),
            block.get("name") or "",
            _encode(block.get("input") or {}).decode(),
        )
    if kind == "thinking":
        return ir.Thinking(
            text=block.get("thinking") or "", signature=block.get("signature") or None, origin=NAME
        )
    if kind == "redacted_thinking":
        return ir.Thinking(redacted=True, data=block.get("data"), origin=NAME)
    return None  # server tool blocks, etc.


def _client_id(upstream_id: str) -> str:
    if not upstream_id:
        return _new_id("msg_")
    return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id


def _stop_reason(finish: str, stop_sequence: str | None, saw_call: bool) -> str:
    reason = _STOP_TO_WIRE[finish]
    if reason == "end_turn":
        if saw_call:
            return "tool_use"
        if stop_sequence:
            return "stop_sequence"
    return reason


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in resp.parts:
        if isinstance(part, ir.Text):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": _tool_input(part.arguments),
                }
            )
        elif isinstance(part, ir.Thinking):
            if part.redacted:
                data = wrap_signature(part.data, part.origin)
                content.append({"type": "redacted_thinking", "data": data})
            else:
                signature = wrap_signature(part.signature, part.origin)
                content.append({"type": "thinking", "thinking": part.text, "signature": signature})
    saw_call = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _client_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model or req.model,
        "content": content,
        "stop_reason": _stop_reason(resp.finish, resp.stop_sequence, saw_call),
        "stop_sequence": resp.stop_sequence,
        "usage": build_usage(resp.usage),
    }


# --- stream: upstream bytes -> ir ----------------------------------------------------


# delta type -> (block kind it belongs to, field, ir event)
_DELTAS: dict[str, tuple[str, str, Any]] = {
    "text_delta": ("text", "text", ir.TextDelta),
    "input_json_delta": ("tool", "partial_json", ir.ToolCallDelta),
    "thinking_delta": ("thinking", "thinking", lambda text: ir.ThinkingDelta(text, NAME)),
    "signature_delta": ("thinking", "signature", lambda sig: ir.ThinkingSignature(sig, NAME)),
}


class StreamDecoder:
    """Messages stream events -> ir events. Blocks arrive one after another upstream;
    each new text/thinking block is preceded by a BlockBreak so two blocks of one kind
    stay two blocks."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._done = False
        self._any_block = False
        self._kinds: dict[int, str] = {}  # block index -> "text" | "thinking" | "tool" | ""
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.feed(chunk):
            if not self._done and sse.data:
                self._on_data(sse.data, events)
        return events

    def close(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.close():
            if not self._done and sse.data:
                self._on_data(sse.data, events)
        if not self._done:
            self._done = True
            if self._stop_reason is not None:  # only message_stop went missing
                events.append(self._finish())
            else:
                events.append(ir.Error(502, "bad_gateway", "upstream stream ended early"))
        return events

    def _on_data(self, data: str, events: list[ir.Event]) -> None:
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            self._done = True
            events.append(ir.Error(502, "bad_gateway", "upstream sent malformed JSON"))
            return
        if not isinstance(payload, dict):
            return
        handler = self._HANDLERS.get(payload.get("type"))
        if handler is not None:
            handler(self, payload, events)

    def _on_message_start(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        if self._started:
            return
        self._started = True
        message = payload.get("message") or {}
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
        events.append(
            ir.Start(
                id=message.get("id") or _new_id("msg_"),
                model=message.get("model") or "",
                usage=parse_usage(usage) if isinstance(usage, dict) else None,
            )
        )

    def _ensure_started(self, events: list[ir.Event]) -> None:
        if not self._started:
            self._on_message_start({}, events)

    def _on_block_start(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._ensure_started(events)
        index = payload.get("index")
        block = payload.get("content_block") or {}
        kind = block.get("type")
        if kind in ("text", "thinking") and self._any_block:
            events.append(ir.BlockBreak())
        if kind == "text":
            self._kinds[index] = "text"
            if block.get("text"):
                events.append(ir.TextDelta(block["text"]))
        elif kind == "thinking":
            self._kinds[index] = "thinking"
            if block.get("thinking"):
                events.append(ir.ThinkingDelta(block["thinking"], NAME))
            if block.get("signature"):
                events.append(ir.ThinkingSignature(block["signature"], NAME))
        elif kind == "tool_use":
            self._kinds[index] = "tool"
            events.append(
                ir.ToolCallStart(block.get("id") or _new_id("toolu_"), block.get("name") or "")
            )
            if block.get("input"):
                events.append(ir.ToolCallDelta(_encode(block["input"]).decode()))
        elif kind == "redacted_thinking":
            self._kinds[index] = ""
            events.append(ir.RedactedThinking(block.get("data") or "", NAME))
        else:  # server tool blocks and the like: not carried
            self._kinds[index] = ""
            return
        self._any_block = True

    def _on_block_delta(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        delta = payload.get("delta") or {}
        spec = _DELTAS.get(delta.get("type"))
        if spec is None or spec[0] != self._kinds.get(payload.get("index")):
            return  # citations, or a delta for a block that is not carried
        value = delta.get(spec[1])
        if isinstance(value, str) and value:
            events.append(spec[2](value))

    def _on_message_delta(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        delta = payload.get("delta") or {}
        if delta.get("stop_reason"):
            self._stop_reason = delta["stop_reason"]
        if delta.get("stop_sequence"):
            self._stop_sequence = delta["stop_sequence"]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _on_message_stop(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._ensure_started(events)
        self._done = True
        events.append(self._finish())

    def _on_error(self, payload: dict[str, Any], events: list[ir.Event]) -> None:
        self._done = True
        events.append(_error_from_payload(payload.get("error"), 500))

    def _finish(self) -> ir.Finish:
        reason = _STOP_FROM_WIRE.get(self._stop_reason or "end_turn", "stop")
        return ir.Finish(reason, parse_usage(self._usage), self._stop_sequence)

    _HANDLERS = {
        "message_start": _on_message_start,
        "content_block_start": _on_block_start,
        "content_block_delta": _on_block_delta,
        "message_delta": _on_message_delta,
        "message_stop": _on_message_stop,
        "error": _on_error,
    }


# --- stream: ir -> client bytes ------------------------------------------------------


_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
# `"delta":{...,"<field>":` of the hot deltas, followed by the JSON string and `}}\n\n`
_TEXT_DELTA = b',"delta":{"type":"text_delta","text":'
_THINKING_DELTA = b',"delta":{"type":"thinking_delta","thinking":'


@dataclass(slots=True)
class _OpenBlock:
    index: int
    kind: str  # "text" | "thinking" | "tool"
    signature: str = ""


class StreamEncoder:
    """ir events -> Messages stream events for Anthropic clients.

    States: before `message_start` -> in message (at most one block open) -> done
    (`message_stop` or `error` sent). Blocks are numbered 0, 1, ... in start order and
    every start has its stop; a thinking block's signature goes out just before its
    stop."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, **options: Any) -> None:
        self._req = req
        self._started = False
        self._done = False
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._saw_call = False
        self._handlers = {
            ir.Start: self._on_start,
            ir.TextDelta: self._on_text,
            ir.ThinkingDelta: self._on_thinking,
            ir.ThinkingSignature: self._on_signature,
            ir.RedactedThinking: self._on_redacted,
            ir.ToolCallStart: self._on_tool_start,
            ir.ToolCallDelta: self._on_tool_delta,
            ir.BlockBreak: self._on_break,
            ir.Finish: self._on_finish,
            ir.Error: self._on_error,
        }

    def encode(self, event: ir.Event) -> bytes:
        if self._done:
            return b""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else b""

    # message framing

    def _message_start(
        self, upstream_id: str = "", model: str = "", usage: ir.Usage | None = None
    ) -> bytes:
        self._started = True
        wire_usage = build_usage(usage or ir.Usage())
        wire_usage["output_tokens"] = 0
        message = {
            "id": _client_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": model or self._req.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": wire_usage,
        }
        return named_event("message_start", {"type": "message_start", "message": message})

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._message_start()

    def _on_start(self, event: ir.Start) -> bytes:
        if self._started:
            return b""
        return self._message_start(event.id, event.model, event.usage)

    # blocks

    def _open_block(self, kind: str, content_block: dict[str, Any]) -> bytes:
        out = self._ensure_started() + self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = _OpenBlock(index, kind)
        return out + named_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": content_block},
        )

    def _close_block(self) -> bytes:
        block = self._open
        if block is None:
            return b""
        self._open = None
        out = b""
        if block.kind == "thinking" and block.signature:
            out = self._delta(
                block.index, {"type": "signature_delta", "signature": block.signature}
            )
        return out + named_event(
            "content_block_stop", {"type": "content_block_stop", "index": block.index}
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _DELTA_HEAD + str(index).encode() + b',"delta":' + _encode(delta) + b"}\n\n"

    def _string_delta(self, index: int, head: bytes, text: str) -> bytes:
        """`_delta` for a delta of one string field, without building the dict."""
        return _DELTA_HEAD + str(index).encode() + head + _encode(text) + b"}}\n\n"

    def _in_block(self, kind: str, content_block: dict[str, Any]) -> tuple[bytes, int]:
        if self._open is not None and self._open.kind == kind:
            return b"", self._open.index
        out = self._open_block(kind, content_block)
        assert self._open is not None
        return out, self._open.index

    def _on_text(self, event: ir.TextDelta) -> bytes:
        if not event.text:
            return b""
        block = self._open
        if block is not None and block.kind == "text":
            return self._string_delta(block.index, _TEXT_DELTA, event.text)
        out, index = self._in_block("text", {"type": "text", "text": ""})
        return out + self._string_delta(index, _TEXT_DELTA, event.text)

    def _in_thinking(self) -> tuple[bytes, _OpenBlock]:
        block = self._open
        out = b""
        if block is not None and block.kind == "thinking" and block.signature:
            out = self._close_block()  # a signed thinking block is complete
        out += self._in_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})[0]
        assert self._open is not None
        return out, self._open

    def _on_thinking(self, event: ir.ThinkingDelta) -> bytes:
        if not event.text:
            return b""
        out, block = self._in_thinking()
        return out + self._string_delta(block.index, _THINKING_DELTA, event.text)

    def _on_signature(self, event: ir.ThinkingSignature) -> bytes:
        out, block = self._in_thinking()
        block.signature = wrap_signature(event.signature, event.origin)
        return out

    def _on_redacted(self, event: ir.RedactedThinking) -> bytes:
        data = wrap_signature(event.data, event.origin)
        out = self._open_block("redacted", {"type": "redacted_thinking", "data": data})
        return out + self._close_block()

    def _on_tool_start(self, event: ir.ToolCallStart) -> bytes:
        self._saw_call = True
        return self._open_block(
            "tool", {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
        )

    def _on_tool_delta(self, event: ir.ToolCallDelta) -> bytes:
        block = self._open
        if block is None or block.kind != "tool" or not event.arguments:
            return b""
        return self._delta(
            block.index, {"type": "input_json_delta", "partial_json": event.arguments}
        )

    def _on_break(self, event: ir.BlockBreak) -> bytes:
        return self._close_block()

    # endings

    def _on_finish(self, event: ir.Finish) -> bytes:
        out = self._ensure_started() + self._close_block()
        self._done = True
        usage = event.usage
        wire_usage: dict[str, Any] = {"output_tokens": usage.output_tokens}
        if usage.input_tokens:  # corrects message_start when input arrived only at the end
            wire_usage.update(build_usage(usage))
            wire_usage["output_tokens"] = usage.output_tokens
        elif usage.reasoning_tokens:
            wire_usage["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
        delta = {
            "stop_reason": _stop_reason(event.reason, event.stop_sequence, self._saw_call),
            "stop_sequence": event.stop_sequence,
        }
        out += named_event(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": wire_usage}
        )
        return out + named_event("message_stop", {"type": "message_stop"})

    def _on_error(self, event: ir.Error) -> bytes:
        self._done = True
        return stream_error(event)


# --- errors and models ---------------------------------------------------------------


_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "overloaded_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}
_KIND_OF_TYPE = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "permission",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "api_error": "api_error",
    "timeout_error": "timeout",
    "overloaded_error": "overloaded",
}


def _error_from_payload(payload: Any, default_status: int) -> ir.Error:
    """An Anthropic `error` object ({type, message}) -> ir.Error; status from its type."""
    if not isinstance(payload, dict):
        message = payload if isinstance(payload, str) and payload else "upstream error"
        return ir.Error(default_status, ir.error_kind_for_status(default_status), message)
    kind = _KIND_OF_TYPE.get(str(payload.get("type")))
    status = ir.ERROR_KINDS[kind] if kind else default_status
    message = payload.get("message")
    return ir.Error(
        status,
        kind or ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else "upstream error",
    )


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        payload = _decode(body) if body else None
    except msgspec.DecodeError:
        payload = None
    message: Any = None
    kind: str | None = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = _KIND_OF_TYPE.get(str(error.get("type")))
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"upstream returned HTTP {status}"
    if kind is None or ir.ERROR_KINDS.get(kind) != status:
        kind = ir.error_kind_for_status(status)
    return ir.Error(status, kind, message)


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(err.kind, "api_error"), "message": err.message},
    }


def stream_error(err: ir.Error) -> bytes:
    """The mid-stream `event: error`."""
    return named_event("error", error_body(err))


def model_list(models: list[str]) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0))
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": created}
        for name in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
