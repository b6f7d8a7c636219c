"""What the Claude Code CLI is given, and how its structured answer is read back.

The CLI takes one conversation turn on stdin (`--input-format stream-json`) and has no
notion of client-declared tools. This module turns an `ir.Request` into:

* the one stdin line: `{"type": "user", "message": {"role": "user", "content": [...]}}`;
* the system prompt (client system texts, plus the tool section below);
* an optional JSON schema for `--json-schema`;
and turns the CLI's `structured_output` back into ir parts.

**Earlier turns.** stream-json input accepts only user turns in a usable way: every
`user` line starts a model turn of its own, and `assistant` lines are spliced into the
history as soon as they are read, ahead of queued user lines. So the whole request goes
in ONE user message: earlier turns (text, assistant tool calls, tool results, images and
PDFs in place) as a transcript inside `<conversation_history>...</conversation_history>`,
then the latest user turn as its own content blocks. A single-turn request is sent
verbatim, without any framing.

**Client tools (emulation).** When the request offers tools (and tool_choice is not
"none"), the CLI gets `--json-schema` with this answer shape, and the system prompt gets a
"# Tools" section listing each tool's name, description and parameter schema:

    {"type": "text" | "tool_calls",
     "text": "the answer, or an optional note shown before the calls",
     "calls": [{"name": "<one of the tools>", "arguments": {...that tool's schema...}}]}

The CLI enforces the schema through its single built-in `StructuredOutput` tool (the only
tool the model is ever offered), so the model never runs anything: a `tool_calls` answer
becomes `ir.ToolCall` parts with fresh ids (`call_<24 hex>`) and finish "tool_calls".
tool_choice narrows the schema: "required" allows only `tool_calls`, a named tool only
that tool, `parallel_tool_calls: false` at most one call; "auto" lists `text` first.
Tool results of later turns are rendered as `[tool result <name> id=<id>]` sections.

**Structured output.** A `json_schema` (or `json_object`) output format is passed as
`--json-schema`; the answer text is the compact JSON of `structured_output`. A schema
whose top level is not an object is wrapped as `{"value": <schema>}` and unwrapped.
With both tools and an output schema, the schema is explained in the tool section and
the `text` of a text answer is expected to be that JSON document.

**Prompt hygiene.** The CLI treats the last text block of a prompt as interactive input:
a leading `/` runs a slash command and `@path` attaches a local file. Every text block
sent is defused: a zero-width space (U+200B) goes before a leading `/` or `!` and before
an `@` that starts a word.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from router.protocols import ir

STRUCTURED_TOOL = "StructuredOutput"
"""The CLI's built-in tool behind `--json-schema`: the only tool the model may see."""

ZERO_WIDTH = "\u200b"
_MENTION = re.compile(r"(^|\s)@", re.MULTILINE)
_SAFE_DEF_NAME = re.compile(r"[^A-Za-z0-9_.-]")

Mode = Literal["text", "structured", "tools"]


@dataclass(frozen=True, slots=True)
class Emulation:
    """How one request is put to the CLI and how its answer is read."""

    mode: Mode
    schema: dict[str, Any] | None = None  # for --json-schema
    tool_section: str = ""  # appended to the system prompt
    tool_names: tuple[str, ...] = ()
    wrapped: bool = False  # structured schema wrapped as {"value": ...}
    choices: tuple[str, ...] = field(default=())  # allowed answer types (tools mode)


# --- choosing the mode ---------------------------------------------------------------


def emulation_for(request: ir.Request) -> Emulation:
    choice = request.tool_choice or ir.ToolChoice()
    if request.tools and choice.mode != "none":
        return _tools_emulation(request, choice)
    output = request.output
    if output is not None and output.kind in ("json_schema", "json_object"):
        schema = output.schema if output.kind == "json_schema" and output.schema else None
        schema = schema or {"type": "object"}
        if _is_object_schema(schema):
            return Emulation("structured", schema=schema)
        return Emulation("structured", schema=_wrap_value(schema), wrapped=True)
    return Emulation("text")


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or ("properties" in schema and "type" not in schema)


