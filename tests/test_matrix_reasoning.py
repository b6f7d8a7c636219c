"""Reasoning, tool-result edge cases and detailed usage across every client/upstream pair.

Same set-up as tests/test_matrix.py (official SDKs -> the real gateway process -> the
wire-exact fakes), for what that matrix leaves to the in-process tests:

* reasoning asked for in the client's protocol, answered by the upstream in its own
  (Anthropic thinking + signature + redacted_thinking, Gemini thought parts +
  thoughtSignature, Responses reasoning item with summary + encrypted_content, Chat
  `reasoning_content`), stream and JSON, with cached/reasoning token usage;
* a tool loop with reasoning: the client replays the signed assistant turn, and the
  upstream must receive the signature where its protocol wants it;
* tool results that are errors, and tool results carrying an image."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.fakes import FakeUpstream
from tests.fakes.anthropic import sign
from tests.fakes.gemini import valid_signature
from tests.fakes.openai_responses import verify_reasoning
from tests.gateway import Gateway
from tests.test_matrix import MODEL, PNG, PNG_B64, UPSTREAMS, WEATHER_SCHEMA, start_gateway

PROMPT = "use cache and redacted thinking: why is the sky blue"
THINKING = f"thinking about: {PROMPT}"
ANSWER = f"echo: {PROMPT}"
SKIP = "skip_thought_signature_validator"
ERROR_TEXT = "city not found"
CHART_TEXT = "here is the chart"


def tokens(text: str) -> int:
    """The fakes' tokenizer: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    gateway = start_gateway(fake, tmp_path_factory.mktemp("matrix-reasoning"))
    yield gateway
    gateway.stop()


@dataclass
class Reasoned:
    """What a client SDK assembled from one reasoning answer."""

    thinking: str
    text: str
    signatures: list[str]  # thinking signatures / encrypted_content / thoughtSignatures
    input_tokens: int  # including cached tokens, whatever the protocol's convention
    cached_tokens: int
    output_tokens: int  # including reasoning tokens
    reasoning_tokens: int | None  # None: the client protocol has no such field
    blocks: list[tuple[int, str]] = field(default_factory=list)  # Anthropic (index, type)
    dropped: str = ""


@dataclass
class ToolTurn:
    """Turn 1 of a tool loop with reasoning, and the client's replay of it in turn 2."""

    signatures: list[str]
    answer: str
    dropped: str


def dropped_header(headers: Any) -> str:
    return headers.get("x-router-dropped") or ""


# --- clients ------------------------------------------------------------------------


