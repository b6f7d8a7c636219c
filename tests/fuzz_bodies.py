"""Complete, valid request bodies of each protocol, and `one_bad_field`: such a body with
one value, at any depth, replaced by one of another kind (tests/test_fuzz.py)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from tests.fuzz_shapes import JUNK

PNG = (  # a 1x1 image
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
    "nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
PDF = "JVBERi0xLjQK"
_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "a city"}},
    "required": ["city"],
}
_ANSWER_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}

# Bodies that set (nearly) every field each protocol has, the way its SDK writes them:
# each is answered 200 as it is (test_fuzz.py checks), so that one wrong value in it is
# the only thing wrong.
FULL_CHAT = {
    "model": "echo",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "really"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {
                    "type": "file",
                    "file": {
                        "file_data": f"data:application/pdf;base64,{PDF}",
                        "filename": "a.pdf",
                    },
                },
            ],
            "name": "ann",
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "the weather",
                "parameters": _PARAMETERS,
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": _ANSWER_SCHEMA, "strict": True},
    },
    "max_completion_tokens": 200,
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 1,
    "stop": ["\n\n\n"],
    "stream": False,
    "stream_options": {"include_usage": True},
    "reasoning_effort": "low",
    "metadata": {"k": "v"},
    "user": "u",
    "n": 1,
}
FULL_RESPONSES = {
    "model": "echo",
    "instructions": "be brief",
    "input": [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                {
                    "type": "input_file",
                    "file_data": f"data:application/pdf;base64,{PDF}",
                    "filename": "a.pdf",
                },
            ],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "it is sunny"}]},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "the weather",
            "parameters": _PARAMETERS,
            "strict": True,
        }
    ],
    "tool_choice": "auto",
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": _ANSWER_SCHEMA}},
    "reasoning": {"effort": "low", "summary": "auto"},
    "max_output_tokens": 200,
    "temperature": 0.5,
    "top_p": 0.9,
    "metadata": {"k": "v"},
    "include": ["reasoning.encrypted_content"],
    "parallel_tool_calls": False,
    "store": False,
    "stream": False,
}
_ANTHROPIC_FIELDS_FULL = {
    "model": "echo",
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "a",
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "P"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                    "is_error": False,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ],
    "tools": [{"name": "get_weather", "description": "the weather", "input_schema": _PARAMETERS}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "temperature": 1,
    "top_k": 5,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u"},
}
FULL_ANTHROPIC = {**_ANTHROPIC_FIELDS_FULL, "max_tokens": 2048, "stream": False}
FULL_ANTHROPIC_COUNT = _ANTHROPIC_FIELDS_FULL
FULL_GEMINI = {
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "hi"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/a.pdf"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "thinking", "thought": True},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sun"}}}],
        },
        {"role": "user", "parts": [{"text": "thanks"}]},
    ],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "the weather",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    "generationConfig": {
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 5,
        "maxOutputTokens": 200,
        "candidateCount": 1,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
        "seed": 1,
    },
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
}
FULL_GEMINI_COUNT = {"generateContentRequest": {"model": "models/echo", **FULL_GEMINI}}

WRONG = st.sampled_from([None, "", "x", 0, -1, 1.5, 10**30, True, [], [1], {}, {"a": 1}]) | JUNK
_DELETE = object()


SCHEMA_KEYS = frozenset(
    {"parameters", "schema", "input_schema", "responseSchema", "parametersJsonSchema"}
)


def slots(value: Any, into_schemas: bool = True) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in `value`, depth first; none of the JSON Schemas
    and what they hold unless `into_schemas`."""
    found: list[tuple[Any, Any]] = []
    keys = list(value) if isinstance(value, dict) else range(len(value))
    for key in keys:
        if not into_schemas and key in SCHEMA_KEYS:
            continue
        found.append((value, key))
        if isinstance(value[key], dict | list):
            found.extend(slots(value[key], into_schemas))
    return found


@st.composite
def one_bad_field(
    draw: st.DrawFn, body: dict[str, Any], into_schemas: bool = True
) -> dict[str, Any]:
    """`body` with one value, at any depth, replaced by one of another kind (or left out)."""
    body = copy.deepcopy(body)
    container, key = draw(st.sampled_from(slots(body, into_schemas)))
    wrong = draw(WRONG | st.just(_DELETE))
    if wrong is _DELETE:
        del container[key]
    else:
        container[key] = wrong
    return body
