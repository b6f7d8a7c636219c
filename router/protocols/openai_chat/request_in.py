"""Client body -> ir.Request (`parse_request`); Chat streams are always SSE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.protocols import ir
from router.protocols.openai_chat.common import _arguments_text, _drop, _invalid

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


def sse_requested(query: Mapping[str, str]) -> bool:
    """Always: a Chat stream is SSE, whatever the query says."""
    return True


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
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid("a function's description must be a string", "tools")
    return ir.Tool(
        name=function["name"],
        description=description,
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
            function = value.get("function")
            name = function.get("name") if isinstance(function, dict) else None
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