class ChatClient:
    """OpenAI Chat: `reasoning_effort` in, `reasoning_content` out, no signatures."""

    def __init__(self, base: str) -> None:
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)

    def reason(self, stream: bool) -> Reasoned:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "reasoning_effort": "high",
        }
        if stream:
            with self.sdk.chat.completions.stream(
                **kwargs, stream_options={"include_usage": True}
            ) as events:
                final = events.get_final_completion()
                headers = events._response.headers  # the helper keeps it private
        else:
            raw = self.sdk.chat.completions.with_raw_response.create(**kwargs)
            final, headers = raw.parse(), raw.headers
        message = final.choices[0].message
        usage = final.usage
        assert usage is not None
        return Reasoned(
            thinking=getattr(message, "reasoning_content", None) or "",
            text=message.content or "",
            signatures=[],
            input_tokens=usage.prompt_tokens,
            cached_tokens=usage.prompt_tokens_details.cached_tokens or 0,
            output_tokens=usage.completion_tokens,
            reasoning_tokens=usage.completion_tokens_details.reasoning_tokens,
            dropped=dropped_header(headers),
        )

    def tool_turn(self, headers: dict[str, str] | None = None) -> ToolTurn:
        tools = [
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
        ]
        messages: list[Any] = [{"role": "user", "content": "call tool get_weather"}]
        kwargs = {
            "model": MODEL,
            "tools": tools,
            "reasoning_effort": "high",
            "extra_headers": headers or {},
        }
        with self.sdk.chat.completions.stream(messages=messages, **kwargs) as events:
            message = events.get_final_completion().choices[0].message
        call = message.tool_calls[0]
        messages += [
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        raw = self.sdk.chat.completions.with_raw_response.create(messages=messages, **kwargs)
        return ToolTurn([], raw.parse().choices[0].message.content, dropped_header(raw.headers))


class ResponsesClient:
    """OpenAI Responses: `reasoning: {effort, summary}` in, reasoning items out."""

    def __init__(self, base: str) -> None:
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)

    REASONING = {"effort": "medium", "summary": "detailed"}
    INCLUDE = ["reasoning.encrypted_content"]

    def reason(self, stream: bool) -> Reasoned:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "input": PROMPT,
            "reasoning": self.REASONING,
            "include": self.INCLUDE,
        }
        if stream:
            with self.sdk.responses.stream(**kwargs) as events:
                final = events.get_final_response()
                headers = events._response.headers  # the helper keeps it private
        else:
            raw = self.sdk.responses.with_raw_response.create(**kwargs)
            final, headers = raw.parse(), raw.headers
        assert final.status == "completed"
        reasoning = [item for item in final.output if item.type == "reasoning"]
        usage = final.usage
        assert usage is not None
        return Reasoned(
            thinking="".join(s.text for item in reasoning for s in item.summary),
            text=final.output_text,
            signatures=[item.encrypted_content for item in reasoning if item.encrypted_content],
            input_tokens=usage.input_tokens,
            cached_tokens=usage.input_tokens_details.cached_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.output_tokens_details.reasoning_tokens,
            dropped=dropped_header(headers),
        )

    def tool_turn(self) -> ToolTurn:
        tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
        kwargs = {
            "model": MODEL,
            "tools": tools,
            "reasoning": self.REASONING,
            "include": self.INCLUDE,
        }
        items: list[Any] = [{"role": "user", "content": "call tool get_weather"}]
        with self.sdk.responses.stream(input=items, **kwargs) as events:
            first = events.get_final_response()
        signatures = [i.encrypted_content for i in first.output if i.type == "reasoning"]
        call = next(item for item in first.output if item.type == "function_call")
        items += [item.model_dump(exclude_none=True) for item in first.output]
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
        raw = self.sdk.responses.with_raw_response.create(input=items, **kwargs)
        return ToolTurn(
            [s for s in signatures if s], raw.parse().output_text, dropped_header(raw.headers)
        )


class AnthropicClient:
    """Anthropic: `thinking: {type: enabled, budget_tokens}` in, thinking blocks out."""

    THINKING = {"type": "enabled", "budget_tokens": 2048}

    def __init__(self, base: str) -> None:
        self.sdk = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0)

    def reason(self, stream: bool) -> Reasoned:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": PROMPT}],
            "thinking": self.THINKING,
        }
        if stream:
            with self.sdk.messages.stream(**kwargs) as events:
                blocks = [
                    (event.index, event.content_block.type)
                    for event in events
                    if event.type == "content_block_start"
                ]
                final = events.get_final_message()
                headers = events.response.headers
        else:
            raw = self.sdk.messages.with_raw_response.create(**kwargs)
            final, headers = raw.parse(), raw.headers
            blocks = [(i, block.type) for i, block in enumerate(final.content)]
        assert final.stop_reason == "end_turn"
        thinking = [block for block in final.content if block.type == "thinking"]
        usage = final.usage
        cached = usage.cache_read_input_tokens or 0
        return Reasoned(
            thinking="".join(block.thinking for block in thinking),
            text="".join(block.text for block in final.content if block.type == "text"),
            signatures=[block.signature for block in thinking],
            input_tokens=usage.input_tokens + cached + (usage.cache_creation_input_tokens or 0),
            cached_tokens=cached,
            output_tokens=usage.output_tokens,
            reasoning_tokens=None,
            blocks=blocks,
            dropped=dropped_header(headers),
        )

    def tool_turn(self) -> ToolTurn:
        tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
        kwargs = {"model": MODEL, "max_tokens": 4096, "tools": tools, "thinking": self.THINKING}
        messages: list[Any] = [{"role": "user", "content": "call tool get_weather"}]
        with self.sdk.messages.stream(messages=messages, **kwargs) as events:
            first = events.get_final_message()
        assert first.stop_reason == "tool_use"
        call = next(block for block in first.content if block.type == "tool_use")
        signatures = [b.signature for b in first.content if b.type == "thinking"]
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ]
        raw = self.sdk.messages.with_raw_response.create(messages=messages, **kwargs)
        text = "".join(b.text for b in raw.parse().content if b.type == "text")
        return ToolTurn(signatures, text, dropped_header(raw.headers))

    def error_result(self) -> str:
        return self._result_turn(ERROR_TEXT, is_error=True)

    def image_result(self) -> str:
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
        }
        return self._result_turn([{"type": "text", "text": CHART_TEXT}, image])

    def _result_turn(self, content: Any, is_error: bool = False) -> str:
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": "toolu_r1",
            "content": content,
        }
        if is_error:
            result["is_error"] = True
        message = self.sdk.messages.create(
            model=MODEL,
            max_tokens=512,
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
            messages=[
                {"role": "user", "content": "call tool get_weather"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_r1",
                            "name": "get_weather",
                            "input": {"city": "Atlantis", "unit": "c"},
                        }
                    ],
                },
                {"role": "user", "content": [result]},
            ],
        )
        return "".join(block.text for block in message.content if block.type == "text")


