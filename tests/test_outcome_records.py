"""One outcome record per client request, whatever its ending, read back from the real
gateway through its JSON-lines sink (ROUTER_RECORDS_FILE): an answer, a stream, a
relayed answer's usage, failover attempts, errors before and after routing, a client
that goes away, fields that could not be carried. Both fronts (the fast path and
Litestar's) must produce the same records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

CLIENT_KEY = "records-client-key"
ADMIN_KEY = "records-admin-key"
PROMPT = [{"role": "user", "content": "hello records"}]
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-a") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-b") as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["fastpath", "litestar"])
def gateway(request, fake_a, fake_b, tmp_path_factory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("records")
    write_config(
        directory,
        {
            "providers.yaml": f"""
                providers:
                  echo: {{ type: echo }}
                  pool:
                    type: openai-custom
                    health: {{ max_errors: 100 }}
                    instances:
                      - {{ id: pool-1, base_url: {fake_a.url}/v1, api_key: key-a }}
                      - {{ id: pool-2, base_url: {fake_b.url}/v1, api_key: key-b }}
                  claude:
                    type: claude-custom
                    instances:
                      - {{ id: claude-1, base_url: {fake_a.url}, api_key: key-a }}
            """,
            "routes.yaml": """
                default: echo
                routes:
                  - { name: echoes, match: { model: "echo-*" }, to: echo }
                  - { name: pooled, match: { model: "gpt-*" }, to: pool }
                  - name: to-claude
                    match: { model: "lossy-*" }
                    to: { provider: claude, model: claude-sonnet-4-5 }
            """,
        },
    )
    env = {
        "REQUIRED_API_KEY": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ROUTER_RECORDS_FILE": str(directory / "records.jsonl"),
        "ROUTER_FASTPATH": "1" if request.param == "fastpath" else "0",
    }
    with Gateway(directory, env=env) as gateway:
        gateway.records_path = directory / "records.jsonl"  # type: ignore[attr-defined]
        yield gateway


@pytest.fixture(autouse=True)
def fresh(gateway, fake_a, fake_b) -> None:
    fake_a.reset()
    fake_b.reset()
    response = httpx.post(
        f"{gateway.url}/api/providers/pool/reset-health",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200


def records(gateway: Gateway) -> list[dict[str, Any]]:
    path: Path = gateway.records_path  # type: ignore[attr-defined]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def record_for(
    gateway: Gateway, model: str, where: Callable[[dict[str, Any]], bool] = lambda r: True
) -> dict[str, Any]:
    """The one record of the request for `model` (each test uses its own model name)."""
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in records(gateway) if r["model"] == model and where(r)]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(found) == 1, found
    return found[0]


def chat(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def check_timings(record: dict[str, Any]) -> None:
    assert record["ttfb"] is not None
    assert 0 <= record["ttfb"] <= record["duration"]
    assert 0 <= record["overhead"] <= record["duration"]
    assert abs(record["time"] - time.time()) < 60


def test_an_answer(gateway) -> None:
    answer = chat(gateway).chat.completions.create(model="echo-answer", messages=PROMPT)
    record = record_for(gateway, "echo-answer")
    assert record["protocol"] == "openai-chat"
    assert record["endpoint"] == "/v1/chat/completions"
    assert record["key"] == "REQUIRED_API_KEY"
    assert record["route"] == "echoes"
    assert record["status"] == 200 and record["error"] is None
    assert record["stream"] is False
    [attempt] = record["attempts"]
    assert attempt["provider"] == "echo" and attempt["instance"] == "default"
    assert attempt["model"] == "echo-answer" and attempt["status"] == 200
    assert attempt["error"] is None and attempt["duration"] >= 0
    assert answer.usage is not None
    assert record["usage"]["input_tokens"] == answer.usage.prompt_tokens
    assert record["usage"]["output_tokens"] == answer.usage.completion_tokens
    assert record["dropped"] == []
    check_timings(record)
    assert CLIENT_KEY not in gateway.records_path.read_text()  # type: ignore[attr-defined]


def test_a_translated_stream(gateway) -> None:
    stream = chat(gateway).chat.completions.create(
        model="echo-stream", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    usage = next(c.usage for c in chunks if c.usage is not None)
    record = record_for(gateway, "echo-stream")
    assert record["stream"] is True and record["status"] == 200
    assert record["usage"]["output_tokens"] == usage.completion_tokens > 0
    check_timings(record)


def test_a_relayed_answer_and_stream_keep_the_upstreams_usage(gateway, fake_a) -> None:
    answer = chat(gateway).chat.completions.create(model="gpt-relayed", messages=PROMPT)
    record = record_for(gateway, "gpt-relayed")
    assert answer.usage is not None
    assert record["usage"]["input_tokens"] == answer.usage.prompt_tokens > 0
    assert record["attempts"][0]["protocol"] == "openai-chat"
    stream = chat(gateway).chat.completions.create(
        model="gpt-relayed-stream",
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = next(c.usage for c in stream if c.usage is not None)
    record = record_for(gateway, "gpt-relayed-stream")
    assert record["stream"] is True
    assert record["usage"]["output_tokens"] == usage.completion_tokens > 0


def test_failover_attempts_are_all_recorded(gateway, fake_a) -> None:
    fake_a.script({"status": 500})
    answer = chat(gateway).chat.completions.create(model="gpt-failover", messages=PROMPT)
    assert answer.choices[0].message.content
    record = record_for(gateway, "gpt-failover")
    first, second = record["attempts"]
    assert (first["instance"], first["status"], first["error"]) == ("pool-1", 500, "api_error")
    assert (second["instance"], second["status"], second["error"]) == ("pool-2", 200, None)
    assert record["status"] == 200 and record["route"] == "pooled"
    # the failure log is a sink of the same record
    deadline = time.monotonic() + 5
    while "attempt 1: pool/pool-1 failed: 500" not in gateway.log():
        assert time.monotonic() < deadline, gateway.log()[-2000:]
        time.sleep(0.02)


def test_every_attempt_failing(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 503})
    fake_b.script({"status": 503})
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-exhausted", "messages": PROMPT},
    )
    assert response.status_code == 503
    record = record_for(gateway, "gpt-exhausted")
    assert [a["status"] for a in record["attempts"]] == [503, 503]
    assert record["status"] == 503 and record["error"] == "unavailable"
    check_timings(record)


def test_errors_before_routing(gateway) -> None:
    bad_json = httpx.post(
        gateway.url + "/v1/messages",
        headers={**AUTH, "content-type": "application/json"},
        content=b'{"model": "claude-x", ',
    )
    assert bad_json.status_code == 400
    unknown = httpx.post(
        gateway.url + "/no-such-pool/v1/chat/completions",
        headers=AUTH,
        json={"model": "echo-unknown-pool", "messages": PROMPT},
    )
    assert unknown.status_code == 404
    unauthorised = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": "Bearer wrong"},
        json={"model": "echo-unauthorised", "messages": PROMPT},
    )
    assert unauthorised.status_code == 401

    def ended(status: int) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["status"] == status

    deadline = time.monotonic() + 5
    while not any(r["status"] == 400 and r["protocol"] == "anthropic" for r in records(gateway)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [bad] = [r for r in records(gateway) if r["status"] == 400 and r["protocol"] == "anthropic"]
    assert bad["endpoint"] == "/v1/messages" and bad["error"] == "invalid_request"
    assert bad["model"] is None and bad["route"] is None and bad["attempts"] == []
    assert bad["key"] == "REQUIRED_API_KEY"
    missing = record_for(gateway, "echo-unknown-pool", ended(404))
    assert missing["route"] is None and missing["attempts"] == [] and missing["error"]
    deadline = time.monotonic() + 5
    while not any(r["status"] == 401 for r in records(gateway)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [denied] = [r for r in records(gateway) if r["status"] == 401]
    assert denied["key"] is None and denied["error"] == "authentication"


def test_a_client_that_goes_away_mid_stream(gateway, fake_a) -> None:
    fake_a.script({"delay_between_events": 0.3, "reply": " ".join(["word"] * 40)})
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-gone", "messages": PROMPT, "stream": True},
        timeout=10,
    ) as response:
        assert next(response.iter_raw()).startswith(b"data: ")
    record = record_for(gateway, "gpt-gone")
    assert record["status"] == 499 and record["stream"] is True
    assert record["attempts"][0]["status"] == 200  # the upstream answered; the client left
    assert record["ttfb"] is not None and record["usage"] is None


def test_fields_that_could_not_be_carried(gateway, fake_a) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "lossy-1", "messages": PROMPT, "logprobs": True, "presence_penalty": 0.5},
    )
    assert response.status_code == 200, response.text
    record = record_for(gateway, "lossy-1")
    assert {"logprobs", "presence_penalty"} <= set(record["dropped"])
    assert record["attempts"][0]["protocol"] == "anthropic"
    assert record["attempts"][0]["model"] == "claude-sonnet-4-5"
    # an Anthropic client's answer from the same upstream: usage as Anthropic reported it
    message = client.messages.create(model="lossy-2", max_tokens=64, messages=PROMPT)
    record = record_for(gateway, "lossy-2")
    assert record["protocol"] == "anthropic" and record["dropped"] == []
    assert record["usage"]["output_tokens"] == message.usage.output_tokens > 0
