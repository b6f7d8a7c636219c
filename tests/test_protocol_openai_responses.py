"""OpenAI Responses protocol module: dict-level conversions, stream decoding under any
chunking, and encoder output checked by the official `openai` SDK's own helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

from router.protocols import ir
from router.protocols import openai_responses as resp
from tests.sse_replay import ReplayServer

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as replay:
        yield replay


def client(server: ReplayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def encode_all(events: list[ir.Event], req: ir.Request | None = None) -> bytes:
    encoder = resp.StreamEncoder(req or ir.Request(model="client-model"))
    return b"".join(encoder.encode(e) for e in events)


def decode_all(data: bytes, cuts: list[int] | None = None) -> list[ir.Event]:
    decoder = resp.StreamDecoder()
    events: list[ir.Event] = []
    start = 0
    for end in [*(cuts or []), len(data)]:
        events += decoder.feed(data[start:end])
        start = end
    return events + decoder.close()


def sse_payloads(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        name, data = block.split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def stream_final(server: ReplayServer, body: bytes):
    server.reply(body)
    with client(server).responses.stream(model="client-model", input="hi") as stream:
        events = list(stream)
        return stream.get_final_response(), events


# --- parse_request -------------------------------------------------------------------

FULL_REQUEST: dict[str, Any] = {
    "model": "gpt-5",
    "instructions": "Be brief.",
    "input": [
        {"role": "developer", "content": "Use tools."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is here?"},
                {
                    "type": "input_image",
                    "image_url": f"data:image/png;base64,{PNG}",
                    "detail": "high",
                },
                {"type": "input_image", "image_url": "https://x.test/a.jpg", "detail": "auto"},
                {
                    "type": "input_file",
                    "filename": "a.pdf",
                    "file_data": "data:application/pdf;base64,JVBERi0=",
                },
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Hm."}],
            "encrypted_content": "ENC1",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "look",
            "arguments": '{"a":1}',
        },
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_2",
            "name": "look",
            "arguments": '{"a":2}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [
                {"type": "input_text", "text": "see"},
                {
                    "type": "input_image",
                    "image_url": f"data:image/png;base64,{PNG}",
                    "detail": "auto",
                },
            ],
        },
        {"role": "system", "content": "Now answer."},
        {"role": "user", "content": "So?"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "look",
            "description": "Look",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "strict": True,
        },
        {"type": "web_search"},
    ],
    "tool_choice": {"type": "function", "name": "look"},
    "parallel_tool_calls": False,
    "text": {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "schema": {"type": "object"},
            "strict": True,
        }
    },
    "reasoning": {"effort": "high", "summary": "auto"},
    "max_output_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
    "stream": True,
    "metadata": {"k": "v"},
    "user": "u1",
    "previous_response_id": "resp_old",
    "store": True,
    "include": ["reasoning.encrypted_content"],
    "truncation": "auto",
}


def test_parse_request_full() -> None:
    req = resp.parse_request(FULL_REQUEST)
    assert req.model == "gpt-5"
    assert req.system == ["Be brief.", "Use tools."]
    user, assistant, results, system, last = req.messages
    assert user.role == "user"
    assert user.parts[0] == ir.Text("What is here?")
    assert user.parts[1] == ir.Image(media_type="image/png", data=PNG, detail="high")
    assert user.parts[2] == ir.Image(url="https://x.test/a.jpg", detail="auto")
    assert user.parts[3] == ir.File(media_type="application/pdf", data="JVBERi0=", filename="a.pdf")
    assert assistant.role == "assistant"
    assert assistant.parts == [
        ir.Thinking(text="Hm.", signature="ENC1", origin="openai-responses", id="rs_1"),
        ir.Text("Looking."),
        ir.ToolCall("call_1", "look", '{"a":1}'),
        ir.ToolCall("call_2", "look", '{"a":2}'),
    ]
    assert results.role == "user"
    assert results.parts == [
        ir.ToolResult("call_1", content=[ir.Text("a cat")]),
        ir.ToolResult(
            "call_2",
            content=[ir.Text("see"), ir.Image(media_type="image/png", data=PNG, detail="auto")],
        ),
    ]
    assert system == ir.Message("system", [ir.Text("Now answer.")])
    assert last == ir.Message("user", [ir.Text("So?")])
    assert req.tools == [
        ir.Tool("look", "Look", {"type": "object", "properties": {"a": {"type": "integer"}}}, True)
    ]
    assert req.tool_choice == ir.ToolChoice("tool", "look")
    assert req.parallel_tool_calls is False
    assert req.output == ir.OutputFormat("json_schema", {"type": "object"}, "answer", True)
    assert req.reasoning == ir.Reasoning(effort="high", include_thoughts=True)
    assert (req.max_tokens, req.temperature, req.top_p) == (300, 0.5, 0.9)
    assert req.stream and req.include_usage
    assert req.metadata == {"k": "v"} and req.user == "u1"
    assert set(req.dropped) == {"tools.web_search", "previous_response_id", "store", "truncation"}


def test_parse_request_string_input_and_defaults() -> None:
    req = resp.parse_request({"model": "m", "input": "hello"})
    assert req.messages == [ir.Message("user", [ir.Text("hello")])]
    assert req.system == [] and req.tools == [] and req.reasoning is None
    assert req.stream is False and req.dropped == []


def test_parse_request_reasoning_and_choices() -> None:
    req = resp.parse_request(
        {
            "model": "m",
            "input": "x",
            "reasoning": {"effort": "none"},
            "tool_choice": "required",
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        }
    )
    assert req.reasoning is not None and req.reasoning.enabled is False
    assert req.tool_choice == ir.ToolChoice("required")
    assert req.output == ir.OutputFormat("json_object")
    assert req.dropped == ["text.verbosity"]
    req = resp.parse_request({"model": "m", "input": "x", "reasoning": {"effort": "low"}})
    assert req.reasoning == ir.Reasoning(effort="low", include_thoughts=False)


def test_parse_request_allowed_tools_narrows_tool_list() -> None:
    tools = [{"type": "function", "name": n, "parameters": {}} for n in ("a", "b", "c")]
    req = resp.parse_request(
        {
            "model": "m",
            "input": "x",
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "c"}],
            },
        }
    )
    assert [t.name for t in req.tools] == ["a", "c"]
    assert req.tool_choice == ir.ToolChoice("auto")
    req = resp.parse_request(
        {
            "model": "m",
            "input": "x",
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "b"}],
            },
        }
    )
    assert req.tool_choice == ir.ToolChoice("tool", "b")


def test_parse_request_reports_unknown_and_unsupported_items() -> None:
    req = resp.parse_request(
        {
            "model": "m",
            "input": [
                {"type": "item_reference", "id": "msg_1"},
                {"type": "web_search_call", "id": "ws_1"},
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            ],
            "prompt_cache_key": "k",
            "frobnicate": 1,
        }
    )
    assert req.dropped == [
        "input.item_reference",
        "input.web_search_call",
        "input.content.input_audio",
        "prompt_cache_key",
        "frobnicate",
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [3]}, "input[0]"),
        ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "call_id"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "call_id"),
        ({"model": "m", "input": [{"content": "x"}]}, "type"),
        ({"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "name"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "schema"),
        ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
    ],
)
def test_parse_request_rejects_malformed(body: Any, message: str) -> None:
    with pytest.raises(ir.Error) as caught:
        resp.parse_request(body)
    assert caught.value.status == 400 and caught.value.kind == "invalid_request"
    assert message in caught.value.message


# --- build_request -------------------------------------------------------------------


def test_build_request_shapes_every_part() -> None:
    req = ir.Request(
        model="gpt-5",
        system=["A.", "B."],
        messages=[
            ir.Message(
                "user",
                [
                    ir.Text("hi"),
                    ir.Image(media_type="image/jpeg", data="QUJD"),
                    ir.Image(url="https://x.test/i.png", detail="low"),
                    ir.File(media_type="application/pdf", data="JVBE"),
                ],
            ),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("mine", signature="ENC", origin="openai-responses", id="rs_9"),
                    ir.Thinking("theirs", signature="sig", origin="anthropic"),
                    ir.Text("ok", signature="gemini-sig"),
                    ir.ToolCall("call_a", "f", '{"x":1}', signature="gsig"),
                    ir.ToolCall("call_b", "f", '{"x":2}'),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("call_a", content=[ir.Text("r1")]),
                    ir.ToolResult(
                        "call_b",
                        content=[ir.Text("r2"), ir.Image(media_type="image/png", data=PNG)],
                        is_error=True,
                    ),
                    ir.Text("and?"),
                ],
            ),
            ir.Message("system", [ir.Text("late rule")]),
        ],
        tools=[
            ir.Tool("f", "does f", {"type": "object", "properties": {"x": {"type": "integer"}}}),
            ir.Tool("g"),
        ],
        tool_choice=ir.ToolChoice("tool", "f"),
        parallel_tool_calls=True,
        output=ir.OutputFormat("json_schema", {"type": "object"}, "out", True, "desc"),
        reasoning=ir.Reasoning(effort="max", include_thoughts=True),
        max_tokens=50,
        temperature=0.2,
        top_p=0.3,
        top_k=4,
        seed=7,
        stop=["x"],
        stream=True,
        user="u",
        metadata={"a": "b"},
    )
    body = resp.build_request(req)
    assert body["model"] == "gpt-5" and body["instructions"] == "A.\n\nB."
    assert body["store"] is False and body["include"] == ["reasoning.encrypted_content"]
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {
                    "type": "input_image",
                    "image_url": "data:image/jpeg;base64,QUJD",
                    "detail": "auto",
                },
                {"type": "input_image", "image_url": "https://x.test/i.png", "detail": "low"},
                {
                    "type": "input_file",
                    "file_data": "data:application/pdf;base64,JVBE",
                    "filename": "file.pdf",
                },
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_9",
            "summary": [{"type": "summary_text", "text": "mine"}],
            "encrypted_content": "ENC",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "call_b", "name": "f", "arguments": '{"x":2}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "r1"},
        {
            "type": "function_call_output",
            "call_id": "call_b",
            "output": [
                {"type": "input_text", "text": "Error: r2"},
                {
                    "type": "input_image",
                    "image_url": f"data:image/png;base64,{PNG}",
                    "detail": "auto",
                },
            ],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and?"}]},
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "late rule"}],
        },
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": "does f",
            "strict": False,
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
        {
            "type": "function",
            "name": "g",
            "strict": False,
            "parameters": {"type": "object", "properties": {}},
        },
    ]
    assert body["tool_choice"] == {"type": "function", "name": "f"}
    assert body["parallel_tool_calls"] is True
    assert body["text"] == {
        "format": {
            "type": "json_schema",
            "name": "out",
            "schema": {"type": "object"},
            "strict": True,
            "description": "desc",
        }
    }
    assert body["reasoning"] == {"effort": "xhigh", "summary": "auto"}
    assert (body["max_output_tokens"], body["temperature"], body["top_p"]) == (50, 0.2, 0.3)
    assert body["stream"] is True and body["user"] == "u" and body["metadata"] == {"a": "b"}
    assert req.dropped == ["top_k", "seed", "stop"]


def test_build_request_error_tool_results_say_so() -> None:
    """Responses has no error flag on function_call_output: the text carries it (found by
    tests/test_matrix_reasoning.py, where Anthropic is_error results arrived as plain
    successes)."""
    image = ir.Image(media_type="image/png", data="aGk=")
    results = [
        ir.ToolResult("c1", "f", [ir.Text("city not found")], is_error=True),
        ir.ToolResult("c2", "f", [ir.Text("Error: already said")], is_error=True),
        ir.ToolResult("c3", "f", [], is_error=True),
        ir.ToolResult("c4", "f", [image], is_error=True),
        ir.ToolResult("c5", "f", [ir.Text("bad"), image], is_error=True),
        ir.ToolResult("c6", "f", [ir.Text("fine")]),
    ]
    calls = [ir.ToolCall(r.call_id, "f") for r in results]
    req = ir.Request(
        "m",
        messages=[
            ir.Message("user", [ir.Text("go")]),
            ir.Message("assistant", list(calls)),
            ir.Message("user", list(results)),
        ],
    )
    outputs = [
        item["output"]
        for item in resp.build_request(req)["input"]
        if item["type"] == "function_call_output"
    ]
    assert outputs[:3] == ["Error: city not found", "Error: already said", "Error"]
    assert [p.get("text") for p in outputs[3]] == ["Error", None]
    assert [p.get("text") for p in outputs[4]] == ["Error: bad", None]
    assert outputs[5] == "fine"


def test_build_request_reasoning_variants() -> None:
    off = resp.build_request(ir.Request("m", reasoning=ir.Reasoning(enabled=False)))
    assert "reasoning" not in off and "include" not in off
    budget = resp.build_request(
        ir.Request("m", reasoning=ir.Reasoning(budget_tokens=10000, include_thoughts=False))
    )
    assert budget["reasoning"] == {"effort": "medium"}
    plain = resp.build_request(ir.Request("m"))
    assert "reasoning" not in plain and "text" not in plain and "tools" not in plain


def test_request_round_trip_is_stable() -> None:
    once = resp.parse_request(FULL_REQUEST)
    body = resp.build_request(once)
    twice = resp.parse_request(body)
    assert twice.system == ["Be brief.\n\nUse tools."]
    assert twice.messages == once.messages
    assert [t.name for t in twice.tools] == ["look"]
    assert twice.tool_choice == once.tool_choice and twice.output == once.output
    assert twice.reasoning == once.reasoning


# --- response bodies -----------------------------------------------------------------

UPSTREAM_RESPONSE: dict[str, Any] = {
    "id": "resp_up",
    "object": "response",
    "created_at": 1700000000,
    "status": "completed",
    "model": "gpt-5-2025",
    "output": [
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [
                {"type": "summary_text", "text": "a"},
                {"type": "summary_text", "text": "b"},
            ],
            "encrypted_content": "ENC",
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "f",
            "arguments": "{}",
            "status": "completed",
        },
    ],
    "usage": {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 130,
    },
}


def test_parse_response() -> None:
    out = resp.parse_response(UPSTREAM_RESPONSE)
    assert (out.id, out.model, out.created) == ("resp_up", "gpt-5-2025", 1700000000)
    assert out.parts == [
        ir.Thinking("a\n\nb", signature="ENC", origin="openai-responses", id="rs_1"),
        ir.Text("Hello"),
        ir.ToolCall("call_1", "f", "{}"),
    ]
    assert out.finish == "tool_calls"
    assert out.usage == ir.Usage(
        input_tokens=100, output_tokens=30, cached_tokens=40, reasoning_tokens=20
    )


@pytest.mark.parametrize(
    "status, details, content, finish",
    [
        ("completed", None, {"type": "output_text", "text": "x"}, "stop"),
        (
            "incomplete",
            {"reason": "max_output_tokens"},
            {"type": "output_text", "text": "x"},
            "length",
        ),
        (
            "incomplete",
            {"reason": "content_filter"},
            {"type": "output_text", "text": "x"},
            "content_filter",
        ),
        ("completed", None, {"type": "refusal", "refusal": "no"}, "content_filter"),
    ],
)
def test_parse_response_finish(status: str, details: Any, content: dict, finish: str) -> None:
    body = {
        "id": "r",
        "status": status,
        "incomplete_details": details,
        "model": "m",
        "output": [{"type": "message", "content": [content]}],
    }
    assert resp.parse_response(body).finish == finish


def test_parse_response_failed_raises() -> None:
    with pytest.raises(ir.Error) as caught:
        resp.parse_response(
            {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow down"}}
        )
    assert (caught.value.status, caught.value.kind) == (429, "rate_limit")


def test_build_response_is_a_valid_sdk_response(server: ReplayServer) -> None:
    req = resp.parse_request(FULL_REQUEST)
    body = resp.build_response(resp.parse_response(UPSTREAM_RESPONSE), req)
    assert body["id"] == "resp_up" and body["status"] == "completed"
    SDKResponse.model_validate(body)  # strict pydantic: every required field is present
    server.reply(json.dumps(body).encode(), content_type="application/json")
    parsed = client(server).responses.create(model="gpt-5", input="hi")
    assert parsed.output_text == "Hello"
    assert [o.type for o in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.output[0].encrypted_content == "ENC"
    assert parsed.output[2].call_id == "call_1"
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 40
    assert parsed.tool_choice.name == "look"  # echo of the request


@pytest.mark.parametrize(
    "finish, status, reason",
    [
        ("stop", "completed", None),
        ("tool_calls", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
        ("error", "failed", None),
    ],
)
def test_build_response_status(finish: ir.FinishReason, status: str, reason: str | None) -> None:
    body = resp.build_response(
        ir.Response("chatcmpl-1", "m", [ir.Text("x")], finish), ir.Request("m")
    )
    assert body["status"] == status and body["id"].startswith("resp_")
    assert body["incomplete_details"] == ({"reason": reason} if reason else None)
    SDKResponse.model_validate(body)


def test_build_response_wraps_foreign_reasoning_signatures() -> None:
    """Another provider's signature reaches the client as "<origin>:<sig>" in
    encrypted_content, and comes back from it as that provider's thinking."""
    parts: list[ir.Part] = [
        ir.Thinking("why", signature="claude-sig", origin="anthropic"),
        ir.Thinking(redacted=True, data="opaque", origin="anthropic"),
        ir.Thinking("", signature="gem", origin="gemini"),
        ir.Thinking("unsigned"),
        ir.Text("a"),
        ir.Text("b"),
    ]
    body = resp.build_response(ir.Response("r", "m", parts), ir.Request("m"))
    SDKResponse.model_validate(body)
    *reasoning, message = body["output"]
    assert [r.get("encrypted_content") for r in reasoning] == [
        "anthropic:claude-sig",
        "anthropic:redacted:opaque",
        "gemini:gem",
        None,
    ]
    assert reasoning[0]["summary"] == [{"type": "summary_text", "text": "why"}]
    assert [c["text"] for c in message["content"]] == ["a", "b"]

    replay = resp.parse_request(
        {"model": "m", "input": [*reasoning, {"role": "user", "content": "go"}]}
    )
    back = replay.messages[0].parts
    assert back == [
        ir.Thinking("why", signature="claude-sig", origin="anthropic"),
        ir.Thinking(redacted=True, data="opaque", origin="anthropic"),
        ir.Thinking("", signature="gem", origin="gemini"),
        ir.Thinking("unsigned", origin="openai-responses", id=reasoning[3]["id"]),
    ]
    # ...and a Responses upstream never gets another provider's signature.
    upstream = resp.build_request(replay)
    assert [i for i in upstream["input"] if i.get("type") == "reasoning"] == []


