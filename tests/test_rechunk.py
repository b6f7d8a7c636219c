"""Property: however an upstream's stream bytes are split, every client protocol ends up
with the same final message. The upstream streams are recorded from the wire-exact
fakes; each is re-split at random byte boundaries (inside UTF-8 sequences too), decoded,
re-encoded for each client protocol, and read back."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.protocols import ir, module_for
from tests.fakes import FakeUpstream

PROMPT = "call 2 tools — héllo wörld ✓ 日本語"
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai-chat": (
        "/v1/chat/completions",
        {
            "model": "m",
            "stream": True,
            "stream_options": {"include_usage": True},
            "reasoning_effort": "low",
            "messages": [{"role": "user", "content": PROMPT}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}
            ],
        },
    ),
    "openai-responses": (
        "/v1/responses",
        {
            "model": "m",
            "stream": True,
            "reasoning": {"effort": "low", "summary": "auto"},
            "input": PROMPT,
            "tools": [{"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA}],
        },
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "m",
            "stream": True,
            "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": PROMPT}],
            "tools": [{"name": "get_weather", "input_schema": TOOL_SCHEMA}],
        },
    ),
    "gemini": (
        "/v1beta/models/m:streamGenerateContent?alt=sse",
        {
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "tools": [
                {"functionDeclarations": [{"name": "get_weather", "parameters": TOOL_SCHEMA}]}
            ],
            "generationConfig": {
                "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 512}
            },
        },
    ),
}


@pytest.fixture(scope="module")
def recorded() -> dict[str, bytes]:
    streams = {}
    with FakeUpstream.start() as fake:
        for protocol, (path, body) in REQUESTS.items():
            response = httpx.post(
                fake.url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10
            )
            assert response.status_code == 200, response.text
            streams[protocol] = response.content
    return streams


def summarize(events: list[ir.Event]) -> dict[str, Any]:
    """The final message the events describe, ids and timestamps aside."""
    text, thinking, calls, finish = [], [], [], None
    for event in events:
        match event:
            case ir.TextDelta(text=piece):
                text.append(piece)
            case ir.ThinkingDelta(text=piece):
                thinking.append(piece)
            case ir.ToolCallStart(name=name):
                calls.append([name, ""])
            case ir.ToolCallDelta(arguments=piece):
                calls[-1][1] += piece
            case ir.Finish(reason=reason, usage=usage):
                finish = (reason, usage.output_tokens)
            case ir.Error() as error:
                raise AssertionError(f"unexpected error event: {error}")
    return {"text": "".join(text), "thinking": "".join(thinking), "calls": calls, "finish": finish}


def through(upstream: str, client: str, chunks: list[bytes]) -> dict[str, Any]:
    decoder = module_for(upstream).StreamDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.close()
    request = ir.Request(model="m", stream=True, include_usage=True, reasoning=ir.Reasoning())
    options = {"sse": True} if client == "gemini" else {}
    encoder = module_for(client).StreamEncoder(request, **options)
    client_bytes = b"".join(encoder.encode(e) for e in events)
    reader = module_for(client).StreamDecoder()
    return summarize(reader.feed(client_bytes) + reader.close())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(edges) if b > a]


PAIRS = [(u, c) for u in REQUESTS for c in REQUESTS]


@pytest.mark.parametrize(("upstream", "client"), PAIRS, ids=[f"{u}->{c}" for u, c in PAIRS])
def test_rechunking_never_changes_the_final_message(recorded, upstream, client):
    data = recorded[upstream]
    whole = through(upstream, client, [data])
    assert len(whole["calls"]) == 2 and whole["finish"][0] == "tool_calls", whole
    assert "日本語" in whole["thinking"], "reasoning, non-ASCII included, must survive"

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=60))
    def check(cuts: list[int]) -> None:
        assert through(upstream, client, split(data, cuts)) == whole

    check()
    assert through(upstream, client, [data[i : i + 1] for i in range(len(data))]) == whole