class GeminiClient:
    """Gemini: `thinkingConfig` in, `thought: true` parts and `thoughtSignature` out."""

    def __init__(self, base: str) -> None:
        self.sdk = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base))

    def _config(self, tools: bool = False) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=3000)
        )
        if tools:
            config.tools = [types.Tool(function_declarations=[self._declaration()])]
            config.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
        return config

    @staticmethod
    def _declaration() -> types.FunctionDeclaration:
        return types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER_SCHEMA)

    def reason(self, stream: bool) -> Reasoned:
        if stream:
            chunks = list(
                self.sdk.models.generate_content_stream(
                    model=MODEL, contents=PROMPT, config=self._config()
                )
            )
        else:
            chunks = [
                self.sdk.models.generate_content(
                    model=MODEL, contents=PROMPT, config=self._config()
                )
            ]
        last = chunks[-1]
        assert last.candidates[0].finish_reason == types.FinishReason.STOP
        parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]
        usage = last.usage_metadata
        return Reasoned(
            thinking="".join(p.text or "" for p in parts if p.thought),
            text="".join(p.text or "" for p in parts if not p.thought),
            signatures=[
                base64.b64encode(p.thought_signature).decode() for p in parts if p.thought_signature
            ],
            input_tokens=usage.prompt_token_count,
            cached_tokens=usage.cached_content_token_count or 0,
            output_tokens=usage.candidates_token_count + (usage.thoughts_token_count or 0),
            reasoning_tokens=usage.thoughts_token_count,
            dropped=dropped_header(chunks[0].sdk_http_response.headers),
        )

    def tool_turn(self) -> ToolTurn:
        contents: list[Any] = [
            types.Content(role="user", parts=[types.Part(text="call tool get_weather")])
        ]
        chunks = list(
            self.sdk.models.generate_content_stream(
                model=MODEL, contents=contents, config=self._config(tools=True)
            )
        )
        parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]
        call = next(p.function_call for p in parts if p.function_call)
        signatures = [
            base64.b64encode(p.thought_signature).decode() for p in parts if p.thought_signature
        ]
        contents += [
            types.Content(role="model", parts=parts),
            types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id=call.id, name=call.name, response={"output": "sunny"}
                        )
                    )
                ],
            ),
        ]
        answer = self.sdk.models.generate_content(
            model=MODEL, contents=contents, config=self._config(tools=True)
        )
        return ToolTurn(signatures, answer.text, dropped_header(answer.sdk_http_response.headers))

    def error_result(self) -> str:
        response = types.FunctionResponse(name="get_weather", response={"error": ERROR_TEXT})
        return self._result_turn(response)

    def image_result(self) -> str:
        blob = types.FunctionResponseBlob(mime_type="image/png", data=PNG)
        response = types.FunctionResponse(
            name="get_weather",
            response={"output": CHART_TEXT},
            parts=[types.FunctionResponsePart(inline_data=blob)],
        )
        return self._result_turn(response)

    def _result_turn(self, response: types.FunctionResponse) -> str:
        call = types.FunctionCall(name="get_weather", args={"city": "Atlantis", "unit": "c"})
        contents = [
            types.Content(role="user", parts=[types.Part(text="call tool get_weather")]),
            types.Content(role="model", parts=[types.Part(function_call=call)]),
            types.Content(role="user", parts=[types.Part(function_response=response)]),
        ]
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[self._declaration()])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        return self.sdk.models.generate_content(model=MODEL, contents=contents, config=config).text


