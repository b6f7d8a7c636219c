"""OpenAI Responses API (`POST /v1/responses`) <-> ir.

Decisions worth knowing:

* `instructions` and leading system/developer input messages become `Request.system`;
  the builder sends them back joined into `instructions`.
* Consecutive assistant-side input items (assistant messages, `reasoning`,
  `function_call`) form one assistant `Message`; `function_call_output` items form a
  user message of `ToolResult`s. An error result (Responses has no error flag) goes
  upstream with its text prefixed "Error: ", as for OpenAI Chat.
* Reasoning items become `Thinking(origin="openai-responses", signature=encrypted_content,
  id=item id)`. Only those go back upstream (with their id); foreign thinking is dropped.
* Another provider's reasoning signature (Anthropic thinking signature or redacted
  payload, Gemini thoughtSignature) reaches Responses clients in `encrypted_content` as
  "<origin>:<signature>" ("<origin>:redacted:<data>"); OpenAI's own is base64 and never
  contains ":". A client replaying the item gives it back to that provider intact, so a
  Claude tool loop keeps its signed thinking instead of having thinking turned off.
* Upstream requests are stateless: `store: false`, and when reasoning is requested
  `include: ["reasoning.encrypted_content"]` so reasoning can be replayed next turn.
  Reasoning explicitly switched off is expressed by omitting `reasoning` (effort "none"
  is not accepted by every reasoning model).
* Function tools are sent with `strict: false` unless the client asked for strict, since
  Responses defaults to strict and most foreign schemas are not strict-compatible.
* State that cannot travel (`previous_response_id`, `conversation`, `prompt`, stored
  `item_reference`s, built-in tools, ...) is reported in `Request.dropped`.
* A refusal becomes text with finish reason `content_filter`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.sse import SSEParser, named_event

NAME = "openai-responses"
ACCEPTS_IMAGE_URLS = True

_decode = msgspec.json.decode
_encode = msgspec.json.encode

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
_ENCRYPTED_REASONING = "reasoning.encrypted_content"


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param=param)


# --- request: client body -> ir ----------------------------------------------------


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
    texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
    if not texts:
        texts = [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
    text = "\n\n".join(t for t in texts if isinstance(t, str))
    encrypted = item.get("encrypted_content")
    signature, origin, redacted = unwrap_encrypted(encrypted)
    if redacted:
        return ir.Thinking(redacted=True, data=signature, origin=origin)
    item_id = _str(item, "id") if origin == NAME else None
    return ir.Thinking(text=text, signature=signature, origin=origin, id=item_id)


# --- reasoning signatures from other providers -------------------------------------

_REDACTED = "redacted:"


def wrap_encrypted(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The `encrypted_content` a Responses client sees for reasoning made by `origin`."""
    if not value:
        return None
    if origin is None or origin == NAME:
        return value
    return f"{origin}:{_REDACTED if redacted else ''}{value}"


def unwrap_encrypted(value: Any) -> tuple[str | None, str, bool]:
    """(signature or redacted data, origin, redacted) of an `encrypted_content` sent back."""
    if not isinstance(value, str) or not value:
        return None, NAME, False
    origin, sep, rest = value.partition(":")
    if not sep or origin not in ir.PROTOCOLS or origin == NAME:
        return value, NAME, False
    if rest.startswith(_REDACTED):
        return rest.removeprefix(_REDACTED), origin, True
    return rest, origin, False


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
    names = [t.get("name") for t in choice.get("tools") or [] if isinstance(t, dict)]
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


# --- request: ir -> upstream body --------------------------------------------------


