"""Gemini client body -> ir.Request, and the stream framing a client asks for.

Protobuf's JSON mapping accepts camelCase and snake_case field names, and clients use
both (google-genai itself sends `mime_type`, `file_uri`, `include_thoughts`, `any_of`):
every read goes through `_get`, which tries both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from router.protocols import ir
from router.protocols.gemini.common import (
    _SYNTHETIC_ID,
    NAME,
    SKIP_SIGNATURE,
    _encode,
    _invalid,
    standard_base64,
)
from router.protocols.gemini.schema import from_gemini
from router.protocols.gemini.signatures import _foreign_thinking, _unwrap_foreign

_CARRIED = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}
)
_GENERATION_CARRIED = frozenset(
    {
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
        "candidateCount",
        "responseModalities",
    }
)


@functools.cache
def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _get(mapping: dict[str, Any], key: str) -> Any:
    value = mapping.get(key)
    return mapping.get(_snake(key)) if value is None else value


def _get_str(mapping: dict[str, Any], key: str) -> str | None:
    value = _get(mapping, key)
    return value if isinstance(value, str) else None


def parse_request(body: dict[str, Any]) -> ir.Request:
    """Model and stream flag live in the URL: `model` stays "" and `stream` False."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    req = ir.Request(model="", include_usage=True)  # Gemini always reports usage
    req.system = _parse_system(_get(body, "systemInstruction"))
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise _invalid("`contents` is required and must be a list")
    _ContentReader(req).read(contents)
    req.tools = _parse_tools(body.get("tools"), req)
    req.tool_choice = _parse_tool_config(_get(body, "toolConfig"), req)
    _parse_generation_config(_get(body, "generationConfig"), req)
    if _get(body, "safetySettings"):
        req.dropped.append("safetySettings")
    req.dropped.extend(k for k in body if _camel(k) not in _CARRIED | {"safetySettings"})
    return req


def _parse_system(instruction: Any) -> list[str]:
    if instruction is None:
        return []
    if isinstance(instruction, str):
        return [instruction] if instruction else []
    if not isinstance(instruction, dict) or not isinstance(instruction.get("parts", []), list):
        raise _invalid("`systemInstruction` must be a Content object")
    return [
        p["text"]
        for p in instruction.get("parts", [])
        if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]
    ]


