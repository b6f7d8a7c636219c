"""Anthropic Messages: POST /v1/messages (JSON or named SSE), POST /v1/messages/count_tokens."""

from __future__ import annotations

import json
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
from .wire import Context, Event, Wire, bearer, default_message

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "refusal": "refusal"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error(status: int, message: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type(status), "message": message or default_message(status)},
    }


def sign(thinking: str) -> str:
    """The signature of a thinking block, checked when the block comes back."""
    return "sig-" + short_hash("thinking", thinking, n=32)


class Anthropic(Wire):
    name = "anthropic"
    call_prefix = "toolu_"

    def authenticate(self, request: Request, api_key: str | None) -> bool:
        if api_key is None:
            return True
        return request.headers.get("x-api-key") == api_key or bearer(request) == api_key

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        if status == 401 and message == default_message(401):
            message = "invalid x-api-key"
        return anthropic_error(status, message)

    def stream_error(self, status: int, message: str, seq: int) -> Event:
        return Event(anthropic_error(status, message), "error")

    # ---- request ---------------------------------------------------------------------
    def parse(self, ctx: Context, count_only: bool = False) -> Conversation:
        body = ctx.body
        if "anthropic-version" not in ctx.request.headers:
            raise InvalidRequest("anthropic-version: header is required")
        if not body.get("model"):
            raise InvalidRequest("model: Field required")
        if not count_only and body.get("max_tokens") is None:
            raise InvalidRequest("max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise InvalidRequest("messages: Field required")
        conv = Conversation(model=ctx.model, seed=ctx.seed)
        system = body.get("system")
        if isinstance(system, str) and system:
            conv.system.append(system)
        elif isinstance(system, list):
            conv.system += [b.get("text", "") for b in system if b.get("type") == "text"]
        conv.count(*conv.system)
        thinking = body.get("thinking") or {}
        conv.reasoning = thinking.get("type") in ("enabled", "adaptive")
        self._parse_tools(body, conv)
        self._parse_messages(messages, conv)
        if conv.reasoning:
            self._check_thinking(body, messages, conv)
        output_config = body.get("output_config") or {}
        fmt = output_config.get("format") or body.get("output_format") or {}
        if fmt.get("type") == "json_schema":
            conv.schema = fmt.get("schema") or {"type": "object", "properties": {}}
        if body.get("max_tokens") is not None:
            conv.max_tokens = int(body["max_tokens"])
        conv.stop = list(body.get("stop_sequences") or [])
        return conv

    def _parse_tools(self, body: dict[str, Any], conv: Conversation) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            if tool.get("type") not in (None, "custom"):
                conv.count(tool)  # a server tool (web search, bash...): never called by the fake
                continue
            name = tool.get("name", "")
            if not TOOL_NAME.match(name):
                raise InvalidRequest(
                    f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            if "input_schema" not in tool:
                raise InvalidRequest(f"tools.{i}.custom.input_schema: Field required")
            conv.tools.append(ToolSpec(name=name, schema=tool["input_schema"]))
            conv.count(name, tool.get("description"), tool["input_schema"])
        choice = body.get("tool_choice") or {}
        ctype = choice.get("type", "auto")
        conv.tool_choice = {"any": "required", "tool": "tool"}.get(ctype, ctype)
        if ctype == "tool":
            conv.forced_tool = choice.get("name")
        if choice.get("disable_parallel_tool_use"):
            conv.parallel_tools = False
        if conv.reasoning and ctype in ("any", "tool"):
            raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")

    def _parse_messages(self, messages: list, conv: Conversation) -> None:
        pending: list[str] = []
        names: dict[str, str] = {}
        for i, msg in enumerate(messages):
            role = msg.get("role")
            content = msg.get("content")
            final_assistant = role == "assistant" and i == len(messages) - 1
            if isinstance(content, str):
                if not content and not final_assistant:
                    raise InvalidRequest(
                        f"messages.{i}: all messages must have non-empty content except for the "
                        "optional final assistant message"
                    )
                content = [{"type": "text", "text": content}]
            if not isinstance(content, list):
                raise InvalidRequest(f"messages.{i}.content: Field required")
            if role == "user":
                answered = [b.get("tool_use_id") for b in content if b.get("type") == "tool_result"]
                missing = [p for p in pending if p not in answered]
                if missing:
                    raise InvalidRequest(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                        "a corresponding `tool_result` block in the next message."
                    )
                unexpected = [a for a in answered if a not in pending]
                if unexpected:
                    raise InvalidRequest(
                        f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` "
                        f"blocks: {', '.join(map(str, unexpected))}. Each `tool_result` block must "
                        "have a corresponding `tool_use` block in the previous message."
                    )
                pending = []
                self._user_blocks(content, i, conv, names)
            elif role == "assistant":
                if pending:
                    raise InvalidRequest(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(pending)}. Each `tool_use` block must have "
                        "a corresponding `tool_result` block in the next message."
                    )
                conv.user_text, conv.images, conv.tool_results = "", [], []
                pending = self._assistant_blocks(content, i, conv, names, final_assistant)
            elif role == "system":
                texts = [b.get("text", "") for b in content if b.get("type") == "text"]
                conv.system.append("\n".join(texts))
                conv.count(*texts)
            else:
                raise InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if pending:
            raise InvalidRequest(
                f"messages.{len(messages)}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(pending)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )

    def _image(self, block: dict[str, Any], where: str) -> Image:
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in (
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
            ):
                raise InvalidRequest(
                    f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                    "'image/png', 'image/gif' or 'image/webp'"
                )
            return decode_base64_image(source.get("media_type"), source.get("data", ""))
        if source.get("type") == "url":
            return Image(media_type=None, url=source.get("url"))
        return Image(media_type=None, url=f"file:{source.get('file_id')}")

    def _user_blocks(
        self, content: list, i: int, conv: Conversation, names: dict[str, str]
    ) -> None:
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            btype = block.get("type")
            if btype == "text":
                text = block.get("text", "")
                if not text:
                    raise InvalidRequest("messages: text content blocks must be non-empty")
                conv.user_text = " ".join(t for t in [conv.user_text, text] if t)
                conv.count(text)
            elif btype == "image":
                conv.images.append(self._image(block, where))
                conv.count_image()
            elif btype == "document":
                conv.count("[document]")
            elif btype == "tool_result":
                inner = block.get("content")
                texts: list[str] = []
                images: list[Image] = []
                if isinstance(inner, list):
                    for k, part in enumerate(inner):
                        if part.get("type") == "text":
                            texts.append(part.get("text", ""))
                        elif part.get("type") == "image":
                            images.append(self._image(part, f"{where}.content.{k}"))
                else:
                    texts.append(compact_result(inner if inner is not None else ""))
                use_id = block.get("tool_use_id", "")
                conv.count(*texts)
                conv.tool_results.append(
                    ToolResult(
                        name=names.get(use_id) or use_id,
                        content="".join(texts),
                        is_error=bool(block.get("is_error")),
                        images=images,
                    )
                )
            elif btype in ("tool_use", "thinking", "redacted_thinking"):
                raise InvalidRequest(
                    f"{where}.type: `{btype}` blocks can only be in `assistant` messages"
                )

    def _assistant_blocks(
        self, content: list, i: int, conv: Conversation, names: dict[str, str], final: bool
    ) -> list[str]:
        pending = []
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            btype = block.get("type")
            if btype == "text":
                if not block.get("text") and not final:
                    raise InvalidRequest("messages: text content blocks must be non-empty")
                conv.count(block.get("text"))
            elif btype == "tool_use":
                use_id = block.get("id", "")
                if not ID_PATTERN.match(use_id):
                    raise InvalidRequest(
                        f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                    )
                names[use_id] = block.get("name", "")
                pending.append(use_id)
                conv.count(block.get("name"), block.get("input"))
            elif btype == "thinking":
                if block.get("signature") != sign(block.get("thinking", "")):
                    raise InvalidRequest(f"{where}: Invalid `signature` in `thinking` block")
                conv.count(block.get("thinking"))
            elif btype == "redacted_thinking":
                if not str(block.get("data", "")).startswith("redacted-"):
                    raise InvalidRequest(f"{where}: Invalid `data` in `redacted_thinking` block")
            elif btype in ("image", "tool_result"):
                raise InvalidRequest(f"{where}.type: `{btype}` blocks are not allowed here")
        return pending

    def _check_thinking(self, body: dict[str, Any], messages: list, conv: Conversation) -> None:
        thinking = body.get("thinking") or {}
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                raise InvalidRequest(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                )
            if body.get("max_tokens") is not None and body["max_tokens"] <= budget:
                raise InvalidRequest(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult "
                    f"our documentation at {THINKING_DOCS}"
                )
        # In a tool loop, the last assistant message must start with a thinking block.
        if not conv.tool_results:
            return
        for i in range(len(messages) - 1, -1, -1):
            msg = messages[i]
            if msg.get("role") != "assistant" or not isinstance(msg.get("content"), list):
                continue
            blocks = msg["content"]
            if any(b.get("type") == "tool_use" for b in blocks) and (
                not blocks or blocks[0].get("type") not in ("thinking", "redacted_thinking")
            ):
                found = blocks[0].get("type") if blocks else "nothing"
                raise InvalidRequest(
                    f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                    f"found `{found}`. When `thinking` is enabled, a final `assistant` message "
                    "must start with a thinking block (preceeding the lastmost set of `tool_use` "
                    "and `tool_result` blocks). We recommend you include thinking blocks from "
                    "previous turns. To avoid this requirement, disable `thinking`. Please "
                    f"consult our documentation at {THINKING_DOCS}"
                )
            return

    # ---- response --------------------------------------------------------------------
    def _blocks(self, reply: Reply, conv: Conversation, ctx: Context) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.thinking is not None:
            display = (ctx.body.get("thinking") or {}).get("display")
            text = "" if display == "omitted" else reply.thinking
            blocks.append({"type": "thinking", "thinking": text, "signature": sign(text)})
            if "redacted thinking" in conv.user_text.lower():
                data = "redacted-" + short_hash("redacted", reply.thinking, n=40)
                blocks.append({"type": "redacted_thinking", "data": data})
        if reply.text or not reply.tool_calls:
            blocks.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
        return blocks

    def _usage(self, reply: Reply, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": reply.input_tokens - reply.cached_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": reply.cached_tokens,
            "output_tokens": reply.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }

    def _stop(self, reply: Reply) -> str:
        return "stop_sequence" if reply.stop_sequence else STOP[reply.finish]

    def _message(
        self, ctx: Context, content: list, stop: str | None, usage: dict, seq: str | None = None
    ) -> dict:
        return {
            "id": f"msg_{ctx.seed}",
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": seq,
            "usage": usage,
        }

    def render(self, reply: Reply, conv: Conversation, ctx: Context) -> dict[str, Any]:
        blocks = self._blocks(reply, conv, ctx)
        return self._message(
            ctx, blocks, self._stop(reply), self._usage(reply), reply.stop_sequence
        )

    def stream(self, reply: Reply, conv: Conversation, ctx: Context) -> list[Event]:
        events: list[Event] = []

        def emit(etype: str, **fields: Any) -> None:
            events.append(Event({"type": etype, **fields}, etype))

        emit("message_start", message=self._message(ctx, [], None, self._usage(reply, 1)))
        emit("ping")
        for index, block in enumerate(self._blocks(reply, conv, ctx)):
            btype = block["type"]
            if btype == "thinking":
                emit(
                    "content_block_start",
                    index=index,
                    content_block={"type": "thinking", "thinking": "", "signature": ""},
                )
                for piece in split_text(block["thinking"]):
                    emit(
                        "content_block_delta",
                        index=index,
                        delta={"type": "thinking_delta", "thinking": piece},
                    )
                emit(
                    "content_block_delta",
                    index=index,
                    delta={"type": "signature_delta", "signature": block["signature"]},
                )
            elif btype == "redacted_thinking":
                emit("content_block_start", index=index, content_block=block)
            elif btype == "text":
                emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
                for piece in split_text(block["text"]):
                    emit(
                        "content_block_delta",
                        index=index,
                        delta={"type": "text_delta", "text": piece},
                    )
            else:
                emit("content_block_start", index=index, content_block={**block, "input": {}})
                for piece in ["", *split_text(json.dumps(block["input"], separators=(",", ":")))]:
                    emit(
                        "content_block_delta",
                        index=index,
                        delta={"type": "input_json_delta", "partial_json": piece},
                    )
            emit("content_block_stop", index=index)
        emit(
            "message_delta",
            delta={"stop_reason": self._stop(reply), "stop_sequence": reply.stop_sequence},
            usage=self._usage(reply),
        )
        emit("message_stop")
        return events
