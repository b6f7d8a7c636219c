"""Gemini 3 thought signatures survive a trip through clients that cannot carry them.

A Gemini 3 upstream (the fake, model `gemini-3-pro-preview`) signs the first
`functionCall` of each step and rejects a replayed call without a signature. An OpenAI
Chat, Responses or Anthropic client gets the tool call, runs the tool and sends the
result turn back; the gateway must replay the call to Gemini with the signature the fake
issued, not the `skip_thought_signature_validator` fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.fakes.gemini import thought_signature
from tests.gateway import Gateway

MODEL = "gemini-3-pro-preview"
SKIP = "skip_thought_signature_validator"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    directory = write_config(
        tmp_path_factory.mktemp("signatures"),
        {
            "providers.yaml": f"""
                providers:
                  gemini:
                    type: gemini-api
                    models: [{MODEL}]
                    instances:
                      - id: gemini-1
                        base_url: {fake.url}/v1beta
                        api_key: upstream-key
            """,
            "routes.yaml": "default: gemini\n",
        },
    )
    gateway = Gateway(directory)
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()


def replayed_call(fake: FakeUpstream) -> dict[str, Any]:
    """The functionCall part of the model turn in the last request the fake received."""
    last = fake.last_request()
    assert last["status"] == 200, last
    model_turns = [c for c in last["body"]["contents"] if c.get("role") == "model"]
    assert len(model_turns) == 1, last["body"]["contents"]
    calls = [p for p in model_turns[0]["parts"] if "functionCall" in p]
    assert len(calls) == 1, model_turns[0]
    return calls[0]


def issued_signature(fake: FakeUpstream, call_id: str) -> str:
    """What the fake signed the call with (it derives the signature from the call id)."""
    signature = thought_signature("call", call_id)
    assert signature != SKIP
    return signature


# --- OpenAI Chat ----------------------------------------------------------------------

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    }
]


def chat_tool_call(client: openai.OpenAI, stream: bool, messages: list) -> Any:
    if stream:
        with client.chat.completions.stream(
            model=MODEL, messages=messages, tools=CHAT_TOOLS
        ) as events:
            return events.get_final_completion().choices[0].message
    completion = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS)
    return completion.choices[0].message


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_chat_client_replays_the_signature(gateway, fake, stream):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "call tool please"}]
    message = chat_tool_call(client, stream, messages)
    assert message.tool_calls, message
    call = message.tool_calls[0]
    signature = issued_signature(fake, call.id)
    first = fake.last_request()["body"]
    assert "gemini-3" in fake.last_request()["path"] and first["contents"][0]["role"] == "user"

    messages += [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = chat_tool_call(client, stream, messages)
    assert answer.content and "sunny" in answer.content
    replayed = replayed_call(fake)
    assert replayed["functionCall"]["name"] == "get_weather"
    assert replayed["functionCall"].get("id") == call.id, "Gemini 3 ids go back too"
    assert replayed["thoughtSignature"] == signature


# --- OpenAI Responses -----------------------------------------------------------------

RESPONSES_TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER}
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_responses_client_replays_the_signature(gateway, fake, stream):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    items: list[Any] = [{"role": "user", "content": "call tool please"}]

    def ask() -> Any:
        if stream:
            with client.responses.stream(model=MODEL, input=items, tools=RESPONSES_TOOLS) as s:
                return s.get_final_response()
        return client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS)

    response = ask()
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    signature = issued_signature(fake, calls[0].call_id)
    items += [
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": calls[0].name,
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ]
    assert "sunny" in ask().output_text
    assert replayed_call(fake)["thoughtSignature"] == signature


# --- Anthropic ------------------------------------------------------------------------

ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_client_replays_the_signature(gateway, fake, stream):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "call tool please"}]

    def ask() -> Any:
        if stream:
            with client.messages.stream(
                model=MODEL, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS
            ) as s:
                return s.get_final_message()
        return client.messages.create(
            model=MODEL, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS
        )

    message = ask()
    uses = [block for block in message.content if block.type == "tool_use"]
    assert uses and message.stop_reason == "tool_use", message
    signature = issued_signature(fake, uses[0].id)
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
        },
    ]
    answer = ask()
    assert "sunny" in "".join(b.text for b in answer.content if b.type == "text")
    assert replayed_call(fake)["thoughtSignature"] == signature


# --- misses ---------------------------------------------------------------------------


def test_a_call_the_gateway_never_saw_falls_back_to_the_documented_bypass(gateway, fake):
    """History from elsewhere (another worker, a restart, another provider): the replayed
    call carries Google's bypass value, which Gemini 3 accepts."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_from_elsewhere",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_from_elsewhere", "content": "rain"},
    ]
    completion = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS)
    assert "rain" in completion.choices[0].message.content
    replayed = replayed_call(fake)
    assert replayed["thoughtSignature"] == SKIP
    assert "id" not in replayed["functionCall"], "an id Gemini never issued is left out"


def test_a_remembered_id_with_another_function_name_is_not_used(gateway, fake):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "call tool please"}]
    message = chat_tool_call(client, False, messages)
    call = message.tool_calls[0]
    forged = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "other_tool", "arguments": "{}"},
            }
        ],
    }
    tools = [*CHAT_TOOLS, {"type": "function", "function": {"name": "other_tool"}}]
    client.chat.completions.create(
        model=MODEL,
        messages=[*messages, forged, {"role": "tool", "tool_call_id": call.id, "content": "x"}],
        tools=tools,
    )
    assert replayed_call(fake)["thoughtSignature"] == SKIP


# --- the cache's bounds ---------------------------------------------------------------


def test_the_cache_evicts_the_least_recently_used_entry_first():
    from router.server.signatures import SignatureCache

    cache = SignatureCache(max_entries=2, max_bytes=10_000)
    cache.put("a", "f", "sig-a")
    cache.put("b", "f", "sig-b")
    assert cache.get("a", "f") == "sig-a"  # a is now the most recently used
    cache.put("c", "f", "sig-c")
    assert (cache.get("a", "f"), cache.get("b", "f"), cache.get("c", "f")) == (
        "sig-a",
        None,
        "sig-c",
    )


def test_the_cache_is_bounded_in_bytes_too():
    from router.server.signatures import SignatureCache

    cache = SignatureCache(max_entries=100, max_bytes=50)
    cache.put("a", "f", "x" * 20)
    cache.put("b", "f", "y" * 20)
    assert len(cache) == 2
    cache.put("c", "f", "z" * 20)  # 3 * 22 bytes > 50: the oldest goes
    assert len(cache) == 2 and cache.get("a", "f") is None
    cache.put("huge", "f", "w" * 100)  # larger than the whole cache: not kept
    assert cache.get("huge", "f") is None and len(cache) == 2
    cache.put("b", "f", "v" * 5)  # replacing an entry frees its old size
    assert cache.get("b", "f") == "v" * 5 and cache.get("c", "f") == "z" * 20