def build_request(req: ir.Request) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "input": _input_items(req), "store": False}
    if req.system:
        body["instructions"] = "\n\n".join(req.system)
    if req.tools:
        body["tools"] = [_tool_body(tool) for tool in req.tools]
    choice = _tool_choice_body(req.tool_choice)
    if choice is not None:
        body["tool_choice"] = choice
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    fmt = _format_body(req.output)
    if fmt["type"] != "text":
        body["text"] = {"format": fmt}
    reasoning = _reasoning_body(req.reasoning)
    if reasoning:
        body["reasoning"] = reasoning
        body["include"] = [_ENCRYPTED_REASONING]
    for key, value in (
        ("max_output_tokens", req.max_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("metadata", req.metadata),
        ("user", req.user),
    ):
        if value is not None:
            body[key] = value
    if req.stream:
        body["stream"] = True
    for name, value in (("top_k", req.top_k), ("seed", req.seed), ("stop", req.stop)):
        if value and name not in req.dropped:
            req.dropped.append(name)
    return body


def _input_items(req: ir.Request) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in req.messages:
        if message.role == "assistant":
            items.extend(_assistant_items(message.parts))
        elif message.role == "system":
            text = "".join(p.text for p in message.parts if isinstance(p, ir.Text))
            items.append(
                {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": text}],
                }
            )
        else:
            items.extend(_user_items(message.parts, req))
    return items


def _user_items(parts: list[ir.Part], req: ir.Request) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.ToolResult):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": part.call_id,
                    "output": _tool_output_body(part),
                }
            )
        elif isinstance(part, ir.Text):
            content.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ir.Image):
            content.append(_image_body(part))
        elif isinstance(part, ir.File):
            content.append(_file_body(part))
    if content:
        items.append({"type": "message", "role": "user", "content": content})
    return items


def _tool_output_body(result: ir.ToolResult) -> str | list[dict[str, Any]]:
    """`function_call_output.output`: text, or text and image parts. Responses has no
    error flag, so an error result says so in its text ("Error: ...")."""
    if all(isinstance(p, ir.Text) for p in result.content):
        text = "".join(p.text for p in result.content if isinstance(p, ir.Text))
        return _error_text(text) if result.is_error else text
    parts = [
        {"type": "input_text", "text": p.text} if isinstance(p, ir.Text) else _image_body(p)
        for p in result.content
    ]
    if result.is_error:
        first = parts[0]
        if first["type"] == "input_text":
            first["text"] = _error_text(first["text"])
        else:
            parts.insert(0, {"type": "input_text", "text": "Error"})
    return parts


def _error_text(text: str) -> str:
    if text.lower().startswith("error"):
        return text
    return f"Error: {text}" if text else "Error"


def _image_body(image: ir.Image) -> dict[str, Any]:
    if image.data is not None:
        url = f"data:{image.media_type or 'image/png'};base64,{image.data}"
    else:
        url = image.url or ""
    return {"type": "input_image", "image_url": url, "detail": image.detail or "auto"}


def _file_body(file: ir.File) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "input_file"}
    if file.data is not None:
        media_type = file.media_type or "application/pdf"
        body["file_data"] = f"data:{media_type};base64,{file.data}"
        body["filename"] = file.filename or "file." + media_type.rsplit("/", 1)[-1]
    elif file.url is not None:
        body["file_url"] = file.url
    elif file.file_id is not None:
        body["file_id"] = file.file_id
    if file.filename and "filename" not in body:
        body["filename"] = file.filename
    return body


def _assistant_items(parts: list[ir.Part]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            items.append(
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": t, "annotations": []} for t in texts
                    ],
                }
            )
            texts.clear()

    for part in parts:
        if isinstance(part, ir.Text):
            if part.text:
                texts.append(part.text)
            continue
        if isinstance(part, ir.ToolCall):
            flush_text()
            items.append(
                {
                    "type": "function_call",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments,
                }
            )
        elif isinstance(part, ir.Thinking) and part.origin == NAME:
            encrypted = part.data if part.redacted else part.signature
            if encrypted:
                flush_text()
                items.append(_reasoning_item(part.id or _new_id("rs_"), part.text, encrypted))
    flush_text()
    return items


def _tool_body(tool: ir.Tool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "function",
        "name": tool.name,
        "parameters": tool.parameters or {"type": "object", "properties": {}},
        "strict": bool(tool.strict),
    }
    if tool.description:
        body["description"] = tool.description
    return body