def _wrap_value(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"value": schema}, "required": ["value"]}


def _tools_emulation(request: ir.Request, choice: ir.ToolChoice) -> Emulation:
    tools = list(request.tools)
    if choice.mode == "tool":
        forced = [t for t in tools if t.name == choice.name]
        if not forced:
            message = f"tool_choice names unknown tool {choice.name!r}"
            raise ir.Error(400, "invalid_request", message)
        tools = forced
    choices = ("tool_calls",) if choice.mode in ("required", "tool") else ("text", "tool_calls")
    calls: dict[str, Any] = {
        "type": "array",
        "description": "The tool calls when type is tool_calls; [] when type is text.",
        "items": {},
    }
    defs: dict[str, Any] = {}
    items = [_call_schema(tool, defs) for tool in tools]
    calls["items"] = items[0] if len(items) == 1 else {"anyOf": items}
    if "tool_calls" in choices and len(choices) == 1:
        calls["minItems"] = 1
    if request.parallel_tool_calls is False:
        calls["maxItems"] = 1
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "type": {
                "type": "string",
                "enum": list(choices),
                "description": "text: answer the user; tool_calls: call the tools in calls.",
            },
            "text": {
                "type": "string",
                "description": "The answer (type text), or an optional short note shown "
                "before the tool calls; may be empty.",
            },
            "calls": calls,
        },
        "required": ["type", "text", "calls"],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    section = _tool_section(request, tools, choice)
    return Emulation(
        "tools",
        schema=schema,
        tool_section=section,
        tool_names=tuple(t.name for t in tools),
        choices=choices,
    )


def _call_schema(tool: ir.Tool, defs: dict[str, Any]) -> dict[str, Any]:
    parameters = tool.parameters or {"type": "object", "properties": {}}
    arguments = _rehome(parameters, tool.name, defs)
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": [tool.name]},
            "arguments": arguments,
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _rehome(parameters: dict[str, Any], tool_name: str, defs: dict[str, Any]) -> dict[str, Any]:
    """A tool schema nested inside ours: its local `$ref`s (`#`, `#/$defs/X`,
    `#/definitions/X`) would resolve against our root, so its definitions move into our
    `$defs` under a per-tool prefix and the refs are rewritten. Ref-free schemas stay
    inline."""
    if not _has_ref(parameters):
        return parameters
    prefix = _SAFE_DEF_NAME.sub("_", tool_name)
    own = {**(parameters.get("definitions") or {}), **(parameters.get("$defs") or {})}
    body = {k: v for k, v in parameters.items() if k not in ("$defs", "definitions")}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str):
                out["$ref"] = _rewritten_ref(ref, prefix)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    defs[prefix] = rewrite(body)
    for name, definition in own.items():
        defs[f"{prefix}__{name}"] = rewrite(definition)
    return {"$ref": f"#/$defs/{prefix}"}


def _rewritten_ref(ref: str, prefix: str) -> str:
    if ref == "#":
        return f"#/$defs/{prefix}"
    for head in ("#/$defs/", "#/definitions/"):
        if ref.startswith(head):
            name, _, rest = ref[len(head) :].partition("/")
            return f"#/$defs/{prefix}__{name}" + (f"/{rest}" if rest else "")
    return ref


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v) for v in node)
    return False


