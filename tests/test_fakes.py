"""The fake upstreams, proven with the official SDKs pointed straight at them (no gateway)."""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
from collections.abc import Iterator

import anthropic
import httpx
import jsonschema
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.fakes import FakeProxy, FakeUpstream, spawn_process
from tests.fakes.replies import huge_text, sample_from_schema

pytestmark = pytest.mark.timeout(30)

KEY = "test-key"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "pet": {"anyOf": [{"$ref": "#/$defs/pet"}, {"type": "null"}]},
    },
    "required": ["name", "age", "tags", "pet"],
    "additionalProperties": False,
    "$defs": {
        "pet": {
            "type": "object",
            "properties": {"kind": {"type": "string", "enum": ["cat", "dog"]}},
            "required": ["kind"],
            "additionalProperties": False,
        }
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=KEY) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _clean(fake: FakeUpstream) -> None:
    fake.reset()


def oai(fake: FakeUpstream, timeout: float = 10.0, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=key, max_retries=0, timeout=timeout)


def claude(fake: FakeUpstream, timeout: float = 10.0, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key=key, max_retries=0, timeout=timeout)


_GENAI_CLIENTS: list[genai.Client] = []  # a collected genai.Client closes its HTTP client


def gem(fake: FakeUpstream, key: str = KEY, api_version: str = "v1beta") -> genai.Client:
    options = gtypes.HttpOptions(
        base_url=fake.url,
        api_version=api_version,
        timeout=10_000,
        retry_options=gtypes.HttpRetryOptions(attempts=1),
    )
    client = genai.Client(api_key=key, http_options=options)
    _GENAI_CLIENTS.append(client)
    return client


def final_chat(client: openai.OpenAI, **kwargs: object):
    with client.chat.completions.stream(**kwargs) as stream:  # type: ignore[call-overload]
        return stream.get_final_completion()


def final_response(client: openai.OpenAI, **kwargs: object):
    with client.responses.stream(**kwargs) as stream:  # type: ignore[call-overload]
        return stream.get_final_response()


def final_message(client: anthropic.Anthropic, **kwargs: object):
    with client.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        return stream.get_final_message()


def chat_tool(name: str = "get_weather") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": WEATHER_SCHEMA}}


# ---- OpenAI Chat ------------------------------------------------------------------------


def test_chat_plain_and_usage(fake: FakeUpstream) -> None:
    out = oai(fake).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    )
    assert out.choices[0].message.content == "echo: hello"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "gpt-4o"
    usage = out.usage
    assert usage and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    log = fake.last_request()
    assert log["path"] == "/v1/chat/completions"
    assert log["headers"]["authorization"] == f"Bearer {KEY}"
    assert log["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert log["protocol"] == "openai-chat" and log["completed"] and not log["disconnected"]


def test_chat_stream_helper_with_usage_and_reasoning(fake: FakeUpstream) -> None:
    with oai(fake).chat.completions.stream(
        model="gpt-5",  # a reasoning model: gpt-4o refuses reasoning_effort, as OpenAI does
        messages=[{"role": "user", "content": "stream me"}],
        stream_options={"include_usage": True},
        reasoning_effort="low",
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1 and "".join(deltas) == "echo: stream me"
    assert final.choices[0].message.content == "echo: stream me"
    assert final.usage and final.usage.completion_tokens_details
    assert final.usage.completion_tokens_details.reasoning_tokens > 0
    extra = final.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content") == "thinking about: stream me"


def test_chat_parallel_tool_calls_then_results(fake: FakeUpstream) -> None:
    client = oai(fake)
    tools = [chat_tool("get_weather"), chat_tool("get_time")]
    messages: list = [{"role": "user", "content": "please call 2 tools"}]
    final = final_chat(client, model="gpt-4o", messages=messages, tools=tools)
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and [c.function.name for c in msg.tool_calls] == [
        "get_weather",
        "get_time",
    ]
    for call in msg.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
    assert len({c.id for c in msg.tool_calls}) == 2
    messages.append(msg.model_dump(exclude_none=True))
    messages += [
        {"role": "tool", "tool_call_id": c.id, "content": f"result {i}"}
        for i, c in enumerate(msg.tool_calls)
    ]
    out = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    assert out.choices[0].message.content == "tool results: get_weather=result 0; get_time=result 1"


def test_chat_rejects_unanswered_tool_call(fake: FakeUpstream) -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "y"},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        oai(fake).chat.completions.create(model="gpt-4o", messages=messages)
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert "call_1" in body["message"]


def test_chat_structured_output_and_image(fake: FakeUpstream) -> None:
    client = oai(fake)
    out = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "a person"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), PERSON_SCHEMA)
    out = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
    )
    assert (
        out.choices[0].message.content == f"echo: what is this\nimage: image/png {len(PNG)} bytes"
    )


