"""Client body -> ir.Request, and how a client asks for stream framing (always SSE).

* `instructions` and leading system/developer input messages become `Request.system`.
* Consecutive assistant-side input items (assistant messages, `reasoning`,
  `function_call`) form one assistant `Message`; `function_call_output` items form a
  user message of `ToolResult`s.
* Reasoning items become `Thinking(origin="openai-responses", signature=encrypted_content,
  id=item id)`, unless `encrypted_content` carries another provider's signature
  (signatures.py).
* State that cannot travel (`previous_response_id`, `conversation`, `prompt`, stored
  `item_reference`s, built-in tools, ...) is reported in `Request.dropped`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.protocols import ir
from router.protocols.openai_responses.common import (
    _ENCRYPTED_REASONING,
    NAME,
    _encode,
    _invalid,
    _str,
)
from router.protocols.openai_responses.signatures import unwrap_encrypted

# Top-level request fields read into ir (or knowingly ignored because they carry no meaning
# through translation).
_CARRIED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "metadata",
        "user",
        "safety_identifier",
        "store",
        "include",
        "truncation",
        "service_tier",
        "background",
    }
)


def parse_request(body: dict[str, Any]) -> ir.Request:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("`model` is required and must be a string", "model")
    req = ir.Request(model=model)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("`instructions` must be a string", "instructions")
        if instructions:
            req.system.append(instructions)
    _InputReader(req).read(body.get("input"))
    req.tools = _parse_tools(body.get("tools"), req)
    req.tool_choice = _parse_tool_choice(body.get("tool_choice"), req)
    parallel = body.get("parallel_tool_calls")
    if isinstance(parallel, bool):
        req.parallel_tool_calls = parallel
    req.output = _parse_text_config(body.get("text"), req)
    req.reasoning = _parse_reasoning(body.get("reasoning"))
    req.max_tokens = _optional_int(body, "max_output_tokens")
    req.temperature = _optional_number(body, "temperature")
    req.top_p = _optional_number(body, "top_p")
    req.stream = body.get("stream") is True
    req.include_usage = req.stream
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        req.metadata = metadata
    user = body.get("user", body.get("safety_identifier"))
    if isinstance(user, str):
        req.user = user
    _note_dropped_fields(body, req)
    return req


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"`{key}` must be an integer", key)
    return value


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"`{key}` must be a number", key)
    return value


def _note_dropped_fields(body: dict[str, Any], req: ir.Request) -> None:
    for key in (
        "previous_response_id",
        "conversation",
        "prompt",
        "top_logprobs",
        "max_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
    ):
        if body.get(key) is not None:
            req.dropped.append(key)
    if body.get("background") is True:
        req.dropped.append("background")
    if body.get("store") is True:
        req.dropped.append("store")
    if body.get("truncation") == "auto":
        req.dropped.append("truncation")
    if body.get("service_tier") not in (None, "auto", "default"):
        req.dropped.append("service_tier")
    include = body.get("include")
    if isinstance(include, list) and any(i != _ENCRYPTED_REASONING for i in include):
        req.dropped.append("include")
    req.dropped.extend(key for key in body if key not in _CARRIED and key not in req.dropped)


class _InputReader:
    """Turns the flat `input` item list into ir messages."""

    def __init__(self, req: ir.Request) -> None:
        self.req = req

    def read(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            self.req.messages.append(ir.Message("user", [ir.Text(value)]))
            return
        if not isinstance(value, list):
            raise _invalid("`input` must be a string or a list of items", "input")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise _invalid(f"input[{index}] must be an object", "input")
            self._item(item, index)

    def _item(self, item: dict[str, Any], index: int) -> None:
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):
            self._message(item, index)
        elif kind == "function_call":
            call_id = item.get("call_id")
            name = item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _invalid(f"input[{index}]: function_call needs `call_id` and `name`")
            arguments = item.get("arguments")
            self._assistant().parts.append(
                ir.ToolCall(call_id, name, arguments if isinstance(arguments, str) else "{}")
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _invalid(f"input[{index}]: function_call_output needs `call_id`")
            content = self._tool_output(item.get("output"), index)
            self._tool_results().parts.append(ir.ToolResult(call_id, content=content))
        elif kind == "reasoning":
            self._assistant().parts.append(_thinking_from_item(item))
        elif isinstance(kind, str):
            self._drop(f"input.{kind}")
        else:
            raise _invalid(f"input[{index}] has no `type`", "input")

    def _message(self, item: dict[str, Any], index: int) -> None:
        role = item.get("role")
        parts = self._content(item.get("content"), index)
        if role in ("system", "developer"):
            text = "\n".join(p.text for p in parts if isinstance(p, ir.Text))
            if not self.req.messages:
                self.req.system.append(text)
            else:
                self.req.messages.append(ir.Message("system", [ir.Text(text)]))
        elif role == "user":
            self.req.messages.append(ir.Message("user", parts))
        elif role == "assistant":
            self._assistant().parts.extend(parts)
        else:
            raise _invalid(f"input[{index}]: unknown role {role!r}", "input")

    def _content(self, content: Any, index: int) -> list[ir.Part]:
        if isinstance(content, str):
            return [ir.Text(content)]
        if not isinstance(content, list):
            raise _invalid(f"input[{index}].content must be a string or a list", "input")
        parts: list[ir.Part] = []
        for part in content:
            if not isinstance(part, dict):
                raise _invalid(f"input[{index}].content entries must be objects", "input")
            kind = part.get("type")
            if kind in ("input_text", "output_text", "text"):
                parts.append(ir.Text(str(part.get("text", ""))))
            elif kind == "refusal":
                parts.append(ir.Text(str(part.get("refusal", ""))))
            elif kind == "input_image":
                parts.append(_image_from_part(part))
            elif kind == "input_file":
                parts.append(_file_from_part(part))
            else:
                self._drop(f"input.content.{kind}")
        return parts

    def _tool_output(self, output: Any, index: int) -> list[ir.Text | ir.Image]:
        if output is None:
            return []
        if isinstance(output, str):
            return [ir.Text(output)]
        if not isinstance(output, list):  # lenient: some clients send a bare JSON value
            return [ir.Text(_encode(output).decode())]
        content: list[ir.Text | ir.Image] = []
        for part in output:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text"):
                content.append(ir.Text(str(part.get("text", ""))))
            elif kind == "input_image":
                image = _image_from_part(part)
                if isinstance(image, ir.Image):
                    content.append(image)
                else:
                    self._drop("function_call_output.input_image.file_id")
            else:
                self._drop(f"function_call_output.{kind}")
        return content

    def _assistant(self) -> ir.Message:
        messages = self.req.messages
        if not messages or messages[-1].role != "assistant":
            messages.append(ir.Message("assistant"))
        return messages[-1]

    def _tool_results(self) -> ir.Message:
        messages = self.req.messages
        last = messages[-1] if messages else None
        if (
            last is None
            or last.role != "user"
            or not all(isinstance(p, ir.ToolResult) for p in last.parts)
        ):
            messages.append(ir.Message("user"))
        return messages[-1]

    def _drop(self, name: str) -> None:
        if name not in self.req.dropped:
            self.req.dropped.append(name)


def _thinking_from_item(item: dict[str, Any]) -> ir.Thinking:
    summary, content = item.get("summary") or [], item.get("content") or []
    if not isinstance(summary, list) or not isinstance(content, list):
        raise _invalid("a reasoning item's `summary` and `content` must be arrays", "input")
    texts = [s.get("text", "") for s in summary if isinstance(s, dict)]
    if not texts:
        texts = [c.get("text", "") for c in content if isinstance(c, dict)]
    text = "\n\n".join(t for t in texts if isinstance(t, str))
    encrypted = item.get("encrypted_content")
    signature, origin, redacted = unwrap_encrypted(encrypted)
    if redacted:
        return ir.Thinking(redacted=True, data=signature, origin=origin)
    item_id = _str(item, "id") if origin == NAME else None
    return ir.Thinking(text=text, signature=signature, origin=origin, id=item_id)


def _split_data_url(url: str) -> tuple[str, str] | None:
    """`data:<type>;base64,<data>` -> (type, data)."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def _image_from_part(part: dict[str, Any]) -> ir.Image | ir.File:
    url = part.get("image_url")
    detail = _str(part, "detail")
    if isinstance(url, str):
        inline = _split_data_url(url)
        if inline:
            return ir.Image(media_type=inline[0], data=inline[1], detail=detail)
        return ir.Image(url=url, detail=detail)
    file_id = part.get("file_id")
    if isinstance(file_id, str):
        return ir.File(file_id=file_id)
    raise _invalid("input_image needs `image_url` or `file_id`")


