"""OpenAI Chat Completions (`POST /v1/chat/completions`) <-> ir.

Decisions worth knowing (see also the module's functions):

* Thinking: parsed from the de-facto `reasoning_content` (or `reasoning`) field that
  OpenAI-compatible servers (DeepSeek, vLLM, OpenRouter...) use, and emitted to Chat
  clients as `reasoning_content`. Chat requests cannot carry thinking back upstream, so
  `build_request` leaves it out (Anthropic/Gemini signatures would be useless anyway).
* `build_request` sends `max_tokens`, which every OpenAI-compatible server accepts,
  except when reasoning is requested or the model is an OpenAI reasoning model
  (o1/o3/o4/gpt-5...), which reject it and need `max_completion_tokens`.
* Reasoning budget -> `reasoning_effort`: <= 4096 low, <= 16384 medium, else high.
  An explicit effort is sent verbatim; "thinking on, no effort/budget" sends nothing.
  Models known to reject it (gpt-4*, gpt-3.5*, chatgpt-*) get none ("reasoning" dropped).
* Tool results become `tool` messages; images in them (Chat tool messages are text
  only) move to a user message right after. An error result is prefixed "Error: ".
* Streams: the first tool call streams live; later calls are buffered and emitted,
  in index order, at the finish chunk. That keeps ir blocks sequential whatever the
  upstream interleaves. Content arriving after a tool call started is held likewise.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.sse import SSEParser, data_line

NAME = "openai-chat"
ACCEPTS_IMAGE_URLS = True

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_FINISH_FROM_WIRE: dict[str, ir.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_FINISH_TO_WIRE = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}

# Fields that change nothing about the answer (billing, caching, storage hints).
_IGNORED_FIELDS = frozenset(
    {
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
    }
)


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- request: wire -> ir ------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> ir.Request:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string", "model")
    req = ir.Request(model=model)
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


def _drop(req: ir.Request, name: str) -> None:
    if name not in req.dropped:
        req.dropped.append(name)


def _parse_messages(raw: Any, req: ir.Request) -> None:
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty array", "messages")
    call_names: dict[str, str] = {}  # tool call id -> function name
    legacy_calls: dict[str, str] = {}  # function name -> id of its latest legacy call
    tool_group: ir.Message | None = None  # user message collecting consecutive tool results
    in_preamble = True
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise _invalid(f"messages[{i}] must be an object", f"messages[{i}]")
        role = msg.get("role")
        if msg.get("name") is not None and role != "function":
            _drop(req, "messages.name")
        if role in ("system", "developer"):
            text = _plain_text(msg.get("content"), i)
            if in_preamble:
                req.system.append(text)
            else:
                req.messages.append(ir.Message("system", [ir.Text(text)]))
            tool_group = None
            continue
        in_preamble = False
        if role in ("tool", "function"):
            result = _tool_result(msg, i, role, call_names, legacy_calls, req)
            if tool_group is None:
                tool_group = ir.Message("user", [])
                req.messages.append(tool_group)
            tool_group.parts.append(result)
            continue
        tool_group = None
        if role == "user":
            req.messages.append(ir.Message("user", _user_parts(msg.get("content"), i, req)))
        elif role == "assistant":
            req.messages.append(_assistant_message(msg, i, call_names, legacy_calls, req))
        else:
            raise _invalid(f"messages[{i}].role {role!r} is not supported", f"messages[{i}].role")


def _plain_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise _invalid(f"messages[{i}].content parts must be text", f"messages[{i}]")
            texts.append(part["text"])
        return "\n\n".join(texts)
    if content is None:
        return ""
    raise _invalid(f"messages[{i}].content must be a string or an array", f"messages[{i}]")


def _user_parts(content: Any, i: int, req: ir.Request) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(content)]
    if content is None:
        return []
    if not isinstance(content, list):
        raise _invalid(f"messages[{i}].content must be a string or an array", f"messages[{i}]")
    parts: list[ir.Part] = []
    for part in content:
        if not isinstance(part, dict):
            raise _invalid(f"messages[{i}].content parts must be objects", f"messages[{i}]")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _invalid(f"messages[{i}] text part needs 'text'", f"messages[{i}]")
            parts.append(ir.Text(text))
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), i))
        elif kind == "file":
            parts.append(_file(part.get("file"), i))
        elif kind == "refusal":
            parts.append(ir.Text(str(part.get("refusal") or "")))
        else:
            _drop(req, f"content.{kind}")
    return parts


def split_data_url(url: str) -> tuple[str, str] | None:
    """`data:<media>;base64,<data>` -> (media, data); None for anything else."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[5:-7].split(";")[0] or "application/octet-stream", data