# ---- OpenAI Responses -------------------------------------------------------------------


def test_responses_plain_and_stream(fake: FakeUpstream) -> None:
    client = oai(fake)
    out = client.responses.create(model="gpt-5", input="hello", instructions="sys")
    assert out.output_text == "echo: hello" and out.status == "completed"
    with client.responses.stream(model="gpt-5", input="stream me") as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output_text == "echo: stream me"
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") > 1
    assert (
        final.usage
        and final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    )


def test_responses_tools_reasoning_roundtrip(fake: FakeUpstream) -> None:
    client = oai(fake)
    tools = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True}
    ]
    first = final_response(
        client,
        model="gpt-5",
        input=[{"role": "user", "content": "call tool get_weather"}],
        tools=tools,
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
    )
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "function_call"]
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.summary[0].text == "thinking about: call tool get_weather"
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    follow_up = [
        {"role": "user", "content": "call tool get_weather"},
        reasoning.model_dump(exclude_none=True),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    out = client.responses.create(model="gpt-5", input=follow_up, tools=tools, store=False)
    assert out.output_text == "tool results: get_weather=sunny"
    follow_up[1] = {**follow_up[1], "encrypted_content": "not-ours"}
    with pytest.raises(openai.BadRequestError, match="could not be verified"):
        client.responses.create(model="gpt-5", input=follow_up, tools=tools, store=False)


def test_responses_structured_output(fake: FakeUpstream) -> None:
    out = oai(fake).responses.create(
        model="gpt-5",
        input="a person",
        text={"format": {"type": "json_schema", "name": "p", "schema": PERSON_SCHEMA}},
    )
    jsonschema.validate(json.loads(out.output_text), PERSON_SCHEMA)


# ---- Anthropic --------------------------------------------------------------------------

CLAUDE_TOOL = {"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}


def test_anthropic_plain_stream_and_count(fake: FakeUpstream) -> None:
    client = claude(fake)
    out = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        system="be brief",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert out.content[0].type == "text" and out.content[0].text == "echo: hello"
    assert out.stop_reason == "end_turn" and out.usage.output_tokens > 0
    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi" and final.content[0].text == "echo: hi"  # type: ignore[union-attr]
    count = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    assert count.input_tokens == final.usage.input_tokens
    log = fake.requests()
    assert log[0]["headers"]["anthropic-version"]
    assert log[-1]["path"] == "/v1/messages/count_tokens"


def test_anthropic_thinking_tools_roundtrip(fake: FakeUpstream) -> None:
    client = claude(fake)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    messages: list = [{"role": "user", "content": "call 2 tools"}]
    first = final_message(
        client,
        model="claude-sonnet-4-6",
        max_tokens=2048,
        thinking=thinking,
        tools=[CLAUDE_TOOL],
        messages=messages,
    )
    assert [b.type for b in first.content] == ["thinking", "tool_use", "tool_use"]
    block = first.content[0]
    assert block.type == "thinking" and block.thinking == "thinking about: call 2 tools"
    assert block.signature.startswith("sig-")
    uses = [b for b in first.content if b.type == "tool_use"]
    for use in uses:
        jsonschema.validate(use.input, WEATHER_SCHEMA)
    assert first.stop_reason == "tool_use"
    messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": uses[1].id,
                    "content": "oops",
                    "is_error": True,
                },
            ],
        }
    )
    out = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=2048,
        thinking=thinking,
        tools=[CLAUDE_TOOL],
        messages=messages,
    )
    assert out.content[-1].text == "tool results: get_weather=sunny; get_weather=error:oops"  # type: ignore[union-attr]
    # a tampered signature and a missing thinking block are rejected like the real API
    tampered = json.loads(json.dumps(messages))
    tampered[1]["content"][0]["signature"] = "sig-forged"
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            thinking=thinking,
            tools=[CLAUDE_TOOL],
            messages=tampered,
        )
    stripped = json.loads(json.dumps(messages))
    stripped[1]["content"] = stripped[1]["content"][1:]
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            thinking=thinking,
            tools=[CLAUDE_TOOL],
            messages=stripped,
        )