def _tool_section(request: ir.Request, tools: list[ir.Tool], choice: ir.ToolChoice) -> str:
    lines = [
        "# Tools",
        "",
        "The application you are talking to can run the tools below for you. You cannot "
        'run them yourself. To use them, answer with type "tool_calls" and list each '
        'call (the tool name and its JSON arguments) in "calls"; the results come back '
        'in the next message. To answer directly, use type "text" and put the answer '
        f'in "text". Always answer through the {STRUCTURED_TOOL} tool.',
    ]
    if choice.mode == "required":
        lines.append("You must call at least one tool now.")
    elif choice.mode == "tool":
        lines.append(f"You must call the tool {choice.name} now.")
    if request.parallel_tool_calls is False:
        lines.append("Call at most one tool at a time.")
    output = request.output
    if output is not None and output.kind == "json_schema" and output.schema:
        lines.append(
            'When you answer with type "text", "text" must be a JSON document that '
            "matches this JSON Schema: " + _json(output.schema)
        )
    elif output is not None and output.kind == "json_object":
        lines.append('When you answer with type "text", "text" must be a JSON object.')
    for tool in tools:
        lines += ["", f"## {tool.name}"]
        if tool.description:
            lines.append(tool.description)
        lines.append("Parameters (JSON Schema): " + _json(tool.parameters or {"type": "object"}))
    return "\n".join(lines)


# --- the system prompt and the stdin line ---------------------------------------------


def system_prompt(request: ir.Request, emulation: Emulation) -> str:
    texts = [t for t in request.system if t]
    if emulation.tool_section:
        texts.append(emulation.tool_section)
    return "\n\n".join(texts)


def user_line(request: ir.Request) -> dict[str, Any]:
    """The one stream-json input line carrying the whole conversation."""
    history, current = _split_current(request.messages)
    names = _call_names(request.messages)
    blocks: list[dict[str, Any]] = []
    if history:
        blocks += _history_blocks(history, names)
    blocks += _current_blocks(current, names, continuing=bool(history) and not current)
    blocks = _merge_texts(blocks)
    if not blocks:
        raise ir.Error(400, "invalid_request", "the request has no message content")
    for block in blocks:
        if block["type"] == "text":
            block["text"] = defuse(block["text"])
    return {"type": "user", "message": {"role": "user", "content": blocks}}


def _split_current(messages: list[ir.Message]) -> tuple[list[ir.Message], list[ir.Message]]:
    """Earlier turns, and the trailing user (or mid-conversation system) messages after
    the last assistant turn."""
    index = len(messages)
    while index > 0 and messages[index - 1].role != "assistant":
        index -= 1
    return messages[:index], messages[index:]


def _call_names(messages: list[ir.Message]) -> dict[str, str]:
    return {
        part.id: part.name
        for message in messages
        for part in message.parts
        if isinstance(part, ir.ToolCall)
    }