def _tool_choice_body(choice: ir.ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        return {"type": "function", "name": choice.name}
    return choice.mode


def _format_body(output: ir.OutputFormat | None) -> dict[str, Any]:
    if output is None or output.kind == "text":
        return {"type": "text"}
    if output.kind == "json_object":
        return {"type": "json_object"}
    fmt: dict[str, Any] = {
        "type": "json_schema",
        "name": output.name or "response",
        "schema": output.schema or {},
    }
    if output.strict is not None:
        fmt["strict"] = output.strict
    if output.description:
        fmt["description"] = output.description
    return fmt


_EFFORTS = {
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "xhigh",
}


def _reasoning_body(reasoning: ir.Reasoning | None) -> dict[str, Any] | None:
    if reasoning is None or not reasoning.enabled:
        return None
    body: dict[str, Any] = {}
    effort = _EFFORTS.get(reasoning.effort or "")
    if effort is None and reasoning.budget_tokens is not None:
        budget = reasoning.budget_tokens
        effort = "low" if budget <= 2048 else "medium" if budget <= 12000 else "high"
    if effort:
        body["effort"] = effort
    if reasoning.include_thoughts:
        body["summary"] = "auto"
    return body


# --- response bodies ---------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("status") == "failed":
        raise _error_from_object(body.get("error"), "upstream response failed")
    resp = ir.Response(
        id=str(body.get("id") or _new_id("resp_")),
        model=str(body.get("model") or ""),
        created=int(body.get("created_at") or 0),
        usage=_usage_from(body.get("usage")),
    )
    refused = False
    for item in body.get("output") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    resp.parts.append(ir.Text(str(part.get("text", ""))))
                elif part.get("type") == "refusal":
                    refused = True
                    resp.parts.append(ir.Text(str(part.get("refusal", ""))))
        elif kind == "function_call":
            resp.parts.append(
                ir.ToolCall(
                    str(item.get("call_id") or item.get("id") or _new_id("call_")),
                    str(item.get("name", "")),
                    item.get("arguments") or "{}",
                )
            )
        elif kind == "reasoning":
            resp.parts.append(_thinking_from_item(item))
    has_calls = any(isinstance(p, ir.ToolCall) for p in resp.parts)
    resp.finish = _finish_from(
        body.get("status"), body.get("incomplete_details"), has_calls, refused
    )
    return resp


def _finish_from(status: Any, details: Any, has_calls: bool, refused: bool) -> ir.FinishReason:
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    if has_calls:
        return "tool_calls"
    return "content_filter" if refused else "stop"


def _usage_from(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    return ir.Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=int(inputs.get("cached_tokens") or 0),
        cache_creation_tokens=int(inputs.get("cache_write_tokens") or 0),
        reasoning_tokens=int(outputs.get("reasoning_tokens") or 0),
    )


def _usage_body(usage: ir.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_creation_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    output = _output_items(resp.parts)
    status, reason, error = _status_for(resp.finish)
    return _response_object(
        req,
        response_id=_response_id(resp.id),
        model=resp.model or req.model,
        created=resp.created or int(time.time()),
        status=status,
        output=output,
        usage=_usage_body(resp.usage),
        incomplete_reason=reason,
        error=error,
    )


def _response_id(upstream_id: str | None) -> str:
    if upstream_id and upstream_id.startswith("resp_"):
        return upstream_id
    return _new_id("resp_")


def _status_for(finish: ir.FinishReason) -> tuple[str, str | None, dict[str, Any] | None]:
    if finish == "length":
        return "incomplete", "max_output_tokens", None
    if finish == "content_filter":
        return "incomplete", "content_filter", None
    if finish == "error":
        return "failed", None, {"code": "server_error", "message": "the model failed"}
    return "completed", None, None


def _output_items(parts: list[ir.Part]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in parts:
        if isinstance(part, ir.Text):
            if part.text:
                texts.append(part.text)
            continue
        if texts:
            items.append(_message_item(_new_id("msg_"), texts, "completed"))
            texts = []
        if isinstance(part, ir.ToolCall):
            items.append(
                _function_call_item(_new_id("fc_"), part.id, part.name, part.arguments, "completed")
            )
        elif isinstance(part, ir.Thinking):
            own = part.origin == NAME
            payload = part.data if part.redacted else part.signature
            encrypted = wrap_encrypted(payload, part.origin, part.redacted)
            if part.text or encrypted:
                item_id = part.id if own and part.id else _new_id("rs_")
                items.append(_reasoning_item(item_id, part.text, encrypted))
    if texts:
        items.append(_message_item(_new_id("msg_"), texts, "completed"))
    return items


def _message_item(item_id: str, texts: list[str], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text) for text in texts],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _reasoning_item(item_id: str, text: str, encrypted: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


def _response_object(
    req: ir.Request,
    *,
    response_id: str,
    model: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full Response object, echoing the request fields the SDK's model requires."""
    reasoning = None
    if req.reasoning is not None:
        reasoning = {
            "effort": req.reasoning.effort if req.reasoning.enabled else "none",
            "summary": "auto" if req.reasoning.include_thoughts else None,
        }
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": "\n\n".join(req.system) if req.system else None,
        "max_output_tokens": req.max_tokens,
        "metadata": req.metadata or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": reasoning,
        "store": False,
        "temperature": req.temperature,
        "text": {"format": _format_body(req.output)},
        "tool_choice": _tool_choice_body(req.tool_choice) or "auto",
        "tools": [_tool_body(tool) for tool in req.tools],
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": req.user,
    }
    if status == "completed":
        body["completed_at"] = int(time.time())
    return body


# --- errors and model lists --------------------------------------------------------

_TYPE_BY_KIND = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "timeout": "timeout",
}
_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
    "invalid_request_error": 400,
    "model_not_found": 404,
}


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _TYPE_BY_KIND.get(err.kind, "server_error"),
            "param": err.param,
            "code": err.kind,
        }
    }


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _error_from_object(error, f"upstream HTTP {status}", status)
    text = body.decode("utf-8", "replace").strip()[:1000] if body else ""
    return ir.Error(status, ir.error_kind_for_status(status), text or f"upstream HTTP {status}")