def test_anthropic_image_and_structured_output(fake: FakeUpstream) -> None:
    client = claude(fake)
    out = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {"type": "text", "text": "describe"},
                ],
            }
        ],
    )
    assert out.content[0].text == f"echo: describe\nimage: image/png {len(PNG)} bytes"  # type: ignore[union-attr]
    out = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=[{"role": "user", "content": "a person"}],
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
    )
    jsonschema.validate(json.loads(out.content[0].text), PERSON_SCHEMA)  # type: ignore[union-attr]


# ---- Gemini -----------------------------------------------------------------------------


def test_gemini_generate_and_stream(fake: FakeUpstream) -> None:
    client = gem(fake)
    out = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="hello",
        config=gtypes.GenerateContentConfig(system_instruction="be brief"),
    )
    assert out.text == "echo: hello"
    assert out.candidates and out.candidates[0].finish_reason == gtypes.FinishReason.STOP
    chunks = list(
        client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi there")
    )
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks) == "echo: hi there"
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.total_token_count
    log = fake.requests()
    assert log[0]["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert log[0]["headers"]["x-goog-api-key"] == KEY
    assert log[0]["body"]["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert log[1]["query"] == {"alt": "sse"} and log[1]["stream"]
    # the SDK's default /v1 prefix works too
    assert (
        gem(fake, api_version="v1")
        .models.generate_content(model="gemini-2.5-flash", contents="v1")
        .text
        == "echo: v1"
    )


def test_gemini3_function_calls_with_signatures(fake: FakeUpstream) -> None:
    client = gem(fake)
    decl = gtypes.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema=WEATHER_SCHEMA,
    )
    config = gtypes.GenerateContentConfig(tools=[gtypes.Tool(function_declarations=[decl])])
    history = [gtypes.Content(role="user", parts=[gtypes.Part(text="call 2 tools")])]
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-3-pro-preview", contents=history, config=config
        )
    )
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]  # type: ignore[index,union-attr]
    calls = [p for p in parts if p.function_call]
    assert len(calls) == 2 and calls[0].thought_signature and calls[0].function_call.id  # type: ignore[union-attr]
    jsonschema.validate(calls[0].function_call.args, WEATHER_SCHEMA)  # type: ignore[union-attr]
    history.append(gtypes.Content(role="model", parts=calls))
    history.append(
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part.from_function_response(name="get_weather", response={"output": f"r{i}"})
                for i in range(2)
            ],
        )
    )
    out = client.models.generate_content(
        model="gemini-3-pro-preview", contents=history, config=config
    )
    assert out.text == "tool results: get_weather=r0; get_weather=r1"
    # dropping the signature is rejected like Gemini 3 does
    history[1] = gtypes.Content(
        role="model",
        parts=[gtypes.Part(function_call=p.function_call) for p in calls],
    )
    with pytest.raises(genai_errors.ClientError, match="thought_signature"):
        client.models.generate_content(
            model="gemini-3-pro-preview", contents=history, config=config
        )


def test_gemini_schema_rules_structured_output_image_count(fake: FakeUpstream) -> None:
    client = gem(fake)
    bad = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": False}
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="x",
            config={"tools": [{"function_declarations": [{"name": "f", "parameters": bad}]}]},
        )
    assert err.value.code == 400 and 'Unknown name "additional_properties"' in (
        err.value.message or ""
    )
    out = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="a person",
        config=gtypes.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=PERSON_SCHEMA
        ),
    )
    jsonschema.validate(json.loads(out.text or ""), PERSON_SCHEMA)
    image = gtypes.Part.from_bytes(data=PNG, mime_type="image/png")
    out = client.models.generate_content(model="gemini-2.5-flash", contents=[image, "see"])
    assert out.text == f"echo: see\nimage: image/png {len(PNG)} bytes"
    count = client.models.count_tokens(model="gemini-2.5-flash", contents="hello")
    assert count.total_tokens and count.total_tokens > 0


