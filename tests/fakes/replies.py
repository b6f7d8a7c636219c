"""Deterministic reply content, independent of any wire format.

Each protocol module reduces its request to a `Conversation`; `make_reply` turns
that into a `Reply` (text, tool calls, thinking, usage) which the protocol module
renders in its own wire format.

Conventions (what tests can rely on):
  - plain turn:      text = "echo: " + <text of the last user message>
  - images:          one extra line per image in the last user message:
                     "image: <media type> <decoded byte length> bytes"
                     ("image: url <url>" for images given by URL)
  - tool results:    text = "tool results: <name>=<content>; <name>=<content>"
                     ("<name>=error:<content>" for error results; the tool's
                     name, or its call id when the name cannot be known)
  - tool calls:      when tools are offered and the last user text contains
                     "call tool" (first tool), "call tool <name>", or
                     "call <N> tools" (N parallel calls, cycling over the tools),
                     or when tool_choice forces a tool; arguments are sampled
                     from the tool's JSON schema
  - structured out:  text = a JSON document sampled from the requested schema
                     ({"echo": <last user text>} for plain JSON mode)
  - reasoning:       thinking text = "thinking about: <last user text>"
  - "please refuse": a refusal (finish reason refusal / content_filter / SAFETY)
  - "show system":   text = "system: " + the system texts joined by " | "
  - "use cache":     half the input tokens are reported as cached
  - stop sequences:  the text is cut before the first stop sequence it contains
  - max tokens:      a text longer than the limit is cut, finish reason "length"
  - "huge" (script): text = huge_text(N), N characters of numbered blocks
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

STRING_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}

IMAGE_TOKENS = 85


class InvalidRequest(Exception):
    """A request the real API would reject with 400 (message mirrors the real one)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def tokens(text: str) -> int:
    """The fake tokenizer: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4) if text else 0


def short_hash(*parts: Any, n: int = 24) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


@lru_cache(maxsize=2)
def huge_text(size: int) -> str:
    """`size` characters of numbered 10-character blocks ("000000000 000000001 ..."), so
    a lost, doubled or reordered piece shows."""
    blocks = (size + 9) // 10
    return "".join([f"{i:09d} " for i in range(blocks)])[:size]


def split_text(text: str, pieces: int = 4) -> list[str]:
    """Split text into several small deltas (at least one, never empty pieces)."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class Image:
    media_type: str | None
    size: int | None = None
    url: str | None = None

    def describe(self) -> str:
        if self.size is not None:
            return f"image: {self.media_type} {self.size} bytes"
        return f"image: url {self.url}"


@dataclass
class ToolResult:
    name: str
    content: str
    is_error: bool = False
    images: list[Image] = field(default_factory=list)

    def describe(self) -> str:
        content = self.content
        if self.images:
            content = " ".join([content, *(i.describe() for i in self.images)]).strip()
        return f"{self.name}=error:{content}" if self.is_error else f"{self.name}={content}"


@dataclass
class ToolSpec:
    name: str
    schema: dict[str, Any]


@dataclass
class Conversation:
    """What the fake model 'sees' of a request, whatever its protocol."""

    model: str
    system: list[str] = field(default_factory=list)
    user_text: str = ""
    images: list[Image] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none | required | tool
    forced_tool: str | None = None
    parallel_tools: bool = True
    schema: dict[str, Any] | None = None
    json_mode: bool = False
    reasoning: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    input_tokens: int = 0
    seed: str = ""

    def count(self, *texts: Any) -> None:
        for text in texts:
            if isinstance(text, str):
                self.input_tokens += tokens(text)
            elif text is not None:
                self.input_tokens += tokens(json.dumps(text, sort_keys=True))

    def count_image(self) -> None:
        self.input_tokens += IMAGE_TOKENS


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class Reply:
    text: str
    finish: str  # stop | length | tool_calls | refusal
    thinking: str | None = None
    stop_sequence: str | None = None  # the stop sequence that ended the text
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    cached_tokens: int = 0
    text_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def output_tokens(self) -> int:
        return self.text_tokens + self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# ---- schema sampling -------------------------------------------------------------


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if ref == "#":
        return root
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node if isinstance(node, dict) else {}