class _ContentReader:
    """Reads `contents`, giving id-less function calls deterministic ids and pairing each
    `functionResponse` without a known id with the earliest unanswered call of the same
    name."""

    def __init__(self, req: ir.Request) -> None:
        self.req = req
        self.synthesized = 0
        self.unanswered: list[tuple[str, str]] = []  # (name, id) in call order
        self.issued: set[str] = set()

    def read(self, contents: list[Any]) -> None:
        for index, content in enumerate(contents):
            if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
                raise _invalid(f"contents[{index}] must be a Content with a `parts` list")
            role = "assistant" if content.get("role") == "model" else "user"
            kept: list[ir.Part] = []
            for part in content["parts"]:
                self._add(kept, part, index)
            if kept:
                self.req.messages.append(ir.Message(role, kept))

    def _add(self, kept: list[ir.Part], part: Any, index: int) -> None:
        if not isinstance(part, dict):
            raise _invalid(f"contents[{index}].parts entries must be objects")
        signature = _get_str(part, "thoughtSignature")
        foreign = _unwrap_foreign(signature) if signature else None
        if foreign is not None:
            kept.append(_foreign_thinking(kept, part, foreign))
            if part.get("thought") is True:
                return  # the thought part was that reasoning
            part = {k: v for k, v in part.items() if _camel(k) != "thoughtSignature"}
        parsed = self._part(part, index)
        if parsed is not None:
            kept.append(parsed)

    def _part(self, part: dict[str, Any], index: int) -> ir.Part | None:
        signature = _get_str(part, "thoughtSignature")
        if signature == SKIP_SIGNATURE:
            signature = None  # the builder adds it again where Gemini needs one
        if _get(part, "functionCall") is not None:
            return self._call(_get(part, "functionCall"), signature, index)
        if _get(part, "functionResponse") is not None:
            return self._response(_get(part, "functionResponse"), index)
        if "text" in part:
            text = part["text"] if part["text"] is not None else ""
            if not isinstance(text, str):  # the API refuses it; dropping it would be silent
                raise _invalid(f"contents[{index}]: a part's `text` must be a string")
            if part.get("thought") is True:
                return ir.Thinking(text=text, signature=signature, origin=NAME)
            return ir.Text(text, signature=signature)
        if _get(part, "inlineData") is not None:
            return _media_from_inline(_get(part, "inlineData"), index)
        if _get(part, "fileData") is not None:
            return _media_from_file(_get(part, "fileData"), index)
        if signature:
            return ir.Text("", signature=signature)
        for key in part:
            name = f"parts.{_camel(key)}"
            if _camel(key) not in ("thought", "thoughtSignature") and name not in self.req.dropped:
                self.req.dropped.append(name)
        return None

    def _call(self, call: Any, signature: str | None, index: int) -> ir.ToolCall:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise _invalid(f"contents[{index}]: functionCall needs a `name`")
        args = call.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _invalid(f"contents[{index}]: functionCall.args must be an object")
        call_id = _get_str(call, "id")
        if not call_id:
            call_id = f"{_SYNTHETIC_ID}{self.synthesized}"
            self.synthesized += 1
        self.unanswered.append((call["name"], call_id))
        self.issued.add(call_id)
        return ir.ToolCall(call_id, call["name"], _encode(args).decode(), signature=signature)

    def _response(self, response: Any, index: int) -> ir.ToolResult:
        if not isinstance(response, dict) or not isinstance(response.get("name"), str):
            raise _invalid(f"contents[{index}]: functionResponse needs a `name`")
        name = response["name"]
        call_id = _get_str(response, "id")
        if call_id not in self.issued:  # gemini-cli sends response ids its calls lack
            call_id = self._answer(name)
        self.unanswered = [(n, i) for n, i in self.unanswered if i != call_id]
        content, is_error = _result_content(response.get("response"))
        extras = response.get("parts") or []
        if not isinstance(extras, list):
            raise _invalid(f"contents[{index}]: functionResponse.parts must be a list")
        for extra in extras:
            inline = _get(extra, "inlineData") if isinstance(extra, dict) else None
            if isinstance(inline, dict):
                media = _media_from_inline(inline, index)
                if isinstance(media, ir.Image):
                    content.append(media)
        return ir.ToolResult(call_id, name=name, content=content, is_error=is_error)

    def _answer(self, name: str) -> str:
        for call_name, call_id in self.unanswered:
            if call_name == name:
                return call_id
        call_id = f"{_SYNTHETIC_ID}{self.synthesized}"
        self.synthesized += 1
        return call_id


def _result_content(response: Any) -> tuple[list[ir.Text | ir.Image], bool]:
    """Inverse of `_response_object`: `{"output": s}` / `{"error": s}` unwrap to text."""
    if isinstance(response, dict) and len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("output", "error") and isinstance(value, str):
            return [ir.Text(value)], key == "error"
    if response is None:
        return [], False
    return [ir.Text(_encode(response).decode())], False


def _media_from_inline(data: Any, index: int) -> ir.Image | ir.File:
    if not isinstance(data, dict) or not isinstance(data.get("data"), str):
        raise _invalid(f"contents[{index}]: inlineData needs `data`")
    mime = _get_str(data, "mimeType") or "application/octet-stream"
    payload = standard_base64(data["data"])
    if mime.startswith("image/"):
        return ir.Image(media_type=mime, data=payload)
    return ir.File(media_type=mime, data=payload, filename=_get_str(data, "displayName"))


def _media_from_file(data: Any, index: int) -> ir.Image | ir.File:
    uri = _get_str(data, "fileUri") if isinstance(data, dict) else None
    if uri is None:
        raise _invalid(f"contents[{index}]: fileData needs `fileUri`")
    mime = _get_str(data, "mimeType")
    if mime and mime.startswith("image/"):
        return ir.Image(media_type=mime, url=uri)
    return ir.File(media_type=mime, url=uri, filename=_get_str(data, "displayName"))


