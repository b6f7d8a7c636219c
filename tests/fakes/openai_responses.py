"""OpenAI Responses: POST /v1/responses (JSON, or named SSE events with sequence_number)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .http import Request
from .openai_chat import TOOL_NAME, check_user, openai_error, takes_no_reasoning
from .replies import (
    Conversation,
    InvalidRequest,
    Reply,
    ToolResult,
    ToolSpec,
    compact_result,
    decode_data_url,
    short_hash,
    split_text,
)
from .wire import Context, Event, Wire, bearer, default_message

ERROR_CODES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    404: "model_not_found",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


def encrypt_reasoning(thinking: str) -> str:
    """Our 'encrypted' reasoning: opaque to clients, verifiable by us."""
    raw = json.dumps({"fake_reasoning": thinking}).encode()
    return "enc-" + base64.urlsafe_b64encode(raw).decode()


def verify_reasoning(blob: Any) -> bool:
    if not isinstance(blob, str) or not blob.startswith("enc-"):
        return False
    try:
        data = json.loads(base64.urlsafe_b64decode(blob[4:].encode()))
    except (binascii.Error, ValueError):
        return False
    return isinstance(data, dict) and "fake_reasoning" in data


class OpenAIResponses(Wire):
    name = "openai-responses"
    call_prefix = "call_"

    def authenticate(self, request: Request, api_key: str | None) -> bool:
        return api_key is None or bearer(request) == api_key

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        if status == 401 and message == default_message(401):
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        return openai_error(status, message, param)

    def stream_error(self, status: int, message: str, seq: int) -> Event:
        data = {
            "type": "error",
            "code": ERROR_CODES.get(status, "server_error"),
            "message": message,
            "param": None,
            "sequence_number": seq,
        }
        return Event(data, "error")

    def failed_events(self, ctx: Context, status: int, message: str) -> list[Event]:
        """created, in_progress, then response.failed (the other way a stream fails)."""
        start = self._envelope(ctx, "in_progress", [], None, None)
        code = ERROR_CODES.get(status, "server_error")
        failed = {**start, "status": "failed", "error": {"code": code, "message": message}}
        return [
            Event({"type": etype, "sequence_number": i, "response": response}, etype)
            for i, (etype, response) in enumerate(
                [
                    ("response.created", start),
                    ("response.in_progress", start),
                    ("response.failed", failed),
                ]
            )
        ]

    # ---- request ---------------------------------------------------------------------
    def parse(self, ctx: Context) -> Conversation:
        body = ctx.body
        if not body.get("model"):
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        conv = Conversation(model=ctx.model, seed=ctx.seed)
        if body.get("instructions"):
            conv.system.append(body["instructions"])
            conv.count(body["instructions"])
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list):
            raise InvalidRequest("Missing required parameter: 'input'.", param="input")
        names: dict[str, str] = {}
        stateless = not body.get("previous_response_id") and not body.get("conversation")
        for i, item in enumerate(items):
            self._parse_item(item, f"input[{i}]", conv, names, stateless)
        self._parse_tools(body, conv)
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            if not fmt.get("name"):
                raise InvalidRequest(
                    "Missing required parameter: 'text.format.name'.", param="text.format.name"
                )
            conv.schema = fmt.get("schema") or {"type": "object", "properties": {}}
        elif fmt.get("type") == "json_object":
            conv.json_mode = True
        reasoning = body.get("reasoning")
        if takes_no_reasoning(ctx.model):
            if reasoning is not None:
                raise InvalidRequest(
                    "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                    param="reasoning.effort",
                )
            if "reasoning.encrypted_content" in (body.get("include") or []):
                raise InvalidRequest(
                    "Encrypted content is not supported with this model.", param="include"
                )
        check_user(body)
        conv.reasoning = isinstance(reasoning, dict) and reasoning.get("effort") not in ("none",)
        if body.get("max_output_tokens") is not None:
            conv.max_tokens = int(body["max_output_tokens"])
        return conv

    def _parse_item(
        self, item: Any, where: str, conv: Conversation, names: dict[str, str], stateless: bool
    ) -> None:
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid type for '{where}'.", param=where)
        itype = item.get("type", "message")
        if itype == "message":
            role = item.get("role")
            texts, images = self._content(item.get("content"), where)
            conv.count(*texts)
            if role in ("system", "developer"):
                conv.system.append("\n".join(texts))
            elif role == "user":
                conv.user_text = " ".join(t for t in [conv.user_text, *texts] if t)
                conv.images += images
            elif role == "assistant":
                conv.user_text, conv.images, conv.tool_results = "", [], []
            else:
                raise InvalidRequest(
                    f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', "
                    "'developer', and 'user'.",
                    param=f"{where}.role",
                )
        elif itype == "function_call":
            conv.user_text, conv.images, conv.tool_results = "", [], []
            names[item.get("call_id", "")] = item.get("name", "")
            conv.count(item.get("name"), item.get("arguments"))
        elif itype == "function_call_output":
            call_id = item.get("call_id", "")
            if call_id not in names and stateless:
                raise InvalidRequest(
                    f"No tool call found for function call output with call_id {call_id}.",
                    param="input",
                )
            output = item.get("output")
            if isinstance(output, list):
                texts, images = self._content(output, f"{where}.output")
                result = ToolResult(names.get(call_id) or call_id, "".join(texts), images=images)
            else:
                result = ToolResult(names.get(call_id) or call_id, compact_result(output))
            conv.count(result.content)
            conv.tool_results.append(result)
        elif itype == "reasoning":
            conv.user_text, conv.images, conv.tool_results = "", [], []
            blob = item.get("encrypted_content")
            if blob is not None and not verify_reasoning(blob):
                raise InvalidRequest(
                    f"The encrypted content for item {item.get('id')} could not be verified.",
                    param=None,
                )
        elif itype == "item_reference":
            pass
        else:
            conv.count(item)

    def _content(self, content: Any, where: str) -> tuple[list[str], list[Any]]:
        if content is None:
            return [], []
        if isinstance(content, str):
            return [content], []
        texts: list[str] = []
        images = []
        for j, part in enumerate(content):
            ptype = part.get("type")
            if ptype in ("input_text", "output_text", "text", "summary_text"):
                texts.append(part.get("text", ""))
            elif ptype == "refusal":
                texts.append(part.get("refusal", ""))
            elif ptype == "input_image":
                if part.get("image_url"):
                    images.append(decode_data_url(part["image_url"]))
                else:
                    images.append(decode_data_url(f"file:{part.get('file_id')}"))
            elif ptype == "input_file":
                texts.append(f"[file {part.get('filename') or part.get('file_id')}]")
            else:
                raise InvalidRequest(
                    f"Invalid value: '{ptype}'.", param=f"{where}.content[{j}].type"
                )
        return texts, images

    def _parse_tools(self, body: dict[str, Any], conv: Conversation) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            if tool.get("type") != "function":
                continue
            name = tool.get("name", "")
            if not TOOL_NAME.match(name):
                raise InvalidRequest(
                    f"Invalid 'tools[{i}].name': string does not match pattern. Expected a "
                    "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    param=f"tools[{i}].name",
                )
            schema = tool.get("parameters") or {"type": "object", "properties": {}}
            conv.tools.append(ToolSpec(name=name, schema=schema))
            conv.count(name, tool.get("description"), schema)
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            conv.tool_choice = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            conv.tool_choice = "tool"
            conv.forced_tool = choice.get("name")
        if body.get("parallel_tool_calls") is False:
            conv.parallel_tools = False

    # ---- response --------------------------------------------------------------------
    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.total_tokens,
        }

    def _status(self, reply: Reply) -> tuple[str, dict[str, Any] | None]:
        if reply.finish == "length":
            return "incomplete", {"reason": "max_output_tokens"}
        if reply.finish == "refusal":
            return "incomplete", {"reason": "content_filter"}
        return "completed", None

    def _envelope(
        self, ctx: Context, status: str, output: list, usage: Any, incomplete: Any
    ) -> dict:
        body = ctx.body
        tools = []
        for tool in body.get("tools") or []:
            if tool.get("type") == "function":
                tool = {
                    "type": "function",
                    "name": tool.get("name"),
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters"),
                    "strict": tool.get("strict", True),
                }
            tools.append(tool)
        reasoning = body.get("reasoning") or {}
        return {
            "id": f"resp_{ctx.seed}",
            "object": "response",
            "created_at": ctx.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": ctx.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def _items(self, reply: Reply, ctx: Context) -> list[dict[str, Any]]:
        """The final output items (reasoning, message, function calls)."""
        items: list[dict[str, Any]] = []
        if reply.thinking:
            reasoning = ctx.body.get("reasoning") or {}
            include = ctx.body.get("include") or []
            summary = []
            if reasoning.get("summary"):
                summary = [{"type": "summary_text", "text": reply.thinking}]
            item: dict[str, Any] = {"id": f"rs_{ctx.seed}", "type": "reasoning", "summary": summary}
            if "reasoning.encrypted_content" in include:
                item["encrypted_content"] = encrypt_reasoning(reply.thinking)
            items.append(item)
        if reply.text or not reply.tool_calls:
            status = "incomplete" if reply.finish in ("length", "refusal") else "completed"
            if reply.finish == "refusal":
                part: dict[str, Any] = {"type": "refusal", "refusal": reply.text}
            else:
                part = {
                    "type": "output_text",
                    "text": reply.text,
                    "annotations": [],
                    "logprobs": [],
                }
            items.append(
                {
                    "id": f"msg_{ctx.seed}",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [part],
                }
            )
        for call in reply.tool_calls:
            items.append(
                {
                    "id": f"fc_{short_hash(call.id)}",
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments_json,
                    "call_id": call.id,
                    "name": call.name,
                }
            )
        return items

    def render(self, reply: Reply, conv: Conversation, ctx: Context) -> dict[str, Any]:
        status, incomplete = self._status(reply)
        return self._envelope(ctx, status, self._items(reply, ctx), self._usage(reply), incomplete)

    def stream(self, reply: Reply, conv: Conversation, ctx: Context) -> list[Event]:
        events: list[Event] = []

        def emit(etype: str, **fields: Any) -> None:
            events.append(Event({"type": etype, "sequence_number": len(events), **fields}, etype))

        start = self._envelope(ctx, "in_progress", [], None, None)
        emit("response.created", response=start)
        emit("response.in_progress", response=start)
        final_items = self._items(reply, ctx)
        for oi, item in enumerate(final_items):
            iid = item["id"]
            if item["type"] == "reasoning":
                emit("response.output_item.added", output_index=oi, item={**item, "summary": []})
                for si, summary in enumerate(item["summary"]):
                    ids = {"item_id": iid, "output_index": oi, "summary_index": si}
                    emit(
                        "response.reasoning_summary_part.added",
                        **ids,
                        part={"type": "summary_text", "text": ""},
                    )
                    for piece in split_text(summary["text"]):
                        emit("response.reasoning_summary_text.delta", **ids, delta=piece)
                    emit("response.reasoning_summary_text.done", **ids, text=summary["text"])
                    emit("response.reasoning_summary_part.done", **ids, part=summary)
            elif item["type"] == "message":
                part = item["content"][0]
                emit(
                    "response.output_item.added",
                    output_index=oi,
                    item={**item, "status": "in_progress", "content": []},
                )
                ids = {"item_id": iid, "output_index": oi, "content_index": 0}
                if part["type"] == "refusal":
                    emit("response.content_part.added", **ids, part={**part, "refusal": ""})
                    for piece in split_text(part["refusal"]):
                        emit("response.refusal.delta", **ids, delta=piece)
                    emit("response.refusal.done", **ids, refusal=part["refusal"])
                else:
                    emit("response.content_part.added", **ids, part={**part, "text": ""})
                    for piece in split_text(part["text"]):
                        emit("response.output_text.delta", **ids, delta=piece, logprobs=[])
                    emit("response.output_text.done", **ids, text=part["text"], logprobs=[])
                emit("response.content_part.done", **ids, part=part)
            else:
                emit(
                    "response.output_item.added",
                    output_index=oi,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                ids = {"item_id": iid, "output_index": oi}
                for piece in split_text(item["arguments"]):
                    emit("response.function_call_arguments.delta", **ids, delta=piece)
                emit(
                    "response.function_call_arguments.done",
                    **ids,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            emit("response.output_item.done", output_index=oi, item=item)
        final = self.render(reply, conv, ctx)
        emit(
            "response.completed" if final["status"] == "completed" else "response.incomplete",
            response=final,
        )
        return events