class ResponsesResults(ResponsesClient):
    def image_result(self) -> str:
        output = [
            {"type": "input_text", "text": CHART_TEXT},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
        ]
        response = self.sdk.responses.create(
            model=MODEL,
            tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}],
            input=[
                {"role": "user", "content": "call tool get_weather"},
                {
                    "type": "function_call",
                    "call_id": "call_r1",
                    "name": "get_weather",
                    "arguments": '{"city":"Atlantis","unit":"c"}',
                },
                {"type": "function_call_output", "call_id": "call_r1", "output": output},
            ],
        )
        return response.output_text


CLIENTS: dict[str, Callable[[str], Any]] = {
    "chat": ChatClient,
    "responses": ResponsesResults,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
}
PAIRS = [(c, u) for c in CLIENTS for u in UPSTREAMS]
IDS = [f"{c}->{u}" for c, u in PAIRS]


def client_for(gateway: Gateway, client: str, upstream: str) -> Any:
    return CLIENTS[client](f"{gateway.url}/up-{upstream}")


def received(fake: FakeUpstream, upstream: str) -> dict[str, Any]:
    request = fake.last_request()
    assert request["protocol"] == UPSTREAMS[upstream][2], request["path"]
    assert request["status"] == 200, request
    return request["body"]


# --- what the upstream was asked for -------------------------------------------------

# The reasoning each client asks for, as each upstream must receive it (the mappings the
# protocol modules document: effort <-> budget tables, Responses summary "auto" when the
# client wants the thoughts shown).
ASKED: dict[str, dict[str, Any]] = {
    "chat": {  # reasoning_effort "high"
        "chat": "high",
        "responses": {"effort": "high", "summary": "auto"},
        "anthropic": {"type": "enabled", "budget_tokens": 16384},
        "gemini": {"thinkingBudget": 24576, "includeThoughts": True},
    },
    "responses": {  # reasoning {effort: medium, summary: detailed}
        "chat": "medium",
        "responses": {"effort": "medium", "summary": "detailed"},
        "anthropic": {"type": "enabled", "budget_tokens": 8192},
        "gemini": {"thinkingBudget": 8192, "includeThoughts": True},
    },
    "anthropic": {  # thinking budget 2048
        "chat": "low",
        "responses": {"effort": "low", "summary": "auto"},
        "anthropic": {"type": "enabled", "budget_tokens": 2048},
        "gemini": {"thinkingBudget": 2048, "includeThoughts": True},
    },
    "gemini": {  # thinkingConfig budget 3000, includeThoughts
        "chat": "low",
        "responses": {"effort": "medium", "summary": "auto"},
        "anthropic": {"type": "enabled", "budget_tokens": 3000},
        "gemini": {"thinkingBudget": 3000, "includeThoughts": True},
    },
}


def reasoning_asked(body: dict[str, Any], upstream: str) -> Any:
    match upstream:
        case "chat":
            return body.get("reasoning_effort")
        case "responses":
            assert "reasoning.encrypted_content" in body.get("include", []), body
            return body.get("reasoning")
        case "anthropic":
            thinking = body.get("thinking")
            if thinking:
                assert body["max_tokens"] > thinking["budget_tokens"], body
            return thinking
        case _:
            config = body.get("generationConfig", {}).get("thinkingConfig")
            # google-genai writes nested keys in snake_case; Gemini takes both spellings
            return {camel(key): value for key, value in config.items()} if config else config


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.title() for word in rest)


# --- signatures ----------------------------------------------------------------------