def _parse_tools(tools: Any, req: ir.Request) -> list[ir.Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("`tools` must be a list")
    parsed: list[ir.Tool] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise _invalid("`tools` entries must be objects")
        for key, value in tool.items():
            if _camel(key) != "functionDeclarations":
                req.dropped.append(f"tools.{_camel(key)}")
                continue
            if not isinstance(value or [], list):
                raise _invalid("`functionDeclarations` must be a list")
            for declaration in value or []:
                parsed.append(_parse_declaration(declaration))
    return parsed


def _parse_declaration(declaration: Any) -> ir.Tool:
    if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
        raise _invalid("functionDeclarations entries need a `name`")
    parameters = _get(declaration, "parametersJsonSchema")
    if not isinstance(parameters, dict):
        gemini_schema = declaration.get("parameters")
        parameters = from_gemini(gemini_schema) if isinstance(gemini_schema, dict) else None
    return ir.Tool(
        name=declaration["name"],
        description=_get_str(declaration, "description"),
        parameters=parameters,
    )


def _parse_tool_config(config: Any, req: ir.Request) -> ir.ToolChoice | None:
    if not isinstance(config, dict):
        return None
    calling = _get(config, "functionCallingConfig")
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = _get(calling, "allowedFunctionNames")
    if mode == "NONE":
        return ir.ToolChoice("none")
    if mode != "ANY":
        return ir.ToolChoice("auto")
    if isinstance(allowed, list) and allowed:
        if len(allowed) == 1:
            return ir.ToolChoice("tool", str(allowed[0]))
        req.tools = [tool for tool in req.tools if tool.name in allowed]
    return ir.ToolChoice("required")


def _parse_generation_config(config: Any, req: ir.Request) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _invalid("`generationConfig` must be an object")
    req.max_tokens = _number(config, "maxOutputTokens", int)
    req.temperature = _number(config, "temperature", float)
    req.top_p = _number(config, "topP", float)
    req.top_k = _number(config, "topK", int)
    req.seed = _number(config, "seed", int)
    stops = _get(config, "stopSequences")
    if isinstance(stops, list):
        req.stop = [s for s in stops if isinstance(s, str)]
    req.output = _parse_output(config)
    if _get(config, "responseMimeType") not in (None, "application/json", "text/plain"):
        req.dropped.append("generationConfig.responseMimeType")
    req.reasoning = _parse_thinking(_get(config, "thinkingConfig"))
    count = _get(config, "candidateCount")
    if isinstance(count, int) and count > 1:
        req.dropped.append("generationConfig.candidateCount")
    modalities = _get(config, "responseModalities")
    if isinstance(modalities, list) and any(str(m).upper() != "TEXT" for m in modalities):
        req.dropped.append("generationConfig.responseModalities")
    req.dropped.extend(
        f"generationConfig.{_camel(k)}" for k in config if _camel(k) not in _GENERATION_CARRIED
    )


def _number(config: dict[str, Any], key: str, kind: type) -> Any:
    value = _get(config, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"generationConfig.{key} must be a number")
    return int(value) if kind is int else value


def _parse_output(config: dict[str, Any]) -> ir.OutputFormat | None:
    if _get(config, "responseMimeType") != "application/json":
        return None
    schema = _get(config, "responseJsonSchema")
    if not isinstance(schema, dict):
        gemini_schema = _get(config, "responseSchema")
        schema = from_gemini(gemini_schema) if isinstance(gemini_schema, dict) else None
    if schema is None:
        return ir.OutputFormat("json_object")
    return ir.OutputFormat("json_schema", schema=schema)


def _parse_thinking(config: Any) -> ir.Reasoning | None:
    if not isinstance(config, dict):
        return None
    include = _get(config, "includeThoughts") is True
    budget = _get(config, "thinkingBudget")
    level = _get(config, "thinkingLevel")
    if budget == 0:
        return ir.Reasoning(enabled=False, budget_tokens=0, include_thoughts=False)
    reasoning = ir.Reasoning(include_thoughts=include)
    if isinstance(budget, int) and budget > 0:
        reasoning.budget_tokens = budget
    if isinstance(level, str) and level.upper() != "THINKING_LEVEL_UNSPECIFIED":
        reasoning.effort = level.lower()
    return reasoning


def sse_requested(query: Mapping[str, str]) -> bool:
    """A streaming Gemini client wants SSE only with `alt=sse`; without it, one JSON
    array."""
    return query.get("alt") == "sse"
