"""Gemini protocol module: dict-level conversions, schema reduction, stream decoding under
any chunking, and encoder output checked by the official `google-genai` SDK."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from router.protocols import gemini, ir
from router.protocols.gemini.schema import from_gemini, to_gemini
from router.protocols.gemini.signatures import _unwrap_foreign
from tests.sse_replay import ReplayServer

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SIG_A = base64.b64encode(b"signature-a").decode()
SIG_B = base64.b64encode(b"signature-b").decode()


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as replay:
        yield replay


_CLIENTS: dict[str, genai.Client] = {}


def client(server: ReplayServer) -> genai.Client:
    # Kept alive here: a garbage-collected genai.Client closes its HTTP client mid-call.
    if server.url not in _CLIENTS:
        _CLIENTS[server.url] = genai.Client(
            api_key="x",
            http_options=types.HttpOptions(
                base_url=server.url,
                api_version="v1beta",
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
    return _CLIENTS[server.url]


def encode_all(events: list[ir.Event], req: ir.Request | None = None, sse: bool = True) -> bytes:
    encoder = gemini.StreamEncoder(req or ir.Request(model="gemini-client"), sse=sse)
    return b"".join(encoder.encode(e) for e in events)


def decode_all(data: bytes, cuts: list[int] | None = None) -> list[ir.Event]:
    decoder = gemini.StreamDecoder()
    events: list[ir.Event] = []
    start = 0
    for end in [*(cuts or []), len(data)]:
        events += decoder.feed(data[start:end])
        start = end
    return events + decoder.close()


def normalized(events: list[ir.Event]) -> list[ir.Event]:
    """Synthesized call ids are random and `created` is the clock: make them comparable."""
    ids: dict[str, str] = {}
    out: list[ir.Event] = []
    for event in events:
        if isinstance(event, ir.ToolCallStart) and event.id.startswith("gcall_"):
            event = ir.ToolCallStart(
                ids.setdefault(event.id, f"#{len(ids)}"), event.name, event.signature
            )
        elif isinstance(event, ir.Start):
            event = ir.Start(event.id, event.model, event.usage, 0)
        out.append(event)
    return out


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(
        b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\r\n\r\n" for c in chunks
    )


def chunk(
    *parts: dict[str, Any], finish: str | None = None, usage: dict | None = None, **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r-up",
        **extra,
    }
    if usage:
        out["usageMetadata"] = usage
    return out


# --- parse_request -------------------------------------------------------------------

FULL_REQUEST: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "What is here?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/a.pdf"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "thinking...", "thought": True, "thoughtSignature": SIG_B},
                {"functionCall": {"name": "look", "args": {"a": 1}}, "thoughtSignature": SIG_A},
                {"functionCall": {"name": "look", "args": {"a": 2}}},
                {"functionCall": {"name": "peek", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "look", "response": {"output": "first"}}},
                {"functionResponse": {"name": "peek", "response": {"error": "denied"}}},
                {"functionResponse": {"name": "look", "response": {"n": 2}}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"id": "g3-id", "name": "peek", "args": {}},
                    "thoughtSignature": SIG_A,
                },
                {"text": "", "thoughtSignature": SIG_B},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "g3-id",
                        "name": "peek",
                        "response": {"ok": True},
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}],
                    }
                },
                {"text": "So?"},
            ],
        },
    ],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "look",
                    "description": "Look",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"a": {"type": "INTEGER", "nullable": True}},
                        "required": ["a"],
                    },
                },
                {
                    "name": "peek",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {},
                        "additionalProperties": False,
                    },
                },
            ]
        },
        {"googleSearch": {}},
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}},
    "generationConfig": {
        "maxOutputTokens": 100,
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "seed": 7,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"x": {"type": "STRING"}},
            "propertyOrdering": ["x"],
        },
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
        "presencePenalty": 0.1,
    },
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    "cachedContent": "cachedContents/1",
}


def test_parse_request_full() -> None:
    req = gemini.parse_request(FULL_REQUEST)
    assert req.model == "" and req.stream is False and req.include_usage is True
    assert req.system == ["Be brief.", "Use tools."]
    user, model, results, model2, last = req.messages
    assert user == ir.Message(
        "user",
        [
            ir.Text("What is here?"),
            ir.Image(media_type="image/png", data=PNG),
            ir.File(media_type="application/pdf", url="gs://b/a.pdf"),
        ],
    )
    assert model == ir.Message(
        "assistant",
        [
            ir.Thinking("thinking...", signature=SIG_B, origin="gemini"),
            ir.ToolCall("gcall_0", "look", '{"a":1}', signature=SIG_A),
            ir.ToolCall("gcall_1", "look", '{"a":2}'),
            ir.ToolCall("gcall_2", "peek", "{}"),
        ],
    )
    # id-less responses pair with the earliest unanswered call of the same name
    assert results == ir.Message(
        "user",
        [
            ir.ToolResult("gcall_0", "look", [ir.Text("first")]),
            ir.ToolResult("gcall_2", "peek", [ir.Text("denied")], is_error=True),
            ir.ToolResult("gcall_1", "look", [ir.Text('{"n":2}')]),
        ],
    )
    assert model2 == ir.Message(
        "assistant",
        [ir.ToolCall("g3-id", "peek", "{}", signature=SIG_A), ir.Text("", signature=SIG_B)],
    )
    assert last == ir.Message(
        "user",
        [
            ir.ToolResult(
                "g3-id",
                "peek",
                [ir.Text('{"ok":true}'), ir.Image(media_type="image/png", data=PNG)],
            ),
            ir.Text("So?"),
        ],
    )
    look, peek = req.tools
    assert look == ir.Tool(
        "look",
        "Look",
        {"type": "object", "properties": {"a": {"type": ["integer", "null"]}}, "required": ["a"]},
    )
    assert peek.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert req.tool_choice == ir.ToolChoice("tool", "look")
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.seed) == (
        100,
        0.5,
        0.9,
        40,
        7,
    )
    assert req.stop == ["END"]
    assert req.output == ir.OutputFormat(
        "json_schema", {"type": "object", "properties": {"x": {"type": "string"}}}
    )
    assert req.reasoning == ir.Reasoning(budget_tokens=1024, include_thoughts=True)
    assert set(req.dropped) == {
        "tools.googleSearch",
        "generationConfig.presencePenalty",
        "safetySettings",
        "cachedContent",
    }


def test_parse_request_response_id_unknown_to_calls_pairs_by_name() -> None:
    """gemini-cli sends functionResponse ids its functionCalls never had."""
    req = gemini.parse_request(
        {
            "contents": [
                {"role": "model", "parts": [{"functionCall": {"name": "ls", "args": {}}}]},
                {
                    "role": "user",
                    "parts": [
                        {
                            "functionResponse": {
                                "id": "ls-1755899286321-24a2",
                                "name": "ls",
                                "response": {"output": "a"},
                            }
                        }
                    ],
                },
            ]
        }
    )
    assert req.messages[1].parts == [ir.ToolResult("gcall_0", "ls", [ir.Text("a")])]


def test_parse_request_ids_are_deterministic() -> None:
    assert gemini.parse_request(FULL_REQUEST) == gemini.parse_request(FULL_REQUEST)


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"thinkingBudget": 0},
            ir.Reasoning(enabled=False, budget_tokens=0, include_thoughts=False),
        ),
        ({"thinkingBudget": -1}, ir.Reasoning(include_thoughts=False)),
        ({"thinkingLevel": "HIGH", "includeThoughts": True}, ir.Reasoning(effort="high")),
        ({"thinkingLevel": "low"}, ir.Reasoning(effort="low", include_thoughts=False)),
    ],
)
def test_parse_thinking_config(config: dict, expected: ir.Reasoning) -> None:
    req = gemini.parse_request({"contents": [], "generationConfig": {"thinkingConfig": config}})
    assert req.reasoning == expected


def test_parse_tool_config_modes() -> None:
    tools = [{"functionDeclarations": [{"name": n} for n in ("a", "b", "c")]}]

    def choice(config: dict) -> tuple[ir.ToolChoice | None, list[str]]:
        req = gemini.parse_request(
            {"contents": [], "tools": tools, "toolConfig": {"functionCallingConfig": config}}
        )
        return req.tool_choice, [t.name for t in req.tools]

    assert choice({"mode": "AUTO"}) == (ir.ToolChoice("auto"), ["a", "b", "c"])
    assert choice({"mode": "NONE"}) == (ir.ToolChoice("none"), ["a", "b", "c"])
    assert choice({"mode": "ANY"}) == (ir.ToolChoice("required"), ["a", "b", "c"])
    assert choice({"mode": "ANY", "allowedFunctionNames": ["a", "c"]}) == (
        ir.ToolChoice("required"),
        ["a", "c"],
    )
    assert choice({"mode": "VALIDATED"}) == (ir.ToolChoice("auto"), ["a", "b", "c"])


def test_parse_request_enum_mime_type_is_reported() -> None:
    req = gemini.parse_request(
        {"contents": [], "generationConfig": {"responseMimeType": "text/x.enum"}}
    )
    assert req.output is None and req.dropped == ["generationConfig.responseMimeType"]


def test_parse_request_json_mode_and_json_schema_field() -> None:
    req = gemini.parse_request(
        {"contents": [], "generationConfig": {"responseMimeType": "application/json"}}
    )
    assert req.output == ir.OutputFormat("json_object")
    schema = {"type": "object", "$defs": {"a": {"type": "string"}}}
    req = gemini.parse_request(
        {
            "contents": [],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": schema,
            },
        }
    )
    assert req.output == ir.OutputFormat("json_schema", schema)


def test_parse_request_from_sdk_serialization(server: ReplayServer) -> None:
    """Whatever google-genai itself puts on the wire parses."""
    server.reply(
        json.dumps(chunk({"text": "ok"}, finish="STOP")).encode(), content_type="application/json"
    )
    client(server).models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            types.Content(
                role="user",
                parts=[
                    types.Part.from_text(text="hi"),
                    types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png"),
                ],
            ),
            types.Content(
                role="model",
                parts=[
                    types.Part(
                        function_call=types.FunctionCall(name="f", args={"x": 1}),
                        thought_signature=b"sig",
                    )
                ],
            ),
            types.Content(
                role="user",
                parts=[types.Part.from_function_response(name="f", response={"output": "done"})],
            ),
        ],
        config=types.GenerateContentConfig(
            system_instruction="sys",
            temperature=0.1,
            max_output_tokens=9,
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="f",
                            parameters=types.Schema(
                                type=types.Type.OBJECT,
                                properties={"x": types.Schema(type=types.Type.INTEGER)},
                            ),
                        )
                    ]
                )
            ],
            thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW),
            response_mime_type="application/json",
            response_json_schema={"type": "object"},
        ),
    )
    recorded = server.requests[-1]
    assert recorded.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    req = gemini.parse_request(json.loads(recorded.body))
    assert req.system == ["sys"] and req.temperature == 0.1 and req.max_tokens == 9
    assert req.messages[0].parts[1] == ir.Image(
        media_type="image/png", data=base64.b64encode(b"\x89PNG").decode()
    )
    call = req.messages[1].parts[0]
    assert isinstance(call, ir.ToolCall) and call.signature == base64.b64encode(b"sig").decode()
    assert req.messages[2].parts == [ir.ToolResult(call.id, "f", [ir.Text("done")])]
    assert req.tools[0].parameters == {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert req.reasoning == ir.Reasoning(effort="low", include_thoughts=False)
    assert req.output == ir.OutputFormat("json_schema", {"type": "object"})


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({}, "contents"),
        ({"contents": [{"role": "user"}]}, "parts"),
        ({"contents": [{"parts": ["x"]}]}, "objects"),
        ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "name"),
        ({"contents": [{"parts": [{"functionCall": {"name": "f", "args": [1]}}]}]}, "args"),
        ({"contents": [{"parts": [{"functionResponse": {"response": {}}}]}]}, "name"),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]}, "data"),
        ({"contents": [], "systemInstruction": 5}, "systemInstruction"),
        ({"contents": [], "tools": {"x": 1}}, "tools"),
        ({"contents": [], "generationConfig": {"temperature": "hot"}}, "temperature"),
    ],
)
def test_parse_request_rejects_malformed(body: Any, message: str) -> None:
    with pytest.raises(ir.Error) as caught:
        gemini.parse_request(body)
    assert caught.value.status == 400 and caught.value.kind == "invalid_request"
    assert message in caught.value.message


# --- build_request -------------------------------------------------------------------


def conversation() -> ir.Request:
    return ir.Request(
        model="gemini-2.5-pro",
        system=["A.", "B."],
        messages=[
            ir.Message(
                "user",
                [
                    ir.Text("hi"),
                    ir.Image(media_type="image/jpeg", data="QUJD"),
                    ir.Image(url="gs://b/i.png"),
                    ir.File(media_type="application/pdf", data="JVBE"),
                ],
            ),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("claude", signature="anthropic-sig", origin="anthropic"),
                    ir.Text("calling"),
                    ir.ToolCall("toolu_1", "look", '{"a":1}'),
                    ir.ToolCall("toolu_2", "look", '{"a":2}'),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("toolu_2", content=[ir.Text('{"seen": "hat"}')]),
                    ir.ToolResult(
                        "toolu_1",
                        content=[ir.Text("a cat"), ir.Image(media_type="image/png", data=PNG)],
                    ),
                    ir.ToolResult(
                        "toolu_3", name="other", content=[ir.Text("oops")], is_error=True
                    ),
                ],
            ),
            ir.Message("system", [ir.Text("late rule")]),
            ir.Message("user", [ir.Text("So?")]),
        ],
    )


def test_build_request_contents() -> None:
    body = gemini.build_request(conversation())
    assert body["systemInstruction"] == {"parts": [{"text": "A.\n\nB."}]}
    user, model, results = body["contents"]
    assert user == {
        "role": "user",
        "parts": [
            {"text": "hi"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/i.png"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        ],
    }
    # foreign thinking is dropped; unsigned calls get the bypass on the first call only;
    # foreign ids are not sent (Gemini pairs by order and name)
    assert model == {
        "role": "model",
        "parts": [
            {"text": "calling"},
            {
                "functionCall": {"name": "look", "args": {"a": 1}},
                "thoughtSignature": gemini.SKIP_SIGNATURE,
            },
            {"functionCall": {"name": "look", "args": {"a": 2}}},
        ],
    }
    # one user turn: every functionResponse in order, then result images, then the
    # mid-conversation system text and the next user message merged in
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "look", "response": {"seen": "hat"}}},
            {"functionResponse": {"name": "look", "response": {"output": "a cat"}}},
            {"functionResponse": {"name": "other", "response": {"error": "oops"}}},
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"text": "late rule"},
            {"text": "So?"},
        ],
    }


def test_build_request_keeps_gemini_signatures() -> None:
    req = ir.Request(
        "gemini-3-pro-preview",
        messages=[
            ir.Message("user", [ir.Text("q")]),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("hmm", signature=SIG_B, origin="gemini"),
                    ir.ToolCall("c1", "f", "{}", signature=SIG_A),
                    ir.ToolCall("c2", "f", "not json"),
                    ir.ToolCall("gcall_7", "f", "{}"),
                    ir.Text("", signature=SIG_B),
                    ir.Text(""),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("c1", content=[ir.Text("1")]),
                    ir.ToolResult("c2", content=[ir.Text("2")]),
                    ir.ToolResult("gcall_7", content=[ir.Text("3")]),
                ],
            ),
        ],
    )
    _, model, results = gemini.build_request(req)["contents"]
    # a signed turn came from Gemini: its ids are echoed, except the ones we made up
    assert model["parts"] == [
        {"text": "hmm", "thought": True, "thoughtSignature": SIG_B},
        {"functionCall": {"id": "c1", "name": "f", "args": {}}, "thoughtSignature": SIG_A},
        {"functionCall": {"id": "c2", "name": "f", "args": {}}},
        {"functionCall": {"name": "f", "args": {}}},
        {"text": "", "thoughtSignature": SIG_B},
    ]
    assert results["parts"] == [
        {"functionResponse": {"id": "c1", "name": "f", "response": {"output": "1"}}},
        {"functionResponse": {"id": "c2", "name": "f", "response": {"output": "2"}}},
        {"functionResponse": {"name": "f", "response": {"output": "3"}}},
    ]


def test_build_request_tools_and_config() -> None:
    req = ir.Request(
        model="gemini-2.5-flash",
        messages=[ir.Message("user", [ir.Text("x")])],
        tools=[
            ir.Tool(
                "f",
                "does f",
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"a": {"type": ["string", "null"], "default": "z"}},
                },
            ),
            ir.Tool("noargs", None, {"type": "object", "properties": {}}),
            ir.Tool("bare"),
        ],
        tool_choice=ir.ToolChoice("tool", "f"),
        parallel_tool_calls=False,
        output=ir.OutputFormat(
            "json_schema",
            {
                "type": "object",
                "title": "T",
                "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                "required": ["a", "b"],
            },
        ),
        reasoning=ir.Reasoning(effort="medium"),
        max_tokens=10,
        temperature=0.1,
        top_p=0.2,
        top_k=3,
        seed=4,
        stop=["s"],
        user="u",
        metadata={"k": "v"},
    )
    body = gemini.build_request(req)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "f",
                    "description": "does f",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "string", "nullable": True}},
                    },
                },
                {"name": "noargs"},
                {"name": "bare"},
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert body["generationConfig"] == {
        "maxOutputTokens": 10,
        "temperature": 0.1,
        "topP": 0.2,
        "topK": 3,
        "seed": 4,
        "stopSequences": ["s"],
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
            "required": ["a", "b"],
            "propertyOrdering": ["b", "a"],
        },
        "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True},
    }
    assert req.dropped == ["parallel_tool_calls", "user", "metadata"]
    # the SDK's own (extra="forbid") models accept what we send
    types.GenerateContentConfig.model_validate(
        {
            **{k: v for k, v in body["generationConfig"].items()},
            "tools": body["tools"],
            "tool_config": body["toolConfig"],
        }
    )


@pytest.mark.parametrize(
    "model, reasoning, expected",
    [
        ("gemini-2.5-flash", ir.Reasoning(enabled=False), {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", ir.Reasoning(enabled=False), {"thinkingLevel": "LOW"}),
        (
            "gemini-3-flash",
            ir.Reasoning(effort="high", include_thoughts=False),
            {"thinkingLevel": "HIGH"},
        ),
        (
            "gemini-3-flash",
            ir.Reasoning(effort="minimal"),
            {"thinkingLevel": "LOW", "includeThoughts": True},
        ),
        (
            "gemini-3-flash",
            ir.Reasoning(budget_tokens=2000),
            {"thinkingBudget": 2000, "includeThoughts": True},
        ),
        (
            "gemini-2.5-pro",
            ir.Reasoning(effort="low", include_thoughts=False),
            {"thinkingBudget": 2048},
        ),
        (
            "gemini-2.5-pro",
            ir.Reasoning(effort="max", include_thoughts=False),
            {"thinkingBudget": 24576},
        ),
        ("gemini-2.5-pro", ir.Reasoning(), {"includeThoughts": True}),
        ("gemini-2.5-pro", ir.Reasoning(effort="none"), {"thinkingBudget": 0}),
    ],
)
def test_build_request_thinking(model: str, reasoning: ir.Reasoning, expected: dict) -> None:
    body = gemini.build_request(ir.Request(model, reasoning=reasoning))
    assert body["generationConfig"]["thinkingConfig"] == expected


def test_build_request_json_mode_and_choices() -> None:
    body = gemini.build_request(
        ir.Request("m", output=ir.OutputFormat("json_object"), tool_choice=ir.ToolChoice("none"))
    )
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    body = gemini.build_request(ir.Request("m", tool_choice=ir.ToolChoice("required")))
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_request_round_trip() -> None:
    once = gemini.parse_request(FULL_REQUEST)
    once.model = "gemini-2.5-flash"
    body = gemini.build_request(once)
    twice = gemini.parse_request(body)
    # result images come back as user images of the same turn; all else is identical
    result = once.messages[-1].parts[0]
    assert isinstance(result, ir.ToolResult)
    image = result.content.pop()
    once.messages[-1].parts.insert(1, image)
    assert twice.messages == once.messages
    assert twice.system == ["Be brief.\n\nUse tools."]
    assert twice.tool_choice == once.tool_choice
    assert twice.reasoning == once.reasoning
    assert [t.name for t in twice.tools] == ["look", "peek"]


# --- schema reduction ----------------------------------------------------------------


def test_schema_inlines_refs_and_reduces_nullables() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "title": "Order",
        "additionalProperties": False,
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "examples": ["A1"]},
                    "qty": {"type": "integer", "exclusiveMinimum": 0, "default": 1},
                },
                "required": ["sku", "ghost"],
            }
        },
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "uniqueItems": True},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "n"},
            "when": {"type": "string", "format": "date-time"},
            "site": {"type": "string", "format": "uri"},
            "mode": {"anyOf": [{"const": "a"}, {"const": "b"}]},
            "level": {"enum": [1, 2, 3], "type": "integer"},
            "tag": {"enum": ["x", None]},
            "both": {"type": ["string", "integer"], "minLength": 1, "minimum": 0},
            "fixed": {"const": "only"},
        },
    }
    assert to_gemini(schema) == {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "minimum": 0},
                    },
                    "required": ["sku"],
                },
            },
            "note": {"type": "string", "description": "n", "nullable": True},
            "when": {"type": "string", "format": "date-time"},
            "site": {"type": "string"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "level": {"type": "integer", "description": "Allowed values: 1, 2, 3"},
            "tag": {"type": "string", "enum": ["x"], "nullable": True},
            "both": {
                "anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}]
            },
            "fixed": {"type": "string", "enum": ["only"]},
        },
    }


def test_schema_recursive_ref_terminates() -> None:
    schema = {
        "$ref": "#/definitions/Node",
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                },
            }
        },
    }
    assert to_gemini(schema) == {
        "type": "object",
        "properties": {
            "value": {"type": "string"},
            "children": {"type": "array", "items": {"type": "object"}},
        },
    }


def test_schema_unions_and_all_of() -> None:
    assert to_gemini({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}) == {
        "anyOf": [{"type": "string"}, {"type": "integer"}],
        "nullable": True,
    }
    assert to_gemini(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]},
            ]
        }
    ) == {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }
    assert to_gemini({"type": "null"}) == {"type": "string", "nullable": True}
    assert to_gemini({"$ref": "#/missing"}) == {"type": "object"}
    assert to_gemini({"type": "object", "properties": {}}) == {"type": "object"}
    assert to_gemini(True) == {} and to_gemini(None) == {}


def test_reduced_schemas_validate_against_sdk_schema_model() -> None:
    for tool in FULL_REQUEST["tools"][0]["functionDeclarations"]:
        parsed = gemini.parse_request(
            {"contents": [], "tools": [{"functionDeclarations": [tool]}]}
        ).tools[0]
        types.Schema.model_validate(to_gemini(parsed.parameters))
    types.Schema.model_validate(
        to_gemini(
            {
                "type": "object",
                "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            },
            property_ordering=True,
        )
    )


def test_from_gemini() -> None:
    assert from_gemini(
        {
            "type": "OBJECT",
            "properties": {
                "e": {"type": "STRING", "enum": ["a"], "nullable": True},
                "u": {"anyOf": [{"type": "STRING"}], "nullable": True},
                "l": {"type": "ARRAY", "items": {"type": "NUMBER"}, "example": [1]},
            },
            "propertyOrdering": ["e", "u", "l"],
        }
    ) == {
        "type": "object",
        "properties": {
            "e": {"type": ["string", "null"], "enum": ["a", None]},
            "u": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "l": {"type": "array", "items": {"type": "number"}, "examples": [[1]]},
        },
    }


# --- response bodies -----------------------------------------------------------------

UPSTREAM_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "plan", "thought": True},
                    {"text": "Calling."},
                    {"functionCall": {"name": "f", "args": {"q": "x"}}, "thoughtSignature": SIG_A},
                    {"functionCall": {"name": "f", "args": {"q": "y"}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 100,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 60,
        "totalTokenCount": 150,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "r-1",
}


def test_parse_response() -> None:
    out = gemini.parse_response(UPSTREAM_RESPONSE)
    assert (out.id, out.model, out.finish) == ("r-1", "gemini-2.5-flash", "tool_calls")
    thinking, text, call1, call2 = out.parts
    assert thinking == ir.Thinking("plan", origin="gemini") and text == ir.Text("Calling.")
    assert isinstance(call1, ir.ToolCall) and isinstance(call2, ir.ToolCall)
    assert (call1.name, call1.arguments, call1.signature) == ("f", '{"q":"x"}', SIG_A)
    assert call1.id != call2.id and not call1.id.startswith("f")  # never the function name
    assert out.usage == ir.Usage(
        input_tokens=100, output_tokens=50, cached_tokens=60, reasoning_tokens=30
    )
    wrapped = gemini.parse_response({"response": UPSTREAM_RESPONSE, "traceId": "t"})
    assert wrapped.id == "r-1"


@pytest.mark.parametrize(
    "body, finish",
    [
        ({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}, "stop"),
        (
            {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "MAX_TOKENS"}]},
            "length",
        ),
        ({"candidates": [{"finishReason": "SAFETY"}]}, "content_filter"),
        ({"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]}, "content_filter"),
        ({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}, "error"),
        ({"promptFeedback": {"blockReason": "SAFETY"}}, "content_filter"),
    ],
)
def test_parse_response_finish(body: dict, finish: str) -> None:
    assert gemini.parse_response(body).finish == finish


def test_parse_response_error_body_raises() -> None:
    with pytest.raises(ir.Error) as caught:
        gemini.parse_response(
            {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
        )
    assert (caught.value.status, caught.value.kind) == (429, "rate_limit")


def test_build_response_via_sdk(server: ReplayServer) -> None:
    req = ir.Request("gemini-client", reasoning=ir.Reasoning(include_thoughts=True))
    resp = ir.Response(
        "r-9",
        "upstream-model",
        [
            ir.Thinking("plan", origin="anthropic", signature="not-for-gemini"),
            ir.Text("Hi"),
            ir.ToolCall("toolu_1", "f", '{"q":1}'),
            ir.ToolCall("toolu_2", "f", "{}", signature=SIG_A),
        ],
        "tool_calls",
        usage=ir.Usage(10, 8, cached_tokens=4, reasoning_tokens=3),
    )
    body = gemini.build_response(resp, req)
    server.reply(json.dumps(body).encode(), content_type="application/json")
    out = client(server).models.generate_content(model="gemini-client", contents="hi")
    assert out.text == "Hi" and out.response_id == "r-9"
    parts = out.candidates[0].content.parts
    # another provider's signature: base64 of "<origin>:<sig>", bytes once the SDK has it
    assert (parts[0].thought, parts[0].text, parts[0].thought_signature) == (
        True,
        "plan",
        b"anthropic:not-for-gemini",
    )
    assert [c.id for c in out.function_calls] == ["toolu_1", "toolu_2"]
    assert out.function_calls[0].args == {"q": 1}
    assert parts[3].thought_signature == b"signature-a"
    assert out.candidates[0].finish_reason == types.FinishReason.STOP
    usage = out.usage_metadata
    assert (
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.thoughts_token_count,
        usage.cached_content_token_count,
        usage.total_token_count,
    ) == (10, 5, 3, 4, 18)


def test_build_response_hides_thoughts_unless_asked() -> None:
    resp = ir.Response(
        "r",
        "m",
        [
            ir.Thinking("secret", origin="gemini", signature=SIG_B),
            ir.Thinking("other", origin="anthropic"),
            # hidden text cannot come back, so neither can the signature that signs it
            ir.Thinking("signed", origin="anthropic", signature="sig-1"),
            ir.Thinking(redacted=True, data="redacted-1", origin="anthropic"),
            ir.Text("x"),
        ],
    )
    parts = gemini.build_response(resp, ir.Request("m"))["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "", "thought": True, "thoughtSignature": SIG_B}, {"text": "x"}]


@pytest.mark.parametrize(
    "finish, reason",
    [
        ("stop", "STOP"),
        ("tool_calls", "STOP"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "SAFETY"),
        ("error", "OTHER"),
    ],
)
def test_build_response_finish(finish: ir.FinishReason, reason: str) -> None:
    body = gemini.build_response(ir.Response("r", "m", [], finish), ir.Request("m"))
    assert body["candidates"][0]["finishReason"] == reason


# --- stream encoder, checked by the SDK ----------------------------------------------

RICH_EVENTS: list[ir.Event] = [
    ir.Start("r-up", "gemini-up"),
    ir.ThinkingDelta("Let me ", origin="gemini"),
    ir.ThinkingDelta("think.", origin="gemini"),
    ir.ThinkingSignature(SIG_B, origin="gemini"),
    ir.TextDelta("Hel"),
    ir.TextDelta("lo wörld"),
    ir.TextDelta("", signature=SIG_B),
    ir.ToolCallStart("call_1", "look", signature=SIG_A),
    ir.ToolCallDelta('{"a"'),
    ir.ToolCallDelta(":1}"),
    ir.ToolCallStart("call_2", "look"),
    ir.ToolCallDelta('{"a":2}'),
    ir.Finish("tool_calls", ir.Usage(10, 5, cached_tokens=3, reasoning_tokens=2)),
]
THINKING_REQ = ir.Request("gemini-client", reasoning=ir.Reasoning(include_thoughts=True))


def stream_chunks(server: ReplayServer, body: bytes) -> list[types.GenerateContentResponse]:
    server.reply(body)
    return list(client(server).models.generate_content_stream(model="gemini-client", contents="hi"))


def test_stream_encoder_sse_wire_format() -> None:
    body = encode_all(RICH_EVENTS, THINKING_REQ)
    assert body.endswith(b"\n\n") and b"event:" not in body and b"[DONE]" not in body
    lines = [line for line in body.split(b"\n") if line]
    assert all(line.startswith(b"data: {") for line in lines)
    last = json.loads(lines[-1][6:])
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "call_2", "name": "look", "args": {"a": 2}}}
    ]
    assert last["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 3,
        "totalTokenCount": 15,
        "thoughtsTokenCount": 2,
        "cachedContentTokenCount": 3,
    }


def test_stream_encoder_via_sdk(server: ReplayServer) -> None:
    chunks = stream_chunks(server, encode_all(RICH_EVENTS, THINKING_REQ))
    assert server.requests[-1].path.endswith(":streamGenerateContent?alt=sse")
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    thoughts = "".join(p.text for p in parts if p.thought)
    text = "".join(c.text or "" for c in chunks)
    assert thoughts == "Let me think." and text == "Hello wörld"
    signatures = [p.thought_signature for p in parts if p.thought_signature]
    assert signatures == [b"signature-b", b"signature-b", b"signature-a"]
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.id, fc.name, fc.args) for fc in calls] == [
        ("call_1", "look", {"a": 1}),
        ("call_2", "look", {"a": 2}),
    ]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 15
    assert {c.response_id for c in chunks} == {"r-up"}


def test_stream_encoder_hides_thought_text_unless_asked(server: ReplayServer) -> None:
    chunks = stream_chunks(server, encode_all(RICH_EVENTS, ir.Request("gemini-client")))
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert [p.text for p in parts if p.thought] == [""]  # the signature still travels


def test_stream_encoder_error_raises_in_sdk(server: ReplayServer) -> None:
    body = encode_all(
        [
            ir.Start("r", "m"),
            ir.TextDelta("par"),
            ir.ToolCallStart("c", "f"),
            ir.Error(503, "unavailable", "overloaded"),
        ]
    )
    assert json.loads(body.split(b"data: ")[-1]) == {
        "error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}
    }
    with pytest.raises(genai_errors.ServerError) as caught:
        stream_chunks(server, body)
    assert caught.value.code == 503


def test_stream_encoder_length_and_empty_finish(server: ReplayServer) -> None:
    chunks = stream_chunks(
        server, encode_all([ir.Start("r", "m"), ir.TextDelta("cut"), ir.Finish("length")])
    )
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert "".join(c.text or "" for c in chunks) == "cut"


def test_stream_encoder_json_array_mode() -> None:
    encoder = gemini.StreamEncoder(THINKING_REQ, sse=False)
    assert encoder.content_type == "application/json"
    pieces = [encoder.encode(e) for e in RICH_EVENTS]
    body = b"".join(pieces)
    assert body.startswith(b"[{") and body.endswith(b"}]")
    array = json.loads(body)
    assert array[-1]["candidates"][0]["finishReason"] == "STOP"
    assert (
        "".join(
            p.get("text", "")
            for c in array
            for p in c["candidates"][0]["content"]["parts"]
            if not p.get("thought")
        )
        == "Hello wörld"
    )
    errored = encode_all([ir.Error(400, "invalid_request", "bad")], sse=False)
    assert json.loads(errored) == [
        {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    ]


# --- stream decoder ------------------------------------------------------------------

UPSTREAM_STREAM = sse(
    chunk({"text": "Plan", "thought": True}, usage={"promptTokenCount": 9}),
    chunk({"text": " more", "thought": True}),
    chunk({"text": "Grüße "}, {"text": "🙂"}),
    chunk(
        {"functionCall": {"name": "f", "args": {"q": "x"}}, "thoughtSignature": SIG_A},
        {"functionCall": {"name": "f", "args": {"q": "y"}}},
    ),
    chunk(
        {"text": "", "thoughtSignature": SIG_B},
        finish="STOP",
        usage={
            "promptTokenCount": 9,
            "candidatesTokenCount": 7,
            "thoughtsTokenCount": 4,
            "cachedContentTokenCount": 2,
            "totalTokenCount": 20,
        },
    ),
)
EXPECTED_EVENTS: list[ir.Event] = [
    ir.Start("r-up", "gemini-2.5-flash", ir.Usage(input_tokens=9)),
    ir.ThinkingDelta("Plan", origin="gemini"),
    ir.ThinkingDelta(" more", origin="gemini"),
    ir.TextDelta("Grüße "),
    ir.TextDelta("🙂"),
    ir.ToolCallStart("#0", "f", signature=SIG_A),
    ir.ToolCallDelta('{"q":"x"}'),
    ir.ToolCallStart("#1", "f"),
    ir.ToolCallDelta('{"q":"y"}'),
    ir.TextDelta("", signature=SIG_B),
    ir.Finish("tool_calls", ir.Usage(9, 11, cached_tokens=2, reasoning_tokens=4)),
]


def test_stream_decoder_full() -> None:
    events = decode_all(UPSTREAM_STREAM)
    assert normalized(events) == EXPECTED_EVENTS
    first, second = (e.id for e in events if isinstance(e, ir.ToolCallStart))
    assert first != second


def test_stream_decoder_every_byte_boundary() -> None:
    for cut in range(len(UPSTREAM_STREAM) + 1):
        assert normalized(decode_all(UPSTREAM_STREAM, [cut])) == EXPECTED_EVENTS, cut


def test_stream_decoder_byte_by_byte() -> None:
    cuts = list(range(1, len(UPSTREAM_STREAM)))
    assert normalized(decode_all(UPSTREAM_STREAM, cuts)) == EXPECTED_EVENTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(UPSTREAM_STREAM)), max_size=30))
def test_stream_decoder_random_chunking(cuts: list[int]) -> None:
    assert normalized(decode_all(UPSTREAM_STREAM, sorted(cuts))) == EXPECTED_EVENTS


def test_stream_decoder_json_array_mode_any_chunking() -> None:
    array = (
        "["
        + ",\r\n".join(
            json.dumps(json.loads(line[6:]), ensure_ascii=False)
            for line in UPSTREAM_STREAM.decode().split("\r\n\r\n")
            if line
        )
        + "]"
    ).encode()
    assert normalized(decode_all(array)) == EXPECTED_EVENTS
    for cut in range(0, len(array) + 1, 7):
        assert normalized(decode_all(array, [cut])) == EXPECTED_EVENTS


def test_stream_decoder_code_assist_wrapping() -> None:
    data = sse({"response": chunk({"text": "hi"}, finish="STOP"), "traceId": "t"})
    assert [type(e).__name__ for e in decode_all(data)] == ["Start", "TextDelta", "Finish"]


def test_stream_decoder_thought_signatures_split_blocks() -> None:
    data = sse(
        chunk({"text": "a", "thought": True, "thoughtSignature": SIG_A}),
        chunk({"text": "b", "thought": True}),
        chunk({"text": "", "thought": True, "thoughtSignature": SIG_B}),
        chunk({"text": "done"}, finish="STOP"),
    )
    assert normalized(decode_all(data))[1:-1] == [
        ir.ThinkingDelta("a", "gemini"),
        ir.ThinkingSignature(SIG_A, "gemini"),
        ir.BlockBreak(),
        ir.ThinkingDelta("b", "gemini"),
        ir.ThinkingSignature(SIG_B, "gemini"),
        ir.TextDelta("done"),
    ]


@pytest.mark.parametrize(
    "chunks, finish",
    [
        ([chunk({"text": "x"}, finish="MAX_TOKENS")], "length"),
        ([chunk({"text": "x"}), chunk(finish="SAFETY")], "content_filter"),
        ([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}], "content_filter"),
    ],
)
def test_stream_decoder_finish(chunks: list[dict], finish: str) -> None:
    events = decode_all(sse(*chunks))
    assert isinstance(events[-1], ir.Finish) and events[-1].reason == finish


def test_stream_decoder_a_stream_cut_before_its_finish_reason_is_an_error() -> None:
    """Every Gemini stream ends with a finishReason (gemini-cli itself refuses one
    without: NO_FINISH_REASON); EOF after content without one is a cut stream."""
    events = decode_all(sse(chunk({"text": "x"})))
    assert isinstance(events[-1], ir.Error) and events[-1].status == 502


def test_stream_decoder_errors() -> None:
    events = decode_all(
        sse(
            chunk({"text": "x"}),
            {
                "error": {
                    "code": 429,
                    "message": "quota",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
                    ],
                }
            },
            chunk({"text": "ignored"}),
        )
    )
    assert events[-1] == ir.Error(429, "rate_limit", "quota", retry_after=7.0)
    assert decode_all(b"") == [
        ir.Error(502, "bad_gateway", "upstream stream ended without content")
    ]
    assert isinstance(decode_all(b"data: {not json\n\n")[-1], ir.Error)


def test_decoder_to_encoder_round_trip_via_sdk(server: ReplayServer) -> None:
    chunks = stream_chunks(server, encode_all(decode_all(UPSTREAM_STREAM), THINKING_REQ))
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert "".join(p.text for p in parts if p.thought) == "Plan more"
    assert "".join(c.text or "" for c in chunks) == "Grüße 🙂"
    calls = [p for p in parts if p.function_call]
    assert [(p.function_call.args, p.thought_signature) for p in calls] == [
        ({"q": "x"}, b"signature-a"),
        ({"q": "y"}, None),
    ]
    assert parts[-2].thought_signature == b"signature-b"  # the empty signed text part
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (
        9,
        7,
        4,
    )


# --- other providers' signatures through a Gemini client ------------------------------


def wrapped(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


FOREIGN_EVENTS: list[ir.Event] = [
    ir.Start("msg_1", "claude-up"),
    ir.ThinkingDelta("Let me ", origin="anthropic"),
    ir.ThinkingDelta("think.", origin="anthropic"),
    ir.ThinkingSignature("sig-claude", origin="anthropic"),
    ir.RedactedThinking("redacted-data", origin="anthropic"),
    ir.ToolCallStart("toolu_1", "look"),
    ir.ToolCallDelta('{"a":1}'),
    ir.Finish("tool_calls", ir.Usage(10, 5)),
]


def replayed_by_sdk(server: ReplayServer, parts: list[types.Part]) -> ir.Request:
    """The next turn as google-genai sends it (the model turn as the SDK assembled it, plus
    the tool result), parsed back."""
    server.reply(json.dumps(chunk({"text": "ok"}, finish="STOP")).encode())
    call = next(p.function_call for p in parts if p.function_call)
    response = types.Part.from_function_response(name=call.name, response={"output": "sunny"})
    client(server).models.generate_content(
        model="gemini-client",
        contents=[
            types.Content(role="user", parts=[types.Part(text="go")]),
            types.Content(role="model", parts=parts),
            types.Content(role="user", parts=[response]),
        ],
    )
    return gemini.parse_request(json.loads(server.requests[-1].body))


def test_foreign_signatures_round_trip_through_sdk_stream(server: ReplayServer) -> None:
    """Claude thinking streamed to a Gemini client comes back as Claude thinking: the text
    split over several thought parts joins the signature sent after it."""
    chunks = stream_chunks(server, encode_all(FOREIGN_EVENTS, THINKING_REQ))
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert [p.thought_signature for p in parts if p.thought_signature] == [
        b"anthropic:sig-claude",
        b"anthropic:redacted:redacted-data",
    ]
    turn = replayed_by_sdk(server, parts).messages[1]
    assert turn.role == "assistant"
    assert turn.parts == [
        ir.Thinking("Let me think.", signature="sig-claude", origin="anthropic"),
        ir.Thinking(redacted=True, data="redacted-data", origin="anthropic"),
        ir.ToolCall("toolu_1", "look", '{"a":1}'),
    ]


def test_foreign_signature_round_trip_through_sdk_json(server: ReplayServer) -> None:
    resp = ir.Response(
        "r",
        "gpt-up",
        [
            ir.Thinking("plan", signature="gAAAAB-enc", origin="openai-responses", id="rs_1"),
            ir.ToolCall("call_1", "look", "{}"),
        ],
        "tool_calls",
    )
    server.reply(
        json.dumps(gemini.build_response(resp, THINKING_REQ)).encode(),
        content_type="application/json",
    )
    out = client(server).models.generate_content(model="gemini-client", contents="hi")
    parts = out.candidates[0].content.parts
    assert parts[0].thought_signature == b"openai-responses:gAAAAB-enc"
    turn = replayed_by_sdk(server, parts).messages[1]
    assert turn.parts == [
        ir.Thinking("plan", signature="gAAAAB-enc", origin="openai-responses"),
        ir.ToolCall("call_1", "look", "{}"),
    ]


def test_stream_encoder_hides_foreign_signatures_with_thoughts() -> None:
    body = encode_all(FOREIGN_EVENTS, ir.Request("gemini-client"))
    assert b"thoughtSignature" not in body and b"think" not in body


def foreign_turn(*parts: dict[str, Any]) -> list[ir.Part]:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": list(parts)},
        ]
    }
    return gemini.parse_request(body).messages[1].parts


def test_parse_foreign_signature_on_the_following_part() -> None:
    """Wherever a client put it, the foreign signature leaves its part and becomes the
    thinking before it; Gemini's own signatures stay where they are."""
    parts = foreign_turn(
        {"text": "pl", "thought": True},
        {"text": "an", "thought": True},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": wrapped("anthropic:s1")},
        {"text": "done", "thoughtSignature": SIG_A},
    )
    assert parts == [
        ir.Thinking("plan", signature="s1", origin="anthropic"),
        ir.ToolCall("gcall_0", "f", "{}"),
        ir.Text("done", signature=SIG_A),
    ]