def _image(spec: Any, i: int) -> ir.Image:
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
        raise _invalid(f"messages[{i}] image_url part needs a 'url'", f"messages[{i}]")
    url = spec["url"]
    detail = spec.get("detail")
    inline = split_data_url(url)
    if inline is not None:
        return ir.Image(media_type=inline[0], data=inline[1], detail=detail)
    return ir.Image(url=url, detail=detail)


def _file(spec: Any, i: int) -> ir.File:
    if not isinstance(spec, dict):
        raise _invalid(f"messages[{i}] file part needs a 'file' object", f"messages[{i}]")
    result = ir.File(file_id=spec.get("file_id"), filename=spec.get("filename"))
    data = spec.get("file_data")
    if isinstance(data, str):
        inline = split_data_url(data)
        if inline is not None:
            result.media_type, result.data = inline
        else:
            result.data = data
            result.media_type = "application/pdf"
    return result


def _arguments_text(value: Any) -> str:
    if isinstance(value, str):
        return value or "{}"
    if value is None:
        return "{}"
    return _encode(value).decode()


def _assistant_message(
    msg: dict[str, Any],
    i: int,
    call_names: dict[str, str],
    legacy_calls: dict[str, str],
    req: ir.Request,
) -> ir.Message:
    parts: list[ir.Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ir.Thinking(text=reasoning))
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            parts.append(ir.Text(content))
    elif isinstance(content, list):
        parts.extend(p for p in _user_parts(content, i, req) if isinstance(p, ir.Text))
    elif content is not None:
        raise _invalid(f"messages[{i}].content must be a string or an array", f"messages[{i}]")
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(ir.Text(refusal))
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise _invalid(f"messages[{i}].tool_calls must be an array", f"messages[{i}]")
    for call in tool_calls or ():
        if not isinstance(call, dict):
            raise _invalid(f"messages[{i}].tool_calls entries must be objects", f"messages[{i}]")
        if call.get("type", "function") != "function":
            _drop(req, f"tool_calls.{call.get('type')}")
            continue
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"messages[{i}].tool_calls need function.name", f"messages[{i}]")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid(f"messages[{i}].tool_calls need an 'id'", f"messages[{i}]")
        call_names[call_id] = function["name"]
        parts.append(
            ir.ToolCall(call_id, function["name"], _arguments_text(function.get("arguments")))
        )
    legacy = msg.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        call_id = f"call_{len(call_names)}_{legacy['name']}"
        call_names[call_id] = legacy["name"]
        legacy_calls[legacy["name"]] = call_id
        parts.append(ir.ToolCall(call_id, legacy["name"], _arguments_text(legacy.get("arguments"))))
    return ir.Message("assistant", parts)


def _tool_result(
    msg: dict[str, Any],
    i: int,
    role: str,
    call_names: dict[str, str],
    legacy_calls: dict[str, str],
    req: ir.Request,
) -> ir.ToolResult:
    if role == "function":  # legacy: the result names the function, not a call id
        name = msg.get("name")
        call_id = legacy_calls.get(name, f"call_{name}") if isinstance(name, str) else ""
    else:
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid(f"messages[{i}].tool_call_id is required", f"messages[{i}]")
        name = call_names.get(call_id)
    content = msg.get("content")
    parts: list[ir.Text | ir.Image] = []
    if isinstance(content, str):
        parts.append(ir.Text(content))
    elif isinstance(content, list):
        parts.extend(p for p in _user_parts(content, i, req) if isinstance(p, ir.Text | ir.Image))
    elif content is not None:
        raise _invalid(f"messages[{i}].content must be a string or an array", f"messages[{i}]")
    return ir.ToolResult(call_id, name if isinstance(name, str) else None, parts)