def _type_of(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if str(x).lower() != "null"), "null")
    if t is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"
    return str(t).lower()


def sample_from_schema(
    schema: Any,
    *,
    root: dict[str, Any] | None = None,
    name: str | None = None,
    variant: int = 0,
    depth: int = 0,
) -> Any:
    """A minimal valid instance of a JSON schema (or a Gemini OpenAPI-style schema)."""
    if not isinstance(schema, dict):
        return "sample"
    root = root if root is not None else schema
    kw = {"root": root, "name": name, "variant": variant, "depth": depth + 1}
    if depth > 12:
        return None
    ref = schema.get("$ref") or schema.get("ref")
    if isinstance(ref, str):
        return sample_from_schema(_resolve_ref(ref, root), **kw)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "any_of"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            chosen = next(
                (b for b in branches if isinstance(b, dict) and _type_of(b) != "null"), branches[0]
            )
            return sample_from_schema(chosen, **kw)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            part = _resolve_ref(part["$ref"], root) if "$ref" in part else part
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return sample_from_schema(merged, **kw)
    t = _type_of(schema)
    if t == "object":
        props = schema.get("properties") or {}
        keys = list(schema.get("required") or []) or list(props)
        return {k: sample_from_schema(props.get(k, {}), **{**kw, "name": k}) for k in keys}
    if t == "array":
        if schema.get("maxItems", schema.get("max_items")) == 0:
            return []
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [sample_from_schema(p, **kw) for p in prefix]
        n = max(1, int(schema.get("minItems", schema.get("min_items", 1)) or 1))
        return [sample_from_schema(schema.get("items") or {}, **kw) for _ in range(n)]
    if t == "integer":
        return _number(schema, 1, int)
    if t == "number":
        return _number(schema, 1.5, float)
    if t == "boolean":
        return True
    if t == "null":
        return None
    fmt = schema.get("format")
    if fmt in STRING_FORMATS:
        return STRING_FORMATS[fmt]
    text = f"sample {name}" if name else "sample"
    if variant:
        text += f" {variant + 1}"
    min_len = int(schema.get("minLength", schema.get("min_length", 0)) or 0)
    max_len = schema.get("maxLength", schema.get("max_length"))
    text = text.ljust(min_len, "x")
    if max_len is not None:
        text = text[: int(max_len)]
    return text


def _number(schema: dict[str, Any], default: float, cast: type) -> Any:
    value: float = default
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if lo is not None and value < float(lo):
        value = float(lo) + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if hi is not None and value > float(hi):
        value = float(hi) - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return cast(value)


# ---- the reply ---------------------------------------------------------------------

