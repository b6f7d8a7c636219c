"""Anthropic Messages protocol module: dict-level conversions, stream decoding under any
chunking, and encoder output checked by the official `anthropic` SDK's own helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.protocols import anthropic as claude
from router.protocols import ir
from tests.sse_replay import ReplayServer

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as replay:
        yield replay


def client(server: ReplayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def decode_all(data: bytes, pieces: list[int] | None = None) -> list[ir.Event]:
    decoder = claude.StreamDecoder()
    events: list[ir.Event] = []
    start = 0
    for end in [*(pieces or []), len(data)]:
        events += decoder.feed(data[start:end])
        start = end
    return events + decoder.close()


def encode_all(events: list[ir.Event], req: ir.Request | None = None) -> bytes:
    encoder = claude.StreamEncoder(req or ir.Request(model="client-model"))
    return b"".join(encoder.encode(e) for e in events)


def stream_final(server: ReplayServer, body: bytes) -> anthropic.types.Message:
    server.reply(body)
    with client(server).messages.stream(
        model="client-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def frames(body: bytes) -> list[tuple[str, dict]]:
    out = []
    for frame in body.split(b"\n\n"):
        if frame:
            event_line, data_line = frame.split(b"\n")
            out.append((event_line[7:].decode(), json.loads(data_line[6:])))
    return out


# --- parse_request -------------------------------------------------------------------


CLAUDE_CODE_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "system", "content": "Extra system text."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at this"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                    "title": "spec.pdf",
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read.", "signature": "c2lnMQ=="},
                {"type": "redacted_thinking", "data": "b3BhcXVl"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"cmd": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "file body"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "denied",
                    "is_error": True,
                },
                {"type": "text", "text": "<system-reminder>go on</system-reminder>"},
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "Mid-way note."}]},
        {"role": "user", "content": "Continue"},
    ],
    "tools": [
        {
            "name": "Read",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
        {"type": "custom", "name": "Bash", "input_schema": {"type": "object"}, "strict": True},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": []},
    "metadata": {"user_id": "user_abc_account_x_session_y"},
    "stop_sequences": ["STOP"],
    "temperature": 1,
    "top_p": 0.99,
    "top_k": 40,
    "stream": True,
}


def test_parse_claude_code_request() -> None:
    req = claude.parse_request(CLAUDE_CODE_REQUEST)
    assert req.model == "claude-sonnet-4-5"
    assert req.system == ["You are Claude Code.", "Be careful.", "Extra system text."]
    user, assistant, results, mid, last = req.messages
    assert user.parts == [
        ir.Text("Look at this"),
        ir.Image(media_type="image/png", data=PNG),
        ir.Image(url="https://x.test/a.png"),
        ir.File(media_type="application/pdf", data="JVBE", filename="spec.pdf"),
    ]
    assert assistant.parts == [
        ir.Thinking("I should read.", signature="c2lnMQ==", origin="anthropic"),
        ir.Thinking(redacted=True, data="b3BhcXVl", origin="anthropic"),
        ir.Text("Reading."),
        ir.ToolCall("toolu_1", "Read", '{"path":"a"}'),
        ir.ToolCall("toolu_2", "Bash", '{"cmd":"ls"}'),
    ]
    assert results.parts == [
        ir.ToolResult("toolu_1", "Read", [ir.Text("file body"), ir.Image("image/png", PNG)]),
        ir.ToolResult("toolu_2", "Bash", [ir.Text("denied")], is_error=True),
        ir.Text("<system-reminder>go on</system-reminder>"),
    ]
    assert mid == ir.Message("system", [ir.Text("Mid-way note.")])
    assert last == ir.Message("user", [ir.Text("Continue")])
    assert [t.name for t in req.tools] == ["Read", "Bash"]
    assert req.tools[1].strict is True
    assert req.tool_choice == ir.ToolChoice("required")
    assert req.parallel_tool_calls is False
    assert req.reasoning == ir.Reasoning(effort="high")
    assert req.max_tokens == 32000
    assert req.user == "user_abc_account_x_session_y"
    assert req.stop == ["STOP"]
    assert (req.temperature, req.top_p, req.top_k, req.stream) == (1, 0.99, 40, True)
    assert sorted(req.dropped) == ["context_management", "tools.web_search_20250305"]


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [
        (
            {"thinking": {"type": "enabled", "budget_tokens": 5000}},
            ir.Reasoning(budget_tokens=5000),
        ),
        ({"thinking": {"type": "disabled"}}, ir.Reasoning(enabled=False)),
        (
            {
                "output_config": {"effort": "low"},
                "thinking": {"type": "adaptive", "display": "omitted"},
            },
            ir.Reasoning(effort="low", include_thoughts=False),
        ),
        ({"output_config": {"effort": "max"}}, ir.Reasoning(effort="max")),
    ],
)
def test_parse_reasoning(fields: dict, reasoning: ir.Reasoning) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **fields}
    assert claude.parse_request(body).reasoning == reasoning


@pytest.mark.parametrize(
    "fields",
    [
        {"output_format": {"type": "json_schema", "schema": {"type": "object"}}},
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
    ],
)
def test_parse_structured_output(fields: dict) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **fields}
    assert claude.parse_request(body).output == ir.OutputFormat("json_schema", {"type": "object"})


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ir.ToolChoice("auto"), None),
        ({"type": "none"}, ir.ToolChoice("none"), None),
        ({"type": "any"}, ir.ToolChoice("required"), None),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            ir.ToolChoice("tool", "f"),
            False,
        ),
    ],
)
def test_parse_tool_choice(choice: dict, expected: ir.ToolChoice, parallel: bool | None) -> None:
    body = {
        "model": "m",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": choice,
    }
    req = claude.parse_request(body)
    assert req.tool_choice == expected and req.parallel_tool_calls is parallel


def test_parse_foreign_signatures_back_from_client() -> None:
    body = {
        "model": "m",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "g", "signature": "gemini:R2VtaW5p"},
                    {"type": "thinking", "thinking": "o", "signature": "openai-responses:enc"},
                    {"type": "thinking", "thinking": "none", "signature": ""},
                    {"type": "redacted_thinking", "data": "openai-responses:blob"},
                    {"type": "thinking", "thinking": "c", "signature": "weird:but-ours"},
                ],
            },
        ],
    }
    parts = claude.parse_request(body).messages[1].parts
    assert parts == [
        ir.Thinking("g", signature="R2VtaW5p", origin="gemini"),
        ir.Thinking("o", signature="enc", origin="openai-responses"),
        ir.Thinking("none"),
        ir.Thinking(redacted=True, data="blob", origin="openai-responses"),
        ir.Thinking("c", signature="weird:but-ours", origin="anthropic"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        "text",
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m"},
        {"model": "m", "messages": {}},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": 3}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "system": 5},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "on"}},
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "x"},
        },
    ],
)
def test_parse_request_rejects_malformed(body: object) -> None:
    with pytest.raises(ir.Error) as info:
        claude.parse_request(body)  # type: ignore[arg-type]
    assert info.value.status == 400 and info.value.kind == "invalid_request"


# --- build_request -------------------------------------------------------------------


def conversation(*messages: ir.Message, **fields: object) -> ir.Request:
    return ir.Request(model="claude-sonnet-4-5", messages=list(messages), **fields)  # type: ignore[arg-type]


def test_build_request_shapes_the_conversation() -> None:
    req = conversation(
        ir.Message("user", [ir.Text("hello"), ir.Text("  "), ir.Image("image/png", PNG)]),
        ir.Message(
            "user", [ir.Image(url="https://x.test/i.png"), ir.File("application/pdf", "JVBE")]
        ),
        ir.Message(
            "assistant",
            [
                ir.Thinking("foreign", signature="x", origin="gemini"),
                ir.Text(""),
                ir.ToolCall("call:1/a", "f", '{"a": 1}'),
                ir.ToolCall("call_2", "g", "not json"),
            ],
        ),
        ir.Message(
            "user",
            [
                ir.Text("note first"),
                ir.ToolResult("call_2", "g", [ir.Text("two")]),
                ir.ToolResult(
                    "call:1/a", "f", [ir.Text("one"), ir.Image("image/png", PNG)], is_error=True
                ),
            ],
        ),
        ir.Message("system", [ir.Text("mid system")]),
        ir.Message("assistant", [ir.Text("ok")]),
        system=["A", "", "B"],
    )
    body = claude.build_request(req)
    sanitized = claude.sanitize_tool_id("call:1/a")
    assert sanitized.startswith("call_1_a_") and claude.sanitize_tool_id("call:1/a") == sanitized
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16384,
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello"},
                    image,
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}},
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBE",
                        },
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": sanitized, "name": "f", "input": {"a": 1}},
                    {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "two"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": sanitized,
                        "content": [{"type": "text", "text": "one"}, image],
                        "is_error": True,
                    },
                    {"type": "text", "text": "note first"},
                    {"type": "text", "text": "mid system"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        ],
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-5", 16384),
        ("claude-opus-4-1-20250805", 16384),
        ("claude-3-7-sonnet-latest", 8192),
        ("claude-3-5-haiku", 8192),
        ("claude-3-haiku-20240307", 4096),
        ("glm-4.6", 4096),
    ],
)
def test_default_max_tokens(model: str, expected: int) -> None:
    body = claude.build_request(
        ir.Request(model=model, messages=[ir.Message("user", [ir.Text("x")])])
    )
    assert body["max_tokens"] == expected


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "thinking", "sent_max"),
    [
        (ir.Reasoning(effort="low"), None, {"type": "enabled", "budget_tokens": 2048}, 16384),
        (ir.Reasoning(effort="medium"), None, {"type": "enabled", "budget_tokens": 8192}, 16384),
        (ir.Reasoning(effort="high"), None, {"type": "enabled", "budget_tokens": 16384}, 20480),
        (ir.Reasoning(effort="xhigh"), None, {"type": "enabled", "budget_tokens": 24576}, 28672),
        (ir.Reasoning(), None, {"type": "enabled", "budget_tokens": 8192}, 16384),
        (ir.Reasoning(budget_tokens=500), None, {"type": "enabled", "budget_tokens": 1024}, 16384),
        (ir.Reasoning(effort="high"), 10000, {"type": "enabled", "budget_tokens": 5904}, 10000),
        (ir.Reasoning(effort="high"), 2000, {"type": "enabled", "budget_tokens": 1024}, 2000),
        (ir.Reasoning(effort="high"), 1000, None, 1000),
        (ir.Reasoning(effort="none"), None, None, 16384),
        (ir.Reasoning(enabled=False, effort="high"), None, None, 16384),
    ],
)
def test_reasoning_to_thinking_budget(
    reasoning: ir.Reasoning, max_tokens: int | None, thinking: dict | None, sent_max: int
) -> None:
    req = conversation(
        ir.Message("user", [ir.Text("x")]), reasoning=reasoning, max_tokens=max_tokens
    )
    body = claude.build_request(req)
    assert body.get("thinking") == thinking
    assert body["max_tokens"] == sent_max


def test_old_claude_gets_no_thinking() -> None:
    req = ir.Request(
        model="claude-3-5-sonnet-latest",
        messages=[ir.Message("user", [ir.Text("x")])],
        reasoning=ir.Reasoning(effort="high"),
    )
    body = claude.build_request(req)
    assert "thinking" not in body and body["max_tokens"] == 8192
    assert req.dropped == ["reasoning"]


def tool_loop(first: list[ir.Part]) -> list[ir.Message]:
    return [
        ir.Message("user", [ir.Text("do it")]),
        ir.Message("assistant", [*first, ir.ToolCall("t1", "f", "{}")]),
        ir.Message("user", [ir.ToolResult("t1", "f", [ir.Text("done")])]),
    ]


def test_thinking_kept_with_signed_block_in_tool_loop() -> None:
    signed = ir.Thinking("why", signature="c2ln", origin="anthropic")
    req = conversation(*tool_loop([signed]), reasoning=ir.Reasoning(effort="low"), temperature=0.3)
    body = claude.build_request(req)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "why",
        "signature": "c2ln",
    }
    assert "temperature" not in body and req.dropped == ["temperature"]


@pytest.mark.parametrize(
    "first",
    [[], [ir.Thinking("why", signature="R2Vt", origin="gemini")], [ir.Thinking("no signature")]],
    ids=["no-thinking", "foreign", "unsigned"],
)
def test_thinking_turned_off_without_valid_block(first: list[ir.Part]) -> None:
    """The reasoning asked for cannot go: reported (strict mode refuses it), not silent."""
    req = conversation(*tool_loop(first), reasoning=ir.Reasoning(effort="high"), temperature=0.3)
    body = claude.build_request(req)
    assert "thinking" not in body
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    ]
    assert body["temperature"] == 0.3 and req.dropped == ["reasoning"]


@pytest.mark.parametrize(
    "reasoning",
    [None, ir.Reasoning(enabled=False), ir.Reasoning(budget_tokens=0)],
    ids=["absent", "off", "zero-budget"],
)
def test_history_thinking_stripped_silently_when_none_asked(reasoning: ir.Reasoning | None) -> None:
    signed = ir.Thinking("why", signature="c2ln", origin="anthropic")
    req = conversation(*tool_loop([signed]), reasoning=reasoning)
    body = claude.build_request(req)
    assert "thinking" not in body
    assert [b["type"] for b in body["messages"][1]["content"]] == ["tool_use"]
    assert req.dropped == []


def test_thinking_off_when_max_tokens_leaves_no_budget() -> None:
    req = conversation(reasoning=ir.Reasoning(effort="high"), max_tokens=1000)
    body = claude.build_request(req)
    assert "thinking" not in body and body["max_tokens"] == 1000
    assert req.dropped == ["reasoning"]


def test_thinking_off_with_forced_tool_and_blocks_stripped() -> None:
    signed = ir.Thinking("why", signature="c2ln", origin="anthropic")
    req = conversation(
        *tool_loop([signed]),
        reasoning=ir.Reasoning(effort="high"),
        tools=[ir.Tool("f")],
        tool_choice=ir.ToolChoice("tool", "f"),
    )
    body = claude.build_request(req)
    assert "thinking" not in body
    assert all(b["type"] != "thinking" for m in body["messages"] for b in m["content"])
    assert body["tool_choice"] == {"type": "tool", "name": "f"}
    assert req.dropped == ["reasoning"]


def test_build_tools_choice_output_and_drops() -> None:
    req = conversation(
        ir.Message("user", [ir.Text("x")]),
        tools=[
            ir.Tool("f", "does f", {"type": "object", "properties": {"a": {}}}, True),
            ir.Tool("g"),
        ],
        tool_choice=ir.ToolChoice("none"),
        output=ir.OutputFormat("json_schema", {"type": "object", "properties": {}}, "n", True),
        stop=["\n", "END"],
        seed=1,
        user="u",
        metadata={"user_id": "u", "other": "x"},
        top_k=3,
        stream=True,
    )
    body = claude.build_request(req)
    assert body["tools"] == [
        {
            "name": "f",
            "description": "does f",
            "input_schema": {"type": "object", "properties": {"a": {}}},
            "strict": True,
        },
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "none"}
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}}
    }
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u"}
    assert body["top_k"] == 3 and body["stream"] is True
    assert sorted(req.dropped) == ["metadata", "seed", "stop"]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ir.ToolChoice("required"), None, {"type": "any"}),
        (ir.ToolChoice("auto"), False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            ir.ToolChoice("tool", "f"),
            False,
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
        (None, None, None),
    ],
)
def test_build_tool_choice(
    choice: ir.ToolChoice | None, parallel: bool | None, expected: dict | None
) -> None:
    req = conversation(
        ir.Message("user", [ir.Text("x")]),
        tools=[ir.Tool("f")],
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    assert claude.build_request(req).get("tool_choice") == expected


def test_system_only_request_becomes_a_user_turn() -> None:
    body = claude.build_request(ir.Request(model="claude-x", system=["Say hi."]))
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    assert "system" not in body


def test_temperature_above_one_is_clamped() -> None:
    req = conversation(ir.Message("user", [ir.Text("x")]), temperature=1.7)
    assert claude.build_request(req)["temperature"] == 1.0
    assert req.dropped == ["temperature"]


def test_json_mode_becomes_an_instruction() -> None:
    req = conversation(
        ir.Message("user", [ir.Text("x")]), output=ir.OutputFormat("json_object"), system=["S"]
    )
    body = claude.build_request(req)
    assert body["system"][0] == {"type": "text", "text": "S"}
    assert "JSON" in body["system"][1]["text"]
    assert "output_config" not in body


def test_request_round_trip_keeps_claude_code_body() -> None:
    req = claude.parse_request(CLAUDE_CODE_REQUEST)
    req.tool_choice = ir.ToolChoice("auto")  # a forced tool would switch thinking off
    body = claude.build_request(req)
    again = claude.parse_request(body)
    # the mid-conversation system text becomes user text, merged with its neighbours
    merged = [*req.messages[2].parts, ir.Text("Mid-way note."), ir.Text("Continue")]
    assert again.messages == [*req.messages[:2], ir.Message("user", merged)]
    assert again.system == req.system
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["temperature"] == 1 and body["top_p"] == 0.99 and "top_k" not in body


# --- non-stream responses ------------------------------------------------------------


UPSTREAM_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-up",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "cmVk"},
        {"type": "text", "text": "Here."},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
        "output_tokens": 30,
        "output_tokens_details": {"thinking_tokens": 12},
    },
}


def test_parse_response() -> None:
    resp = claude.parse_response(UPSTREAM_MESSAGE)
    assert resp.id == "msg_01" and resp.model == "claude-up"
    assert resp.parts == [
        ir.Thinking("hmm", signature="c2ln", origin="anthropic"),
        ir.Thinking(redacted=True, data="cmVk", origin="anthropic"),
        ir.Text("Here."),
        ir.ToolCall("toolu_1", "f", '{"a":[1,2]}'),
    ]
    assert resp.finish == "tool_calls"
    assert resp.usage == ir.Usage(115, 30, 100, 5, 12)


@pytest.mark.parametrize(
    ("wire", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_parse_stop_reasons(wire: str, finish: str) -> None:
    body = {"id": "m", "model": "m", "content": [], "stop_reason": wire, "usage": {}}
    assert claude.parse_response(body).finish == finish


def test_parse_response_error_body() -> None:
    with pytest.raises(ir.Error) as info:
        claude.parse_response(
            {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
        )
    assert (info.value.status, info.value.kind, info.value.message) == (529, "overloaded", "busy")


def test_build_response_round_trip_and_sdk_model() -> None:
    resp = claude.parse_response(UPSTREAM_MESSAGE)
    body = claude.build_response(resp, ir.Request(model="client-model"))
    assert body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 30,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
        "output_tokens_details": {"thinking_tokens": 12},
    }
    assert body["stop_reason"] == "tool_use"
    again = claude.parse_response(body)
    assert again.parts == resp.parts and again.usage == resp.usage
    message = anthropic.types.Message.model_validate(body)
    assert message.content[3].input == {"a": [1, 2]}


def test_build_response_foreign_thinking_and_stop_sequence() -> None:
    resp = ir.Response(
        id="chatcmpl-9",
        model="gpt",
        parts=[
            ir.Thinking("g", signature="R2Vt", origin="gemini"),
            ir.Thinking("plain"),
            ir.Thinking(redacted=True, data="enc", origin="openai-responses"),
            ir.Text("x"),
        ],
        finish="stop",
        stop_sequence="END",
        usage=ir.Usage(50, 5, 20),
    )
    body = claude.build_response(resp, ir.Request(model="client-model"))
    assert body["id"] == "msg_chatcmpl-9"
    assert body["content"][:3] == [
        {"type": "thinking", "thinking": "g", "signature": "gemini:R2Vt"},
        {"type": "thinking", "thinking": "plain", "signature": ""},
        {"type": "redacted_thinking", "data": "openai-responses:enc"},
    ]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    assert body["usage"]["input_tokens"] == 30 and body["usage"]["cache_read_input_tokens"] == 20


# --- stream decoder ------------------------------------------------------------------


def block_start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


UPSTREAM_STREAM = sse(
    {
        "type": "message_start",
        "message": {
            "id": "msg_up",
            "type": "message",
            "role": "assistant",
            "model": "claude-up",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 50, "output_tokens": 1},
        },
    },
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    block_delta(0, {"type": "thinking_delta", "thinking": "Ponder "}),
    {"type": "ping"},
    block_delta(0, {"type": "thinking_delta", "thinking": "ñ 🤔"}),
    block_delta(0, {"type": "signature_delta", "signature": "U0lHTkFUVVJF"}),
    block_stop(0),
    block_start(1, {"type": "redacted_thinking", "data": "UkVEQUNURUQ="}),
    block_stop(1),
    block_start(2, {"type": "text", "text": ""}),
    block_delta(2, {"type": "text_delta", "text": "Hello, "}),
    block_delta(2, {"type": "text_delta", "text": "wörld ✓"}),
    block_stop(2),
    block_start(3, {"type": "text", "text": ""}),
    block_delta(3, {"type": "text_delta", "text": "Second block."}),
    block_stop(3),
    block_start(
        4, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    ),
    block_delta(4, {"type": "input_json_delta", "partial_json": '{"q":"x"}'}),
    block_stop(4),
    block_start(5, {"type": "tool_use", "id": "toolu_a", "name": "get", "input": {}}),
    block_delta(5, {"type": "input_json_delta", "partial_json": ""}),
    block_delta(5, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
    block_delta(5, {"type": "input_json_delta", "partial_json": 'ris"}'}),
    block_stop(5),
    block_start(6, {"type": "tool_use", "id": "toolu_b", "name": "put", "input": {}}),
    block_delta(6, {"type": "input_json_delta", "partial_json": "{}"}),
    block_stop(6),
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 77, "output_tokens_details": {"thinking_tokens": 9}},
    },
    {"type": "message_stop"},
)

UPSTREAM_EVENTS = [
    ir.Start("msg_up", "claude-up", ir.Usage(70, 1, 50)),
    ir.ThinkingDelta("Ponder ", "anthropic"),
    ir.ThinkingDelta("ñ 🤔", "anthropic"),
    ir.ThinkingSignature("U0lHTkFUVVJF", "anthropic"),
    ir.RedactedThinking("UkVEQUNURUQ=", "anthropic"),
    ir.BlockBreak(),
    ir.TextDelta("Hello, "),
    ir.TextDelta("wörld ✓"),
    ir.BlockBreak(),
    ir.TextDelta("Second block."),
    ir.ToolCallStart("toolu_a", "get"),
    ir.ToolCallDelta('{"city": "Pa'),
    ir.ToolCallDelta('ris"}'),
    ir.ToolCallStart("toolu_b", "put"),
    ir.ToolCallDelta("{}"),
    ir.Finish("tool_calls", ir.Usage(70, 77, 50, 0, 9)),
]


def test_decode_stream() -> None:
    assert decode_all(UPSTREAM_STREAM) == UPSTREAM_EVENTS


def test_decode_byte_by_byte_and_every_split() -> None:
    assert decode_all(UPSTREAM_STREAM, list(range(1, len(UPSTREAM_STREAM)))) == UPSTREAM_EVENTS
    for split in range(1, len(UPSTREAM_STREAM), 3):
        assert decode_all(UPSTREAM_STREAM, [split]) == UPSTREAM_EVENTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, len(UPSTREAM_STREAM) - 1), max_size=60, unique=True))
def test_decode_random_chunking(cuts: list[int]) -> None:
    assert decode_all(UPSTREAM_STREAM, sorted(cuts)) == UPSTREAM_EVENTS


def test_decode_message_delta_corrects_input_usage() -> None:
    events = decode_all(
        sse(
            {
                "type": "message_start",
                "message": {"id": "m", "model": "x", "usage": {"input_tokens": 0}},
            },
            block_start(0, {"type": "text", "text": "hi"}),
            block_stop(0),
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens"},
                "usage": {"input_tokens": 40, "cache_creation_input_tokens": 2, "output_tokens": 5},
            },
            {"type": "message_stop"},
        )
    )
    assert events[1] == ir.TextDelta("hi")
    assert events[-1] == ir.Finish("length", ir.Usage(42, 5, 0, 2))


def test_decode_tool_input_given_whole_at_block_start() -> None:
    events = decode_all(
        sse(
            {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}},
            block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {"k": "v"}}),
            block_stop(0),
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            },
            {"type": "message_stop"},
        )
    )
    assert events[1:] == [
        ir.ToolCallStart("t", "f"),
        ir.ToolCallDelta('{"k":"v"}'),
        ir.Finish("tool_calls", ir.Usage(0, 3)),
    ]


def test_decode_error_event() -> None:
    body = UPSTREAM_STREAM[: UPSTREAM_STREAM.index(b"event: content_block_start")] + sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    events = decode_all(body)
    assert events[-1] == ir.Error(529, "overloaded", "Overloaded")
    assert sum(isinstance(e, ir.Error) for e in events) == 1


def test_decode_early_eof() -> None:
    cut = UPSTREAM_STREAM[: UPSTREAM_STREAM.index(b"event: message_delta")]
    assert decode_all(cut)[-1] == ir.Error(502, "bad_gateway", "upstream stream ended early")
    no_stop = UPSTREAM_STREAM[: UPSTREAM_STREAM.index(b"event: message_stop")]
    assert decode_all(no_stop) == UPSTREAM_EVENTS
    assert decode_all(b"") == [ir.Error(502, "bad_gateway", "upstream stream ended early")]


def test_decode_without_event_lines_and_with_stop_sequence() -> None:
    body = b"".join(
        b"data: " + json.dumps(e).encode() + b"\r\n\r\n"
        for e in [
            {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}},
            block_start(0, {"type": "text", "text": ""}),
            block_delta(0, {"type": "text_delta", "text": "a"}),
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "Z"},
                "usage": {"output_tokens": 1},
            },
            {"type": "message_stop"},
        ]
    )
    assert decode_all(body)[-1] == ir.Finish("stop", ir.Usage(0, 1), "Z")


# --- stream encoder (validated by the anthropic SDK) ---------------------------------


RICH_EVENTS: list[ir.Event] = [
    ir.Start("chatcmpl-up", "gpt-up", ir.Usage(input_tokens=30, cached_tokens=10)),
    ir.ThinkingDelta("Plan ", "openai-chat"),
    ir.ThinkingDelta("this.", "openai-chat"),
    ir.TextDelta(""),
    ir.TextDelta("Calling ✓ "),
    ir.TextDelta("tools."),
    ir.ToolCallStart("call_1", "weather"),
    ir.ToolCallDelta('{"city": '),
    ir.ToolCallDelta('"Paris"}'),
    ir.ToolCallStart("call_2", "time"),
    ir.ToolCallDelta(""),
    ir.ToolCallStart("call_3", "noargs"),
    ir.Finish("stop", ir.Usage(30, 12, 10, 0, 4)),
]


def test_encoder_output_accepted_by_sdk(server: ReplayServer) -> None:
    message = stream_final(server, encode_all(RICH_EVENTS))
    assert message.id == "msg_chatcmpl-up" and message.model == "gpt-up"
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use", "tool_use"]
    assert message.content[0].thinking == "Plan this." and message.content[0].signature == ""
    assert message.content[1].text == "Calling ✓ tools."
    assert [(b.id, b.name, b.input) for b in message.content[2:]] == [
        ("call_1", "weather", {"city": "Paris"}),
        ("call_2", "time", {}),
        ("call_3", "noargs", {}),
    ]
    assert message.stop_reason == "tool_use"  # "stop" with tool calls is normalised
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 10)
    assert message.usage.output_tokens == 12


def test_encoder_wire_invariants() -> None:
    events = frames(encode_all(UPSTREAM_EVENTS))
    assert all(name == data["type"] for name, data in events)
    assert events[0][0] == "message_start"
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {
        "input_tokens": 20,
        "output_tokens": 0,
        "cache_read_input_tokens": 50,
        "cache_creation_input_tokens": 0,
    }
    started: list[int] = []
    open_block: int | None = None
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_block is None and data["index"] == len(started)
            started.append(data["index"])
            open_block = data["index"]
            block = data["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {}
            if block["type"] == "thinking":
                assert block == {"type": "thinking", "thinking": "", "signature": ""}
        else:
            assert data["index"] == open_block
            if name == "content_block_stop":
                open_block = None
    assert open_block is None and started == list(range(6))
    thinking = [
        d["delta"]["type"] for n, d in events if n == "content_block_delta" and d["index"] == 0
    ]
    assert thinking == ["thinking_delta", "thinking_delta", "signature_delta"]
    assert events[-2] == (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "output_tokens": 77,
                "input_tokens": 20,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 0,
                "output_tokens_details": {"thinking_tokens": 9},
            },
        },
    )
    assert events[-1] == ("message_stop", {"type": "message_stop"})


def test_decoder_to_encoder_round_trip(server: ReplayServer) -> None:
    message = stream_final(server, encode_all(decode_all(UPSTREAM_STREAM)))
    assert [b.type for b in message.content] == [
        "thinking",
        "redacted_thinking",
        "text",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert message.content[0].thinking == "Ponder ñ 🤔"
    assert message.content[0].signature == "U0lHTkFUVVJF"
    assert message.content[1].data == "UkVEQUNURUQ="
    assert [message.content[2].text, message.content[3].text] == ["Hello, wörld ✓", "Second block."]
    assert message.content[4].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 77)


def test_encoder_foreign_signatures_and_signature_only_block(server: ReplayServer) -> None:
    events = [
        ir.Start("x", "m"),
        ir.ThinkingSignature("ZW5j", "openai-responses"),  # reasoning with no summary text
        ir.ThinkingDelta("t", "gemini"),
        ir.ThinkingSignature("R2Vt", "gemini"),
        ir.RedactedThinking("blob", "openai-responses"),
        ir.TextDelta("done"),
        ir.Finish("stop", ir.Usage(1, 1), "END"),
    ]
    message = stream_final(server, encode_all(events))
    assert [
        (b.type, getattr(b, "thinking", None), getattr(b, "signature", None))
        for b in message.content[:2]
    ] == [
        ("thinking", "", "openai-responses:ZW5j"),
        ("thinking", "t", "gemini:R2Vt"),
    ]
    assert message.content[2].data == "openai-responses:blob"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_encoder_empty_stream(server: ReplayServer) -> None:
    message = stream_final(server, encode_all([ir.Finish("length", ir.Usage(0, 0))]))
    assert message.content == [] and message.stop_reason == "max_tokens"
    assert message.model == "client-model" and message.id.startswith("msg_")


@pytest.mark.parametrize(
    "before",
    [
        [],
        [ir.Start("x", "m"), ir.TextDelta("partial")],
        [ir.Start("x", "m"), ir.ToolCallStart("t", "f")],
    ],
    ids=["only-error", "in-text", "in-tool"],
)
def test_encoder_error_raises_in_sdk(server: ReplayServer, before: list[ir.Event]) -> None:
    body = encode_all([*before, ir.Error(529, "overloaded", "busy now"), ir.TextDelta("ignored")])
    assert b"event: error\n" in body and b"ignored" not in body and b"message_stop" not in body
    with pytest.raises(anthropic.APIStatusError, match="busy now"):
        stream_final(server, body)


# --- errors and models ---------------------------------------------------------------


def test_parse_error_shapes() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert claude.parse_error(529, body) == ir.Error(529, "overloaded", "Overloaded")
    assert claude.parse_error(503, body) == ir.Error(503, "unavailable", "Overloaded")
    assert claude.parse_error(400, b'{"error":{"message":"m"}}') == ir.Error(
        400, "invalid_request", "m"
    )
    assert claude.parse_error(502, b"upstream connect error") == ir.Error(
        502, "bad_gateway", "upstream connect error"
    )
    assert claude.parse_error(500, b"").message == "upstream returned HTTP 500"


@pytest.mark.parametrize(
    ("err", "wire_type", "sdk_error"),
    [
        (
            ir.Error(400, "invalid_request", "bad"),
            "invalid_request_error",
            anthropic.BadRequestError,
        ),
        (
            ir.Error(401, "authentication", "who"),
            "authentication_error",
            anthropic.AuthenticationError,
        ),
        (ir.Error(403, "permission", "no"), "permission_error", anthropic.PermissionDeniedError),
        (ir.Error(404, "not_found", "gone"), "not_found_error", anthropic.NotFoundError),
        (ir.Error(413, "request_too_large", "big"), "request_too_large", anthropic.APIStatusError),
        (ir.Error(429, "rate_limit", "slow"), "rate_limit_error", anthropic.RateLimitError),
        (ir.Error(500, "api_error", "oops"), "api_error", anthropic.InternalServerError),
        (ir.Error(529, "overloaded", "busy"), "overloaded_error", anthropic.APIStatusError),
    ],
)
def test_error_body_read_by_sdk(
    server: ReplayServer, err: ir.Error, wire_type: str, sdk_error: type[Exception]
) -> None:
    body = claude.error_body(err)
    assert body == {"type": "error", "error": {"type": wire_type, "message": err.message}}
    server.reply(json.dumps(body).encode(), status=err.status, content_type="application/json")
    with pytest.raises(sdk_error) as info:
        client(server).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.message in str(info.value)


def test_model_list_read_by_sdk(server: ReplayServer) -> None:
    body = claude.model_list(["claude-a", "claude-b"])
    assert body["has_more"] is False and (body["first_id"], body["last_id"]) == (
        "claude-a",
        "claude-b",
    )
    server.reply(json.dumps(body).encode(), content_type="application/json")
    models = list(client(server).models.list())
    assert [(m.id, m.type, m.display_name) for m in models] == [
        ("claude-a", "model", "claude-a"),
        ("claude-b", "model", "claude-b"),
    ]
    assert claude.model_list([]) == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


def test_max_tokens_is_required() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ir.Error) as raised:
        claude.parse_request(body)
    assert raised.value.status == 400 and raised.value.param == "max_tokens"
    assert claude.COUNTING is not None
    assert claude.COUNTING.parse_request(body).messages  # count_tokens takes none
