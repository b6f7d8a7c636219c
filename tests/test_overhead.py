"""x-router-overhead-ms: the gateway's own time, upstream time left out, on every response:
answers, streams, failovers, Retry-After waits, errors and Litestar-served endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

SLOW = 0.6  # seconds the upstream takes; an overhead that counted it would exceed it
BOUND_MS = 300.0  # generous: the gateway's own time is a few ms, even on a loaded machine
PROMPT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    directory = write_config(
        tmp_path_factory.mktemp("overhead"),
        {
            "providers.yaml": f"""
                providers:
                  pool:
                    type: openai-custom
                    health: {{ max_errors: 100, recover_after: 1s }}
                    instances:
                      - {{ id: one, base_url: "{fake.url}/v1", api_key: k }}
                      - {{ id: two, base_url: "{fake.url}/v1", api_key: k }}
                  claude:
                    type: claude-custom
                    instances:
                      - {{ id: c1, base_url: "{fake.url}", api_key: k }}
            """,
            "routes.yaml": """
                default: pool
                routes:
                  - { name: claude, match: { model: "claude-*" }, to: claude }
            """,
        },
    )
    with Gateway(directory) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _reset(fake) -> None:
    fake.reset()


def overhead(response: httpx.Response) -> float:
    return float(response.headers["x-router-overhead-ms"])


def chat(gateway: Gateway, model: str = "m", **extra) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, **extra}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)


def test_a_slow_answer_is_not_gateway_time(gateway, fake) -> None:
    fake.script({"hang": SLOW})
    response = chat(gateway)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= SLOW
    assert 0 < overhead(response) < BOUND_MS


def test_a_translated_slow_answer_is_not_gateway_time(gateway, fake) -> None:
    fake.script({"hang": SLOW})
    response = chat(gateway, "claude-sonnet-4-5")
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    assert 0 < overhead(response) < BOUND_MS


def test_a_slow_first_stream_event_is_not_gateway_time(gateway, fake) -> None:
    fake.script({"first_event_delay": SLOW})
    response = chat(gateway, stream=True)
    assert response.status_code == 200
    assert b"[DONE]" in response.content
    assert 0 < overhead(response) < BOUND_MS


def test_failed_attempts_and_retry_after_waits_are_upstream_time(gateway, fake) -> None:
    fake.script([{"hang": SLOW, "status": 500}, {"status": 429, "retry_after": 1}, {}])
    response = chat(gateway)
    assert response.status_code == 200
    assert response.headers["x-router-attempts"] == "3"
    assert response.elapsed.total_seconds() >= SLOW + 1
    assert 0 < overhead(response) < BOUND_MS


def test_errors_carry_it(gateway, fake) -> None:
    fake.script({"hang": SLOW, "status": 400, "error_message": "bad"})
    response = chat(gateway)
    assert response.status_code == 400
    assert 0 < overhead(response) < BOUND_MS
    invalid = httpx.post(gateway.url + "/v1/messages", content=b"{", timeout=10)
    assert invalid.status_code == 400
    assert overhead(invalid) > 0


def test_litestar_served_endpoints_carry_it(gateway) -> None:
    for response in (
        httpx.get(gateway.url + "/v1/models", timeout=10),
        httpx.get(gateway.url + "/v1/chat/completions", timeout=10),  # 405
    ):
        assert overhead(response) > 0
