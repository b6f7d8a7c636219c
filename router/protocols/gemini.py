"""Google Gemini `generateContent` / `streamGenerateContent` <-> ir.

Decisions worth knowing:

* Tool-call ids. Gemini 2.x sends none, Gemini 3 sends ids that must be echoed. In a
  client request, a `functionCall` without id gets `gcall_<n>` (n counts calls in the
  request, so the same history always gets the same ids); a `functionResponse` without id
  takes the id of the earliest unanswered call of the same name. In upstream responses a
  call without id gets a random `gcall_<hex>` so ids stay unique across turns. Upstream,
  an id goes back on `functionCall`/`functionResponse` only when Gemini made it: the call
  sits in a model turn carrying a real thought signature (so it came from Gemini) and the
  id is not one of our `gcall_` ids. Any other id is left out, because endpoints that never
  issue ids reject the field ("Unknown name \"id\""); those pair calls and responses by
  order and name.
* Thought signatures. A `functionCall`'s `thoughtSignature` travels in
  `ToolCall.signature`, a text part's in `Text.signature` (streams: `TextDelta("",
  signature=...)` when it arrives on an empty text part), a thought part's in
  `Thinking.signature` with origin "gemini". Gemini 3 validates the signature on the first
  `functionCall` of each model turn: when no call in a model turn has one (the history
  came from another provider, or from a client that cannot carry signatures and whose
  call the server's signature cache no longer knows), the first call gets Google's
  documented bypass value `skip_thought_signature_validator`.
* Other providers' signatures. A Gemini client gets another provider's reasoning
  signature on the thought part that carries that reasoning (as Gemini-origin thought
  signatures are placed): `thoughtSignature` is base64 of the UTF-8 text
  "<origin>:<signature>" ("<origin>:redacted:<data>" for Anthropic redacted thinking).
  Only when the client asked to see thoughts (`includeThoughts`): the signed text must
  come back with its signature, and hidden text cannot. Parsing a request, a
  `thoughtSignature` that decodes to printable ASCII starting with another protocol's
  name and ":" (a Gemini signature is opaque binary) becomes that provider's `Thinking`,
  taking the text of the unsigned thought parts right before it (a stream delivers the
  text first and the signature on an empty thought part after it); it is removed from
  the part it sat on, so a Gemini upstream never receives it.
* Tool results. `functionResponse.response` is the result text when that is a JSON
  object, else `{"output": text}` (`{"error": text}` when `is_error`); parsing inverts
  this. Images in a result follow as `inlineData` parts in the same user turn (accepted by
  every model, unlike Gemini 3's `functionResponse.parts`); parsing reads them back as
  user images, and `functionResponse.parts` images as result images.
* Schemas. Tool parameters go out reduced to Gemini's `Schema` in `parameters`, and
  structured output reduced in `responseSchema` (with `propertyOrdering`), not as
  `parametersJsonSchema`/`responseJsonSchema`: the reduced form is accepted by every
  Gemini model and endpoint (API, Vertex, Code Assist), the full forms only by newer ones.
  Incoming `parametersJsonSchema`/`responseJsonSchema` are taken as they are; incoming
  Gemini `Schema`s are converted back to JSON Schema.
* Reasoning. Explicit `budget_tokens` -> `thinkingBudget`. An effort -> `thinkingLevel`
  for models named `gemini-3*` (minimal/low -> LOW, medium -> MEDIUM, high/xhigh/max ->
  HIGH), else a budget (minimal 512, low 2048, medium 8192, high+ 24576). Off -> budget 0
  (`thinkingLevel` LOW on Gemini 3, which cannot switch thinking off).
* `safetySettings`, `cachedContent` and penalties cannot travel and are reported in
  `Request.dropped`. Image URLs are not fetched by Gemini (`ACCEPTS_IMAGE_URLS = False`);
  a URL that reaches the builder anyway is sent as `fileData`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import mimetypes
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocols import ir
from router.protocols.gemini_schema import from_gemini, to_gemini
from router.protocols.sse import SSEParser, data_line

NAME = "gemini"
ACCEPTS_IMAGE_URLS = False
SKIP_SIGNATURE = "skip_thought_signature_validator"

_decode = msgspec.json.decode
_encode = msgspec.json.encode

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

_FINISH_FROM_GEMINI: dict[str, ir.FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}
_FINISH_TO_GEMINI = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "error": "OTHER",
}


def _invalid(message: str) -> ir.Error:
    return ir.Error(400, "invalid_request", message)


_SYNTHETIC_ID = "gcall_"
_REDACTED = "redacted:"
_FOREIGN = tuple(protocol for protocol in ir.PROTOCOLS if protocol != NAME)


def _random_call_id() -> str:
    return _SYNTHETIC_ID + uuid.uuid4().hex[:24]


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


# --- reasoning signatures from other providers -------------------------------------


def wrap_signature(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The `thoughtSignature` a Gemini client sees for reasoning made by `origin`: Gemini's
    own unchanged, another protocol's as base64 of "<origin>:[redacted:]<value>", none for
    reasoning of unknown origin (it could not be told apart from Gemini's own)."""
    if not value:
        return None
    if origin == NAME:
        return value
    if origin not in _FOREIGN:
        return None
    text = f"{origin}:{_REDACTED if redacted else ''}{value}"
    return base64.b64encode(text.encode()).decode()