def test_gemini_thinking_and_code_assist(fake: FakeUpstream) -> None:
    out = gem(fake).models.generate_content(
        model="gemini-2.5-flash",
        contents="think",
        config=gtypes.GenerateContentConfig(
            thinking_config=gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=512)
        ),
    )
    parts = out.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts and parts[0].thought and parts[0].text == "thinking about: think"
    assert parts[1].thought_signature and out.text == "echo: think"
    assert out.usage_metadata and out.usage_metadata.thoughts_token_count
    body = {
        "model": "gemini-2.5-pro",
        "project": "p",
        "request": {"contents": [{"role": "user", "parts": [{"text": "ca"}]}]},
    }
    r = httpx.post(
        fake.url + "/v1internal:streamGenerateContent?alt=sse",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
    )
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.status_code == 200 and all("response" in e for e in events)
    text = "".join(
        p.get("text", "")
        for e in events
        for p in e["response"]["candidates"][0]["content"]["parts"]
    )
    assert text == "echo: ca"


# ---- authentication, model lists ----------------------------------------------------------


def test_wrong_keys_get_each_protocols_401(fake: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as e1:
        oai(fake, key="wrong").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert e1.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as e2:
        claude(fake, key="wrong").messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert e2.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    with pytest.raises(genai_errors.ClientError) as e3:
        gem(fake, key="wrong").models.generate_content(model="gemini-2.5-flash", contents="x")
    assert e3.value.code == 401 and e3.value.status == "UNAUTHENTICATED"
    # x-api-key and ?key= work too
    r = httpx.post(
        fake.url + "/v1/messages",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200
    r = httpx.post(
        fake.url + "/v1beta/models/g:generateContent?key=" + KEY,
        json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
    )
    assert r.status_code == 200


def test_model_lists(fake: FakeUpstream) -> None:
    assert "gpt-4o" in [m.id for m in oai(fake).models.list()]
    assert "claude-sonnet-4-6" in [m.id for m in claude(fake).models.list()]
    names = [m.name for m in gem(fake).models.list()]
    assert "models/gemini-2.5-flash" in names


# ---- scripted behaviours ------------------------------------------------------------------


def test_script_status_errors_and_retry_after(fake: FakeUpstream) -> None:
    fake.script([{"status": 500}, {"status": 429, "retry_after": 1, "path": "/v1/messages"}])
    with pytest.raises(openai.InternalServerError) as e1:
        oai(fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e1.value.body["type"] == "server_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as e2:
        claude(fake).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert e2.value.response.headers["retry-after"] == "1"
    assert e2.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Rate limit exceeded, please retry later.",
        },
    }
    fake.script(
        [
            {"status": 503, "protocol": "gemini", "times": 2},
            {"status": 400, "body": {"exact": True}},
        ]
    )
    for _ in range(2):
        with pytest.raises(genai_errors.ServerError) as e3:
            gem(fake).models.generate_content(model="gemini-2.5-flash", contents="x")
        assert e3.value.status == "UNAVAILABLE"
    r = httpx.post(fake.url + "/v1/chat/completions", json={})
    assert r.status_code == 400 and r.json() == {"exact": True}
    assert fake.pending_script() == []
    assert [e["status"] for e in fake.requests()] == [500, 429, 503, 503, 400]


def test_script_reset_and_hang(fake: FakeUpstream) -> None:
    fake.script([{"reset": True}, {"hang": 5}])
    with pytest.raises(openai.APIConnectionError):
        oai(fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        oai(fake, timeout=0.5).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert time.monotonic() - start < 3
    log = fake.wait_for(lambda log: len(log) == 2 and log[1]["disconnected"] and log)
    assert log[0]["reset"] is True


def test_script_cut_stream(fake: FakeUpstream) -> None:
    fake.script({"cut_after": 3})
    with pytest.raises(openai.APIConnectionError):
        final_chat(
            oai(fake), model="m", messages=[{"role": "user", "content": "a longer text to stream"}]
        )
    entry = fake.last_request()
    assert entry["events_sent"] == 3 and not entry["completed"]
    fake.script({"cut_after": 2})
    with pytest.raises(Exception, match="incomplete chunked read"):
        final_message(
            claude(fake), model="m", max_tokens=99, messages=[{"role": "user", "content": "x"}]
        )


def test_script_stream_errors(fake: FakeUpstream) -> None:
    fake.script(
        [{"stream_error": True, "error_status": 529}, {"error_after": 3}, {"error_after": 2}]
    )
    with pytest.raises(anthropic.APIStatusError) as e1:
        final_message(
            claude(fake), model="m", max_tokens=99, messages=[{"role": "user", "content": "x"}]
        )
    assert "overloaded_error" in str(e1.value)
    got: list[str] = []
    with pytest.raises(openai.APIError, match="Internal server error"):
        for event in oai(fake).chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "some text"}]
        ):
            got.append(event.choices[0].delta.content or "")
    assert "".join(got)  # content arrived before the error
    with pytest.raises(genai_errors.APIError):
        list(
            gem(fake).models.generate_content_stream(model="gemini-2.5-flash", contents="some text")
        )
    assert all(e["completed"] for e in fake.requests())