def check_signatures(client: str, upstream: str, signatures: list[str]) -> None:
    """The signature each client protocol can carry, for each upstream.

    Anthropic clients get the upstream's signature (a foreign one as "<origin>:<sig>");
    an unsigned thought (Chat upstreams never sign, Gemini signs the answer's text part,
    which an Anthropic text block cannot carry) leaves the block's signature empty.
    Responses clients get their own encrypted_content, and an Anthropic signature or
    redacted payload as "anthropic:<sig>" / "anthropic:redacted:<data>". Gemini clients
    get Gemini's signatures as they are and another provider's as the bytes of
    "<origin>:<sig>" (the test shows them base64, as on the wire); Chat clients none."""
    match client, upstream:
        case "anthropic", "anthropic":
            assert signatures == [sign(THINKING)]
        case "anthropic", "responses":
            assert len(signatures) == 1 and signatures[0].startswith("openai-responses:")
            assert verify_reasoning(signatures[0].removeprefix("openai-responses:"))
        case "anthropic", _:
            assert signatures == [""]
        case "responses", "responses":
            assert len(signatures) == 1 and verify_reasoning(signatures[0]), signatures
        case "responses", "anthropic":  # the signed block, then the redacted one
            assert signatures[0] == f"anthropic:{sign(THINKING)}", signatures
            assert len(signatures) == 2 and signatures[1].startswith("anthropic:redacted:redacted-")
        case "gemini", "gemini":
            assert len(signatures) == 1 and valid_signature(signatures[0]), signatures
            assert signatures[0] != SKIP
        case "gemini", "anthropic":  # the signed block, then the redacted one
            texts = [base64.b64decode(s).decode() for s in signatures]
            assert len(texts) == 2 and texts[0] == f"anthropic:{sign(THINKING)}", texts
            assert texts[1].startswith("anthropic:redacted:redacted-"), texts
        case "gemini", "responses":
            texts = [base64.b64decode(s).decode() for s in signatures]
            assert len(texts) == 1 and texts[0].startswith("openai-responses:"), texts
            assert verify_reasoning(texts[0].removeprefix("openai-responses:"))
        case _:
            assert signatures == []


def anthropic_blocks(upstream: str) -> list[str]:
    """Block types an Anthropic client sees: the Anthropic fake adds a redacted block."""
    if upstream == "anthropic":
        return ["thinking", "redacted_thinking", "text"]
    return ["thinking", "text"]


# --- reasoning, one turn -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_reasoning(gateway, fake, client, upstream, stream):
    seen = client_for(gateway, client, upstream).reason(stream)
    assert seen.thinking == THINKING
    assert seen.text == ANSWER
    check_signatures(client, upstream, seen.signatures)
    if client == "anthropic":
        kinds = anthropic_blocks(upstream)
        assert seen.blocks == list(enumerate(kinds))
    assert "reasoning" not in seen.dropped and "thinking" not in seen.dropped, seen.dropped
    assert reasoning_asked(received(fake, upstream), upstream) == ASKED[client][upstream]
    assert fake.last_request()["stream"] is stream


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=IDS)
def test_reasoning_usage(gateway, fake, client, upstream, stream):
    """Cached and reasoning tokens reach the client in its protocol's usage fields."""
    seen = client_for(gateway, client, upstream).reason(stream)
    # The fake reports half its input as cached; every protocol's convention must add up
    # to the same total (Anthropic's input_tokens excludes cache reads, the others include).
    assert seen.cached_tokens > 0 and seen.cached_tokens == seen.input_tokens // 2, seen
    assert seen.output_tokens == tokens(ANSWER) + tokens(THINKING), seen
    if seen.reasoning_tokens is None:
        return  # Anthropic usage has no reasoning count (output_tokens includes it)
    if upstream == "anthropic":
        assert not seen.reasoning_tokens  # Anthropic does not report one: none invented
    else:
        assert seen.reasoning_tokens == tokens(THINKING), seen


# --- reasoning across a tool loop ----------------------------------------------------