def test_own_encrypted_content_is_never_unwrapped() -> None:
    assert resp.unwrap_encrypted("gAAAAABo-x_Y==") == ("gAAAAABo-x_Y==", "openai-responses", False)
    assert resp.unwrap_encrypted("other:thing") == ("other:thing", "openai-responses", False)
    assert resp.unwrap_encrypted("openai-responses:x") == (
        "openai-responses:x",
        "openai-responses",
        False,
    )
    assert resp.unwrap_encrypted(None) == (None, "openai-responses", False)


# --- stream encoder, checked by the SDK ----------------------------------------------

RICH_EVENTS: list[ir.Event] = [
    ir.Start("resp_up", "gpt-up", created=1700000000),
    ir.ThinkingDelta("Let me ", origin="openai-responses", id="rs_up"),
    ir.ThinkingDelta("think.", origin="openai-responses", id="rs_up"),
    ir.ThinkingSignature("ENC", origin="openai-responses", id="rs_up"),
    ir.TextDelta("Hel"),
    ir.TextDelta("lo "),
    ir.TextDelta("wörld"),
    ir.ToolCallStart("call_1", "look"),
    ir.ToolCallDelta('{"a"'),
    ir.ToolCallDelta(":1}"),
    ir.ToolCallStart("call_2", "look"),
    ir.ToolCallDelta('{"a":2}'),
    ir.Finish("tool_calls", ir.Usage(10, 5, cached_tokens=3, reasoning_tokens=2)),
]


