"""The official SDKs against the real gateway (Granian) on the shipped config, where
everything answers from the built-in echo provider."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

MODEL = "echo-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def oai(shipped_gateway):
    return openai.OpenAI(base_url=shipped_gateway.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(shipped_gateway):
    return anthropic.Anthropic(base_url=shipped_gateway.url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def gemini(shipped_gateway):
    return genai.Client(
        api_key="unused", http_options=types.HttpOptions(base_url=shipped_gateway.url)
    )


def test_curl_style_request(shipped_gateway):
    response = httpx.post(
        shipped_gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert response.headers["x-router-provider"] == "echo"
    assert float(response.headers["x-router-overhead-ms"]) >= 0


def test_openai_chat(oai):
    completion = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "ping"}]
    )
    assert completion.choices[0].message.content == "echo: ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0


def test_openai_chat_stream(oai):
    with oai.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "stream these words please"}],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: stream these words please"
    assert final.usage is not None and final.usage.prompt_tokens > 0


def test_openai_chat_tool_call_stream(oai):
    with oai.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "use get_weather for Paris"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}


def test_openai_responses(oai):
    response = oai.responses.create(model=MODEL, input="hi responses")
    assert response.output_text == "echo: hi responses"
    with oai.responses.stream(model=MODEL, input="stream responses") as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: stream responses"
    assert final.status == "completed"


def test_anthropic(claude):
    message = claude.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert message.content[0].text == "echo: hi claude"
    assert message.stop_reason == "end_turn"
    with claude.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "call get_weather now"}],
        tools=[{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert "city" in tool_use.input


def test_anthropic_count_tokens(claude):
    counted = claude.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "count me " * 10}]
    )
    assert counted.input_tokens > 10


def test_gemini(gemini):
    response = gemini.models.generate_content(model=MODEL, contents="hi gemini")
    assert response.text == "echo: hi gemini"
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="gemini stream"))
    assert "".join(c.text or "" for c in chunks) == "echo: gemini stream"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP


def test_gemini_v1beta(shipped_gateway):
    client = genai.Client(
        api_key="unused",
        http_options=types.HttpOptions(base_url=shipped_gateway.url, api_version="v1beta"),
    )
    response = client.models.generate_content(model=MODEL, contents="beta")
    assert response.text == "echo: beta"


def test_gemini_stream_without_sse_is_a_json_array(shipped_gateway):
    response = httpx.post(
        shipped_gateway.url + f"/v1beta/models/{MODEL}:streamGenerateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "array please"}]}]},
    )
    assert response.status_code == 200
    chunks = response.json()
    assert isinstance(chunks, list) and chunks
    text = "".join(
        p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"]
    )
    assert text == "echo: array please"


def test_model_lists(oai, claude, gemini, shipped_gateway):
    openai_ids = [m.id for m in oai.models.list()]
    assert openai_ids, "the OpenAI list must name the echo pool's models"
    anthropic_ids = [m.id for m in claude.models.list()]
    assert anthropic_ids == openai_ids
    gemini_names = [m.name for m in gemini.models.list()]
    assert gemini_names == [f"models/{name}" for name in openai_ids]
    by_key = httpx.get(shipped_gateway.url + "/v1/models?key=x").json()
    assert "models" in by_key


def test_provider_prefix(shipped_gateway):
    response = httpx.post(
        shipped_gateway.url + "/echo/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "via prefix"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-router-provider"] == "echo"


@pytest.mark.parametrize(
    ("path", "check"),
    [
        (
            "/nope/v1/chat/completions",
            lambda b: (
                set(b) == {"error"}
                and set(b["error"]) == {"message", "type", "param", "code"}
                and b["error"]["type"] == "not_found_error"
                and "nope" in b["error"]["message"]
            ),
        ),
        (
            "/nope/v1/messages",
            lambda b: b["type"] == "error" and b["error"]["type"] == "not_found_error",
        ),
        ("/nope/v1beta/models/x:generateContent", lambda b: b["error"]["status"] == "NOT_FOUND"),
    ],
)
def test_unknown_provider_prefix_is_404_in_protocol_shape(shipped_gateway, path, check):
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    if "generateContent" in path:
        body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    response = httpx.post(shipped_gateway.url + path, json=body)
    assert response.status_code == 404
    assert check(response.json())


def test_unknown_provider_prefix_through_the_openai_sdk(shipped_gateway):
    client = openai.OpenAI(base_url=shipped_gateway.url + "/nope/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    error = raised.value
    assert error.status_code == 404
    assert error.type == "not_found_error" and error.code == "not_found"
    assert "nope" in error.message
    assert error.body == {
        "message": error.body["message"],
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/responses", "openai"),
        ("/v1/messages", "anthropic"),
        (f"/v1beta/models/{MODEL}:generateContent", "google"),
    ],
)
def test_bad_json_is_400_in_protocol_shape(shipped_gateway, path, shape):
    response = httpx.post(
        shipped_gateway.url + path,
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    if shape == "openai":
        assert body["error"]["type"] == "invalid_request_error"
    elif shape == "anthropic":
        assert body == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": body["error"]["message"]},
        }
    else:
        assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400


def test_unknown_endpoint_is_404_not_litestar_shape(shipped_gateway):
    response = httpx.post(shipped_gateway.url + "/v1/nothing-here", json={})
    assert response.status_code == 404
    assert "error" in response.json()


def test_health(shipped_gateway):
    health = shipped_gateway.health()
    assert health["status"] == "ok"
    assert len(health["generation"]) >= 8
    assert health["last_reload_error"] is None