def _file_from_part(part: dict[str, Any]) -> ir.File:
    file = ir.File(filename=_str(part, "filename"))
    data = part.get("file_data")
    if isinstance(data, str):
        inline = _split_data_url(data)
        file.media_type, file.data = inline if inline else ("application/pdf", data)
    if isinstance(part.get("file_url"), str):
        file.url = part["file_url"]
    if isinstance(part.get("file_id"), str):
        file.file_id = part["file_id"]
    return file


def _parse_tools(tools: Any, req: ir.Request) -> list[ir.Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("`tools` must be a list", "tools")
    parsed: list[ir.Tool] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise _invalid("`tools` entries must be objects", "tools")
        kind = tool.get("type")
        if kind != "function":
            req.dropped.append(f"tools.{kind}")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("function tools need a `name`", "tools")
        parameters = tool.get("parameters")
        strict = tool.get("strict")
        parsed.append(
            ir.Tool(
                name=name,
                description=_str(tool, "description"),
                parameters=parameters if isinstance(parameters, dict) else None,
                strict=strict if isinstance(strict, bool) else None,
            )
        )
    return parsed


def _parse_tool_choice(choice: Any, req: ir.Request) -> ir.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return ir.ToolChoice(choice)
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function" and isinstance(choice.get("name"), str):
            return ir.ToolChoice("tool", choice["name"])
        if kind == "allowed_tools":
            return _allowed_tools_choice(choice, req)
    req.dropped.append("tool_choice")
    return None


def _allowed_tools_choice(choice: dict[str, Any], req: ir.Request) -> ir.ToolChoice:
    """`allowed_tools` narrows the tool list itself: ir has no "subset" choice."""
    tools = choice.get("tools") or []
    if not isinstance(tools, list):
        raise _invalid("tool_choice.tools must be an array", "tool_choice")
    names = [t.get("name") for t in tools if isinstance(t, dict)]
    req.tools = [tool for tool in req.tools if tool.name in names]
    mode = "required" if choice.get("mode") == "required" else "auto"
    if mode == "required" and len(req.tools) == 1:
        return ir.ToolChoice("tool", req.tools[0].name)
    return ir.ToolChoice(mode)


def _parse_text_config(text: Any, req: ir.Request) -> ir.OutputFormat | None:
    if not isinstance(text, dict):
        return None
    if text.get("verbosity") is not None:
        req.dropped.append("text.verbosity")
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return ir.OutputFormat("json_object")
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid("text.format json_schema needs a `schema` object", "text.format")
        strict = fmt.get("strict")
        return ir.OutputFormat(
            "json_schema",
            schema=schema,
            name=_str(fmt, "name"),
            strict=strict if isinstance(strict, bool) else None,
            description=_str(fmt, "description"),
        )
    raise _invalid(f"unknown text.format type {fmt.get('type')!r}", "text.format")


def _parse_reasoning(reasoning: Any) -> ir.Reasoning | None:
    if not isinstance(reasoning, dict):
        return None
    effort = reasoning.get("effort")
    summary = reasoning.get("summary", reasoning.get("generate_summary"))
    if effort == "none":
        return ir.Reasoning(enabled=False, effort="none", include_thoughts=False)
    return ir.Reasoning(
        effort=effort if isinstance(effort, str) else None,
        include_thoughts=summary is not None,
    )


def sse_requested(query: Mapping[str, str]) -> bool:
    """Responses streams are always SSE."""
    return True