def test_stream_encoder_events_are_valid_and_ordered() -> None:
    body = encode_all(RICH_EVENTS)
    payloads = sse_payloads(body)
    assert [p["sequence_number"] for _, p in payloads] == list(range(len(payloads)))
    assert payloads[0][0] == "response.created" and payloads[1][0] == "response.in_progress"
    added: set[int] = set()
    parts: set[tuple[int, int]] = set()
    for name, payload in payloads:
        assert name == payload["type"]
        STREAM_EVENT.validate_python(payload)  # every event matches the SDK's own model
        index = payload.get("output_index")
        if name == "response.output_item.added":
            added.add(index)
        elif index is not None:
            assert index in added, name
        if name == "response.content_part.added":
            parts.add((index, payload["content_index"]))
        if name == "response.output_text.delta":
            assert (index, payload["content_index"]) in parts
    assert payloads[-1][0] == "response.completed"


def test_stream_encoder_final_response_via_sdk(server: ReplayServer) -> None:
    final, events = stream_final(server, encode_all(RICH_EVENTS))
    assert final.id == "resp_up" and final.model == "gpt-up" and final.status == "completed"
    assert final.output_text == "Hello wörld"
    reasoning, message, call1, call2 = final.output
    assert reasoning.id == "rs_up" and reasoning.encrypted_content == "ENC"
    assert reasoning.summary[0].text == "Let me think."
    assert message.content[0].text == "Hello wörld"
    assert (call1.call_id, call1.name, call1.arguments) == ("call_1", "look", '{"a":1}')
    assert (call2.call_id, call2.arguments) == ("call_2", '{"a":2}')
    assert final.usage.input_tokens == 10 and final.usage.output_tokens == 5
    assert final.usage.output_tokens_details.reasoning_tokens == 2
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Hel", "lo ", "wörld"]
    snapshots = [e.snapshot for e in events if e.type == "response.function_call_arguments.delta"]
    assert snapshots == ['{"a"', '{"a":1}', '{"a":2}']