def test_responses_stream_error_event(fake: FakeUpstream) -> None:
    fake.script({"stream_error": True, "error_status": 429})
    r = httpx.post(
        fake.url + "/v1/responses",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "gpt-5", "input": "x", "stream": True},
    )
    assert r.status_code == 200
    assert r.text.startswith("event: error\ndata: ")
    data = json.loads(r.text.split("data: ", 1)[1])
    assert data == {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "Rate limit exceeded, please retry later.",
        "param": None,
        "sequence_number": 0,
    }
    fake.script({"stream_error": "failed"})
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        final_response(oai(fake), model="gpt-5", input="x")
    assert fake.last_request()["events_sent"] == 3  # created, in_progress, failed


def post_chat(fake: FakeUpstream, stream: bool, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(
        fake.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "x"}]},
        timeout=timeout,
    )


def test_script_broken_answers(fake: FakeUpstream) -> None:
    fake.script({"malformed_json": True})
    r = post_chat(fake, stream=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        r.json()
    fake.script({"malformed_sse": True})
    r = post_chat(fake, stream=False)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert json.loads(r.text.removeprefix("data: "))["object"] == "chat.completion"
    fake.script({"cut_chunked": 0})
    with pytest.raises(httpx.RemoteProtocolError):
        post_chat(fake, stream=False)
    fake.script({"stall_after": 0, "stall": 30})
    with pytest.raises(httpx.ReadTimeout):
        post_chat(fake, stream=False, timeout=0.5)
    fake.wait_for(lambda log: log[-1]["disconnected"])


def test_script_broken_streams(fake: FakeUpstream) -> None:
    fake.script({"malformed_json": True})
    lines = [line for line in post_chat(fake, stream=True).text.split("\n") if line]
    assert lines and all(line.startswith("data: ") for line in lines)
    for line in lines[:-1]:  # the [DONE] marker is not an event
        with pytest.raises(json.JSONDecodeError):
            json.loads(line[6:])
    fake.script({"malformed_sse": True})
    body = post_chat(fake, stream=True).content
    assert b"data:" not in body.replace(b"data: [DONE]", b"") and b"\xff" in body
    fake.script({"no_final": True})
    events = post_chat(fake, stream=True).text.split("\n\n")
    assert "[DONE]" not in events[-2] and '"finish_reason":"stop"' not in "".join(events)
    fake.script({"cut_chunked": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        post_chat(fake, stream=True)
    assert fake.last_request()["events_sent"] == 1
    fake.script({"stall_after": 1, "stall": 0.5})
    start = time.monotonic()
    assert post_chat(fake, stream=True).text.endswith("data: [DONE]\n\n")
    assert time.monotonic() - start >= 0.5


def test_script_huge_reply(fake: FakeUpstream) -> None:
    fake.script({"huge": 1_000_000})
    completion = oai(fake).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == huge_text(1_000_000)
    assert huge_text(25) == "000000000 000000001 00000"


def test_client_disconnect_is_logged(fake: FakeUpstream) -> None:
    fake.script({"delay_between_events": 0.3})
    with (
        httpx.Client(timeout=5) as client,
        client.stream(
            "POST",
            fake.url + "/v1/messages",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            json={
                "model": "m",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
        ) as response,
    ):
        first = next(response.iter_bytes())
        assert first.startswith(b"event: message_start")
    entry = fake.wait_for(lambda log: log and log[0]["disconnected"] and log[0])
    assert not entry["completed"]


def test_gemini_json_array_stream_and_rechunking(fake: FakeUpstream) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "array"}]}]}
    r = httpx.post(fake.url + f"/v1beta/models/g:streamGenerateContent?key={KEY}", json=body)
    chunks = r.json()
    assert isinstance(chunks, list) and len(chunks) > 1
    assert (
        "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: array"
    )
    fake.script({"chunk_size": 7})
    r = httpx.post(
        fake.url + f"/v1beta/models/g:streamGenerateContent?alt=sse&key={KEY}", json=body
    )
    assert "data: " in r.text and r.text.endswith("\r\n\r\n")


