"""OpenAI Chat Completions protocol module: dict-level conversions, stream decoding under
any chunking, and encoder output checked by the official `openai` SDK's own helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.protocols import ir
from router.protocols import openai_chat as chat
from tests.sse_replay import ReplayServer

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as replay:
        yield replay


def client(server: ReplayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def sse(*chunks: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict | None = None, finish: str | None = None, **extra: object) -> dict:
    out: dict = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-up",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    out.update(extra)
    return out


def decode_all(data: bytes, pieces: list[int] | None = None) -> list[ir.Event]:
    decoder = chat.StreamDecoder()
    events: list[ir.Event] = []
    if pieces is None:
        events += decoder.feed(data)
    else:
        start = 0
        for end in [*pieces, len(data)]:
            events += decoder.feed(data[start:end])
            start = end
    return events + decoder.close()


def encode_all(events: list[ir.Event], req: ir.Request | None = None) -> bytes:
    encoder = chat.StreamEncoder(req or ir.Request(model="client-model", include_usage=True))
    return b"".join(encoder.encode(e) for e in events)


def stream_final(server: ReplayServer, body: bytes):
    server.reply(body)
    with client(server).chat.completions.stream(
        model="client-model", messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_completion()


# --- parse_request -------------------------------------------------------------------


FULL_REQUEST = {
    "model": "o4-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.jpg", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"a":1}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "peek", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "a hat"}]},
        {"role": "system", "content": "Now answer."},
        {"role": "user", "content": "So?"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "look",
                "description": "Look",
                "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "peek"}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "look"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
    "reasoning_effort": "high",
    "max_tokens": 100,
    "max_completion_tokens": 200,
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 7,
    "stop": "END",
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u-1",
    "metadata": {"k": "v"},
    "store": False,
    "presence_penalty": 0,
    "n": 1,
}


def test_parse_request_carries_everything() -> None:
    req = chat.parse_request(FULL_REQUEST)
    assert req.model == "o4-mini"
    assert req.system == ["Be brief.", "Use tools."]
    user, assistant, results, mid_system, last = req.messages
    assert user.role == "user"
    assert user.parts[0] == ir.Text("What is here?")
    assert user.parts[1] == ir.Image(media_type="image/png", data=PNG)
    assert user.parts[2] == ir.Image(url="https://x.test/a.jpg", detail="low")
    assert assistant.parts == [
        ir.Thinking(text="Let me look."),
        ir.ToolCall("call_1", "look", '{"a":1}'),
        ir.ToolCall("call_2", "peek", "{}"),
    ]
    assert results.role == "user"
    assert results.parts == [
        ir.ToolResult("call_1", "look", [ir.Text("a cat")]),
        ir.ToolResult("call_2", "peek", [ir.Text("a hat")]),
    ]
    assert mid_system == ir.Message("system", [ir.Text("Now answer.")])
    assert last == ir.Message("user", [ir.Text("So?")])
    assert req.tools[0] == ir.Tool(
        "look", "Look", {"type": "object", "properties": {"a": {"type": "integer"}}}, True
    )
    assert req.tools[1] == ir.Tool("peek")
    assert req.tool_choice == ir.ToolChoice("tool", "look")
    assert req.parallel_tool_calls is False
    assert req.output == ir.OutputFormat("json_schema", {"type": "object"}, "answer", True)
    assert req.reasoning == ir.Reasoning(effort="high")
    assert req.max_tokens == 200  # max_completion_tokens wins
    assert (req.temperature, req.top_p, req.seed) == (0.5, 0.9, 7)
    assert req.stop == ["END"]
    assert req.stream and req.include_usage
    assert req.user == "u-1" and req.metadata == {"k": "v"}
    assert req.dropped == []


def test_parse_request_reports_what_it_cannot_carry() -> None:
    req = chat.parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "logprobs": True,
            "top_logprobs": 3,
            "n": 2,
            "logit_bias": {"1": 5},
            "presence_penalty": 0.5,
            "frequency_penalty": 0,
            "audio": {"voice": "x"},
            "brand_new_field": 1,
            "service_tier": "auto",
        }
    )
    assert sorted(req.dropped) == sorted(
        [
            "messages.name",
            "logprobs",
            "top_logprobs",
            "n",
            "logit_bias",
            "presence_penalty",
            "audio",
            "brand_new_field",
        ]
    )


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ir.ToolChoice("auto")),
        ("none", ir.ToolChoice("none")),
        ("required", ir.ToolChoice("required")),
        ({"type": "function", "function": {"name": "f"}}, ir.ToolChoice("tool", "f")),
    ],
)
def test_parse_tool_choice(choice: object, expected: ir.ToolChoice) -> None:
    req = chat.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}
    )
    assert req.tool_choice == expected


def test_parse_json_mode_reasoning_off_and_files() -> None:
    req = chat.parse_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                                "filename": "a.pdf",
                            },
                        },
                        {"type": "file", "file": {"file_id": "file-1"}},
                    ],
                }
            ],
            "response_format": {"type": "json_object"},
            "reasoning_effort": "none",
            "max_tokens": 50,
        }
    )
    assert req.messages[0].parts == [
        ir.File(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
        ir.File(file_id="file-1"),
    ]
    assert req.output == ir.OutputFormat("json_object")
    assert req.reasoning == ir.Reasoning(enabled=False, effort="none")
    assert req.max_tokens == 50


def test_parse_legacy_functions() -> None:
    req = chat.parse_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "{}"},
                },
                {"role": "function", "name": "f", "content": "ok"},
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"},
        }
    )
    call = req.messages[1].parts[0]
    result = req.messages[2].parts[0]
    assert isinstance(call, ir.ToolCall) and isinstance(result, ir.ToolResult)
    assert result.call_id == call.id and result.name == "f"
    assert req.tools == [ir.Tool("f", None, {"type": "object"})]
    assert req.tool_choice == ir.ToolChoice("tool", "f")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m"},
        {"model": "m", "messages": []},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": ["hi"]},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "maybe"},
    ],
)
def test_parse_request_rejects_malformed(body: object) -> None:
    with pytest.raises(ir.Error) as info:
        chat.parse_request(body)  # type: ignore[arg-type]
    assert info.value.status == 400 and info.value.kind == "invalid_request"


# --- build_request -------------------------------------------------------------------


def test_build_request_splits_tool_results_and_moves_images() -> None:
    req = ir.Request(
        model="gpt-4o",
        system=["A", "B"],
        messages=[
            ir.Message("user", [ir.Text("go")]),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("hidden", signature="sig", origin="anthropic"),
                    ir.ToolCall("t1", "shot", '{"x":1}'),
                    ir.ToolCall("t2", "fail", "{}"),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("t1", "shot", [ir.Text("see"), ir.Image("image/png", PNG)]),
                    ir.ToolResult("t2", "fail", [ir.Text("boom")], is_error=True),
                    ir.Text("and?"),
                ],
            ),
            ir.Message("system", [ir.Text("mid")]),
        ],
        stream=True,
    )
    body = chat.build_request(req)
    assert body["messages"] == [
        {"role": "system", "content": "A"},
        {"role": "system", "content": "B"},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "shot", "arguments": '{"x":1}'},
                },
                {"id": "t2", "type": "function", "function": {"name": "fail", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "see"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "and?"},
            ],
        },
        {"role": "system", "content": "mid"},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_build_request_fields() -> None:
    req = ir.Request(
        model="gpt-4o",
        messages=[ir.Message("user", [ir.Text("x")])],
        tools=[ir.Tool("f", "does f", None, True)],
        tool_choice=ir.ToolChoice("required"),
        parallel_tool_calls=True,
        output=ir.OutputFormat("json_schema", {"type": "object"}, None, True, "d"),
        max_tokens=64,
        temperature=0.2,
        top_p=0.5,
        top_k=5,
        seed=3,
        stop=["a", "b"],
        user="x" * 100,
        metadata={"user_id": "x" * 100},
    )
    body = chat.build_request(req)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is True
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {"type": "object"},
            "description": "d",
            "strict": True,
        },
    }
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        0.2,
        0.5,
        3,
        ["a", "b"],
    )
    assert "top_k" not in body and "user" not in body and "stream" not in body
    assert sorted(req.dropped) == ["top_k", "user"]


@pytest.mark.parametrize(
    ("reasoning", "model", "effort", "max_key"),
    [
        (ir.Reasoning(effort="high"), "gpt-5.1", "high", "max_completion_tokens"),
        (ir.Reasoning(effort="minimal"), "deepseek-r1", "minimal", "max_completion_tokens"),
        (ir.Reasoning(effort="high"), "gpt-4o", None, "max_tokens"),
        (ir.Reasoning(budget_tokens=1024), "m", "low", "max_completion_tokens"),
        (ir.Reasoning(budget_tokens=10000), "m", "medium", "max_completion_tokens"),
        (ir.Reasoning(budget_tokens=32000), "m", "high", "max_completion_tokens"),
        (ir.Reasoning(), "deepseek-chat", None, "max_tokens"),
        (ir.Reasoning(enabled=False), "m", None, "max_tokens"),
        (None, "o3-mini", None, "max_completion_tokens"),
        (None, "openai/gpt-5", None, "max_completion_tokens"),
    ],
)
def test_build_reasoning_and_max_tokens(
    reasoning: ir.Reasoning | None, model: str, effort: str | None, max_key: str
) -> None:
    req = ir.Request(
        model=model,
        messages=[ir.Message("user", [ir.Text("x")])],
        reasoning=reasoning,
        max_tokens=99,
    )
    body = chat.build_request(req)
    assert body.get("reasoning_effort") == effort
    assert body[max_key] == 99
    lost = reasoning is not None and reasoning.enabled and effort is None and model == "gpt-4o"
    assert req.dropped == (["reasoning"] if lost else [])


def test_build_json_mode_and_tool_choice_named() -> None:
    req = ir.Request(
        model="m",
        messages=[ir.Message("user", [ir.Text("x")])],
        tools=[ir.Tool("f")],
        tool_choice=ir.ToolChoice("tool", "f"),
        output=ir.OutputFormat("json_object"),
    )
    body = chat.build_request(req)
    assert body["response_format"] == {"type": "json_object"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_request_round_trip_is_stable() -> None:
    first = chat.parse_request(FULL_REQUEST)
    rebuilt = chat.build_request(first)
    second = chat.parse_request(rebuilt)
    assert first.dropped == ["metadata"]  # Chat metadata needs `store`; not forwarded
    # thinking is not sendable on Chat; a tool without parameters gets an empty schema
    first.messages[1].parts = first.messages[1].parts[1:]
    first.tools[1].parameters = {"type": "object", "properties": {}}
    first.metadata = second.metadata = None
    first.dropped = []
    assert second == first


# --- non-stream responses ------------------------------------------------------------


UPSTREAM_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-up",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Sure.",
                "reasoning_content": "thinking...",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"q":1}'},
                    }
                ],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 5},
    },
}


def test_parse_response() -> None:
    resp = chat.parse_response(UPSTREAM_RESPONSE)
    assert resp.id == "chatcmpl-1" and resp.model == "gpt-up" and resp.created == 1700000000
    assert resp.parts == [
        ir.Thinking("thinking..."),
        ir.Text("Sure."),
        ir.ToolCall("c1", "f", '{"q":1}'),
    ]
    assert resp.finish == "tool_calls"  # "stop" with tool calls is normalised
    assert resp.usage == ir.Usage(100, 20, 60, 0, 5)


@pytest.mark.parametrize(
    ("wire", "finish"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        (None, "stop"),
    ],
)
def test_parse_finish_reasons(wire: str | None, finish: str) -> None:
    body = {
        "id": "x",
        "model": "m",
        "choices": [{"message": {"content": "a"}, "finish_reason": wire}],
    }
    assert chat.parse_response(body).finish == finish


def test_parse_response_with_error_or_no_choices() -> None:
    with pytest.raises(ir.Error) as info:
        chat.parse_response({"error": {"message": "nope", "type": "server_error"}})
    assert info.value.message == "nope"
    with pytest.raises(ir.Error):
        chat.parse_response({"id": "x"})


def test_build_response() -> None:
    resp = ir.Response(
        id="msg_9",
        model="",
        parts=[
            ir.Thinking("t", signature="s", origin="anthropic"),
            ir.Text("a"),
            ir.Text("b"),
            ir.ToolCall("toolu_1", "f", '{"x":1}'),
        ],
        finish="tool_calls",
        usage=ir.Usage(10, 4, 6, 0, 1),
        created=5,
    )
    body = chat.build_response(resp, ir.Request(model="client-model"))
    assert body == {
        "id": "chatcmpl-msg_9",
        "object": "chat.completion",
        "created": 5,
        "model": "client-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ab",
                    "reasoning_content": "t",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":1}'},
                        }
                    ],
                    "refusal": None,
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    openai.types.chat.ChatCompletion.model_validate(body)


def test_response_round_trip() -> None:
    resp = chat.parse_response(UPSTREAM_RESPONSE)
    again = chat.parse_response(chat.build_response(resp, ir.Request(model="x")))
    assert again.parts == resp.parts and again.usage == resp.usage and again.finish == resp.finish


# --- stream decoder ------------------------------------------------------------------


TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "hmm… "}),
    chunk({"content": "Héllo "}),
    chunk({"content": "wörld 🌍"}),
    chunk({}, "stop"),
    chunk(
        None,
        usage={
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    ),
)

TEXT_EVENTS = [
    ir.Start("chatcmpl-up", "gpt-up", None, 1700000000),
    ir.ThinkingDelta("hmm… "),
    ir.TextDelta("Héllo "),
    ir.TextDelta("wörld 🌍"),
    ir.Finish("stop", ir.Usage(9, 3, 2)),
]


def tool_fragment(
    index: int, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> dict:
    fragment: dict = {"index": index, "function": {}}
    if id is not None:
        fragment.update(id=id, type="function")
        fragment["function"]["name"] = name
    if args is not None:
        fragment["function"]["arguments"] = args
    return fragment


# Two calls whose fragments interleave, plus a third that arrives in one piece.
INTERLEAVED_STREAM = sse(
    chunk({"role": "assistant", "content": "Calling."}),
    chunk({"tool_calls": [tool_fragment(0, id="call_a", name="alpha", args="")]}),
    chunk({"tool_calls": [tool_fragment(0, args='{"x":')]}),
    chunk({"tool_calls": [tool_fragment(1, id="call_b", name="beta", args='{"y"')]}),
    chunk({"tool_calls": [tool_fragment(0, args=" 1}")]}),
    chunk(
        {
            "tool_calls": [
                tool_fragment(1, args=": 2}"),
                tool_fragment(2, id="call_c", name="gamma", args="{}"),
            ]
        }
    ),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
)


def test_decode_text_stream() -> None:
    assert decode_all(TEXT_STREAM) == TEXT_EVENTS


def test_decode_interleaved_tool_calls_are_serialised() -> None:
    events = decode_all(INTERLEAVED_STREAM)
    assert events == [
        ir.Start("chatcmpl-up", "gpt-up", None, 1700000000),
        ir.TextDelta("Calling."),
        ir.ToolCallStart("call_a", "alpha"),
        ir.ToolCallDelta('{"x":'),
        ir.ToolCallDelta(" 1}"),
        ir.ToolCallStart("call_b", "beta"),
        ir.ToolCallDelta('{"y": 2}'),
        ir.ToolCallStart("call_c", "gamma"),
        ir.ToolCallDelta("{}"),
        ir.Finish("tool_calls", ir.Usage(5, 7)),
    ]


@pytest.mark.parametrize("stream", [TEXT_STREAM, INTERLEAVED_STREAM], ids=["text", "tools"])
def test_decode_byte_by_byte_and_every_split(stream: bytes) -> None:
    reference = decode_all(stream)
    assert decode_all(stream, list(range(1, len(stream)))) == reference
    for split in range(1, len(stream)):
        assert decode_all(stream, [split]) == reference


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_decode_random_chunking(data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from([TEXT_STREAM, INTERLEAVED_STREAM]))
    cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=40, unique=True))
    assert decode_all(stream, sorted(cuts)) == decode_all(stream)


def test_decode_crlf_and_comments() -> None:
    crlf = b": keep-alive\r\n\r\n" + TEXT_STREAM.replace(b"\n", b"\r\n")
    assert decode_all(crlf) == TEXT_EVENTS


def test_decode_error_chunk() -> None:
    events = decode_all(
        sse(
            chunk({"content": "a"}),
            {"error": {"message": "overloaded", "type": "server_error"}},
            done=False,
        )
    )
    assert events[-1] == ir.Error(500, "api_error", "overloaded")
    assert len([e for e in events if isinstance(e, ir.Error)]) == 1


def test_decode_early_eof_and_missing_done() -> None:
    cut = decode_all(sse(chunk({"content": "a"}), done=False))
    assert cut[-1] == ir.Error(502, "bad_gateway", "upstream stream ended early")
    no_done = decode_all(sse(chunk({"content": "a"}), chunk({}, "length"), done=False))
    assert no_done[-1] == ir.Finish("length", ir.Usage())
    nothing = decode_all(b"")
    assert nothing == [ir.Error(502, "bad_gateway", "upstream stream ended early")]


def test_decode_stop_with_tool_calls_and_usage_in_finish_chunk() -> None:
    events = decode_all(
        sse(
            chunk({"tool_calls": [tool_fragment(0, id="c", name="f", args="{}")]}),
            chunk({}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2}),
        )
    )
    assert events[-1] == ir.Finish("tool_calls", ir.Usage(1, 2))


def test_decode_holds_content_after_a_tool_call_and_late_names() -> None:
    events = decode_all(
        sse(
            chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"arguments": '{"a"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}),
            chunk({"content": "after"}),
            chunk({"tool_calls": [tool_fragment(1, id="c1", name="g", args="{}")]}),
            chunk({}, "tool_calls"),
        )
    )
    assert events[1:] == [
        ir.ToolCallStart("c0", "f"),
        ir.ToolCallDelta('{"a":1}'),
        ir.ToolCallStart("c1", "g"),
        ir.ToolCallDelta("{}"),
        ir.TextDelta("after"),
        ir.Finish("tool_calls", ir.Usage()),
    ]


def test_decode_malformed_json() -> None:
    events = decode_all(b"data: {nope\n\n")
    assert events == [ir.Error(502, "bad_gateway", "upstream sent malformed JSON")]


# --- stream encoder (validated by the openai SDK) ------------------------------------


RICH_EVENTS: list[ir.Event] = [
    ir.Start("msg_up", "claude-up", ir.Usage(input_tokens=30)),
    ir.ThinkingDelta("Plan: ", "anthropic"),
    ir.ThinkingDelta("call both.", "anthropic"),
    ir.ThinkingSignature("c2ln", "anthropic"),
    ir.TextDelta("Checking "),
    ir.TextDelta("ünïcode ✓"),
    ir.ToolCallStart("toolu_1", "weather"),
    ir.ToolCallDelta('{"city": '),
    ir.ToolCallDelta('"Paris"}'),
    ir.ToolCallStart("toolu_2", "time"),
    ir.ToolCallDelta('{"tz": "CET"}'),
    ir.Finish("tool_calls", ir.Usage(30, 12, 10, 0, 4)),
]


def test_encoder_output_accepted_by_sdk(server: ReplayServer) -> None:
    final = stream_final(server, encode_all(RICH_EVENTS))
    choice = final.choices[0]
    assert final.id == "chatcmpl-msg_up" and final.model == "claude-up"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking ünïcode ✓"
    assert choice.message.model_extra["reasoning_content"] == "Plan: call both."
    calls = choice.message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_1", "weather", {"city": "Paris"}),
        ("toolu_2", "time", {"tz": "CET"}),
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (30, 12)
    assert final.usage.prompt_tokens_details.cached_tokens == 10
    assert final.usage.completion_tokens_details.reasoning_tokens == 4


def test_encoder_wire_invariants() -> None:
    body = encode_all(RICH_EVENTS)
    frames = body.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    chunks = [json.loads(f[6:]) for f in frames[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert len(roles) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 42
    fragments = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [f["index"] for f in fragments] == [0, 0, 0, 1, 1]
    for fragment in fragments:
        assert "function" in fragment
        has_header = "id" in fragment
        assert has_header == ("name" in fragment["function"]) == ("type" in fragment)
    assert [f.get("id") for f in fragments if "id" in f] == ["toolu_1", "toolu_2"]


def test_encoder_takes_input_usage_from_start(server: ReplayServer) -> None:
    events = [
        ir.Start("x", "m", ir.Usage(40, 1, 30)),
        ir.TextDelta("a"),
        ir.Finish("stop", ir.Usage(0, 9)),
    ]
    usage = stream_final(server, encode_all(events)).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (40, 9, 49)
    assert usage.prompt_tokens_details.cached_tokens == 30


def test_encoder_usage_chunk_only_when_asked(server: ReplayServer) -> None:
    req = ir.Request(model="client-model", include_usage=False)
    body = encode_all(RICH_EVENTS, req)
    assert b'"usage"' not in body
    assert stream_final(server, body).usage is None


def test_encoder_empty_stream(server: ReplayServer) -> None:
    final = stream_final(server, encode_all([ir.Finish("stop", ir.Usage(1, 0))]))
    assert final.choices[0].message.content == ""
    assert final.choices[0].finish_reason == "stop"
    assert final.model == "client-model"


@pytest.mark.parametrize(
    "before", [[], [ir.Start("x", "m"), ir.TextDelta("partial")]], ids=["only-error", "mid-stream"]
)
def test_encoder_error_raises_in_sdk(server: ReplayServer, before: list[ir.Event]) -> None:
    body = encode_all([*before, ir.Error(529, "overloaded", "try later"), ir.TextDelta("ignored")])
    assert body.endswith(b"\n\n") and b"[DONE]" not in body and b"ignored" not in body
    with pytest.raises(openai.APIError, match="try later"):
        stream_final(server, body)


def test_decoder_to_encoder_round_trip(server: ReplayServer) -> None:
    events = decode_all(INTERLEAVED_STREAM)
    final = stream_final(server, encode_all(events))
    message = final.choices[0].message
    assert message.content == "Calling."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "alpha", '{"x": 1}'),
        ("call_b", "beta", '{"y": 2}'),
        ("call_c", "gamma", "{}"),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.total_tokens == 12


# --- errors and models ---------------------------------------------------------------


def test_parse_error_shapes() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "bad key",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    ).encode()
    assert chat.parse_error(401, body) == ir.Error(401, "authentication", "bad key")
    assert chat.parse_error(429, b'{"error":{"message":"slow","param":"x"}}') == ir.Error(
        429, "rate_limit", "slow", "x"
    )
    assert chat.parse_error(500, b'{"detail":"fastapi says no"}').message == "fastapi says no"
    assert chat.parse_error(400, b'{"error":"plain"}').message == "plain"
    assert chat.parse_error(502, b"<html>Bad Gateway</html>") == ir.Error(
        502, "bad_gateway", "<html>Bad Gateway</html>"
    )
    assert chat.parse_error(503, b"").message == "upstream returned HTTP 503"
    assert chat.parse_error(418, b"\xff\xfe").kind == "invalid_request"


def test_error_body_read_by_sdk(server: ReplayServer) -> None:
    err = ir.Error(429, "rate_limit", "slow down", "model")
    body = chat.error_body(err)
    assert body == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": "model",
            "code": "rate_limit",
        }
    }
    server.reply(json.dumps(body).encode(), status=429, content_type="application/json")
    with pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.message.endswith("slow down")
    assert (info.value.type, info.value.param, info.value.code) == (
        "rate_limit_error",
        "model",
        "rate_limit",
    )


def test_model_list_read_by_sdk(server: ReplayServer) -> None:
    body = chat.model_list(["a", "b"])
    assert body["object"] == "list"
    server.reply(json.dumps(body).encode(), content_type="application/json")
    assert [m.id for m in client(server).models.list()] == ["a", "b"]