def test_parse_keeps_gemini_thoughts_apart_from_foreign_ones() -> None:
    parts = foreign_turn(
        {"text": "own", "thought": True, "thoughtSignature": SIG_B},
        {"text": "claude", "thought": True, "thoughtSignature": wrapped("anthropic:s2")},
    )
    assert parts == [
        ir.Thinking("own", signature=SIG_B, origin="gemini"),
        ir.Thinking("claude", signature="s2", origin="anthropic"),
    ]


def urlsafe_unpadded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "value, expected",
    [
        (wrapped("anthropic:c2ln+/="), ("c2ln+/=", "anthropic", False)),
        (urlsafe_unpadded("anthropic:c2ln+/??"), ("c2ln+/??", "anthropic", False)),
        (wrapped("anthropic:redacted:EmwKAh"), ("EmwKAh", "anthropic", True)),
        (wrapped("openai-responses:gAAAAB"), ("gAAAAB", "openai-responses", False)),
        (wrapped("gemini:abc"), None),  # Gemini's own are never wrapped
        (wrapped("anthropic:"), None),
        (wrapped("anthropic:sig\x00"), None),
        (wrapped("claude:sig"), None),
        (base64.b64encode(b"anthropic:\xff\xfe").decode(), None),
        (base64.b64encode(b"\x0a\x24anthropic:sig").decode(), None),
        (SIG_A, None),
        (gemini.SKIP_SIGNATURE, None),
        ("not base64!", None),
    ],
)
def test_unwrap_signature_is_unambiguous(
    value: str, expected: tuple[str, str, bool] | None
) -> None:
    assert _unwrap_foreign(value) == expected


