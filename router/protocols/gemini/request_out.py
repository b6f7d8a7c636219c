"""ir.Request -> the upstream Gemini body.

* Reasoning. Explicit `budget_tokens` -> `thinkingBudget`. An effort -> `thinkingLevel`
  for models named `gemini-3*` (minimal/low -> LOW, medium -> MEDIUM, high/xhigh/max ->
  HIGH), else a budget (minimal 512, low 2048, medium 8192, high+ 24576). Off -> budget 0
  (`thinkingLevel` LOW on Gemini 3, which cannot switch thinking off).
"""

from __future__ import annotations

import mimetypes
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.gemini.common import (
    _SYNTHETIC_ID,
    NAME,
    SKIP_SIGNATURE,
    _arguments,
    _decode,
    _signed,
)
from router.protocols.gemini.schema import to_gemini

_BUDGET_BY_EFFORT = {
    "minimal": 512,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}
_LEVEL_BY_EFFORT = {
    "minimal": "LOW",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
    "max": "HIGH",
}


def build_request(req: ir.Request) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _build_contents(req)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(req.system)}]}
    declarations = [_declaration(tool) for tool in req.tools]
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(req.tool_choice)
    if tool_config:
        body["toolConfig"] = tool_config
    generation = _generation_config(req)
    if generation:
        body["generationConfig"] = generation
    for name, lost in (
        ("parallel_tool_calls", req.parallel_tool_calls is False),
        ("user", req.user is not None),
        ("metadata", bool(req.metadata)),
    ):
        if lost and name not in req.dropped:
            req.dropped.append(name)
    return body


def _build_contents(req: ir.Request) -> list[dict[str, Any]]:
    names = {p.id: p.name for m in req.messages for p in m.parts if isinstance(p, ir.ToolCall)}
    gemini_ids: set[str] = set()  # call ids Gemini issued, echoed on the responses too
    contents: list[dict[str, Any]] = []
    for message in req.messages:
        if message.role == "assistant":
            role, parts = "model", _model_parts(message.parts, gemini_ids)
        else:
            role, parts = "user", _user_parts(message.parts, names, gemini_ids, req)
        if not parts:
            continue
        if role == "user" and contents and contents[-1]["role"] == "user":
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _user_parts(
    parts: list[ir.Part], names: dict[str, str], gemini_ids: set[str], req: ir.Request
) -> list[dict[str, Any]]:
    """Function responses first (one turn holds all of them, in order), then the images
    they returned, then the rest of the message."""
    responses: list[dict[str, Any]] = []
    result_media: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.ToolResult):
            responses.append(_function_response(part, names, gemini_ids))
            result_media.extend(
                _media_part(p, req) for p in part.content if isinstance(p, ir.Image)
            )
        elif isinstance(part, ir.Text):
            if part.text:
                rest.append({"text": part.text})
        elif isinstance(part, (ir.Image, ir.File)):
            rest.append(_media_part(part, req))
    return [p for p in responses + result_media + rest if p]


def _function_response(
    result: ir.ToolResult, names: dict[str, str], gemini_ids: set[str]
) -> dict[str, Any]:
    name = result.name or names.get(result.call_id) or result.call_id
    text = "".join(p.text for p in result.content if isinstance(p, ir.Text))
    response: dict[str, Any] = {"name": name, "response": _response_object(text, result.is_error)}
    if result.call_id in gemini_ids:
        response = {"id": result.call_id, **response}
    return {"functionResponse": response}


def _response_object(text: str, is_error: bool) -> dict[str, Any]:
    if not is_error and text.lstrip().startswith("{"):
        try:
            value = _decode(text)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"error" if is_error else "output": text}


def _media_part(part: ir.Image | ir.File, req: ir.Request) -> dict[str, Any]:
    if part.data is not None:
        mime = part.media_type or ("image/png" if isinstance(part, ir.Image) else "application/pdf")
        return {"inlineData": {"mimeType": mime, "data": part.data}}
    url = part.url
    if url and url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return {"inlineData": {"mimeType": header.split(";")[0] or "image/png", "data": data}}
    if url:
        mime = part.media_type or mimetypes.guess_type(url)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    if "file_id" not in req.dropped:
        req.dropped.append("file_id")
    return {}


def _model_parts(parts: list[ir.Part], gemini_ids: set[str]) -> list[dict[str, Any]]:
    from_gemini_turn = any(
        isinstance(p, ir.ToolCall) and p.signature and p.signature != SKIP_SIGNATURE for p in parts
    )
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.Text):
            if part.text or part.signature:
                out.append(_signed({"text": part.text}, part.signature))
        elif isinstance(part, ir.Thinking):
            if part.origin == NAME and not part.redacted and (part.text or part.signature):
                out.append(_signed({"text": part.text, "thought": True}, part.signature))
        elif isinstance(part, ir.ToolCall):
            call: dict[str, Any] = {"name": part.name, "args": _arguments(part.arguments)}
            if from_gemini_turn and not part.id.startswith(_SYNTHETIC_ID):
                call = {"id": part.id, **call}
                gemini_ids.add(part.id)
            out.append(_signed({"functionCall": call}, part.signature))
    calls = [p for p in out if "functionCall" in p]
    if calls and not any("thoughtSignature" in p for p in calls):
        calls[0]["thoughtSignature"] = SKIP_SIGNATURE
    return out


def _declaration(tool: ir.Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    parameters = to_gemini(tool.parameters) if tool.parameters else {}
    # Gemini rejects an OBJECT without properties; a tool without arguments sends none.
    if parameters.get("properties") or parameters.get("type") not in (None, "object"):
        declaration["parameters"] = parameters
    return declaration


def _tool_config(choice: ir.ToolChoice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.name]}}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice.mode]
    return {"functionCallingConfig": {"mode": mode}}


def _generation_config(req: ir.Request) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in (
        ("maxOutputTokens", req.max_tokens),
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
        ("seed", req.seed),
    ):
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.output is not None and req.output.kind != "text":
        config["responseMimeType"] = "application/json"
        if req.output.kind == "json_schema" and req.output.schema:
            config["responseSchema"] = to_gemini(req.output.schema, property_ordering=True)
    thinking = _thinking_config(req.reasoning, req.model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking_config(reasoning: ir.Reasoning | None, model: str) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    gemini3 = "gemini-3" in model
    config: dict[str, Any] = {}
    effort = (reasoning.effort or "").lower()
    if not reasoning.enabled or effort == "none":
        if gemini3:
            config["thinkingLevel"] = "LOW"
        else:
            config["thinkingBudget"] = 0
        return config
    if reasoning.budget_tokens is not None:
        config["thinkingBudget"] = reasoning.budget_tokens
    elif gemini3 and effort in _LEVEL_BY_EFFORT:
        config["thinkingLevel"] = _LEVEL_BY_EFFORT[effort]
    elif effort in _BUDGET_BY_EFFORT:
        config["thinkingBudget"] = _BUDGET_BY_EFFORT[effort]
    if reasoning.include_thoughts:
        config["includeThoughts"] = True
    return config