def test_stream_encoder_block_break_and_foreign_thinking(server: ReplayServer) -> None:
    body = encode_all(
        [
            ir.Start("chatcmpl-9", "m"),
            ir.ThinkingDelta("claude thinks", origin="anthropic"),
            ir.ThinkingSignature("claude-sig", origin="anthropic"),
            ir.TextDelta("one"),
            ir.BlockBreak(),
            ir.TextDelta("two"),
            ir.TextDelta("", signature="gemini-sig"),
            ir.Finish("stop"),
        ]
    )
    final, _ = stream_final(server, body)
    assert final.id.startswith("resp_")
    assert [o.type for o in final.output] == ["reasoning", "message", "message"]
    assert final.output[0].summary[0].text == "claude thinks"
    assert final.output[0].encrypted_content == "anthropic:claude-sig"
    assert final.output_text == "onetwo"


def test_stream_encoder_foreign_signature_only_and_redacted(server: ReplayServer) -> None:
    body = encode_all(
        [
            ir.Start("r", "m"),
            ir.ThinkingSignature("g-sig", origin="gemini"),
            ir.RedactedThinking("opaque", origin="anthropic"),
            ir.TextDelta("hi"),
            ir.Finish("stop"),
        ]
    )
    final, _ = stream_final(server, body)
    assert [o.type for o in final.output] == ["reasoning", "reasoning", "message"]
    assert [o.encrypted_content for o in final.output[:2]] == [
        "gemini:g-sig",
        "anthropic:redacted:opaque",
    ]
    assert final.output[0].summary == [] and final.output_text == "hi"