def assistant_turn(body: dict[str, Any], upstream: str) -> list[dict[str, Any]]:
    """The replayed assistant turn as the upstream received it (its items/parts/blocks)."""
    match upstream:
        case "anthropic":
            turns = [m for m in body["messages"] if m["role"] == "assistant"]
            assert len(turns) == 1, body["messages"]
            return turns[0]["content"]
        case "gemini":
            turns = [c for c in body["contents"] if c.get("role") == "model"]
            assert len(turns) == 1, body["contents"]
            return turns[0]["parts"]
        case "responses":
            return [i for i in body["input"] if i.get("type") in ("reasoning", "function_call")]
    raise AssertionError(upstream)


SIGNING_UPSTREAMS = ("anthropic", "gemini", "responses")
LOOP_PAIRS = [(c, u) for c in CLIENTS for u in SIGNING_UPSTREAMS]


@pytest.mark.parametrize(
    ("client", "upstream"), LOOP_PAIRS, ids=[f"{c}->{u}" for c, u in LOOP_PAIRS]
)
def test_reasoning_tool_loop(gateway, fake, client, upstream):
    """Turn 1 (streamed) asks for a tool with reasoning on; turn 2 replays the assistant
    turn the SDK assembled plus the tool result. The upstream must get its signature back
    where its protocol wants it, or (where the client cannot carry it) a valid request."""
    turn = client_for(gateway, client, upstream).tool_turn()
    assert turn.answer.startswith("tool results: get_weather=") and "sunny" in turn.answer
    body = received(fake, upstream)
    replayed = assistant_turn(body, upstream)
    carried = CARRIES_SIGNATURE[upstream](client)
    EXPECT_REPLAY[upstream](replayed, body, carried)
    # Thinking turned off for want of a signature is reported, never silent; only Claude
    # needs it (Gemini gets the bypass signature, Responses keeps reasoning on).
    lost = upstream == "anthropic" and not carried
    assert ("reasoning" in turn.dropped.split(",")) is lost, turn.dropped


def test_lost_thinking_refused_under_strict(gateway, fake):
    """Strict mode refuses the continuation that would go to Claude without the thinking
    asked for (a Chat client cannot carry the signature), and names what it cannot carry."""
    chat = ChatClient(f"{gateway.url}/up-anthropic")
    with pytest.raises(openai.BadRequestError) as caught:
        chat.tool_turn(headers={"x-router-strict": "true"})
    assert "strict mode: cannot carry reasoning" in caught.value.message
    assert received(fake, "anthropic")["thinking"]["type"] == "enabled"  # turn 1 went


def anthropic_replay(replayed: list[dict[str, Any]], body: dict[str, Any], carried: bool) -> None:
    kinds = [block["type"] for block in replayed]
    if carried:
        assert kinds == ["thinking", "tool_use"], replayed
        thinking = replayed[0]
        assert thinking["thinking"] == "thinking about: call tool get_weather"
        assert thinking["signature"] == sign(thinking["thinking"])
        assert body["thinking"]["type"] == "enabled"
    else:
        # No Anthropic signature could come back: thinking off for this request, as
        # Anthropic requires a signed thinking block first in a tool loop.
        assert kinds == ["tool_use"], replayed
        assert "thinking" not in body


def gemini_replay(replayed: list[dict[str, Any]], body: dict[str, Any], carried: bool) -> None:
    calls = [part for part in replayed if "functionCall" in part]
    assert len(calls) == 1, replayed
    signature = calls[0].get("thoughtSignature")
    assert valid_signature(signature) and signature != SKIP, calls[0]


def responses_replay(replayed: list[dict[str, Any]], body: dict[str, Any], carried: bool) -> None:
    kinds = [item["type"] for item in replayed]
    if carried:
        assert kinds == ["reasoning", "function_call"], replayed
        assert verify_reasoning(replayed[0]["encrypted_content"])
    else:
        assert kinds == ["function_call"], replayed


EXPECT_REPLAY = {
    "anthropic": anthropic_replay,
    "gemini": gemini_replay,
    "responses": responses_replay,
}
# Which clients bring the upstream's reasoning signature back on their own (the gateway's
# thought-signature cache covers Gemini function calls for every client).
CARRIES_SIGNATURE: dict[str, Callable[[str], bool]] = {
    "anthropic": lambda client: client != "chat",
    "gemini": lambda client: True,
    "responses": lambda client: client != "chat",
}