def _parse_tools(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _invalid("'tools' must be an array", "tools")
    for tool in value:
        if not isinstance(tool, dict):
            raise _invalid("'tools' entries must be objects", "tools")
        if tool.get("type", "function") != "function":
            _drop(req, f"tools.{tool.get('type')}")
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid("each function tool needs function.name", "tools")
        req.tools.append(_tool(function))


def _tool(function: dict[str, Any]) -> ir.Tool:
    parameters = function.get("parameters")
    return ir.Tool(
        name=function["name"],
        description=function.get("description"),
        parameters=parameters if isinstance(parameters, dict) else None,
        strict=function.get("strict"),
    )


def _parse_functions(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _invalid("'functions' must be an array", "functions")
    for function in value:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid("each function needs a 'name'", "functions")
        req.tools.append(_tool(function))


def _parse_tool_choice(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if value in ("auto", "none", "required"):
        req.tool_choice = ir.ToolChoice(value)
        return
    if isinstance(value, dict):
        if value.get("type") == "function":
            name = (value.get("function") or {}).get("name")
            if isinstance(name, str):
                req.tool_choice = ir.ToolChoice("tool", name)
                return
        elif value.get("type") == "allowed_tools":
            _drop(req, "tool_choice")
            return
    raise _invalid("'tool_choice' is not valid", "tool_choice")


def _parse_function_call(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if value in ("auto", "none"):
        req.tool_choice = ir.ToolChoice(value)
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        req.tool_choice = ir.ToolChoice("tool", value["name"])
    else:
        raise _invalid("'function_call' is not valid", "function_call")


def _parse_response_format(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("'response_format' must be an object", "response_format")
    kind = value.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        req.output = ir.OutputFormat("json_object")
    elif kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise _invalid("response_format.json_schema must be an object", "response_format")
        schema = spec.get("schema")
        req.output = ir.OutputFormat(
            "json_schema",
            schema=schema if isinstance(schema, dict) else None,
            name=spec.get("name"),
            strict=spec.get("strict"),
            description=spec.get("description"),
        )
    else:
        raise _invalid(f"response_format type {kind!r} is not supported", "response_format")


def _parse_reasoning_effort(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise _invalid("'reasoning_effort' must be a string", "reasoning_effort")
    req.reasoning = ir.Reasoning(enabled=value != "none", effort=value)


def _parse_reasoning(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    """OpenRouter-style `reasoning: {effort, max_tokens, enabled, exclude}`."""
    if not isinstance(value, dict):
        raise _invalid("'reasoning' must be an object", "reasoning")
    if "reasoning_effort" in body and body["reasoning_effort"] is not None:
        return  # the standard field wins
    effort = value.get("effort")
    budget = value.get("max_tokens")
    req.reasoning = ir.Reasoning(
        enabled=value.get("enabled", True) is not False and effort != "none",
        effort=effort if isinstance(effort, str) else None,
        budget_tokens=budget if isinstance(budget, int) else None,
        include_thoughts=not value.get("exclude", False),
    )


def _number(name: str, kind: type | tuple[type, ...], attribute: str | None = None):
    def parse(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
        if isinstance(value, bool) or not isinstance(value, kind):
            raise _invalid(f"'{name}' must be a number", name)
        setattr(req, attribute or name, value)

    return parse


_parse_max_completion_tokens = _number("max_completion_tokens", int, "max_tokens")
_parse_plain_max_tokens = _number("max_tokens", int)


def _parse_max_tokens(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if body.get("max_completion_tokens") is None:  # the newer field wins
        _parse_plain_max_tokens(value, req, body)


def _parse_stop(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if isinstance(value, str):
        req.stop = [value]
    elif isinstance(value, list) and all(isinstance(s, str) for s in value):
        req.stop = list(value)
    else:
        raise _invalid("'stop' must be a string or an array of strings", "stop")


def _parse_stream(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, bool):
        raise _invalid("'stream' must be a boolean", "stream")
    req.stream = value


def _parse_stream_options(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("'stream_options' must be an object", "stream_options")
    req.include_usage = bool(value.get("include_usage"))


def _parse_user(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if isinstance(value, str):
        req.user = value


def _parse_safety_identifier(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if isinstance(value, str) and not body.get("user"):
        req.user = value


def _parse_metadata(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _invalid("'metadata' must be an object", "metadata")
    req.metadata = value


def _parse_parallel(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    if not isinstance(value, bool):
        raise _invalid("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    req.parallel_tool_calls = value


def _drop_if(name: str, is_loss):
    """A field ir cannot carry, reported only when its value changes the answer."""

    def parse(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
        if is_loss(value):
            _drop(req, name)

    return parse


def _skip(value: Any, req: ir.Request, body: dict[str, Any]) -> None:
    pass


_FIELD_PARSERS: dict[str, Any] = {
    "model": _skip,
    "messages": _skip,
    "tools": _parse_tools,
    "functions": _parse_functions,
    "tool_choice": _parse_tool_choice,
    "function_call": _parse_function_call,
    "parallel_tool_calls": _parse_parallel,
    "response_format": _parse_response_format,
    "reasoning_effort": _parse_reasoning_effort,
    "reasoning": _parse_reasoning,
    "max_completion_tokens": _parse_max_completion_tokens,
    "max_tokens": _parse_max_tokens,
    "temperature": _number("temperature", (int, float)),
    "top_p": _number("top_p", (int, float)),
    "top_k": _number("top_k", int),  # not OpenAI's, but common on compatible servers
    "seed": _number("seed", int),
    "stop": _parse_stop,
    "stream": _parse_stream,
    "stream_options": _parse_stream_options,
    "user": _parse_user,
    "safety_identifier": _parse_safety_identifier,
    "metadata": _parse_metadata,
}
for _field, _is_loss in {
    "n": lambda v: v != 1,
    "logprobs": bool,
    "top_logprobs": lambda v: True,
    "logit_bias": bool,
    "presence_penalty": bool,
    "frequency_penalty": bool,
    "modalities": lambda v: v != ["text"],
    "audio": lambda v: True,
    "prediction": lambda v: True,
    "web_search_options": lambda v: True,
    "verbosity": lambda v: True,
}.items():
    _FIELD_PARSERS[_field] = _drop_if(_field, _is_loss)


# --- request: ir -> wire ------------------------------------------------------------


def build_request(req: ir.Request) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "messages": _build_messages(req)}
    if req.tools:
        body["tools"] = [_build_tool(tool) for tool in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = _build_tool_choice(req.tool_choice)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.output is not None and req.output.kind != "text":
        body["response_format"] = _build_response_format(req.output)
    effort = reasoning_effort(req.reasoning)
    if effort is not None and _is_chat_only_model(req.model):
        effort = None  # OpenAI rejects reasoning_effort for these models
        _drop(req, "reasoning")
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.max_tokens is not None:
        key = "max_completion_tokens" if effort or _is_reasoning_model(req.model) else "max_tokens"
        body[key] = req.max_tokens
    for key in ("temperature", "top_p", "seed"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.top_k is not None:
        _drop(req, "top_k")
    if req.stop:
        body["stop"] = req.stop
    if req.user:
        # OpenAI rejects a `user` longer than 64 characters (Claude Code's is ~150).
        if len(req.user) <= 64:
            body["user"] = req.user
        else:
            _drop(req, "user")
    if req.metadata and any(key != "user_id" for key in req.metadata):
        _drop(req, "metadata")  # Chat metadata only works with `store`; not sent
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def reasoning_effort(reasoning: ir.Reasoning | None) -> str | None:
    """The `reasoning_effort` for an ir reasoning request (None: leave it unset)."""
    if reasoning is None or not reasoning.enabled:
        return None
    if reasoning.effort:
        return reasoning.effort
    budget = reasoning.budget_tokens
    if budget is None or budget <= 0:
        return None
    if budget <= 4096:
        return "low"
    if budget <= 16384:
        return "medium"
    return "high"


def _model_name(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


def _is_reasoning_model(model: str) -> bool:
    """OpenAI reasoning models: they reject `max_tokens`."""
    return _model_name(model).startswith(("o1", "o3", "o4", "gpt-5"))


def _is_chat_only_model(model: str) -> bool:
    """OpenAI models without reasoning: they reject `reasoning_effort`."""
    return _model_name(model).startswith(("gpt-4", "gpt-3.5", "chatgpt-"))


def _build_tool(tool: ir.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = (
        tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    )
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _build_tool_choice(choice: ir.ToolChoice) -> Any:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _build_response_format(output: ir.OutputFormat) -> dict[str, Any]:
    if output.kind == "json_object" or output.schema is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": output.name or "response", "schema": output.schema}
    if output.description:
        spec["description"] = output.description
    if output.strict is not None:
        spec["strict"] = output.strict
    return {"type": "json_schema", "json_schema": spec}


def _build_messages(req: ir.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": text} for text in req.system]
    for msg in req.messages:
        if msg.role == "assistant":
            built = _build_assistant(msg)
            if built is not None:
                out.append(built)
        elif msg.role == "system":
            out.append({"role": "system", "content": _joined_text(msg.parts)})
        else:
            out.extend(_build_user(msg, req))
    return out


def _joined_text(parts: list[ir.Part], separator: str = "\n\n") -> str:
    return separator.join(p.text for p in parts if isinstance(p, ir.Text))


def image_url(image: ir.Image) -> str:
    if image.data is not None:
        return f"data:{image.media_type or 'image/png'};base64,{image.data}"
    return image.url or ""


def _build_image(image: ir.Image) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": image_url(image)}
    if image.detail:
        spec["detail"] = image.detail
    return {"type": "image_url", "image_url": spec}


def _build_file(file: ir.File, req: ir.Request) -> dict[str, Any] | None:
    spec: dict[str, Any] = {}
    if file.file_id:
        spec["file_id"] = file.file_id
    elif file.data is not None:
        spec["file_data"] = f"data:{file.media_type or 'application/pdf'};base64,{file.data}"
        spec["filename"] = file.filename or "document.pdf"
    else:
        _drop(req, "file")  # Chat cannot take a document by URL
        return None
    if file.filename:
        spec["filename"] = file.filename
    return {"type": "file", "file": spec}


def _build_user(msg: ir.Message, req: ir.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    moved_images: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for part in msg.parts:
        if isinstance(part, ir.ToolResult):
            out.append(_build_tool_message(part))
            moved_images.extend(_build_image(p) for p in part.content if isinstance(p, ir.Image))
        elif isinstance(part, ir.Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.Image):
            content.append(_build_image(part))
        elif isinstance(part, ir.File):
            built = _build_file(part, req)
            if built is not None:
                content.append(built)
    content = moved_images + content
    if content:
        if all(p["type"] == "text" for p in content):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in content)})
        else:
            out.append({"role": "user", "content": content})
    elif not out:
        out.append({"role": "user", "content": ""})
    return out


def _build_tool_message(result: ir.ToolResult) -> dict[str, Any]:
    text = "\n".join(p.text for p in result.content if isinstance(p, ir.Text))
    if result.is_error and not text.lower().startswith("error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": result.call_id, "content": text}


def _build_assistant(msg: ir.Message) -> dict[str, Any] | None:
    text = "".join(p.text for p in msg.parts if isinstance(p, ir.Text))
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in msg.parts
        if isinstance(p, ir.ToolCall)
    ]
    if not text and not calls:
        return None
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


# --- response ------------------------------------------------------------------------


def parse_usage(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    cached = prompt.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
    return ir.Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=cached,
        cache_creation_tokens=prompt.get("cache_write_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


def build_usage(usage: ir.Usage) -> dict[str, Any]:
    prompt: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_creation_tokens:
        prompt["cache_write_tokens"] = usage.cache_creation_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def parse_response(body: dict[str, Any]) -> ir.Response:
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if body.get("error"):
        raise _error_from_payload(body["error"], 502)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ir.Error(502, "bad_gateway", "upstream response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    parts: list[ir.Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ir.Thinking(text=reasoning))
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(ir.Text(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(ir.Text(refusal))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            ir.ToolCall(
                call.get("id") or _new_id("call_"),
                function.get("name") or "",
                _arguments_text(function.get("arguments")),
            )
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.append(
            ir.ToolCall(
                _new_id("call_"), legacy.get("name") or "", _arguments_text(legacy.get("arguments"))
            )
        )
    finish = _FINISH_FROM_WIRE.get(choice.get("finish_reason") or "stop", "stop")
    if finish == "stop" and any(isinstance(p, ir.ToolCall) for p in parts):
        finish = "tool_calls"
    return ir.Response(
        id=body.get("id") or _new_id("chatcmpl-"),
        model=body.get("model") or "",
        parts=parts,
        finish=finish,
        usage=parse_usage(body.get("usage")),
        created=body.get("created") or 0,
    )


def _client_id(upstream_id: str) -> str:
    if not upstream_id:
        return _new_id("chatcmpl-")
    return upstream_id if upstream_id.startswith("chatcmpl-") else "chatcmpl-" + upstream_id


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    text = "".join(p.text for p in resp.parts if isinstance(p, ir.Text))
    thinking = "".join(p.text for p in resp.parts if isinstance(p, ir.Thinking) and not p.redacted)
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in resp.parts
        if isinstance(p, ir.ToolCall)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if thinking:
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = calls
    message["refusal"] = None
    finish = _FINISH_TO_WIRE[resp.finish]
    if calls and finish == "stop":
        finish = "tool_calls"
    return {
        "id": _client_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": resp.model or req.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": build_usage(resp.usage),
    }


# --- stream: upstream bytes -> ir ----------------------------------------------------


class _Delta(msgspec.Struct):
    content: Any = None
    refusal: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: Any = None


class _Choice(msgspec.Struct):
    index: Any = 0
    delta: _Delta | None = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    """The fields of a `chat.completion.chunk` the decoder reads; msgspec skips the rest
    (fingerprints, logprobs...) without building them. A chunk whose shape does not fit
    is read as plain JSON and brought to this form by `_chunk_from_dict`."""

    id: Any = None
    model: Any = None
    created: Any = None
    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_DELTA_FIELDS = _Delta.__struct_fields__


def _chunk_from_dict(chunk: dict[str, Any]) -> _Chunk:
    """What the decoder reads of an odd-shaped chunk: choices and deltas that are not
    objects are left out, as if absent."""
    choices = [
        _Choice(
            index=choice.get("index", 0),
            delta=_Delta(**{k: delta.get(k) for k in _DELTA_FIELDS})
            if isinstance(delta := choice.get("delta"), dict)
            else None,
            finish_reason=choice.get("finish_reason"),
        )
        for choice in chunk.get("choices") or ()
        if isinstance(choice, dict)
    ]
    return _Chunk(
        id=chunk.get("id"),
        model=chunk.get("model"),
        created=chunk.get("created"),
        choices=choices,
        usage=chunk.get("usage"),
        error=chunk.get("error"),
    )


@dataclass(slots=True)
class _Call:
    """One upstream tool call (by `index`) while its fragments arrive."""

    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    started: bool = False


class StreamDecoder:
    """Chat completion chunks -> ir events.

    The first tool call streams live. Anything after it (further calls, late content)
    is held until the finish chunk and then emitted in order, so ir blocks stay
    sequential even when the upstream interleaves `tool_calls[].index`."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._done = False
        self._calls: dict[int, _Call] = {}
        self._live: int | None = None  # upstream index of the call streaming live
        self._held: list[ir.TextDelta | ir.ThinkingDelta] = []
        self._finish: str | None = None
        self._usage: ir.Usage | None = None
        self._saw_call = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.feed(chunk):
            if not self._done:
                self._on_data(sse.data, events)
        return events

    def close(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        for sse in self._sse.close():
            if not self._done:
                self._on_data(sse.data, events)
        if not self._done:
            if self._finish is not None:
                self._end(events)
            else:
                self._done = True
                events.append(ir.Error(502, "bad_gateway", "upstream stream ended early"))
        return events

    def _on_data(self, data: str, events: list[ir.Event]) -> None:
        if not data:
            return
        if data.startswith("[DONE]"):
            self._end(events)
            return
        try:
            chunk = _decode_chunk(data)
        except msgspec.ValidationError:  # valid JSON of another shape
            document = _decode(data)
            if not isinstance(document, dict):
                return
            chunk = _chunk_from_dict(document)
        except msgspec.DecodeError:
            self._fail(events, ir.Error(502, "bad_gateway", "upstream sent malformed JSON"))
            return
        if chunk.error:
            self._fail(events, _error_from_payload(chunk.error, 500))
            return
        if not self._started:
            self._start(chunk.id, chunk.model, chunk.created, events)
        usage = chunk.usage
        if isinstance(usage, dict):
            self._usage = parse_usage(usage)
        for choice in chunk.choices or ():
            if choice.index == 0:
                self._on_choice(choice, events)

    def _start(self, id: Any, model: Any, created: Any, events: list[ir.Event]) -> None:
        self._started = True
        events.append(
            ir.Start(id=id or _new_id("chatcmpl-"), model=model or "", created=created or 0)
        )

    def _on_choice(self, choice: _Choice, events: list[ir.Event]) -> None:
        # truthiness first: most fields of most chunks are absent or null
        delta = choice.delta
        if delta is not None:
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning and isinstance(reasoning, str):
                self._content(ir.ThinkingDelta(reasoning), events)
            text = delta.content
            if text and isinstance(text, str):
                self._content(ir.TextDelta(text), events)
            text = delta.refusal
            if text and isinstance(text, str):
                self._content(ir.TextDelta(text), events)
            calls = delta.tool_calls
            if calls and isinstance(calls, list):
                for position, fragment in enumerate(calls):
                    if isinstance(fragment, dict):
                        self._fragment(fragment, position, events)
        reason = choice.finish_reason
        if reason and isinstance(reason, str):
            self._finish = reason
            self._flush(events)

    def _content(self, event: ir.TextDelta | ir.ThinkingDelta, events: list[ir.Event]) -> None:
        if self._calls:
            self._held.append(event)
        else:
            events.append(event)

    def _fragment(self, fragment: dict[str, Any], position: int, events: list[ir.Event]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            index = position
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call()
            if self._live is None and len(self._calls) == 1:
                self._live = index
        if not call.id and fragment.get("id"):
            call.id = fragment["id"]
        function = fragment.get("function") or {}
        if not call.name and function.get("name"):
            call.name = function["name"]
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = _encode(arguments).decode()
        if index != self._live:
            if arguments:
                call.arguments.append(arguments)
            return
        if call.started:
            if arguments:
                events.append(ir.ToolCallDelta(arguments))
            return
        if arguments:
            call.arguments.append(arguments)
        if call.name:
            self._emit_call(call, events)

    def _emit_call(self, call: _Call, events: list[ir.Event]) -> None:
        call.started = True
        self._saw_call = True
        events.append(ir.ToolCallStart(call.id or _new_id("call_"), call.name or ""))
        if call.arguments:
            events.append(ir.ToolCallDelta("".join(call.arguments)))
            call.arguments.clear()

    def _flush(self, events: list[ir.Event]) -> None:
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.started:
                self._emit_call(call, events)
        self._calls.clear()
        self._live = None
        events.extend(self._held)
        self._held.clear()

    def _end(self, events: list[ir.Event]) -> None:
        if not self._started:
            self._start(None, None, None, events)
        self._flush(events)
        self._done = True
        reason = _FINISH_FROM_WIRE.get(self._finish or "stop", "stop")
        if reason == "stop" and self._saw_call:
            reason = "tool_calls"
        events.append(ir.Finish(reason, self._usage or ir.Usage()))

    def _fail(self, events: list[ir.Event], error: ir.Error) -> None:
        self._done = True
        events.append(error)


# --- stream: ir -> client bytes ------------------------------------------------------


_DONE = b"data: [DONE]\n\n"
_CHUNK_TAIL = b',"finish_reason":null}]}\n\n'


class StreamEncoder:
    """ir events -> `chat.completion.chunk` SSE for Chat clients.

    States: not started -> streaming (role sent) -> done (finish, usage, [DONE] or an
    error sent). Role goes out once; each tool call's id/type/name only in its first
    fragment; the usage chunk, when asked for, is the last before [DONE]."""

    content_type = "text/event-stream"

    def __init__(self, req: ir.Request, **options: Any) -> None:
        self._req = req
        self._include_usage = req.include_usage
        self._head = b""  # `data: {"id":...,"choices":[{"index":0,"delta":`
        self._id = ""
        self._model = req.model
        self._created = 0
        self._started = False
        self._done = False
        self._tool_index = -1
        self._saw_call = False
        self._start_usage: ir.Usage | None = None
        self._handlers = {
            ir.Start: self._on_start,
            ir.TextDelta: self._on_text,
            ir.ThinkingDelta: self._on_thinking,
            ir.ToolCallStart: self._on_tool_start,
            ir.ToolCallDelta: self._on_tool_delta,
            ir.Finish: self._on_finish,
            ir.Error: self._on_error,
        }

    def encode(self, event: ir.Event) -> bytes:
        if self._done:
            return b""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else b""

    def _begin(self, upstream_id: str = "", model: str = "", created: int = 0) -> bytes:
        self._started = True
        self._id = _client_id(upstream_id)
        self._model = model or self._req.model
        self._created = created or int(time.time())
        self._head = (
            b'data: {"id":'
            + _encode(self._id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _encode(self._model)
            + b',"choices":[{"index":0,"delta":'
        )
        return self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._head + _encode(delta) + _CHUNK_TAIL

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._begin()

    def _on_start(self, event: ir.Start) -> bytes:
        if self._started:
            return b""
        self._start_usage = event.usage
        return self._begin(event.id, event.model, event.created)

    def _on_text(self, event: ir.TextDelta) -> bytes:
        if not event.text:
            return b""
        return self._ensure_started() + self._chunk({"content": event.text})

    def _on_thinking(self, event: ir.ThinkingDelta) -> bytes:
        if not event.text:
            return b""
        return self._ensure_started() + self._chunk({"reasoning_content": event.text})

    def _on_tool_start(self, event: ir.ToolCallStart) -> bytes:
        self._tool_index += 1
        self._saw_call = True
        call = {
            "index": self._tool_index,
            "id": event.id,
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        return self._ensure_started() + self._chunk({"tool_calls": [call]})

    def _on_tool_delta(self, event: ir.ToolCallDelta) -> bytes:
        if self._tool_index < 0 or not event.arguments:
            return b""
        fragment = {"index": self._tool_index, "function": {"arguments": event.arguments}}
        return self._chunk({"tool_calls": [fragment]})

    def _on_finish(self, event: ir.Finish) -> bytes:
        out = self._ensure_started()
        self._done = True
        reason = _FINISH_TO_WIRE[event.reason]
        if reason == "stop" and self._saw_call:
            reason = "tool_calls"
        out += self._head + b'{},"finish_reason":' + _encode(reason) + b"}]}\n\n"
        if self._include_usage:
            usage = event.usage
            start = self._start_usage
            if not usage.input_tokens and start is not None and start.input_tokens:
                # the upstream reported input only up front (Anthropic's message_start)
                usage = ir.Usage(
                    start.input_tokens,
                    usage.output_tokens,
                    start.cached_tokens,
                    start.cache_creation_tokens,
                    usage.reasoning_tokens,
                )
            out += data_line(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": build_usage(usage),
                }
            )
        return out + _DONE

    def _on_error(self, event: ir.Error) -> bytes:
        self._done = True
        return stream_error(event)


# --- errors and models ---------------------------------------------------------------


_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "server_error",
    "bad_gateway": "server_error",
    "unavailable": "server_error",
    "timeout": "timeout",
    "overloaded": "server_error",
}
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "timeout": 504,
}


def _text_of(body: bytes, status: int) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else f"upstream returned HTTP {status}"


def _error_from_payload(payload: Any, default_status: int) -> ir.Error:
    """An `{"message","type","param","code"}` object (or a bare string) -> ir.Error."""
    if not isinstance(payload, dict):
        message = payload if isinstance(payload, str) and payload else "upstream error"
        return ir.Error(default_status, ir.error_kind_for_status(default_status), message)
    code = payload.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else None
    status = status or _STATUS_OF_TYPE.get(str(payload.get("type")), default_status)
    message = payload.get("message")
    param = payload.get("param")
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message if isinstance(message, str) and message else "upstream error",
        param if isinstance(param, str) else None,
    )


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        payload = _decode(body) if body else None
    except msgspec.DecodeError:
        payload = None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    message: Any = None
    param: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message, param = error.get("message"), error.get("param")
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not isinstance(message, str) or not message:
        message = _text_of(body, status)
    return ir.Error(
        status,
        ir.error_kind_for_status(status),
        message,
        param if isinstance(param, str) else None,
    )


def error_body(err: ir.Error) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _ERROR_TYPES.get(err.kind, "server_error"),
            "param": err.param,
            "code": err.kind,
        }
    }


def stream_error(err: ir.Error) -> bytes:
    """The mid-stream error chunk (`data: {"error": ...}`)."""
    return data_line(error_body(err))


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "router"} for name in models
        ],
    }