def test_gemini_upstream_never_gets_a_foreign_signature() -> None:
    req = gemini.parse_request(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "go"}]},
                {
                    "role": "model",
                    "parts": [
                        {"text": "t", "thought": True, "thoughtSignature": wrapped("anthropic:s")},
                        {
                            "text": "",
                            "thought": True,
                            "thoughtSignature": wrapped("anthropic:redacted:r"),
                        },
                        {"functionCall": {"name": "f", "args": {}}},
                    ],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ]
        }
    )
    req.model = "gemini-3-pro"
    model_turn = gemini.build_request(req)["contents"][1]
    assert model_turn == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": gemini.SKIP_SIGNATURE}
        ],
    }


# --- errors and model list -----------------------------------------------------------


@pytest.mark.parametrize(
    "err, status",
    [
        (ir.Error(400, "invalid_request", "bad"), "INVALID_ARGUMENT"),
        (ir.Error(401, "authentication", "who"), "UNAUTHENTICATED"),
        (ir.Error(403, "permission", "no"), "PERMISSION_DENIED"),
        (ir.Error(404, "not_found", "gone"), "NOT_FOUND"),
        (ir.Error(429, "rate_limit", "slow"), "RESOURCE_EXHAUSTED"),
        (ir.Error(500, "api_error", "boom"), "INTERNAL"),
        (ir.Error(503, "unavailable", "busy"), "UNAVAILABLE"),
    ],
)
def test_error_body(err: ir.Error, status: str) -> None:
    assert gemini.error_body(err) == {
        "error": {"code": err.status, "message": err.message, "status": status}
    }