def test_stream_encoder_signature_only_reasoning(server: ReplayServer) -> None:
    body = encode_all(
        [
            ir.Start("r", "m"),
            ir.ThinkingSignature("E", "openai-responses", "rs_7"),
            ir.TextDelta("hi"),
            ir.Finish("stop"),
        ]
    )
    final, _ = stream_final(server, body)
    assert final.output[0].id == "rs_7" and final.output[0].encrypted_content == "E"
    assert final.output[0].summary == []


def test_stream_encoder_length_is_incomplete(server: ReplayServer) -> None:
    body = encode_all([ir.Start("r", "m"), ir.TextDelta("cut"), ir.Finish("length")])
    name, payload = sse_payloads(body)[-1]
    assert name == "response.incomplete"
    assert payload["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert payload["response"]["output"][0]["content"][0]["text"] == "cut"
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        stream_final(server, body)


def test_stream_encoder_error_mid_stream(server: ReplayServer) -> None:
    encoder = resp.StreamEncoder(ir.Request("m"))
    body = b"".join(
        encoder.encode(e)
        for e in [ir.Start("r", "m"), ir.TextDelta("par"), ir.Error(429, "rate_limit", "slow down")]
    )
    assert encoder.encode(ir.TextDelta("late")) == b""
    names = [n for n, _ in sse_payloads(body)]
    assert names[-2:] == ["error", "response.failed"]
    assert "response.output_item.done" in names  # the open item is closed first
    error = sse_payloads(body)[-2][1]
    assert error["message"] == "slow down" and error["code"] == "rate_limit"
    with pytest.raises(RuntimeError):
        stream_final(server, body)


def test_stream_encoder_error_before_start() -> None:
    body = encode_all([ir.Error(502, "bad_gateway", "upstream down")])
    assert [n for n, _ in sse_payloads(body)] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]