# --- tool results: errors and images -------------------------------------------------

ERROR_CLIENTS = ("anthropic", "gemini")  # the client protocols with an error form
ERROR_PAIRS = [(c, u) for c in ERROR_CLIENTS for u in UPSTREAMS]


def tool_result_seen(body: dict[str, Any], upstream: str) -> Any:
    """The tool result of the last user turn as the upstream received it."""
    match upstream:
        case "chat":
            return next(m for m in body["messages"] if m["role"] == "tool")
        case "responses":
            return next(i for i in body["input"] if i.get("type") == "function_call_output")
        case "anthropic":
            last = body["messages"][-1]["content"]
            return next(b for b in last if b["type"] == "tool_result")
        case _:
            last = body["contents"][-1]["parts"]
            return next(p["functionResponse"] for p in last if "functionResponse" in p)


@pytest.mark.parametrize(
    ("client", "upstream"), ERROR_PAIRS, ids=[f"{c}->{u}" for c, u in ERROR_PAIRS]
)
def test_tool_result_error(gateway, fake, client, upstream):
    text = client_for(gateway, client, upstream).error_result()
    result = tool_result_seen(received(fake, upstream), upstream)
    match upstream:
        case "anthropic":
            assert result["is_error"] is True
            assert ERROR_TEXT in str(result["content"])
            assert text == f"tool results: get_weather=error:{ERROR_TEXT}"
        case "gemini":
            assert result["response"] == {"error": ERROR_TEXT}
            assert text == f"tool results: get_weather=error:{ERROR_TEXT}"
        case "chat":  # no error flag: the text says so
            assert result["content"] == f"Error: {ERROR_TEXT}"
            assert text == f"tool results: get_weather=Error: {ERROR_TEXT}"
        case "responses":  # no error flag either
            assert result["output"] == f"Error: {ERROR_TEXT}"
            assert text == f"tool results: get_weather=Error: {ERROR_TEXT}"


IMAGE_CLIENTS = ("responses", "anthropic", "gemini")  # Chat tool messages are text only
IMAGE_PAIRS = [(c, u) for c in IMAGE_CLIENTS for u in UPSTREAMS]
DATA_URL = f"data:image/png;base64,{PNG_B64}"


def result_images(body: dict[str, Any], upstream: str) -> list[str]:
    """Base64 of the images the upstream received with (or, for Chat, right after) the
    tool result."""
    match upstream:
        case "chat":
            tool = next(i for i, m in enumerate(body["messages"]) if m["role"] == "tool")
            follower = body["messages"][tool + 1]
            assert follower["role"] == "user", body["messages"]
            return [
                p["image_url"]["url"].removeprefix("data:image/png;base64,")
                for p in follower["content"]
                if p["type"] == "image_url"
            ]
        case "responses":
            output = tool_result_seen(body, upstream)["output"]
            return [
                p["image_url"].removeprefix("data:image/png;base64,")
                for p in output
                if p["type"] == "input_image"
            ]
        case "anthropic":
            content = tool_result_seen(body, upstream)["content"]
            return [b["source"]["data"] for b in content if b["type"] == "image"]
        case _:
            turn = body["contents"][-1]["parts"]
            inline = [p["inlineData"]["data"] for p in turn if "inlineData" in p]
            response = tool_result_seen(body, upstream)
            nested = [
                p.get("inlineData", p.get("inline_data"))["data"] for p in response.get("parts", [])
            ]
            return inline + nested


@pytest.mark.parametrize(
    ("client", "upstream"), IMAGE_PAIRS, ids=[f"{c}->{u}" for c, u in IMAGE_PAIRS]
)
def test_tool_result_image(gateway, fake, client, upstream):
    text = client_for(gateway, client, upstream).image_result()
    assert text.startswith("tool results: get_weather=") and CHART_TEXT in text, text
    body = received(fake, upstream)
    images = result_images(body, upstream)
    assert [b64decode(data) for data in images] == [PNG], images


def b64decode(data: str) -> bytes:
    """Standard or URL-safe base64 (google-genai sends bytes URL-safe, unpadded; Gemini
    takes both)."""
    return base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_", validate=True)