# ---- proxy and process helpers ------------------------------------------------------------


def test_proxy_forwards_and_logs(fake: FakeUpstream) -> None:
    with FakeProxy.start() as proxy:
        with httpx.Client(proxy=proxy.url, timeout=5) as client:
            r = client.post(
                fake.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {KEY}"},
                json={"model": "m", "messages": [{"role": "user", "content": "via proxy"}]},
            )
        assert r.json()["choices"][0]["message"]["content"] == "echo: via proxy"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{fake.port} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            sock.sendall(
                b"GET /v1beta/models?key="
                + KEY.encode()
                + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert b"models/gemini-2.5-flash" in reply
        log = proxy.log()
        assert [e["method"] for e in log] == ["POST", "CONNECT"]
        assert log[0]["target"] == fake.url + "/v1/chat/completions"
        assert log[1]["port"] == fake.port


def test_spawn_process_failures_are_reported_and_cleaned_up() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        spawn_process(
            [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
            ready_url="http://127.0.0.1:9/",
        )
    with pytest.raises(TimeoutError):
        spawn_process(
            [sys.executable, "-c", "import time; time.sleep(30)"], port_file=True, timeout=0.5
        )


def test_schema_sampler_handles_gemini_and_json_schema() -> None:
    gemini_schema = {
        "type": "OBJECT",
        "properties": {"n": {"type": "INTEGER"}, "s": {"type": "STRING", "nullable": True}},
    }
    assert sample_from_schema(gemini_schema) == {"n": 1, "s": "sample s"}
    jsonschema.validate(sample_from_schema(PERSON_SCHEMA), PERSON_SCHEMA)
    assert sample_from_schema({"type": ["null", "number"], "minimum": 5}) == 5.0


def test_finish_reasons_stop_sequences_and_refusals(fake: FakeUpstream) -> None:
    out = claude(fake).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=99,
        stop_sequences=["lo w"],
        messages=[{"role": "user", "content": "hello world"}],
    )
    assert out.content[0].text == "echo: hel"  # type: ignore[union-attr]
    assert (out.stop_reason, out.stop_sequence) == ("stop_sequence", "lo w")
    chat = oai(fake).chat.completions.create(
        model="m", max_tokens=2, messages=[{"role": "user", "content": "a long question"}]
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == "echo: a "  # 2 tokens = 8 characters
    refused = gem(fake).models.generate_content(model="gemini-2.5-flash", contents="please refuse")
    assert refused.candidates and refused.candidates[0].finish_reason == gtypes.FinishReason.SAFETY
    resp = oai(fake).responses.create(model="gpt-5", input="please refuse")
    assert resp.status == "incomplete" and resp.incomplete_details
    assert resp.incomplete_details.reason == "content_filter"


def test_raw_sse_script_and_oauth_token(fake: FakeUpstream) -> None:
    fake.script({"sse": [{"event": "ping", "data": {"type": "ping"}}, "data: [DONE]\n\n"]})
    r = httpx.post(fake.url + "/v1/chat/completions", json={})
    assert r.text == 'event: ping\ndata: {"type":"ping"}\n\ndata: [DONE]\n\n'
    r = httpx.post(
        fake.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": "r", "client_id": "c"},
    )
    assert r.json()["access_token"] == KEY and r.json()["token_type"] == "Bearer"
    assert fake.last_request()["body"]["refresh_token"] == "r"