_CALL_N = re.compile(r"\bcall (\d+) tools\b", re.IGNORECASE)
_CALL_NAMED = re.compile(r"\bcall tool ([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_CALL_ONE = re.compile(r"\bcall (?:a )?tool\b", re.IGNORECASE)


def _plan_tool_calls(conv: Conversation) -> list[str]:
    if not conv.tools or conv.tool_choice == "none":
        return []
    names = [t.name for t in conv.tools]
    forced = conv.tool_choice in ("required", "tool")
    text = conv.user_text
    n = 0
    chosen: str | None = None
    if not conv.tool_results:
        if m := _CALL_N.search(text):
            n = max(1, int(m.group(1)))
        elif _CALL_ONE.search(text):
            n = 1
            named = _CALL_NAMED.search(text)
            if named and named.group(1) in names:
                chosen = named.group(1)
    if forced:
        n = max(n, 1)
    if conv.forced_tool in names:
        chosen = conv.forced_tool
    if not conv.parallel_tools:
        n = min(n, 1)
    if chosen:
        return [chosen] * n
    return [names[i % len(names)] for i in range(n)]


def make_reply(conv: Conversation, id_prefix: str, override: dict[str, Any] | None = None) -> Reply:
    """Compute the deterministic reply to a conversation."""
    override = override or {}
    lower = conv.user_text.lower()
    schemas = {t.name: t.schema for t in conv.tools}
    thinking = None
    if conv.reasoning:
        thinking = f"thinking about: {conv.user_text or 'the tool results'}"
    reply = Reply(text="", finish="stop", thinking=thinking, input_tokens=conv.input_tokens)
    if "use cache" in lower:
        reply.cached_tokens = conv.input_tokens // 2

    if "please refuse" in lower:
        reply.text = "I can't help with that."
        reply.finish = "refusal"
    elif calls := _plan_tool_calls(conv):
        seen: dict[str, int] = {}
        for i, name in enumerate(calls):
            variant = seen.get(name, 0)
            seen[name] = variant + 1
            args = sample_from_schema(schemas.get(name) or {}, variant=variant)
            if not isinstance(args, dict):
                args = {}
            call_id = f"{id_prefix}{short_hash(conv.seed, i, name)}"
            reply.tool_calls.append(ToolCall(id=call_id, name=name, arguments=args))
        reply.finish = "tool_calls"
    elif "huge" in override:
        reply.text = huge_text(int(override["huge"]))
    elif "reply" in override:
        reply.text = str(override["reply"])
    elif conv.schema is not None:
        reply.text = json.dumps(sample_from_schema(conv.schema))
    elif conv.json_mode:
        reply.text = json.dumps({"echo": conv.user_text})
    elif conv.tool_results:
        reply.text = "tool results: " + "; ".join(r.describe() for r in conv.tool_results)
    elif "show system" in lower:
        reply.text = "system: " + " | ".join(conv.system)
    else:
        reply.text = "echo: " + conv.user_text
    if conv.images and reply.finish == "stop" and conv.schema is None and not conv.json_mode:
        reply.text = "\n".join([reply.text, *(img.describe() for img in conv.images)])

    hits = [(reply.text.find(s), s) for s in conv.stop if s and s in reply.text]
    if hits and reply.finish == "stop":
        cut, seq = min(hits)
        reply.text, reply.stop_sequence = reply.text[:cut], seq

    if (
        conv.max_tokens is not None
        and reply.finish == "stop"
        and tokens(reply.text) > conv.max_tokens
    ):
        reply.text = reply.text[: max(0, conv.max_tokens) * 4]
        reply.finish = "length"

    reply.text_tokens = tokens(reply.text) + sum(
        tokens(c.name) + tokens(c.arguments_json) for c in reply.tool_calls
    )
    reply.text_tokens = max(reply.text_tokens, 1)
    reply.reasoning_tokens = tokens(thinking or "")
    return reply


# ---- helpers shared by the protocol parsers ------------------------------------------


def decode_data_url(url: str) -> Image:
    """An Image from a data: URL (size of the decoded bytes) or a plain URL."""
    import base64
    import binascii

    if url.startswith("data:"):
        meta, _, data = url[5:].partition(",")
        media_type = meta.split(";")[0] or "text/plain"
        if ";base64" in meta:
            try:
                size = len(base64.b64decode(data, validate=False))
            except (binascii.Error, ValueError) as exc:
                raise InvalidRequest(f"Invalid base64 image data: {exc}") from exc
        else:
            size = len(data.encode())
        return Image(media_type=media_type, size=size)
    return Image(media_type=None, url=url)


def decode_base64_image(media_type: str | None, data: str, *, urlsafe: bool = False) -> Image:
    """`urlsafe`: proto3 JSON bytes (Gemini) may be URL-safe and unpadded."""
    import base64
    import binascii

    if urlsafe:
        data = data.replace("-", "+").replace("_", "/") + "=" * (-len(data) % 4)
    try:
        size = len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Invalid base64 image data: {exc}") from exc
    return Image(media_type=media_type, size=size)


def compact_result(value: Any) -> str:
    """Render a tool result value: strings as they are, other values as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