def _history_blocks(history: list[ir.Message], names: dict[str, str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [_text("<conversation_history>\n")]
    for message in history:
        blocks.append(_text(f"[{message.role}]\n"))
        for part in message.parts:
            blocks += _part_blocks(part, names)
        blocks.append(_text("\n"))
    blocks.append(_text("</conversation_history>\n\n"))
    return blocks


def _current_blocks(
    current: list[ir.Message], names: dict[str, str], continuing: bool
) -> list[dict[str, Any]]:
    if continuing:
        return [_text("Continue the assistant's last message.")]
    blocks: list[dict[str, Any]] = []
    for message in current:
        if message.role == "system":
            blocks.append(_text("[system]\n"))
        for part in message.parts:
            blocks += _part_blocks(part, names)
    return blocks


def _part_blocks(part: ir.Part, names: dict[str, str]) -> list[dict[str, Any]]:
    match part:
        case ir.Text(text=text):
            return [_text(text + "\n")]
        case ir.Image():
            return [_image_block(part)]
        case ir.File():
            return [_file_block(part)]
        case ir.ToolCall(id=call_id, name=name, arguments=arguments):
            return [_text(f"[tool call {name} id={call_id}] {arguments}\n")]
        case ir.ToolResult(call_id=call_id, name=name, content=content, is_error=is_error):
            label = name or names.get(call_id) or "tool"
            status = " (error)" if is_error else ""
            blocks = [_text(f"[tool result {label} id={call_id}{status}]\n")]
            for item in content:
                blocks += _part_blocks(item, names)
            return blocks
    return []  # thinking is not carried: the model starts afresh each request


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image_block(image: ir.Image) -> dict[str, Any]:
    if image.data:
        media_type = image.media_type or "image/png"
        source = {"type": "base64", "media_type": media_type, "data": image.data}
    elif image.url and image.url.startswith("data:"):
        source = _data_url_source(image.url)
    elif image.url:
        source = {"type": "url", "url": image.url}
    else:
        raise ir.Error(400, "invalid_request", "an image has neither data nor url")
    return {"type": "image", "source": source}


def _file_block(file: ir.File) -> dict[str, Any]:
    if file.data and (file.media_type or "application/pdf") == "application/pdf":
        source = {"type": "base64", "media_type": "application/pdf", "data": file.data}
    elif file.url and not file.url.startswith("data:"):
        source = {"type": "url", "url": file.url}
    else:
        what = file.filename or file.file_id or file.media_type or "a file"
        raise ir.Error(400, "invalid_request", f"claudeCode-custom cannot carry {what}")
    return {"type": "document", "source": source}


def _data_url_source(url: str) -> dict[str, Any]:
    meta, _, data = url[5:].partition(",")
    if ";base64" not in meta:
        raise ir.Error(400, "invalid_request", "image data URLs must be base64")
    return {"type": "base64", "media_type": meta.split(";")[0] or "image/png", "data": data}


def _merge_texts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent text blocks joined and their trailing newlines trimmed; blank ones go
    (the API rejects whitespace-only text blocks)."""
    merged: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = _text(merged[-1]["text"] + block["text"])
        else:
            merged.append(dict(block))
    for block in merged:
        if block["type"] == "text":
            block["text"] = block["text"].rstrip("\n")
    return [b for b in merged if b["type"] != "text" or b["text"].strip()]


def defuse(text: str) -> str:
    """Text the CLI will not read as a slash command, shell escape or `@file` mention."""
    text = _MENTION.sub(lambda m: m.group(1) + ZERO_WIDTH + "@", text)
    if text[:1] in ("/", "!"):
        text = ZERO_WIDTH + text
    return text


# --- reading the answer --------------------------------------------------------------


def parse_answer(emulation: Emulation, output: Any) -> tuple[list[ir.Part], ir.FinishReason]:
    """Parts and finish reason from the CLI's `structured_output`."""
    if emulation.mode == "structured":
        value = output.get("value") if emulation.wrapped and isinstance(output, dict) else output
        return [ir.Text(_json(value))], "stop"
    if not isinstance(output, dict):
        raise ir.Error(502, "bad_gateway", "the model's tool answer is not a JSON object")
    text = output.get("text")
    text = text if isinstance(text, str) else ("" if text is None else _json(text))
    calls = output.get("calls") or []
    wants_calls = output.get("type") == "tool_calls" and "tool_calls" in emulation.choices
    if not wants_calls or not isinstance(calls, list) or not calls:
        if "text" not in emulation.choices:
            raise ir.Error(502, "bad_gateway", "the model was required to call a tool and did not")
        return [ir.Text(text)], "stop"
    parts: list[ir.Part] = [ir.Text(text)] if text.strip() else []
    parts += [_tool_call(call, emulation) for call in calls]
    return parts, "tool_calls"


def _tool_call(call: Any, emulation: Emulation) -> ir.ToolCall:
    if not isinstance(call, dict) or call.get("name") not in emulation.tool_names:
        name = call.get("name") if isinstance(call, dict) else call
        raise ir.Error(502, "bad_gateway", f"the model called an unknown tool: {name!r}")
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            message = "the model sent tool arguments that are not JSON"
            raise ir.Error(502, "bad_gateway", message) from None
    if arguments is None:
        arguments = {}
    return ir.ToolCall(id=new_call_id(), name=call["name"], arguments=_json(arguments))


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
