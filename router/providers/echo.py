"""The built-in `echo` provider: deterministic replies derived from the request.

Rules, first that applies wins:
1. The last message carries tool results -> text "tool results: <name>=<content>; ...".
2. Tools are offered, tool_choice is not "none", and either tool_choice forces a tool
   ("required" with none named: the first) or the last user text names one or more tools
   -> calls to those tools, in the order named, in parallel. The text names a tool by its
   name or by the last word of it (get_weather, getWeather -> "weather"), as a whole
   word in any case. Each tool is called once per proper name in the text (a run of
   capitalised words that does not open a sentence: "What is the weather in Tokyo and
   New York?" -> Tokyo, New York), or once when there is none. Arguments are sampled
   from the tool's JSON schema, strings hinted by that name (else by the whole text):
   get_weather {"location": "Tokyo"}, get_weather {"location": "New York"}; identical
   calls are made once. parallel_tool_calls false keeps the first call only.
3. Structured output is requested -> a JSON document that satisfies the schema
   (`{"echo": <text>}` for plain JSON mode).
4. Otherwise -> "echo: <last user text>", plus " [N image(s)]" when images were sent.
Reasoning requested -> a thinking block first ("Echoing the last user message.").
Streams split the text into words and tool arguments into small fragments."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator

import msgspec

from router.protocols import ir
from router.providers.base import Call, IRAdapter
from router.providers.schema_sample import sample_for_schema
from router.tokens import estimate_parts_tokens, estimate_request_tokens

THINKING_TEXT = "Echoing the last user message."
_WORDS = re.compile(r"\S+\s*|\s+")
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")  # get_weather, getWeather, HTTPGet
# a sentence end, a run of capitalised words (Tokyo, New York), or any other word
_SENTENCE_TOKENS = re.compile(
    r"(?P<end>[.!?:;\n])|(?P<name>[A-Z][\w'-]+(?:[ \t]+[A-Z][\w'-]+)*)|\w+"
)


class EchoAdapter(IRAdapter):
    probe_model = "echo"

    async def generate(self, call: Call) -> ir.Response:
        assert call.request is not None
        return reply(call.request, call.model)

    async def stream(self, call: Call) -> AsyncIterator[ir.Event]:
        assert call.request is not None
        response = reply(call.request, call.model)
        for event in response_events(response):
            yield event


def reply(request: ir.Request, model: str) -> ir.Response:
    parts: list[ir.Part] = []
    if request.reasoning and request.reasoning.enabled:
        parts.append(ir.Thinking(text=THINKING_TEXT))
    answer, finish = _answer(request)
    parts.extend(answer)
    usage = ir.Usage(
        input_tokens=estimate_request_tokens(request),
        output_tokens=max(1, estimate_parts_tokens(parts)),
    )
    if request.max_tokens is not None and usage.output_tokens > request.max_tokens:
        finish = "length"
    return ir.Response(
        id=f"echo-{secrets.token_hex(12)}",  # unique per answer, as upstreams' ids are
        model=model or request.model,
        parts=parts,
        finish=finish,
        usage=usage,
        created=int(time.time()),
    )


def _answer(request: ir.Request) -> tuple[list[ir.Part], ir.FinishReason]:
    last = request.messages[-1] if request.messages else ir.Message("user")
    results = [p for p in last.parts if isinstance(p, ir.ToolResult)]
    if results:
        return [ir.Text("tool results: " + "; ".join(_describe_result(r) for r in results))], "stop"
    text = _last_user_text(request)
    calls = _tool_calls(request, text)
    if calls:
        return list(calls), "tool_calls"
    output = request.output
    if output and output.kind == "json_schema" and output.schema is not None:
        document = sample_for_schema(output.schema, hint=text)
        return [ir.Text(msgspec.json.encode(document).decode())], "stop"
    if output and output.kind == "json_object":
        return [ir.Text(msgspec.json.encode({"echo": text}).decode())], "stop"
    images = sum(isinstance(p, ir.Image) for m in request.messages for p in m.parts)
    suffix = f" [{images} image{'s' if images != 1 else ''}]" if images else ""
    return [ir.Text(f"echo: {text}{suffix}")], "stop"


def _describe_result(result: ir.ToolResult) -> str:
    content = "".join(p.text for p in result.content if isinstance(p, ir.Text))
    status = " (error)" if result.is_error else ""
    return f"{result.name or result.call_id}={content}{status}"


def _last_user_text(request: ir.Request) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            texts = [p.text for p in message.parts if isinstance(p, ir.Text)]
            if texts:
                return " ".join(texts)
    return ""


def _tool_calls(request: ir.Request, text: str) -> list[ir.ToolCall]:
    choice = request.tool_choice or ir.ToolChoice()
    if not request.tools or choice.mode == "none":
        return []
    by_name = {tool.name: tool for tool in request.tools}
    if choice.mode == "tool" and choice.name in by_name:
        chosen = [by_name[choice.name]]
    else:
        chosen = _named_tools(request.tools, text)
        if not chosen and choice.mode == "required":
            chosen = [request.tools[0]]
    hints = _proper_names(text) or [text]
    # dict: a call whose arguments do not take the hint is made once
    calls = dict.fromkeys((tool.name, _arguments(tool, hint)) for tool in chosen for hint in hints)
    if request.parallel_tool_calls is False:
        calls = dict.fromkeys(list(calls)[:1])
    seed = secrets.token_hex(8)  # a new id per call: clients match results to calls by it
    return [
        ir.ToolCall(id=f"call_{seed}_{index}", name=name, arguments=arguments)
        for index, (name, arguments) in enumerate(calls)
    ]


def _arguments(tool: ir.Tool, hint: str) -> str:
    """A JSON object, even for a tool that declares no parameters."""
    sample = sample_for_schema(tool.parameters or {"type": "object"}, hint=hint)
    return msgspec.json.encode(sample if isinstance(sample, dict) else {}).decode()


def _named_tools(tools: list[ir.Tool], text: str) -> list[ir.Tool]:
    """The tools the text names, in the order of their first mention."""
    found = []
    for tool in tools:
        last_word = _NAME_WORDS.findall(tool.name)[-1:]
        names = "|".join(re.escape(name) for name in {tool.name, *last_word})
        match = re.search(rf"\b(?:{names})\b", text, re.IGNORECASE)
        if match:
            found.append((match.start(), tool))
    return [tool for _, tool in sorted(found, key=lambda pair: pair[0])]


def _proper_names(text: str) -> list[str]:
    """Runs of capitalised words that do not open a sentence, each once, in text order."""
    names: list[str] = []
    opening = True
    for match in _SENTENCE_TOKENS.finditer(text):
        name = match.group("name")
        if name and not opening and name not in names:
            names.append(name)
        opening = match.group("end") is not None
    return names


def response_events(response: ir.Response) -> list[ir.Event]:
    """The events a streaming upstream would send for this response."""
    events: list[ir.Event] = [
        ir.Start(
            id=response.id,
            model=response.model,
            usage=ir.Usage(input_tokens=response.usage.input_tokens),
            created=response.created,
        )
    ]
    for part in response.parts:
        match part:
            case ir.Thinking(text=text, signature=signature):
                events.extend(ir.ThinkingDelta(word) for word in _pieces(text))
                if signature:
                    events.append(ir.ThinkingSignature(signature))
            case ir.Text(text=text):
                events.extend(ir.TextDelta(word) for word in _pieces(text))
            case ir.ToolCall(id=call_id, name=name, arguments=arguments):
                events.append(ir.ToolCallStart(call_id, name))
                events.extend(
                    ir.ToolCallDelta(arguments[i : i + 8]) for i in range(0, len(arguments), 8)
                )
    events.append(ir.Finish(response.finish, response.usage))
    return events


def _pieces(text: str) -> list[str]:
    return _WORDS.findall(text) or [text]
