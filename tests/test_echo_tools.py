"""The seed's tool-calling example against the shipped config: the built-in echo provider
calls the tool the text names (by its name or the last word of it), once per proper name."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

QUESTION = "What is the weather in Tokyo and New York?"
GET_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a place",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "a city"}},
            "required": ["location"],
        },
    },
}
GET_TIME = {
    "type": "function",
    "function": {"name": "getTime", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def oai(shipped_gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=shipped_gateway.url + "/v1", api_key="unused", max_retries=0)


def calls_of(message) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def test_the_seed_example_calls_get_weather_once_per_place(oai) -> None:
    completion = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[GET_WEATHER],
        tool_choice="auto",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert calls_of(choice.message) == [
        ("get_weather", {"location": "Tokyo"}),
        ("get_weather", {"location": "New York"}),
    ]
    ids = [call.id for call in choice.message.tool_calls]
    assert len(set(ids)) == 2


def test_the_seed_example_streams_the_same_calls(oai) -> None:
    with oai.chat.completions.stream(
        model="demo",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[GET_WEATHER],
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [args["location"] for _, args in calls_of(final.choices[0].message)] == [
        "Tokyo",
        "New York",
    ]


def test_tools_are_called_in_the_order_the_text_names_them(oai) -> None:
    completion = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "What time is it in Paris, and the weather?"}],
        tools=[GET_WEATHER, GET_TIME],
    )
    # getTime takes no argument from the name: called once, not once per place
    assert calls_of(completion.choices[0].message) == [
        ("getTime", {}),
        ("get_weather", {"location": "Paris"}),
    ]


def test_parallel_tool_calls_false_keeps_the_first_call(oai) -> None:
    completion = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[GET_WEATHER],
        parallel_tool_calls=False,
    )
    assert calls_of(completion.choices[0].message) == [("get_weather", {"location": "Tokyo"})]


@pytest.mark.parametrize(
    ("text", "tool_choice"),
    [
        ("Tell me about Tokyo and New York.", "auto"),  # no tool named
        ("weatherproof jackets", "auto"),  # not the whole word
        (QUESTION, "none"),
    ],
)
def test_no_call_when_no_tool_is_named_or_calls_are_off(oai, text, tool_choice) -> None:
    completion = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": text}],
        tools=[GET_WEATHER],
        tool_choice=tool_choice,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == f"echo: {text}"


def test_a_capitalised_word_opening_a_sentence_is_not_a_place(oai) -> None:
    completion = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Weather please. Berlin first."}],
        tools=[GET_WEATHER],
    )
    assert calls_of(completion.choices[0].message) == [
        ("get_weather", {"location": "Weather please. Berlin first."})
    ]


def test_anthropic_clients_get_the_same_calls(shipped_gateway) -> None:
    client = anthropic.Anthropic(base_url=shipped_gateway.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="demo",
        max_tokens=200,
        messages=[{"role": "user", "content": QUESTION}],
        tools=[
            {
                "name": "get_weather",
                "input_schema": GET_WEATHER["function"]["parameters"],
            }
        ],
    )
    assert message.stop_reason == "tool_use"
    assert [(block.name, block.input) for block in message.content] == [
        ("get_weather", {"location": "Tokyo"}),
        ("get_weather", {"location": "New York"}),
    ]
