"""Gemini: generateContent / streamGenerateContent (`?alt=sse`, else a JSON array) /
countTokens, and the Code Assist (`/v1internal:...`) variants wrapped in `{"response": ...}`."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .http import Request
from .replies import (
    Conversation,
    Image,
    InvalidRequest,
    Reply,
    ToolResult,
    ToolSpec,
    compact_result,
    decode_base64_image,
    short_hash,
    split_text,
)
from .wire import Context, DataSSE, Event, Framing, JsonArray, Wire, bearer, default_message

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "refusal": "SAFETY"}
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
SCHEMA_KEYS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "items",
    "minimum",
    "maximum",
}
SCHEMA_TYPES = {
    "TYPE_UNSPECIFIED",
    "STRING",
    "NUMBER",
    "INTEGER",
    "BOOLEAN",
    "ARRAY",
    "OBJECT",
    "NULL",
}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
DUMMY_SIGNATURES = {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def g(d: Any, key: str, default: Any = None) -> Any:
    """Read a field by its camelCase or snake_case name (the REST API accepts both)."""
    if not isinstance(d, dict):
        return default
    if key in d:
        return d[key]
    return d.get(snake(key), default)


def google_error(status: int, message: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message or default_message(status),
            "status": STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
        }
    }


def thought_signature(*parts: Any) -> str:
    return base64.b64encode(b"gsig:" + short_hash(*parts).encode()).decode()


def valid_signature(sig: Any) -> bool:
    if sig in DUMMY_SIGNATURES:
        return True
    try:
        return base64.b64decode(str(sig), validate=True).startswith(b"gsig:")
    except (binascii.Error, ValueError):
        return False


def check_schema(schema: Any, where: str) -> None:
    """Reject what the Gemini API rejects in `parameters` / `responseSchema`."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"Invalid JSON payload received. Expected an object at '{where}'.")
    for key, value in schema.items():
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
        if camel not in SCHEMA_KEYS:
            raise InvalidRequest(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
        if camel == "type":
            if not isinstance(value, str):
                raise InvalidRequest(
                    "Invalid JSON payload received. Proto field is not repeating, cannot start "
                    f"list. at '{where}.type'"
                )
            if value.upper() not in SCHEMA_TYPES:
                raise InvalidRequest(
                    f"Invalid value at '{where}.type' "
                    f'(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "{value}"'
                )
    for i, sub in enumerate((g(schema, "properties") or {}).values()):
        check_schema(sub, f"{where}.properties[{i}].value")
    if g(schema, "items") is not None:
        check_schema(g(schema, "items"), f"{where}.items")
    for i, sub in enumerate(g(schema, "anyOf") or []):
        check_schema(sub, f"{where}.any_of[{i}]")


def tool_result_text(response: Any) -> tuple[str, bool]:
    if isinstance(response, dict) and len(response) == 1:
        ((key, value),) = response.items()
        if key in ("output", "result", "content") and isinstance(value, str):
            return value, False
        if key == "error":
            return compact_result(value), True
    return compact_result(response), False


class Gemini(Wire):
    name = "gemini"
    call_prefix = "fc_"

    def authenticate(self, request: Request, api_key: str | None) -> bool:
        if api_key is None:
            return True
        if request.path.startswith("/v1internal"):
            return bearer(request) == api_key
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        return key == api_key

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        if status == 401 and message == default_message(401):
            message = "API key not valid. Please pass a valid API key."
        return google_error(status, message)

    def is_stream(self, ctx: Context) -> bool:
        return ctx.stream

    def framing(self, ctx: Context) -> Framing:
        if ctx.options.get("sse"):
            return DataSSE(done_marker=False, newline="\r\n")
        return JsonArray()

    def stream_error(self, status: int, message: str, seq: int) -> Event:
        return Event(google_error(status, message))

    def wrap(self, ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
        if ctx.options.get("code_assist"):
            return {"response": payload, "traceId": ctx.seed[:16]}
        return payload

    # ---- request ---------------------------------------------------------------------
    def request_body(self, ctx: Context) -> dict[str, Any]:
        """The GenerateContentRequest (unwrapped from Code Assist's envelope)."""
        if ctx.options.get("code_assist"):
            inner = ctx.body.get("request")
            if not isinstance(inner, dict):
                raise InvalidRequest("Invalid JSON payload received. Missing 'request'.")
            return inner
        return ctx.body

    def gemini3(self, conv: Conversation) -> bool:
        return "gemini-3" in conv.model

    def parse(self, ctx: Context) -> Conversation:
        body = self.request_body(ctx)
        conv = Conversation(model=ctx.model, seed=ctx.seed)
        system = g(body, "systemInstruction")
        if isinstance(system, str):
            system = {"parts": [{"text": system}]}
        if isinstance(system, dict):
            texts = [g(p, "text") for p in g(system, "parts") or [] if g(p, "text") is not None]
            if texts:
                conv.system.append("\n".join(texts))
                conv.count(*texts)
        self._parse_tools(body, conv)
        contents = g(body, "contents")
        if not isinstance(contents, list) or not contents:
            raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified\n")
        self._parse_contents(contents, conv)
        config = g(body, "generationConfig") or {}
        self._parse_config(config, conv)
        return conv

    def _parse_tools(self, body: dict[str, Any], conv: Conversation) -> None:
        for i, tool in enumerate(g(body, "tools") or []):
            for j, decl in enumerate(g(tool, "functionDeclarations") or []):
                where = f"tools[{i}].function_declarations[{j}]"
                name = g(decl, "name", "")
                if not FUNCTION_NAME.match(name):
                    raise InvalidRequest(
                        f"* GenerateContentRequest.{where}.name: Invalid function name. Must start "
                        "with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                        "underscores (_), dots (.), colons (:), or dashes (-), with a maximum "
                        "length of 64.\n"
                    )
                schema = g(decl, "parametersJsonSchema")
                if schema is None:
                    schema = g(decl, "parameters")
                    if schema is not None:
                        check_schema(schema, f"{where}.parameters")
                schema = schema or {"type": "object", "properties": {}}
                conv.tools.append(ToolSpec(name=name, schema=schema))
                conv.count(name, g(decl, "description"), schema)
        fcc = g(g(body, "toolConfig") or {}, "functionCallingConfig") or {}
        mode = str(g(fcc, "mode", "AUTO")).upper()
        allowed = g(fcc, "allowedFunctionNames") or []
        if mode == "ANY":
            conv.tool_choice = "required"
            if len(allowed) == 1:
                conv.tool_choice, conv.forced_tool = "tool", allowed[0]
        elif mode == "NONE":
            conv.tool_choice = "none"
        if allowed and conv.tool_choice != "none":
            conv.tools = [t for t in conv.tools if t.name in allowed]

    def _parse_contents(self, contents: list, conv: Conversation) -> None:
        last_calls = 0
        current_turn_start = 0
        for i, content in enumerate(contents):
            role = g(content, "role", "user")
            parts = g(content, "parts") or []
            if not parts:
                raise InvalidRequest(
                    f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                    "empty.\n"
                )
            if role not in ("user", "model", "function"):
                raise InvalidRequest("Please use a valid role: user, model.")
            for j, part in enumerate(parts):
                sig = g(part, "thoughtSignature")
                if sig is not None and not valid_signature(sig):
                    raise InvalidRequest(
                        f"Corrupted thought signature at contents[{i}].parts[{j}]."
                    )
            if role == "model":
                conv.user_text, conv.images, conv.tool_results = "", [], []
                last_calls = 0
                for part in parts:
                    if g(part, "functionCall") is not None:
                        last_calls += 1
                        fc = g(part, "functionCall")
                        conv.count(g(fc, "name"), g(fc, "args"))
                    elif g(part, "text"):
                        conv.count(g(part, "text"))
                continue
            responses = [g(p, "functionResponse") for p in parts if g(p, "functionResponse")]
            if responses and len(responses) != last_calls:
                raise InvalidRequest(
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn."
                )
            if any(g(p, "text") for p in parts) and not responses:
                current_turn_start = i
            last_calls = 0
            for j, part in enumerate(parts):
                self._user_part(part, conv, f"contents[{i}].parts[{j}]")
        if self.gemini3(conv):
            self._check_signatures(contents[current_turn_start:], current_turn_start)

    def _user_part(self, part: dict[str, Any], conv: Conversation, where: str) -> None:
        if g(part, "text") is not None and not g(part, "thought"):
            text = g(part, "text")
            conv.user_text = " ".join(t for t in [conv.user_text, text] if t)
            conv.count(text)
        elif g(part, "inlineData") is not None:
            blob = g(part, "inlineData")
            conv.images.append(
                decode_base64_image(g(blob, "mimeType"), g(blob, "data", ""), urlsafe=True)
            )
            conv.count_image()
        elif g(part, "fileData") is not None:
            blob = g(part, "fileData")
            conv.images.append(Image(media_type=g(blob, "mimeType"), url=g(blob, "fileUri")))
            conv.count_image()
        elif g(part, "functionResponse") is not None:
            fr = g(part, "functionResponse")
            text, is_error = tool_result_text(g(fr, "response"))
            images = []
            for sub in g(fr, "parts") or []:
                blob = g(sub, "inlineData")
                if blob is not None:
                    images.append(
                        decode_base64_image(g(blob, "mimeType"), g(blob, "data", ""), urlsafe=True)
                    )
            name = g(fr, "name") or g(fr, "id") or ""
            conv.tool_results.append(ToolResult(name, text, is_error=is_error, images=images))
            conv.count(text)

    def _check_signatures(self, contents: list, offset: int) -> None:
        """Gemini 3: each step of the current turn must echo its first call's signature."""
        for i, content in enumerate(contents):
            if g(content, "role") != "model":
                continue
            for part in g(content, "parts") or []:
                fc = g(part, "functionCall")
                if fc is None:
                    continue
                if g(part, "thoughtSignature") is None:
                    raise InvalidRequest(
                        "Function call is missing a thought_signature in functionCall parts. This "
                        "is required for tools to work correctly, and missing thought_signature "
                        "may lead to degraded model performance. Additional data, function call "
                        f"`default_api:{g(fc, 'name')}` , position {offset + i + 1}. Please refer "
                        "to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                        "details."
                    )
                break

    def _parse_config(self, config: dict[str, Any], conv: Conversation) -> None:
        mime = g(config, "responseMimeType")
        json_schema = g(config, "responseJsonSchema")
        if json_schema is None:
            json_schema = config.get("_responseJsonSchema")
        schema = g(config, "responseSchema")
        if schema is not None:
            check_schema(schema, "generation_config.response_schema")
        if (schema is not None or json_schema is not None) and mime != "application/json":
            raise InvalidRequest(
                "* GenerateContentRequest.generation_config.response_mime_type: must be "
                "application/json when response_schema is set.\n"
            )
        if json_schema is not None:
            conv.schema = json_schema
        elif schema is not None:
            conv.schema = schema
        elif mime == "application/json":
            conv.json_mode = True
        thinking = g(config, "thinkingConfig") or {}
        conv.reasoning = bool(g(thinking, "includeThoughts"))
        if g(config, "maxOutputTokens") is not None:
            conv.max_tokens = int(g(config, "maxOutputTokens"))
        conv.stop = list(g(config, "stopSequences") or [])

    def count_tokens(self, ctx: Context) -> dict[str, Any]:
        """models.countTokens: `{contents}` or `{generateContentRequest: {model, ...}}`
        (its `model` required, as `models/...`). Code Assist: `{request: {model, contents}}`
        as gemini-cli sends it, answered with `totalTokens` alone."""
        if ctx.options.get("code_assist"):
            return self._code_assist_count(ctx)
        body = ctx.body
        inner = g(body, "generateContentRequest")
        if inner is not None:
            if g(body, "contents") is not None:
                raise InvalidRequest(
                    "contents and generate_content_request are mutually exclusive."
                )
            if not isinstance(inner, dict):
                raise InvalidRequest("Invalid value at 'generate_content_request'.")
            model = g(inner, "model")
            if not isinstance(model, str) or not model.startswith("models/"):
                raise InvalidRequest(
                    "* GenerateContentRequest.model: unexpected model name format\n"
                )
            body = {k: v for k, v in inner.items() if k != "model"}
        else:
            unknown = sorted(set(body) - {"contents"})
            if unknown:
                raise InvalidRequest(
                    f'Invalid JSON payload received. Unknown name "{unknown[0]}": '
                    "Cannot find field."
                )
        conv = self.parse(Context(ctx.request, body, ctx.model, ctx.seed))
        return {
            "totalTokens": conv.input_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": conv.input_tokens}],
        }

    def _code_assist_count(self, ctx: Context) -> dict[str, Any]:
        request = ctx.body.get("request")
        unknown = sorted(set(ctx.body) - {"request"})
        if unknown or not isinstance(request, dict):
            name = unknown[0] if unknown else "request"
            raise InvalidRequest(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
            )
        unknown = sorted(set(request) - {"model", "contents"})
        if unknown:
            raise InvalidRequest(
                f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
                "'request': Cannot find field."
            )
        model = request.get("model")
        if not isinstance(model, str) or not model.startswith("models/"):
            raise InvalidRequest("* CountTokensRequest.model: unexpected model name format\n")
        for i, content in enumerate(request.get("contents") or []):
            for j, part in enumerate(g(content, "parts") or []):
                if g(part, "thought") is not None:
                    raise InvalidRequest(
                        f'Invalid JSON payload received. Unknown name "thought" at '
                        f"'request.contents[{i}].parts[{j}]': Cannot find field."
                    )
        body = {"contents": request.get("contents")}
        conv = self.parse(Context(ctx.request, body, model.removeprefix("models/"), ctx.seed))
        return {"totalTokens": conv.input_tokens}

    # ---- response --------------------------------------------------------------------
    def _signed(self, reply: Reply, conv: Conversation) -> bool:
        return reply.thinking is not None or self.gemini3(conv)

    def _usage(self, reply: Reply, final: bool = True) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "promptTokenCount": reply.input_tokens,
            "totalTokenCount": reply.total_tokens if final else reply.input_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
        }
        if final:
            usage["candidatesTokenCount"] = reply.text_tokens
            if reply.reasoning_tokens:
                usage["thoughtsTokenCount"] = reply.reasoning_tokens
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
        return usage

    def _calls(self, reply: Reply, conv: Conversation) -> list[dict[str, Any]]:
        parts = []
        for i, call in enumerate(reply.tool_calls):
            fc: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if self.gemini3(conv):
                fc["id"] = call.id
            part: dict[str, Any] = {"functionCall": fc}
            if i == 0 and self._signed(reply, conv):
                part["thoughtSignature"] = thought_signature("call", call.id)
            parts.append(part)
        return parts

    def _chunk(
        self, ctx: Context, parts: list | None, reply: Reply, finish: str | None, final: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if parts is not None:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        return self.wrap(
            ctx,
            {
                "candidates": [candidate],
                "usageMetadata": self._usage(reply, final),
                "modelVersion": ctx.model,
                "responseId": ctx.seed[:22],
            },
        )

    def render(self, reply: Reply, conv: Conversation, ctx: Context) -> dict[str, Any]:
        finish = FINISH[reply.finish]
        if reply.finish == "refusal":
            return self._chunk(ctx, None, reply, finish, True)
        parts: list[dict[str, Any]] = []
        if reply.thinking is not None:
            parts.append({"text": reply.thinking, "thought": True})
        if reply.text or not reply.tool_calls:
            part: dict[str, Any] = {"text": reply.text}
            if self._signed(reply, conv) and not reply.tool_calls:
                part["thoughtSignature"] = thought_signature("text", ctx.seed)
            parts.append(part)
        parts += self._calls(reply, conv)
        return self._chunk(ctx, parts, reply, finish, True)

    def stream(self, reply: Reply, conv: Conversation, ctx: Context) -> list[Event]:
        finish = FINISH[reply.finish]
        if reply.finish == "refusal":
            return [Event(self._chunk(ctx, None, reply, finish, True))]
        chunks: list[list[dict[str, Any]]] = []
        for piece in split_text(reply.thinking or ""):
            chunks.append([{"text": piece, "thought": True}])
        for piece in split_text(reply.text):
            chunks.append([{"text": piece}])
        if reply.tool_calls:
            chunks.append(self._calls(reply, conv))
        elif self._signed(reply, conv):
            # Like Gemini 3: the signature arrives on an empty text part at the end.
            chunks.append([{"text": "", "thoughtSignature": thought_signature("text", ctx.seed)}])
        if not chunks:
            chunks.append([{"text": ""}])
        last = len(chunks) - 1
        return [
            Event(self._chunk(ctx, parts, reply, finish if i == last else None, i == last))
            for i, parts in enumerate(chunks)
        ]