# --- stream decoder ------------------------------------------------------------------


def upstream(*events: tuple[str, dict[str, Any]]) -> bytes:
    out = b""
    for seq, (name, payload) in enumerate(events):
        data = {"type": name, "sequence_number": seq, **payload}
        out += f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
    return out


BASE = {
    "id": "resp_up",
    "object": "response",
    "created_at": 1700000000,
    "model": "gpt-up",
    "status": "in_progress",
    "output": [],
}
UPSTREAM_STREAM = upstream(
    ("response.created", {"response": BASE}),
    ("response.in_progress", {"response": BASE}),
    (
        "response.output_item.added",
        {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
    ),
    (
        "response.reasoning_summary_part.added",
        {"output_index": 0, "item_id": "rs_1", "summary_index": 0, "part": {}},
    ),
    (
        "response.reasoning_summary_text.delta",
        {"output_index": 0, "item_id": "rs_1", "summary_index": 0, "delta": "Think"},
    ),
    (
        "response.reasoning_summary_part.added",
        {"output_index": 0, "item_id": "rs_1", "summary_index": 1, "part": {}},
    ),
    (
        "response.reasoning_summary_text.delta",
        {"output_index": 0, "item_id": "rs_1", "summary_index": 1, "delta": "more"},
    ),
    (
        "response.output_item.done",
        {
            "output_index": 0,
            "item": {
                "id": "rs_1",
                "type": "reasoning",
                "encrypted_content": "ENC",
                "summary": [{"type": "summary_text", "text": "Think"}],
            },
        },
    ),
    (
        "response.output_item.added",
        {
            "output_index": 1,
            "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []},
        },
    ),
    (
        "response.content_part.added",
        {
            "output_index": 1,
            "item_id": "msg_1",
            "content_index": 0,
            "part": {"type": "output_text", "text": ""},
        },
    ),
    (
        "response.output_text.delta",
        {"output_index": 1, "item_id": "msg_1", "content_index": 0, "delta": "Grüße "},
    ),
    (
        "response.output_text.delta",
        {"output_index": 1, "item_id": "msg_1", "content_index": 0, "delta": "🙂"},
    ),
    (
        "response.output_text.done",
        {"output_index": 1, "item_id": "msg_1", "content_index": 0, "text": "Grüße 🙂"},
    ),
    (
        "response.output_item.done",
        {
            "output_index": 1,
            "item": {
                "id": "msg_1",
                "type": "message",
                "content": [{"type": "output_text", "text": "Grüße 🙂"}],
            },
        },
    ),
    (
        "response.output_item.added",
        {
            "output_index": 2,
            "item": {
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "f",
                "arguments": "",
            },
        },
    ),
    (
        "response.function_call_arguments.delta",
        {"output_index": 2, "item_id": "fc_1", "delta": '{"q":'},
    ),
    (
        "response.function_call_arguments.delta",
        {"output_index": 2, "item_id": "fc_1", "delta": '"x"}'},
    ),
    (
        "response.function_call_arguments.done",
        {"output_index": 2, "item_id": "fc_1", "arguments": '{"q":"x"}'},
    ),
    (
        "response.output_item.done",
        {
            "output_index": 2,
            "item": {
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "f",
                "arguments": '{"q":"x"}',
            },
        },
    ),
    (
        "response.completed",
        {
            "response": {
                **BASE,
                "status": "completed",
                "usage": {
                    "input_tokens": 9,
                    "output_tokens": 7,
                    "input_tokens_details": {"cached_tokens": 1},
                    "output_tokens_details": {"reasoning_tokens": 4},
                    "total_tokens": 16,
                },
            }
        },
    ),
)
EXPECTED_EVENTS: list[ir.Event] = [
    ir.Start("resp_up", "gpt-up", created=1700000000),
    ir.ThinkingDelta("Think", "openai-responses", "rs_1"),
    ir.ThinkingDelta("\n\n", "openai-responses", "rs_1"),
    ir.ThinkingDelta("more", "openai-responses", "rs_1"),
    ir.ThinkingSignature("ENC", "openai-responses", "rs_1"),
    ir.TextDelta("Grüße "),
    ir.TextDelta("🙂"),
    ir.ToolCallStart("call_1", "f"),
    ir.ToolCallDelta('{"q":'),
    ir.ToolCallDelta('"x"}'),
    ir.Finish("tool_calls", ir.Usage(9, 7, cached_tokens=1, reasoning_tokens=4)),
]


def test_stream_decoder_full() -> None:
    assert decode_all(UPSTREAM_STREAM) == EXPECTED_EVENTS


def test_stream_decoder_every_byte_boundary() -> None:
    for cut in range(len(UPSTREAM_STREAM) + 1):
        assert decode_all(UPSTREAM_STREAM, [cut]) == EXPECTED_EVENTS, cut


def test_stream_decoder_byte_by_byte_crlf() -> None:
    data = UPSTREAM_STREAM.replace(b"\n", b"\r\n")
    assert decode_all(data, list(range(1, len(data)))) == EXPECTED_EVENTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(UPSTREAM_STREAM)), max_size=30))
