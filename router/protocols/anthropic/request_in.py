"""Anthropic Messages: client body -> ir.Request. Structured output is read from
`output_config.format` and from the older top-level `output_format`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.protocols import ir
from router.protocols.anthropic.common import _drop, _encode, _invalid
from router.protocols.anthropic.signatures import _unwrap_signature

# Request fields that change nothing about the answer (caching, billing, routing hints).
_IGNORED_FIELDS = frozenset({"cache_control", "service_tier", "inference_geo", "diagnostics"})


def parse_request(body: dict[str, Any]) -> ir.Request:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: field required", "model")
    if body.get("max_tokens") is None:  # the Messages API requires it
        raise _invalid("max_tokens: field required", "max_tokens")
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
            signature, origin = _unwrap_signature(block.get("signature"))
            text = block.get("thinking")
            parts.append(
                ir.Thinking(
                    text=text if isinstance(text, str) else "", signature=signature, origin=origin
                )
            )
        elif kind == "redacted_thinking":
            data, origin = _unwrap_signature(block.get("data"))
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
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _invalid("tools: a tool's description must be a string", "tools")
        req.tools.append(
            ir.Tool(
                name=name,
                description=description,
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


def sse_requested(query: Mapping[str, str]) -> bool:
    """Always: a streaming Anthropic client is always answered with SSE."""
    return True