def test_error_body_raises_in_sdk(server: ReplayServer) -> None:
    body = gemini.error_body(ir.Error(404, "not_found", "no such model"))
    server.reply(json.dumps(body).encode(), status=404, content_type="application/json")
    with pytest.raises(genai_errors.ClientError) as caught:
        client(server).models.generate_content(model="nope", contents="hi")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    assert caught.value.message == "no such model"


def test_parse_error() -> None:
    err = gemini.parse_error(
        400,
        json.dumps(
            [{"error": {"code": 400, "message": "bad schema", "status": "INVALID_ARGUMENT"}}]
        ).encode(),
    )
    assert (err.status, err.kind, err.message) == (400, "invalid_request", "bad schema")
    err = gemini.parse_error(503, b"<html>busy</html>")
    assert (err.status, err.kind, err.message) == (503, "unavailable", "<html>busy</html>")
    assert gemini.parse_error(500, b"").message == "upstream HTTP 500"
    assert (
        gemini.parse_error(403, b'{"error": {"message": "x", "status": "PERMISSION_DENIED"}}').kind
        == "permission"
    )


def test_model_list_via_sdk(server: ReplayServer) -> None:
    body = gemini.model_list(["gemini-a", "gemini-b"])
    server.reply(json.dumps(body).encode(), content_type="application/json")
    models = list(client(server).models.list())
    assert [m.name for m in models] == ["models/gemini-a", "models/gemini-b"]
    assert "generateContent" in models[0].supported_actions