def test_stream_decoder_random_chunking(cuts: list[int]) -> None:
    assert decode_all(UPSTREAM_STREAM, sorted(cuts)) == EXPECTED_EVENTS


def test_stream_decoder_serializes_interleaved_items() -> None:
    def call(index: int, call_id: str) -> tuple[str, dict[str, Any]]:
        return (
            "response.output_item.added",
            {
                "output_index": index,
                "item": {
                    "id": f"fc_{index}",
                    "type": "function_call",
                    "call_id": call_id,
                    "name": "f",
                },
            },
        )

    def delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
        return ("response.function_call_arguments.delta", {"output_index": index, "delta": text})

    def done(index: int, call_id: str, args: str) -> tuple[str, dict[str, Any]]:
        return (
            "response.output_item.done",
            {
                "output_index": index,
                "item": {
                    "id": f"fc_{index}",
                    "type": "function_call",
                    "call_id": call_id,
                    "name": "f",
                    "arguments": args,
                },
            },
        )

    data = upstream(
        ("response.created", {"response": BASE}),
        call(0, "a"),
        call(1, "b"),
        delta(1, '{"b":'),
        delta(0, '{"a":'),
        delta(1, "2}"),
        done(1, "b", '{"b":2}'),
        delta(0, "1}"),
        done(0, "a", '{"a":1}'),
        ("response.completed", {"response": {**BASE, "status": "completed"}}),
    )
    assert decode_all(data)[1:] == [
        ir.ToolCallStart("a", "f"),
        ir.ToolCallDelta('{"a":'),
        ir.ToolCallDelta("1}"),
        ir.ToolCallStart("b", "f"),
        ir.ToolCallDelta('{"b":'),
        ir.ToolCallDelta("2}"),
        ir.Finish("tool_calls", ir.Usage()),
    ]


def test_stream_decoder_text_only_in_done_events_and_block_breaks() -> None:
    data = upstream(
        ("response.created", {"response": BASE}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "m1", "type": "message"}},
        ),
        (
            "response.output_item.done",
            {
                "output_index": 0,
                "item": {
                    "id": "m1",
                    "type": "message",
                    "content": [
                        {"type": "output_text", "text": "a"},
                        {"type": "output_text", "text": "b"},
                    ],
                },
            },
        ),
        (
            "response.output_item.added",
            {"output_index": 1, "item": {"id": "m2", "type": "message"}},
        ),
        ("response.content_part.added", {"output_index": 1, "content_index": 0, "part": {}}),
        ("response.output_text.done", {"output_index": 1, "content_index": 0, "text": "c"}),
        ("response.output_item.done", {"output_index": 1, "item": {"id": "m2", "type": "message"}}),
        (
            "response.output_item.added",
            {"output_index": 2, "item": {"id": "rs", "type": "reasoning"}},
        ),
        (
            "response.output_item.done",
            {
                "output_index": 2,
                "item": {"id": "rs", "type": "reasoning", "summary": [], "encrypted_content": "E"},
            },
        ),
        (
            "response.incomplete",
            {
                "response": {
                    **BASE,
                    "status": "incomplete",
                    "incomplete_details": {"reason": "max_output_tokens"},
                }
            },
        ),
    )
    assert decode_all(data)[1:] == [
        ir.TextDelta("a"),
        ir.BlockBreak(),
        ir.TextDelta("b"),
        ir.BlockBreak(),
        ir.TextDelta("c"),
        ir.ThinkingDelta("", "openai-responses", "rs"),
        ir.ThinkingSignature("E", "openai-responses", "rs"),
        ir.Finish("length", ir.Usage()),
    ]


