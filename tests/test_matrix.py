"""Every client protocol against every upstream protocol, through the real gateway.

The clients are the official SDKs; the upstreams are the wire-exact fakes in
tests/fakes. Each case asserts what the SDK assembled and what the fake received."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from google import genai
from google.genai import types

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

MODEL = "test-model"
SYSTEM = "Answer briefly."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "confidence", "tags"],
    "additionalProperties": False,
}


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = tiny_png()
PNG_B64 = base64.b64encode(PNG).decode()

UPSTREAMS = {
    "chat": ("openai-custom", "/v1", "openai-chat"),
    "responses": ("openaiResponses-custom", "/v1", "openai-responses"),
    "anthropic": ("claude-custom", "", "anthropic"),
    "gemini": ("gemini-api", "/v1beta", "gemini"),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


def start_gateway(fake: FakeUpstream, directory: Path) -> Gateway:
    """The gateway with one pool per upstream protocol (`/up-<name>/...`), all on `fake`."""
    providers = ["providers:"]
    for name, (kind, suffix, _) in UPSTREAMS.items():
        providers += [
            f"  up-{name}:",
            f"    type: {kind}",
            f"    models: [{MODEL}]",
            "    instances:",
            f"      - id: {name}-1",
            f"        base_url: {fake.url}{suffix}",
            "        api_key: ${UPSTREAM_KEY}",
        ]
    write_config(
        directory,
        {"providers.yaml": "\n".join(providers) + "\n", "routes.yaml": "default: up-chat\n"},
    )
    return Gateway(directory, env={"UPSTREAM_KEY": "upstream-key"})


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    gateway = start_gateway(fake, tmp_path_factory.mktemp("matrix"))
    yield gateway
    gateway.stop()


@dataclass
class ToolCallSeen:
    name: str
    arguments: dict[str, Any]
    id: str | None


class ChatClient:
    def __init__(self, base: str) -> None:
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)

    def text(self, prompt: str) -> str:
        completion = self.sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        )
        return completion.choices[0].message.content

    def stream(self, prompt: str) -> str:
        with self.sdk.chat.completions.stream(
            model=MODEL,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            stream_options={"include_usage": True},
        ) as stream:
            final = stream.get_final_completion()
        assert final.usage is not None and final.usage.completion_tokens > 0
        return final.choices[0].message.content

    def tool_call(self, prompt: str) -> list[ToolCallSeen]:
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": WEATHER_SCHEMA,
            },
        }
        with self.sdk.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": prompt}], tools=[tool]
        ) as stream:
            final = stream.get_final_completion()
        assert final.choices[0].finish_reason == "tool_calls"
        return [
            ToolCallSeen(c.function.name, json.loads(c.function.arguments), c.id)
            for c in final.choices[0].message.tool_calls
        ]

    def tool_result_turn(self) -> str:
        tool = {
            "type": "function",
            "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
        }
        completion = self.sdk.chat.completions.create(
            model=MODEL,
            tools=[tool],
            messages=[
                {"role": "user", "content": "call tool get_weather"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city":"Paris","unit":"c"}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
            ],
        )
        return completion.choices[0].message.content

    def image(self, prompt: str) -> str:
        completion = self.sdk.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_B64}"},
                        },
                    ],
                }
            ],
        )
        return completion.choices[0].message.content

    def structured(self, prompt: str) -> Any:
        completion = self.sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
            },
        )
        return json.loads(completion.choices[0].message.content)


class ResponsesClient(ChatClient):
    def text(self, prompt: str) -> str:
        return self.sdk.responses.create(model=MODEL, instructions=SYSTEM, input=prompt).output_text

    def stream(self, prompt: str) -> str:
        with self.sdk.responses.stream(model=MODEL, instructions=SYSTEM, input=prompt) as stream:
            final = stream.get_final_response()
        assert final.status == "completed" and final.usage.output_tokens > 0
        return final.output_text

    def tool_call(self, prompt: str) -> list[ToolCallSeen]:
        tool = {
            "type": "function",
            "name": "get_weather",
            "description": "Weather",
            "parameters": WEATHER_SCHEMA,
            "strict": True,
        }
        with self.sdk.responses.stream(model=MODEL, input=prompt, tools=[tool]) as stream:
            final = stream.get_final_response()
        return [
            ToolCallSeen(item.name, json.loads(item.arguments), item.call_id)
            for item in final.output
            if item.type == "function_call"
        ]

    def tool_result_turn(self) -> str:
        tool = {
            "type": "function",
            "name": "get_weather",
            "parameters": WEATHER_SCHEMA,
            "strict": True,
        }
        response = self.sdk.responses.create(
            model=MODEL,
            tools=[tool],
            input=[
                {"role": "user", "content": "call tool get_weather"},
                {
                    "type": "function_call",
                    "call_id": "call_abc",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris","unit":"c"}',
                },
                {"type": "function_call_output", "call_id": "call_abc", "output": "sunny"},
            ],
        )
        return response.output_text

    def image(self, prompt: str) -> str:
        return self.sdk.responses.create(
            model=MODEL,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": prompt},
                        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
                    ],
                }
            ],
        ).output_text

    def structured(self, prompt: str) -> Any:
        response = self.sdk.responses.create(
            model=MODEL,
            input=prompt,
            text={
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": ANSWER_SCHEMA,
                    "strict": True,
                }
            },
        )
        return json.loads(response.output_text)


class AnthropicClient:
    def __init__(self, base: str) -> None:
        self.sdk = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0)

    def _text(self, message: Any) -> str:
        return "".join(block.text for block in message.content if block.type == "text")

    def text(self, prompt: str) -> str:
        message = self.sdk.messages.create(
            model=MODEL,
            max_tokens=512,
            system=SYSTEM,
            messages=[{"role": "user", "content": prompt}],
        )
        return self._text(message)

    def stream(self, prompt: str) -> str:
        with self.sdk.messages.stream(
            model=MODEL,
            max_tokens=512,
            system=SYSTEM,
            messages=[{"role": "user", "content": prompt}],
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
        return self._text(final)

    def tool_call(self, prompt: str) -> list[ToolCallSeen]:
        tool = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
        with self.sdk.messages.stream(
            model=MODEL,
            max_tokens=512,
            messages=[{"role": "user", "content": prompt}],
            tools=[tool],
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"
        return [ToolCallSeen(b.name, b.input, b.id) for b in final.content if b.type == "tool_use"]

    def tool_result_turn(self) -> str:
        tool = {"name": "get_weather", "input_schema": WEATHER_SCHEMA}
        message = self.sdk.messages.create(
            model=MODEL,
            max_tokens=512,
            tools=[tool],
            messages=[
                {"role": "user", "content": "call tool get_weather"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_abc",
                            "name": "get_weather",
                            "input": {"city": "Paris", "unit": "c"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_abc", "content": "sunny"}
                    ],
                },
            ],
        )
        return self._text(message)

    def image(self, prompt: str) -> str:
        message = self.sdk.messages.create(
            model=MODEL,
            max_tokens=512,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": PNG_B64,
                            },
                        },
                    ],
                }
            ],
        )
        return self._text(message)

    def structured(self, prompt: str) -> Any:
        message = self.sdk.messages.create(
            model=MODEL,
            max_tokens=512,
            messages=[{"role": "user", "content": prompt}],
            output_config={"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
        )
        return json.loads(self._text(message))


class GeminiClient:
    def __init__(self, base: str) -> None:
        self.sdk = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base))

    def text(self, prompt: str) -> str:
        config = types.GenerateContentConfig(system_instruction=SYSTEM)
        return self.sdk.models.generate_content(model=MODEL, contents=prompt, config=config).text

    def stream(self, prompt: str) -> str:
        config = types.GenerateContentConfig(system_instruction=SYSTEM)
        chunks = list(
            self.sdk.models.generate_content_stream(model=MODEL, contents=prompt, config=config)
        )
        assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
        assert chunks[-1].usage_metadata.candidates_token_count > 0
        return "".join(chunk.text or "" for chunk in chunks)

    def _tools_config(self) -> types.GenerateContentConfig:
        declaration = types.FunctionDeclaration(
            name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA
        )
        return types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[declaration])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    def tool_call(self, prompt: str) -> list[ToolCallSeen]:
        chunks = list(
            self.sdk.models.generate_content_stream(
                model=MODEL, contents=prompt, config=self._tools_config()
            )
        )
        calls = [call for chunk in chunks for call in (chunk.function_calls or [])]
        return [ToolCallSeen(c.name, dict(c.args), c.id) for c in calls]

    def tool_result_turn(self) -> str:
        contents = [
            types.Content(role="user", parts=[types.Part(text="call tool get_weather")]),
            types.Content(
                role="model",
                parts=[
                    types.Part(
                        function_call=types.FunctionCall(
                            name="get_weather", args={"city": "Paris", "unit": "c"}
                        )
                    )
                ],
            ),
            types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(
                        name="get_weather", response={"output": "sunny"}
                    )
                ],
            ),
        ]
        return self.sdk.models.generate_content(
            model=MODEL, contents=contents, config=self._tools_config()
        ).text

    def image(self, prompt: str) -> str:
        contents = [prompt, types.Part.from_bytes(data=PNG, mime_type="image/png")]
        return self.sdk.models.generate_content(model=MODEL, contents=contents).text

    def structured(self, prompt: str) -> Any:
        config = types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=ANSWER_SCHEMA
        )
        return json.loads(
            self.sdk.models.generate_content(model=MODEL, contents=prompt, config=config).text
        )


CLIENTS = {
    "chat": ChatClient,
    "responses": ResponsesClient,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
}
PAIRS = [(c, u) for c in CLIENTS for u in UPSTREAMS]
IDS = [f"{c}->{u}" for c, u in PAIRS]


def client_for(gateway: Gateway, client: str, upstream: str):
    return CLIENTS[client](f"{gateway.url}/up-{upstream}")


def received(fake: FakeUpstream, upstream: str) -> dict[str, Any]:
    request = fake.last_request()
    assert request["protocol"] == UPSTREAMS[upstream][2], request["path"]
    assert request["status"] == 200, request
    return request


def system_text(request: dict[str, Any]) -> str:
    body = request["body"]
    match request["protocol"]:
        case "openai-chat":
            return " ".join(
                m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
                for m in body["messages"]
                if m["role"] in ("system", "developer")
            )
        case "openai-responses":
            return body.get("instructions") or ""
        case "anthropic":
            system = body.get("system", "")
            return system if isinstance(system, str) else " ".join(b["text"] for b in system)
        case _:
            return " ".join(p.get("text", "") for p in body["systemInstruction"]["parts"])


def tool_schema(request: dict[str, Any]) -> dict[str, Any]:
    body = request["body"]
    match request["protocol"]:
        case "openai-chat":
            return body["tools"][0]["function"]["parameters"]
        case "openai-responses":
            return body["tools"][0]["parameters"]
        case "anthropic":
            return body["tools"][0]["input_schema"]
        case _:
            declaration = body["tools"][0]["functionDeclarations"][0]
            # google-genai writes nested keys in snake_case; passed through untouched
            for key in ("parametersJsonSchema", "parameters_json_schema", "parameters"):
                if key in declaration:
                    return declaration[key]
            raise AssertionError(f"no parameters in {declaration}")


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_text(gateway, fake, client, upstream):
    assert client_for(gateway, client, upstream).text("hello matrix") == "echo: hello matrix"
    assert SYSTEM in system_text(received(fake, upstream))


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_stream(gateway, fake, client, upstream):
    text = client_for(gateway, client, upstream).stream("stream this sentence word by word")
    assert text == "echo: stream this sentence word by word"
    request = received(fake, upstream)
    assert request["stream"] is True and request["completed"] is True
    assert SYSTEM in system_text(request)


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_tool_call(gateway, fake, client, upstream):
    calls = client_for(gateway, client, upstream).tool_call("call 2 tools please")
    assert [c.name for c in calls] == ["get_weather", "get_weather"]
    for call in calls:
        jsonschema.validate(call.arguments, WEATHER_SCHEMA)
    if client != "gemini":
        assert calls[0].id and calls[0].id != calls[1].id
    schema = tool_schema(received(fake, upstream))
    assert set(schema["properties"]) == {"city", "unit"}
    assert sorted(schema["required"]) == ["city", "unit"]


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_tool_result_turn(gateway, fake, client, upstream):
    text = client_for(gateway, client, upstream).tool_result_turn()
    assert text.startswith("tool results: get_weather=") and "sunny" in text, text
    received(fake, upstream)


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_image(gateway, fake, client, upstream):
    text = client_for(gateway, client, upstream).image("what is this")
    assert text.splitlines() == ["echo: what is this", f"image: image/png {len(PNG)} bytes"], text
    received(fake, upstream)


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_structured_output(gateway, fake, client, upstream):
    document = client_for(gateway, client, upstream).structured("give me an answer")
    jsonschema.validate(document, ANSWER_SCHEMA)
    body = received(fake, upstream)["body"]
    asked = json.dumps(body)
    assert "confidence" in asked, "the schema must reach the upstream"
