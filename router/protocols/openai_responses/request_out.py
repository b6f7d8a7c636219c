"""ir.Request -> upstream body.

* `Request.system` goes upstream joined into `instructions`.
* An error tool result (Responses has no error flag) goes upstream with its text prefixed
  "Error: ", as for OpenAI Chat.
* Only this protocol's own reasoning goes back upstream (with its item id); foreign
  thinking is dropped.
* Upstream requests are stateless: `store: false`, and when reasoning is requested
  `include: ["reasoning.encrypted_content"]` so reasoning can be replayed next turn.
  Reasoning explicitly switched off is expressed by omitting `reasoning` (effort "none"
  is not accepted by every reasoning model). Models that take no reasoning (gpt-4o...)
  get none, and neither a `user` over 64 characters (router.protocols.openai_models).
* Function tools are sent with `strict: false` unless the client asked for strict, since
  Responses defaults to strict and most foreign schemas are not strict-compatible.
"""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.openai_models import takes_reasoning, user_fits
from router.protocols.openai_responses.common import (
    _ENCRYPTED_REASONING,
    NAME,
    _new_id,
    _reasoning_item,
)


def _drop(req: ir.Request, name: str) -> None:
    if name not in req.dropped:
        req.dropped.append(name)


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
    if reasoning and not takes_reasoning(req.model):
        reasoning = None  # OpenAI rejects reasoning (and its include) for these models
        _drop(req, "reasoning")
    if reasoning:
        body["reasoning"] = reasoning
        body["include"] = [_ENCRYPTED_REASONING]
    for key, value in (
        ("max_output_tokens", req.max_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("metadata", req.metadata),
    ):
        if value is not None:
            body[key] = value
    if req.user is not None:
        if user_fits(req.user):
            body["user"] = req.user
        else:
            _drop(req, "user")
    if req.stream:
        body["stream"] = True
    for name, value in (("top_k", req.top_k), ("seed", req.seed), ("stop", req.stop)):
        if value:
            _drop(req, name)
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