def _error_from_object(error: Any, fallback: str, status: int | None = None) -> ir.Error:
    """An `{code, message, param}` error object; without an HTTP status (errors inside a
    stream or a failed response) the status follows from `code`."""
    if not isinstance(error, dict):
        return ir.Error(502, "bad_gateway", fallback)
    if status is None:
        code = error.get("code")
        status = _CODE_STATUS.get(code, 500) if isinstance(code, str) else 500
    message = error.get("message")
    param = error.get("param")
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else fallback,
        param=param if isinstance(param, str) else None,
    )


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "router"} for m in models],
    }


# --- stream decoding: upstream Responses SSE -> ir events ---------------------------


@dataclass(slots=True)
class _Item:
    """One upstream output item. Its events queue up until it is the active item, so
    interleaved upstream items come out serialized."""

    kind: str
    id: str | None
    pending: list[Any] = field(default_factory=list)
    done: bool = False
    texts_seen: set[int] = field(default_factory=set)
    thinking_seen: bool = False
    summary_parts: int = 0
    args_seen: bool = False


@dataclass(slots=True)
class _NewBlock:
    kind: str  # "text" | "thinking"


class StreamDecoder:
    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._ended = False
        self._items: dict[int, _Item] = {}
        self._queue: list[int] = []  # output indexes not yet fully emitted, added order
        self._out: list[ir.Event] = []
        self._last_block: str | None = None
        self._next_block: str | None = None
        self._saw_call = False
        self._refused = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        for event in self._sse.feed(chunk):
            self._handle(event.event, event.data)
        return self._take()

    def close(self) -> list[ir.Event]:
        for event in self._sse.close():
            self._handle(event.event, event.data)
        if not self._ended:
            self._flush_all()
            self._end(
                ir.Error(502, "bad_gateway", "upstream stream ended before response.completed")
            )
        return self._take()

    def _take(self) -> list[ir.Event]:
        out, self._out = self._out, []
        return out

    def _end(self, event: ir.Event) -> None:
        self._ended = True
        self._out.append(event)

    def _handle(self, name: str | None, data: str) -> None:
        if self._ended or not data or data == "[DONE]":
            return
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            self._end(ir.Error(502, "bad_gateway", "upstream sent invalid JSON in its stream"))
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or name
        if kind == "error":
            self._flush_all()
            self._end(_error_from_object(payload.get("error", payload), "upstream stream error"))
            return
        response = payload.get("response")
        if not self._started:
            self._start(response if isinstance(response, dict) else {})
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, payload)

    def _start(self, response: dict[str, Any]) -> None:
        self._started = True
        self._out.append(
            ir.Start(
                id=str(response.get("id") or _new_id("resp_")),
                model=str(response.get("model") or ""),
                created=int(response.get("created_at") or 0),
            )
        )

    # -- item bookkeeping --

    def _item(self, payload: dict[str, Any]) -> tuple[int, _Item] | None:
        index = payload.get("output_index")
        if not isinstance(index, int):
            return None
        item = self._items.get(index)
        if item is None:
            raw = payload.get("item") if isinstance(payload.get("item"), dict) else {}
            item = self._add_item(index, raw)
        return index, item

    def _add_item(self, index: int, raw: dict[str, Any]) -> _Item:
        item = _Item(kind=str(raw.get("type") or "message"), id=raw.get("id"))
        self._items[index] = item
        self._queue.append(index)
        if item.kind == "function_call":
            self._saw_call = True
            self._push(
                index,
                ir.ToolCallStart(
                    str(raw.get("call_id") or raw.get("id") or _new_id("call_")),
                    str(raw.get("name", "")),
                ),
            )
        elif item.kind == "reasoning":
            self._push(index, _NewBlock("thinking"))
        return item

    def _push(self, index: int, event: Any) -> None:
        if self._queue and self._queue[0] == index:
            self._emit(event)
        else:
            self._items[index].pending.append(event)

    def _emit(self, event: Any) -> None:
        if isinstance(event, _NewBlock):
            self._next_block = event.kind
            return
        if isinstance(event, ir.ToolCallStart):
            self._last_block, self._next_block = "tool", None
        elif self._next_block is not None:
            if self._last_block == self._next_block:
                self._out.append(ir.BlockBreak())
            self._last_block, self._next_block = self._next_block, None
        self._out.append(event)

    def _finish_item(self, index: int) -> None:
        self._items[index].done = True
        while self._queue and self._items[self._queue[0]].done:
            self._queue.pop(0)
            if self._queue:
                head = self._items[self._queue[0]]
                for event in head.pending:
                    self._emit(event)
                head.pending.clear()

    def _flush_all(self) -> None:
        for index in list(self._queue):
            self._finish_item(index)

    # -- event handlers --

    def _on_item_added(self, payload: dict[str, Any]) -> None:
        index = payload.get("output_index")
        raw = payload.get("item")
        if isinstance(index, int) and index not in self._items and isinstance(raw, dict):
            self._add_item(index, raw)

    def _on_part_added(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if found:
            self._push(found[0], _NewBlock("text"))

    def _on_text_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str):
            index, item = found
            item.texts_seen.add(int(payload.get("content_index") or 0))
            if payload.get("type") == "response.refusal.delta":
                self._refused = True
            if delta:
                self._push(index, ir.TextDelta(delta))

    def _on_text_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if not found:
            return
        index, item = found
        content_index = int(payload.get("content_index") or 0)
        text = payload.get("text", payload.get("refusal"))
        if payload.get("type") == "response.refusal.done":
            self._refused = True
        if content_index not in item.texts_seen and isinstance(text, str) and text:
            item.texts_seen.add(content_index)
            self._push(index, ir.TextDelta(text))

    def _on_summary_part_added(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        if found:
            index, item = found
            if item.summary_parts and item.thinking_seen:
                self._push(index, ir.ThinkingDelta("\n\n", NAME, item.id))
            item.summary_parts += 1

    def _on_thinking_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str) and delta:
            index, item = found
            item.thinking_seen = True
            self._push(index, ir.ThinkingDelta(delta, NAME, item.id))

    def _on_arguments_delta(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        delta = payload.get("delta")
        if found and isinstance(delta, str) and delta:
            index, item = found
            item.args_seen = True
            self._push(index, ir.ToolCallDelta(delta))

    def _on_arguments_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        arguments = payload.get("arguments")
        if found and not found[1].args_seen and isinstance(arguments, str) and arguments:
            found[1].args_seen = True
            self._push(found[0], ir.ToolCallDelta(arguments))

    def _on_item_done(self, payload: dict[str, Any]) -> None:
        found = self._item(payload)
        raw = payload.get("item")
        if not found or not isinstance(raw, dict):
            return
        index, item = found
        if item.kind == "message":
            self._complete_message(index, item, raw)
        elif item.kind == "reasoning":
            self._complete_reasoning(index, item, raw)
        elif item.kind == "function_call" and not item.args_seen:
            arguments = raw.get("arguments")
            if isinstance(arguments, str) and arguments:
                self._push(index, ir.ToolCallDelta(arguments))
        self._finish_item(index)

    def _complete_message(self, index: int, item: _Item, raw: dict[str, Any]) -> None:
        for content_index, part in enumerate(raw.get("content") or []):
            if content_index in item.texts_seen or not isinstance(part, dict):
                continue
            text = part.get("text", part.get("refusal"))
            if part.get("type") == "refusal":
                self._refused = True
            if isinstance(text, str) and text:
                self._push(index, _NewBlock("text"))
                self._push(index, ir.TextDelta(text))

    def _complete_reasoning(self, index: int, item: _Item, raw: dict[str, Any]) -> None:
        thinking = _thinking_from_item(raw)
        item_id = item.id or thinking.id
        if not item.thinking_seen and (thinking.text or thinking.signature):
            self._push(index, ir.ThinkingDelta(thinking.text, NAME, item_id))
        if thinking.signature:
            self._push(index, ir.ThinkingSignature(thinking.signature, NAME, item_id))

    def _on_completed(self, payload: dict[str, Any]) -> None:
        response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
        self._flush_all()
        if payload.get("type") == "response.failed":
            self._end(_error_from_object(response.get("error"), "upstream response failed"))
            return
        finish = _finish_from(
            response.get("status", "completed"),
            response.get("incomplete_details"),
            self._saw_call,
            self._refused,
        )
        if payload.get("type") == "response.incomplete" and finish not in (
            "length",
            "content_filter",
        ):
            finish = "length"
        self._end(ir.Finish(finish, _usage_from(response.get("usage"))))


_HANDLERS = {
    "response.output_item.added": StreamDecoder._on_item_added,
    "response.content_part.added": StreamDecoder._on_part_added,
    "response.output_text.delta": StreamDecoder._on_text_delta,
    "response.refusal.delta": StreamDecoder._on_text_delta,
    "response.output_text.done": StreamDecoder._on_text_done,
    "response.refusal.done": StreamDecoder._on_text_done,
    "response.reasoning_summary_part.added": StreamDecoder._on_summary_part_added,
    "response.reasoning_summary_text.delta": StreamDecoder._on_thinking_delta,
    "response.reasoning_text.delta": StreamDecoder._on_thinking_delta,
    "response.function_call_arguments.delta": StreamDecoder._on_arguments_delta,
    "response.function_call_arguments.done": StreamDecoder._on_arguments_done,
    "response.output_item.done": StreamDecoder._on_item_done,
    "response.completed": StreamDecoder._on_completed,
    "response.incomplete": StreamDecoder._on_completed,
    "response.failed": StreamDecoder._on_completed,
}


# --- stream encoding: ir events -> client Responses SSE ----------------------------


@dataclass(slots=True)
class _OpenItem:
    kind: str  # "message" | "reasoning" | "function_call"
    index: int
    id: str
    text: str = ""
    encrypted: str | None = None
    call_id: str = ""
    name: str = ""


class StreamEncoder:
    """State machine: idle -> started -> (one open output item at a time) -> ended."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, **options: Any) -> None:
        self._req = req
        self._seq = 0
        self._started = False
        self._ended = False
        self._id = ""
        self._model = req.model
        self._created = 0
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None

    def encode(self, event: ir.Event) -> bytes:
        if self._ended:
            return b""
        chunks: list[bytes] = []
        if isinstance(event, ir.Start):
            self._start(chunks, event)
            return b"".join(chunks)
        if not self._started:
            self._start(chunks, ir.Start(id="", model=self._req.model))
        if isinstance(event, ir.TextDelta):
            self._text(chunks, event.text)
        elif isinstance(event, ir.ThinkingDelta):
            self._thinking(chunks, event)
        elif isinstance(event, ir.ThinkingSignature):
            self._signature(chunks, event)
        elif isinstance(event, ir.RedactedThinking):
            self._redacted(chunks, event)
        elif isinstance(event, ir.ToolCallStart):
            self._close(chunks)
            self._open_call(chunks, event)
        elif isinstance(event, ir.ToolCallDelta):
            self._arguments(chunks, event.arguments)
        elif isinstance(event, ir.BlockBreak):
            self._close(chunks)
        elif isinstance(event, ir.Finish):
            self._finish(chunks, event)
        elif isinstance(event, ir.Error):
            self._error(chunks, event)
        return b"".join(chunks)

    def _send(self, chunks: list[bytes], kind: str, payload: dict[str, Any]) -> None:
        payload = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        chunks.append(named_event(kind, payload))

    def _snapshot(
        self,
        status: str,
        usage: dict[str, Any] | None = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return _response_object(
            self._req,
            response_id=self._id,
            model=self._model,
            created=self._created,
            status=status,
            output=list(self._output),
            usage=usage,
            incomplete_reason=reason,
            error=error,
        )

    def _start(self, chunks: list[bytes], event: ir.Start) -> None:
        if self._started:
            return
        self._started = True
        self._id = _response_id(event.id)
        self._model = event.model or self._req.model
        self._created = event.created or int(time.time())
        snapshot = self._snapshot("in_progress")
        self._send(chunks, "response.created", {"response": snapshot})
        self._send(chunks, "response.in_progress", {"response": snapshot})

    def _ref(self, item: _OpenItem) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index}

    def _open_item(
        self, chunks: list[bytes], kind: str, item_id: str, body: dict[str, Any]
    ) -> _OpenItem:
        item = _OpenItem(kind=kind, index=len(self._output), id=item_id)
        self._output.append(body)  # placeholder, replaced when the item is done
        self._open = item
        self._send(chunks, "response.output_item.added", {"output_index": item.index, "item": body})
        return item

    # -- text --

    def _text(self, chunks: list[bytes], text: str) -> None:
        if not text:
            return
        item = self._open
        if item is None or item.kind != "message":
            self._close(chunks)
            item_id = _new_id("msg_")
            item = self._open_item(
                chunks,
                "message",
                item_id,
                {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            )
            self._send(
                chunks,
                "response.content_part.added",
                {
                    **self._ref(item),
                    "content_index": 0,
                    "part": _text_part(""),
                },
            )
        item.text += text
        self._send(
            chunks,
            "response.output_text.delta",
            {
                **self._ref(item),
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _close_message(self, chunks: list[bytes], item: _OpenItem) -> None:
        ref = {**self._ref(item), "content_index": 0}
        self._send(chunks, "response.output_text.done", {**ref, "text": item.text, "logprobs": []})
        self._send(chunks, "response.content_part.done", {**ref, "part": _text_part(item.text)})
        self._output[item.index] = _message_item(item.id, [item.text], "completed")

    # -- reasoning --

    def _thinking(self, chunks: list[bytes], event: ir.ThinkingDelta) -> None:
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close(chunks)
            own_id = event.id if event.origin == NAME and event.id else None
            item = self._open_reasoning(chunks, own_id)
        if not event.text:
            return
        if not item.text:
            self._send(
                chunks,
                "response.reasoning_summary_part.added",
                {
                    **self._ref(item),
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        item.text += event.text
        self._send(
            chunks,
            "response.reasoning_summary_text.delta",
            {
                **self._ref(item),
                "summary_index": 0,
                "delta": event.text,
            },
        )

    def _open_reasoning(self, chunks: list[bytes], item_id: str | None) -> _OpenItem:
        item_id = item_id or _new_id("rs_")
        return self._open_item(
            chunks, "reasoning", item_id, {"id": item_id, "type": "reasoning", "summary": []}
        )

    def _signature(self, chunks: list[bytes], event: ir.ThinkingSignature) -> None:
        own = event.origin == NAME
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close(chunks)
            item = self._open_reasoning(chunks, event.id if own else None)
        item.encrypted = wrap_encrypted(event.signature, event.origin)
        self._close(chunks)

    def _redacted(self, chunks: list[bytes], event: ir.RedactedThinking) -> None:
        self._close(chunks)
        encrypted = wrap_encrypted(event.data, event.origin, redacted=True)
        if encrypted:
            item = self._open_reasoning(chunks, event.id if event.origin == NAME else None)
            item.encrypted = encrypted
            self._close(chunks)

    def _close_reasoning(self, chunks: list[bytes], item: _OpenItem) -> None:
        if item.text:
            ref = {**self._ref(item), "summary_index": 0}
            self._send(chunks, "response.reasoning_summary_text.done", {**ref, "text": item.text})
            self._send(
                chunks,
                "response.reasoning_summary_part.done",
                {
                    **ref,
                    "part": {"type": "summary_text", "text": item.text},
                },
            )
        self._output[item.index] = _reasoning_item(item.id, item.text, item.encrypted)

    # -- function calls --

    def _open_call(self, chunks: list[bytes], event: ir.ToolCallStart) -> None:
        item_id = _new_id("fc_")
        item = self._open_item(
            chunks,
            "function_call",
            item_id,
            _function_call_item(item_id, event.id, event.name, "", "in_progress"),
        )
        item.call_id, item.name = event.id, event.name

    def _arguments(self, chunks: list[bytes], delta: str) -> None:
        item = self._open
        if item is None or item.kind != "function_call" or not delta:
            return
        item.text += delta
        self._send(
            chunks, "response.function_call_arguments.delta", {**self._ref(item), "delta": delta}
        )

    def _close_call(self, chunks: list[bytes], item: _OpenItem) -> None:
        self._send(
            chunks,
            "response.function_call_arguments.done",
            {**self._ref(item), "name": item.name, "arguments": item.text},
        )
        self._output[item.index] = _function_call_item(
            item.id, item.call_id, item.name, item.text, "completed"
        )

    # -- lifecycle --

    def _close(self, chunks: list[bytes]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        if item.kind == "message":
            self._close_message(chunks, item)
        elif item.kind == "reasoning":
            self._close_reasoning(chunks, item)
        else:
            self._close_call(chunks, item)
        self._send(
            chunks,
            "response.output_item.done",
            {"output_index": item.index, "item": self._output[item.index]},
        )

    def _finish(self, chunks: list[bytes], event: ir.Finish) -> None:
        self._close(chunks)
        self._ended = True
        status, reason, error = _status_for(event.reason)
        snapshot = self._snapshot(status, _usage_body(event.usage), reason, error)
        kind = {
            "completed": "response.completed",
            "incomplete": "response.incomplete",
            "failed": "response.failed",
        }[status]
        self._send(chunks, kind, {"response": snapshot})

    def _error(self, chunks: list[bytes], err: ir.Error) -> None:
        self._close(chunks)
        self._ended = True
        code = error_body(err)["error"]["code"]
        self._send(chunks, "error", {"code": code, "message": err.message, "param": err.param})
        failed = {
            "code": "rate_limit_exceeded" if err.status == 429 else "server_error",
            "message": err.message,
        }
        self._send(chunks, "response.failed", {"response": self._snapshot("failed", error=failed)})