def test_module_surface() -> None:
    assert gemini.NAME == "gemini" and gemini.ACCEPTS_IMAGE_URLS is False
    assert gemini.StreamEncoder(ir.Request("m")).content_type == "text/event-stream"


# --- across protocols (Gemini <-> Responses, both through ir) ------------------------


def test_gemini_upstream_to_responses_client(server: ReplayServer) -> None:
    import openai

    from router.protocols import openai_responses

    req = openai_responses.parse_request({"model": "m", "input": "hi"})
    encoder = openai_responses.StreamEncoder(req)
    body = b"".join(encoder.encode(e) for e in decode_all(UPSTREAM_STREAM))
    server.reply(body)
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with sdk.responses.stream(model="m", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Grüße 🙂"
    calls = [o for o in final.output if o.type == "function_call"]
    assert [c.arguments for c in calls] == ['{"q":"x"}', '{"q":"y"}']
    assert calls[0].call_id != calls[1].call_id
    assert final.usage.output_tokens == 11 and final.usage.input_tokens_details.cached_tokens == 2


def test_responses_turn_to_gemini_upstream_request() -> None:
    """A Responses tool-result turn becomes a valid Gemini request: names looked up from
    the calls, the results in one user turn, the bypass signature on the first call."""
    from router.protocols import openai_responses

    req = openai_responses.parse_request(
        {
            "model": "gemini-3-flash",
            "input": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "weather",
                    "arguments": '{"c":"P"}',
                },
                {
                    "type": "function_call",
                    "call_id": "c2",
                    "name": "weather",
                    "arguments": '{"c":"R"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": '{"t": 20}'},
                {"type": "function_call_output", "call_id": "c2", "output": "cloudy"},
            ],
        }
    )
    contents = gemini.build_request(req)["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == gemini.SKIP_SIGNATURE
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "weather", "response": {"t": 20}}},
            {"functionResponse": {"name": "weather", "response": {"output": "cloudy"}}},
        ],
    }
