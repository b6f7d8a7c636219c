"""OpenAI Chat Completions: POST /v1/chat/completions (JSON or `data:` SSE + `[DONE]`)."""

from __future__ import annotations

import re
from typing import Any

from .http import Request
from .replies import (
    Conversation,
    InvalidRequest,
    Reply,
    ToolResult,
    ToolSpec,
    compact_result,
    decode_data_url,
    split_text,
)
from .wire import Context, DataSSE, Event, Framing, Wire, bearer, default_message

FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "refusal": "content_filter",
}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# OpenAI's own rules, as its API answers them: models without reasoning refuse every
# reasoning setting; `user` is at most 64 characters.
NO_REASONING_MODELS = ("gpt-4", "gpt-3.5", "chatgpt-")
USER_MAX = 64


def takes_no_reasoning(model: str) -> bool:
    return model.rsplit("/", 1)[-1].lower().startswith(NO_REASONING_MODELS)


def check_user(body: dict[str, Any]) -> None:
    user = body.get("user")
    if isinstance(user, str) and len(user) > USER_MAX:
        raise InvalidRequest(
            f"Invalid 'user': string too long. Expected a string with maximum length "
            f"{USER_MAX}, but got a string with length {len(user)} instead.",
            param="user",
        )


def error_type(status: int) -> tuple[str, str | None]:
    return {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("permission_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        408: ("timeout", None),
        409: ("invalid_request_error", "conflict"),
        413: ("invalid_request_error", "request_too_large"),
        422: ("invalid_request_error", None),
        429: ("requests", "rate_limit_exceeded"),
    }.get(status, ("server_error", None))


def openai_error(status: int, message: str | None = None, param: str | None = None) -> dict:
    etype, code = error_type(status)
    return {
        "error": {
            "message": message or default_message(status),
            "type": etype,
            "param": param,
            "code": code,
        }
    }


def content_texts(content: Any, where: str) -> tuple[list[str], list[Any]]:
    """Texts and image parts of a Chat message content (string or list of parts)."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}.content'.", param=f"{where}.content")
    texts: list[str] = []
    images: list[Any] = []
    for j, part in enumerate(content):
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype in ("text", "refusal"):
            texts.append(part.get("text") or part.get("refusal") or "")
        elif ptype == "image_url":
            images.append(part)
        elif ptype in ("input_audio", "file"):
            texts.append(f"[{ptype}]")
        else:
            raise InvalidRequest(
                f"Invalid value: '{ptype}'. Supported values are: 'text', 'image_url', "
                "'input_audio', 'refusal', and 'file'.",
                param=f"{where}.content[{j}].type",
            )
    return texts, images


class OpenAIChat(Wire):
    name = "openai-chat"
    call_prefix = "call_"

    def authenticate(self, request: Request, api_key: str | None) -> bool:
        return api_key is None or bearer(request) == api_key

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        if status == 401 and message == default_message(401):
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        return openai_error(status, message, param)

    def framing(self, ctx: Context) -> Framing:
        return DataSSE(done_marker=True)

    def stream_error(self, status: int, message: str, seq: int) -> Event:
        return Event(openai_error(status, message))

    # ---- request ---------------------------------------------------------------------
    def parse(self, ctx: Context) -> Conversation:
        body = ctx.body
        if not body.get("model"):
            raise InvalidRequest("you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest(
                "[] is too short - 'messages'"
                if messages == []
                else "'messages' is a required property",
                param="messages",
            )
        conv = Conversation(model=ctx.model, seed=ctx.seed)
        names: dict[str, str] = {}
        pending: list[str] = []
        for i, msg in enumerate(messages):
            where = f"messages.[{i}]"
            role = msg.get("role") if isinstance(msg, dict) else None
            if role != "tool" and pending:
                raise InvalidRequest(
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                    f"response messages: {', '.join(pending)}",
                    param=f"{where}.role",
                )
            texts, images = content_texts(msg.get("content"), where) if role else ([], [])
            conv.count(*texts)
            if role in ("system", "developer"):
                if images:
                    raise InvalidRequest(
                        f"Image URLs are only allowed for messages with role 'user', but this "
                        f"message with role '{role}' contains an image URL.",
                        param=where,
                    )
                conv.system.append("\n".join(texts))
            elif role == "user":
                conv.user_text = " ".join(t for t in [conv.user_text, *texts] if t)
                for part in images:
                    url = (part.get("image_url") or {}).get("url", "")
                    conv.images.append(decode_data_url(url))
                    conv.count_image()
            elif role == "assistant":
                conv.user_text, conv.images, conv.tool_results = "", [], []
                for call in msg.get("tool_calls") or []:
                    fn = call.get("function") or {}
                    names[call.get("id", "")] = fn.get("name", "")
                    pending.append(call.get("id", ""))
                    conv.count(fn.get("name"), fn.get("arguments"))
                if msg.get("reasoning_content"):
                    conv.count(msg["reasoning_content"])
            elif role == "tool":
                call_id = msg.get("tool_call_id")
                if call_id not in names:
                    raise InvalidRequest(
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.",
                        param=f"{where}.role",
                    )
                if images:
                    raise InvalidRequest(
                        "Image URLs are only allowed for messages with role 'user', but this "
                        "message with role 'tool' contains an image URL.",
                        param=where,
                    )
                if call_id in pending:
                    pending.remove(call_id)
                content = msg.get("content")
                text = compact_result(content) if not isinstance(content, list) else "".join(texts)
                conv.tool_results.append(ToolResult(name=names[call_id] or call_id, content=text))
            else:
                raise InvalidRequest(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    "'user', 'tool', 'function', and 'developer'.",
                    param=f"{where}.role",
                )
        if pending:
            raise InvalidRequest(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}",
                param="messages",
            )
        self._parse_tools(body, conv)
        self._parse_format(body, conv, messages)
        effort = body.get("reasoning_effort")
        if effort is not None and takes_no_reasoning(ctx.model):
            raise InvalidRequest(
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                param="reasoning_effort",
            )
        check_user(body)
        conv.reasoning = effort is not None and effort != "none"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        conv.max_tokens = int(limit) if limit is not None else None
        stop = body.get("stop")
        conv.stop = [stop] if isinstance(stop, str) else list(stop or [])
        return conv

    def _parse_tools(self, body: dict[str, Any], conv: Conversation) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            if tool.get("type") != "function":
                continue
            fn = tool.get("function") or {}
            name = fn.get("name", "")
            if not TOOL_NAME.match(name):
                raise InvalidRequest(
                    f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    param=f"tools[{i}].function.name",
                )
            schema = fn.get("parameters") or {"type": "object", "properties": {}}
            conv.tools.append(ToolSpec(name=name, schema=schema))
            conv.count(name, fn.get("description"), schema)
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            conv.tool_choice = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            conv.tool_choice = "tool"
            conv.forced_tool = (choice.get("function") or {}).get("name")
        if choice is not None and not conv.tools and body.get("tools") is None:
            raise InvalidRequest(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                param="tool_choice",
            )
        if body.get("parallel_tool_calls") is False:
            conv.parallel_tools = False

    def _parse_format(self, body: dict[str, Any], conv: Conversation, messages: list) -> None:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            if not spec.get("name"):
                raise InvalidRequest(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    param="response_format.json_schema.name",
                )
            conv.schema = spec.get("schema") or {"type": "object", "properties": {}}
        elif fmt.get("type") == "json_object":
            conv.json_mode = True
            if "json" not in str(messages).lower():
                raise InvalidRequest(
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                    param="messages",
                )

    # ---- response --------------------------------------------------------------------
    def usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.total_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def render(self, reply: Reply, conv: Conversation, ctx: Context) -> dict[str, Any]:
        refusal = reply.finish == "refusal"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if refusal else (reply.text or None),
            "refusal": reply.text if refusal else None,
            "annotations": [],
        }
        if reply.thinking:
            message["reasoning_content"] = reply.thinking
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in reply.tool_calls
            ]
        return {
            "id": f"chatcmpl-{ctx.seed}",
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": FINISH[reply.finish],
                }
            ],
            "usage": self.usage(reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def stream(self, reply: Reply, conv: Conversation, ctx: Context) -> list[Event]:
        include_usage = bool((ctx.body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
            data: dict[str, Any] = {
                "id": f"chatcmpl-{ctx.seed}",
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return Event(data)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        for piece in split_text(reply.thinking or ""):
            events.append(chunk({"reasoning_content": piece}))
        key = "refusal" if reply.finish == "refusal" else "content"
        for piece in split_text(reply.text):
            events.append(chunk({key: piece}))
        for index, call in enumerate(reply.tool_calls):
            first = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [first]}))
            for frag in split_text(call.arguments_json):
                fragment = {"index": index, "function": {"arguments": frag}}
                events.append(chunk({"tool_calls": [fragment]}))
        events.append(chunk({}, FINISH[reply.finish]))
        if include_usage:
            usage_chunk = chunk({})
            usage_chunk.data["choices"] = []
            usage_chunk.data["usage"] = self.usage(reply)
            events.append(usage_chunk)
        return events