def unwrap_signature(value: str) -> tuple[str, str, bool] | None:
    """(signature or redacted data, origin, redacted) of a `thoughtSignature` that
    `wrap_signature` made for another protocol, in standard or URL-safe base64; None for
    anything else (Gemini's own signatures are opaque binary, never printable ASCII
    starting with a protocol name and ":")."""
    try:
        raw = base64.b64decode(standard_base64(value), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.isascii():
        return None
    text = raw.decode("ascii")
    origin, sep, rest = text.partition(":")
    if not sep or origin not in _FOREIGN or not rest or not text.isprintable():
        return None
    if rest.startswith(_REDACTED) and len(rest) > len(_REDACTED):
        return rest.removeprefix(_REDACTED), origin, True
    return rest, origin, False


def _foreign_thinking(
    kept: list[ir.Part], part: dict[str, Any], foreign: tuple[str, str, bool]
) -> ir.Thinking:
    """Another provider's thinking, its text gathered from the unsigned thought parts just
    before the signature (stream form) and from the signed part itself (JSON form)."""
    value, origin, redacted = foreign
    if redacted:
        return ir.Thinking(redacted=True, data=value, origin=origin)
    texts: list[str] = []
    while kept and isinstance(last := kept[-1], ir.Thinking) and _unsigned_thought(last):
        texts.insert(0, last.text)
        kept.pop()
    if part.get("thought") is True and isinstance(part.get("text"), str):
        texts.append(part["text"])
    return ir.Thinking(text="".join(texts), signature=value, origin=origin)


def _unsigned_thought(part: ir.Thinking) -> bool:
    return part.origin == NAME and not part.redacted and not part.signature


# --- request: client body -> ir ----------------------------------------------------
#
# Protobuf's JSON mapping accepts camelCase and snake_case field names, and clients use
# both (google-genai itself sends `mime_type`, `file_uri`, `include_thoughts`, `any_of`):
# every read goes through `_get`, which tries both.


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
        foreign = unwrap_signature(signature) if signature else None
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
            text = part["text"] if isinstance(part["text"], str) else ""
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
        for extra in response.get("parts") or []:
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


def standard_base64(data: str) -> str:
    """Gemini's JSON bytes may be URL-safe and unpadded (google-genai sends them so);
    the intermediate form, like every other protocol, carries standard padded base64."""
    data = data.replace("-", "+").replace("_", "/")
    return data + "=" * (-len(data) % 4)


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


# --- request: ir -> upstream body --------------------------------------------------


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


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature:
        part["thoughtSignature"] = signature
    return part


def _arguments(arguments: str) -> dict[str, Any]:
    """Tool arguments as the object Gemini wants; unparsable text (e.g. cut off by a token
    limit) becomes {}."""
    try:
        value = _decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


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


# --- response bodies ---------------------------------------------------------------


def _unwrap(body: Any) -> Any:
    """Code Assist wraps each response as {"response": {...}, "traceId": ...}."""
    if (
        isinstance(body, dict)
        and "candidates" not in body
        and isinstance(body.get("response"), dict)
    ):
        return body["response"]
    return body


def parse_response(body: dict[str, Any]) -> ir.Response:
    body = _unwrap(body)
    if not isinstance(body, dict):
        raise ir.Error(502, "bad_gateway", "upstream response is not a JSON object")
    if isinstance(body.get("error"), dict):
        raise _error_from_object(body["error"], 502)
    resp = ir.Response(
        id=_str(body, "responseId") or "resp_" + uuid.uuid4().hex[:24],
        model=_str(body, "modelVersion") or "",
        usage=_usage_from(body.get("usageMetadata")),
        created=int(time.time()),
    )
    candidate = _first_candidate(body)
    content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
    for part in content.get("parts") or []:
        parsed = _response_part(part) if isinstance(part, dict) else None
        if parsed is not None:
            resp.parts.append(parsed)
    has_calls = any(isinstance(p, ir.ToolCall) for p in resp.parts)
    resp.finish = _finish_from(candidate.get("finishReason"), has_calls, body)
    return resp


def _first_candidate(body: dict[str, Any]) -> dict[str, Any]:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    return {}


def _response_part(part: dict[str, Any]) -> ir.Part | None:
    signature = _str(part, "thoughtSignature")
    call = part.get("functionCall")
    if isinstance(call, dict):
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        return ir.ToolCall(
            _str(call, "id") or _random_call_id(),
            str(call.get("name", "")),
            _encode(args).decode(),
            signature=signature,
        )
    if isinstance(part.get("text"), str):
        if part.get("thought") is True:
            return ir.Thinking(text=part["text"], signature=signature, origin=NAME)
        return ir.Text(part["text"], signature=signature)
    if isinstance(part.get("inlineData"), dict) and isinstance(part["inlineData"].get("data"), str):
        return ir.Image(
            media_type=_str(part["inlineData"], "mimeType"),
            data=standard_base64(part["inlineData"]["data"]),
        )
    if signature:
        return ir.Text("", signature=signature)
    return None


def _blocked(body: dict[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _finish_from(reason: Any, has_calls: bool, body: dict[str, Any]) -> ir.FinishReason:
    if reason is None and _blocked(body):
        return "content_filter"
    finish = _FINISH_FROM_GEMINI.get(str(reason), "stop")
    if has_calls and finish == "stop":
        return "tool_calls"
    return finish


def _usage_from(usage: Any) -> ir.Usage:
    if not isinstance(usage, dict):
        return ir.Usage()
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    return ir.Usage(
        input_tokens=int(usage.get("promptTokenCount") or 0)
        + int(usage.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(usage.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(usage.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _usage_body(usage: ir.Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(usage.output_tokens - usage.reasoning_tokens, 0),
        "totalTokenCount": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        body["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cached_tokens:
        body["cachedContentTokenCount"] = usage.cached_tokens
    return body


def build_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    show_thoughts = req.reasoning is not None and req.reasoning.include_thoughts
    parts = [p for p in (_client_part(part, show_thoughts) for part in resp.parts) if p]
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts or [{"text": ""}]},
        "finishReason": _FINISH_TO_GEMINI[resp.finish],
        "index": 0,
    }
    return {
        "candidates": [candidate],
        "usageMetadata": _usage_body(resp.usage),
        "modelVersion": resp.model or req.model,
        "responseId": resp.id,
    }


def _client_part(part: ir.Part, show_thoughts: bool) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return _signed({"text": part.text}, part.signature) if part.text or part.signature else None
    if isinstance(part, ir.Thinking):
        signature = _carried_signature(part, show_thoughts)
        text = part.text if show_thoughts and not part.redacted else ""
        return _signed({"text": text, "thought": True}, signature) if text or signature else None
    if isinstance(part, ir.ToolCall):
        call = {"id": part.id, "name": part.name, "args": _arguments(part.arguments)}
        return _signed({"functionCall": call}, part.signature)
    if isinstance(part, ir.Image) and part.data is not None:
        return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
    return None


def _carried_signature(part: ir.Thinking, show_thoughts: bool) -> str | None:
    """Another provider's signature only goes with its text (see the module notes)."""
    if part.origin != NAME and not show_thoughts:
        return None
    value = part.data if part.redacted else part.signature
    return wrap_signature(value, part.origin, part.redacted)


# --- errors and model lists --------------------------------------------------------

_STATUS_BY_KIND = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "unprocessable": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "bad_gateway": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
}
_KIND_BY_STATUS = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "INTERNAL": "api_error",
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "timeout",
}


def error_body(err: ir.Error) -> dict[str, Any]:
    status = _STATUS_BY_KIND.get(err.kind) or (
        "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT"
    )
    return {"error": {"code": err.status, "message": err.message, "status": status}}


def parse_error(status: int, body: bytes) -> ir.Error:
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _error_from_object(error, status)
    text = body.decode("utf-8", "replace").strip()[:1000] if body else ""
    return ir.Error(status, ir.error_kind_for_status(status), text or f"upstream HTTP {status}")


def _error_from_object(error: dict[str, Any], status: int) -> ir.Error:
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    kind = _KIND_BY_STATUS.get(str(error.get("status")), ir.error_kind_for_status(status))
    message = _str(error, "message") or f"upstream HTTP {status}"
    return ir.Error(status, kind, message, retry_after=_retry_delay(error.get("details")))


def _retry_delay(details: Any) -> float | None:
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": f"models/{model}",
                "baseModelId": model,
                "version": "001",
                "displayName": model,
                "description": model,
                "supportedGenerationMethods": [
                    "generateContent",
                    "streamGenerateContent",
                    "countTokens",
                ],
            }
            for model in models
        ]
    }


# --- models.countTokens ---------------------------------------------------------------

_COUNT_REQUEST_KEYS = ("contents", "systemInstruction", "tools", "toolConfig", "generationConfig")
_COUNTED_KEYS = ("contents", "systemInstruction", "tools")


def parse_count_request(body: dict[str, Any]) -> ir.Request:
    """A client's `countTokens` body: `{generateContentRequest: {...}}`, or the contents
    (with, as Vertex clients send them, systemInstruction and tools) at the top level."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    inner = _get(body, "generateContentRequest")
    if isinstance(inner, dict):
        return parse_request({k: v for k, v in inner.items() if _camel(k) != "model"})
    request = {k: v for k, v in body.items() if _camel(k) in _COUNT_REQUEST_KEYS}
    request.setdefault("contents", [])
    return parse_request(request)


def build_count_request(req: ir.Request) -> dict[str, Any]:
    """The `models.countTokens` body for `req`: a `generateContentRequest` (whose `model`
    the API requires), so the count covers the system instruction and the function
    declarations as well as the contents."""
    body = build_request(req)
    inner: dict[str, Any] = {"model": "models/" + req.model.removeprefix("models/")}
    inner.update((key, body[key]) for key in _COUNTED_KEYS if key in body)
    return {"generateContentRequest": inner}


def count_from(body: Any) -> int:
    """`totalTokens` of a countTokens answer (proto3 JSON leaves a zero out)."""
    total = body.get("totalTokens", 0) if isinstance(body, dict) else None
    if not isinstance(total, int) or isinstance(total, bool):
        raise ir.Error(502, "bad_gateway", "countTokens answered without totalTokens")
    return total


def count_body(tokens: int) -> dict[str, Any]:
    """The countTokens answer for a Gemini client."""
    return {"totalTokens": tokens}


# --- stream decoding: upstream Gemini stream -> ir events --------------------------


class _JsonArraySplitter:
    """Splits the streamed JSON array form (no `alt=sse`) into top-level objects,
    whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: bytes) -> list[bytes]:
        objects: list[bytes] = []
        for byte in chunk:
            if self._depth == 0 and byte != ord("{"):
                continue  # `[`, `,`, `]` and whitespace between elements
            self._buffer.append(byte)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == ord("\\"):
                    self._escaped = True
                elif byte == ord('"'):
                    self._in_string = False
            elif byte == ord('"'):
                self._in_string = True
            elif byte in (ord("{"), ord("[")):
                self._depth += 1
            elif byte in (ord("}"), ord("]")):
                self._depth -= 1
                if self._depth == 0:
                    objects.append(bytes(self._buffer))
                    self._buffer.clear()
        return objects


class StreamDecoder:
    """Gemini streams end with the chunk holding `finishReason` and nothing after it, so
    `Finish` is emitted at `close()` (usage from the last `usageMetadata` seen)."""

    def __init__(self) -> None:
        self._mode: str | None = None
        self._sse = SSEParser()
        self._array = _JsonArraySplitter()
        self._out: list[ir.Event] = []
        self._started = False
        self._ended = False
        self._finish: ir.FinishReason | None = None
        self._usage = ir.Usage()
        self._saw_call = False
        self._saw_content = False
        self._block: str | None = None
        self._thinking_signed = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        if self._mode is None:
            stripped = chunk.lstrip()
            if not stripped:
                return []
            self._mode = "array" if stripped[:1] == b"[" else "sse"
        if self._mode == "array":
            for raw in self._array.feed(chunk):
                self._chunk(raw)
        else:
            for event in self._sse.feed(chunk):
                self._chunk(event.data)
        return self._take()

    def close(self) -> list[ir.Event]:
        if self._mode == "sse":
            for event in self._sse.close():
                self._chunk(event.data)
        if not self._ended:
            if self._finish is None and not self._saw_content:
                self._end(ir.Error(502, "bad_gateway", "upstream stream ended without content"))
            else:
                self._ensure_started({})
                reason = self._finish or "stop"
                if reason == "stop" and self._saw_call:
                    reason = "tool_calls"
                self._end(ir.Finish(reason, self._usage))
        return self._take()

    def _take(self) -> list[ir.Event]:
        out, self._out = self._out, []
        return out

    def _end(self, event: ir.Event) -> None:
        self._ended = True
        self._out.append(event)

    def _chunk(self, raw: str | bytes) -> None:
        if self._ended or not raw or raw == "[DONE]":
            return
        try:
            payload = _unwrap(_decode(raw))
        except msgspec.DecodeError:
            self._end(ir.Error(502, "bad_gateway", "upstream sent invalid JSON in its stream"))
            return
        if not isinstance(payload, dict):
            return
        if isinstance(payload.get("error"), dict):
            self._end(_error_from_object(payload["error"], 500))
            return
        self._ensure_started(payload)
        if isinstance(payload.get("usageMetadata"), dict):
            self._usage = _usage_from(payload["usageMetadata"])
        candidate = _first_candidate(payload)
        content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
        for part in content.get("parts") or []:
            if isinstance(part, dict):
                self._part(part)
        reason = candidate.get("finishReason")
        if reason is not None:
            self._finish = _finish_from(reason, False, payload)
        elif not candidate and _blocked(payload):
            self._finish = "content_filter"

    def _ensure_started(self, payload: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        usage = payload.get("usageMetadata")
        prompt = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        self._out.append(
            ir.Start(
                id=_str(payload, "responseId") or "resp_" + uuid.uuid4().hex[:24],
                model=_str(payload, "modelVersion") or "",
                usage=ir.Usage(input_tokens=int(prompt)) if isinstance(prompt, int) else None,
                created=int(time.time()),
            )
        )

    def _part(self, part: dict[str, Any]) -> None:
        signature = _str(part, "thoughtSignature")
        call = part.get("functionCall")
        if isinstance(call, dict):
            self._call(call, signature)
        elif isinstance(part.get("text"), str):
            if part.get("thought") is True:
                self._thought(part["text"], signature)
            elif part["text"] or signature:
                self._saw_content = True
                self._block = "text"
                self._out.append(ir.TextDelta(part["text"], signature=signature))
        elif signature:
            self._saw_content = True
            self._block = "text"
            self._out.append(ir.TextDelta("", signature=signature))

    def _thought(self, text: str, signature: str | None) -> None:
        if not text and not signature:
            return
        self._saw_content = True
        if self._block == "thinking" and self._thinking_signed:
            self._out.append(ir.BlockBreak())
            self._block = None
        if text or self._block != "thinking":
            self._out.append(ir.ThinkingDelta(text, origin=NAME))
            if self._block != "thinking":
                self._thinking_signed = False
            self._block = "thinking"
        if signature:
            self._out.append(ir.ThinkingSignature(signature, origin=NAME))
            self._thinking_signed = True

    def _call(self, call: dict[str, Any], signature: str | None) -> None:
        self._saw_content = self._saw_call = True
        self._block = "tool"
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        self._out.append(
            ir.ToolCallStart(
                _str(call, "id") or _random_call_id(),
                str(call.get("name", "")),
                signature=signature,
            )
        )
        self._out.append(ir.ToolCallDelta(_encode(args).decode()))


# --- stream encoding: ir events -> client Gemini stream -----------------------------


@dataclass(slots=True)
class _PendingCall:
    id: str
    name: str
    signature: str | None
    arguments: list[str] = field(default_factory=list)

    def part(self) -> dict[str, Any]:
        call = {"id": self.id, "name": self.name, "args": _arguments("".join(self.arguments))}
        return _signed({"functionCall": call}, self.signature)


class StreamEncoder:
    """SSE (`sse=True`, for `alt=sse`): one `data: <chunk>` event per chunk. Otherwise
    one JSON array streamed element by element. Tool calls are buffered until their
    block ends, because Gemini sends each `functionCall` part whole."""

    def __init__(self, req: ir.Request, sse: bool = True, **options: Any) -> None:
        self.content_type = "text/event-stream" if sse else "application/json"
        self._sse = sse
        self._req = req
        self._show_thoughts = req.reasoning is not None and req.reasoning.include_thoughts
        self._id = ""
        self._model = req.model
        self._opened = False  # array mode: "[" written
        self._ended = False
        self._call: _PendingCall | None = None
        self._prompt_tokens: int | None = None

    def encode(self, event: ir.Event) -> bytes:
        if self._ended:
            return b""
        if isinstance(event, ir.Start):
            self._id = event.id
            self._model = event.model or self._req.model
            if event.usage is not None:
                self._prompt_tokens = event.usage.input_tokens
            return b""
        if isinstance(event, ir.Finish):
            return self._finish(event)
        if isinstance(event, ir.Error):
            self._ended = True
            self._call = None
            return self._write(error_body(event), last=True)
        if isinstance(event, ir.ToolCallStart):
            flushed = self._flush_call()
            self._call = _PendingCall(event.id, event.name, event.signature)
            return flushed
        if isinstance(event, ir.ToolCallDelta):
            if self._call is not None:
                self._call.arguments.append(event.arguments)
            return b""
        parts = self._content_parts(event)
        flushed = self._flush_call()
        return flushed + (self._write(self._chunk(parts)) if parts else b"")

    def _content_parts(self, event: ir.Event) -> list[dict[str, Any]]:
        if isinstance(event, ir.TextDelta):
            if event.text or event.signature:
                return [_signed({"text": event.text}, event.signature)]
        elif isinstance(event, ir.ThinkingDelta):
            if event.text and self._show_thoughts:
                return [{"text": event.text, "thought": True}]
        elif isinstance(event, ir.ThinkingSignature):
            return self._signature_part(event.signature, event.origin)
        elif isinstance(event, ir.RedactedThinking):
            return self._signature_part(event.data, event.origin, redacted=True)
        return []

    def _signature_part(
        self, value: str, origin: str | None, redacted: bool = False
    ) -> list[dict[str, Any]]:
        """A thought part with the signature; another provider's only with its text shown."""
        if origin != NAME and not self._show_thoughts:
            return []
        signature = wrap_signature(value, origin, redacted)
        return [{"text": "", "thought": True, "thoughtSignature": signature}] if signature else []

    def _flush_call(self) -> bytes:
        call, self._call = self._call, None
        return self._write(self._chunk([call.part()])) if call else b""

    def _finish(self, event: ir.Finish) -> bytes:
        parts = [self._call.part()] if self._call else [{"text": ""}]
        self._call = None
        self._ended = True
        chunk = self._chunk(parts, finish=_FINISH_TO_GEMINI[event.reason])
        chunk["usageMetadata"] = _usage_body(event.usage)
        return self._write(chunk, last=True)

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": self._model}
        if self._prompt_tokens is not None:  # like Gemini: usage so far on every chunk
            chunk["usageMetadata"] = {
                "promptTokenCount": self._prompt_tokens,
                "totalTokenCount": self._prompt_tokens,
            }
        if self._id:
            chunk["responseId"] = self._id
        return chunk

    def _write(self, chunk: dict[str, Any], last: bool = False) -> bytes:
        if self._sse:
            return data_line(chunk)
        prefix = b"," if self._opened else b"["
        self._opened = True
        return prefix + _encode(chunk) + (b"]" if last else b"\n")
