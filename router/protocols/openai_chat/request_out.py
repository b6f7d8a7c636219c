"""ir.Request -> upstream body (`build_request`).

* `build_request` sends `max_tokens`, which every OpenAI-compatible server accepts,
  except when reasoning is requested or the model is an OpenAI reasoning model
  (o1/o3/o4/gpt-5...), which reject it and need `max_completion_tokens`.
* Reasoning budget -> `reasoning_effort`: <= 4096 low, <= 16384 medium, else high.
  An explicit effort is sent verbatim; "thinking on, no effort/budget" sends nothing.
  Models known to reject it (gpt-4*, gpt-3.5*, chatgpt-*) get none ("reasoning" dropped).
* Tool results become `tool` messages; images in them (Chat tool messages are text
  only) move to a user message right after. An error result is prefixed "Error: ".
"""

from __future__ import annotations

from typing import Any

from router.protocols import ir
from router.protocols.openai_chat.common import _drop
from router.protocols.openai_models import is_reasoning_model, takes_reasoning, user_fits


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
    if effort is not None and not takes_reasoning(req.model):
        effort = None  # OpenAI rejects reasoning_effort for these models
        _drop(req, "reasoning")
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.max_tokens is not None:
        key = "max_completion_tokens" if effort or is_reasoning_model(req.model) else "max_tokens"
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
        if user_fits(req.user):
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