def test_stream_decoder_refusal_is_content_filter() -> None:
    data = upstream(
        ("response.created", {"response": BASE}),
        ("response.output_item.added", {"output_index": 0, "item": {"id": "m", "type": "message"}}),
        ("response.content_part.added", {"output_index": 0, "content_index": 0, "part": {}}),
        ("response.refusal.delta", {"output_index": 0, "content_index": 0, "delta": "No."}),
        ("response.output_item.done", {"output_index": 0, "item": {"id": "m", "type": "message"}}),
        ("response.completed", {"response": {**BASE, "status": "completed"}}),
    )
    events = decode_all(data)
    assert events[1] == ir.TextDelta("No.") and events[-1].reason == "content_filter"


@pytest.mark.parametrize(
    "tail, status, kind",
    [
        (("error", {"code": "rate_limit_exceeded", "message": "slow"}), 429, "rate_limit"),
        (("error", {"error": {"code": "server_error", "message": "boom"}}), 500, "api_error"),
        (
            (
                "response.failed",
                {
                    "response": {
                        **BASE,
                        "status": "failed",
                        "error": {"code": "server_error", "message": "boom"},
                    }
                },
            ),
            500,
            "api_error",
        ),
    ],
)
def test_stream_decoder_errors(tail: tuple[str, dict[str, Any]], status: int, kind: str) -> None:
    events = decode_all(upstream(("response.created", {"response": BASE}), tail))
    assert isinstance(events[-1], ir.Error)
    assert (events[-1].status, events[-1].kind) == (status, kind)


def test_stream_decoder_eof_without_completion_is_an_error() -> None:
    events = decode_all(UPSTREAM_STREAM.rsplit(b"event: response.completed", 1)[0])
    assert isinstance(events[-1], ir.Error) and events[-1].status == 502
    assert events[:-1] == EXPECTED_EVENTS[:-1]
    assert decode_all(b"") == [
        ir.Error(502, "bad_gateway", "upstream stream ended before response.completed")
    ]


def test_decoder_to_encoder_round_trip_via_sdk(server: ReplayServer) -> None:
    final, _ = stream_final(server, encode_all(decode_all(UPSTREAM_STREAM)))
    assert final.id == "resp_up"
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].id == "rs_1" and final.output[0].encrypted_content == "ENC"
    assert final.output[0].summary[0].text == "Think\n\nmore"
    assert final.output_text == "Grüße 🙂"
    assert final.output[2].arguments == '{"q":"x"}'
    assert final.usage.input_tokens_details.cached_tokens == 1


# --- errors and model list -----------------------------------------------------------


def test_error_body_shape() -> None:
    body = resp.error_body(ir.Error(400, "invalid_request", "bad", param="input"))
    assert body == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "input",
            "code": "invalid_request",
        }
    }
    assert resp.error_body(ir.Error(502, "bad_gateway", "x"))["error"]["type"] == "server_error"


def test_parse_error() -> None:
    err = resp.parse_error(
        429,
        json.dumps(
            {
                "error": {
                    "message": "slow",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        ).encode(),
    )
    assert (err.status, err.kind, err.message) == (429, "rate_limit", "slow")
    err = resp.parse_error(502, b"<html>Bad Gateway</html>")
    assert (err.status, err.kind, err.message) == (502, "bad_gateway", "<html>Bad Gateway</html>")
    assert resp.parse_error(500, b"").message == "upstream HTTP 500"
    assert resp.parse_error(404, b'{"error": "nope"}').kind == "not_found"


def test_model_list_via_sdk(server: ReplayServer) -> None:
    body = resp.model_list(["a", "b"])
    server.reply(json.dumps(body).encode(), content_type="application/json")
    assert [m.id for m in client(server).models.list()] == ["a", "b"]


def test_module_surface() -> None:
    assert resp.NAME == "openai-responses" and resp.ACCEPTS_IMAGE_URLS is True
    assert resp.StreamEncoder(ir.Request("m")).content_type == "text/event-stream"
