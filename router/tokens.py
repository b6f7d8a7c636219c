"""A documented token estimate, for upstreams without a count endpoint.

The rule: one token per 4 characters of text (tool arguments, schemas and thinking
included, rounded up per piece), plus 4 tokens of framing per message and per tool, plus
a flat 1,600 tokens per image or file (about what a 1-megapixel image costs on Claude and
Gemini). It errs high rather than low, so clients that budget context stay safe."""

from __future__ import annotations

import msgspec

from router.protocols import ir

CHARS_PER_TOKEN = 4
FRAMING_TOKENS = 4
IMAGE_TOKENS = 1600

_encode = msgspec.json.encode


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def part_tokens(part: ir.Part) -> int:
    match part:
        case ir.Text(text=text) | ir.Thinking(text=text):
            return text_tokens(text)
        case ir.ToolCall(name=name, arguments=arguments):
            return text_tokens(name) + text_tokens(arguments)
        case ir.ToolResult(content=content):
            return sum(part_tokens(p) for p in content)
        case ir.Image() | ir.File():
            return IMAGE_TOKENS
    return 0


def estimate_request_tokens(request: ir.Request) -> int:
    total = sum(text_tokens(text) + FRAMING_TOKENS for text in request.system)
    for message in request.messages:
        total += FRAMING_TOKENS + sum(part_tokens(p) for p in message.parts)
    for tool in request.tools:
        total += FRAMING_TOKENS + text_tokens(tool.name) + text_tokens(tool.description or "")
        if tool.parameters:
            total += text_tokens(_encode(tool.parameters).decode())
    return total


def estimate_parts_tokens(parts: list[ir.Part]) -> int:
    return sum(part_tokens(p) for p in parts)
