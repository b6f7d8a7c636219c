"""Pass-through when client and upstream speak the same protocol, header forwarding,
and the loss policy (x-router-dropped, strict) when they do not."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream

CLIENT_KEY = "client-key-not-for-upstreams"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    from tests.gateway import Gateway

    directory = write_config(
        tmp_path_factory.mktemp("passthrough"),
        {
            "providers.yaml": f"""
                providers:
                  up-anthropic:
                    type: claude-custom
                    instances:
                      - id: claude-1
                        base_url: {fake.url}
                        api_key: upstream-key
                  up-chat:
                    type: openai-custom
                    instances:
                      - id: chat-1
                        base_url: {fake.url}/v1
                        api_key: upstream-key
            """,
            "routes.yaml": """
                default: up-chat
                routes:
                  - name: strict-claude
                    match: { model: "strict-*" }
                    to: up-anthropic
                    strict: true
                  - name: claude-alias
                    match: { model: my-claude }
                    to: { provider: up-anthropic, model: claude-sonnet-4-5 }
                  - name: lossy-claude
                    match: { model: "lossy-*" }
                    to: up-anthropic
            """,
        },
    )
    gateway = Gateway(directory, env={"REQUIRED_API_KEY": CLIENT_KEY})
    yield gateway
    gateway.stop()


def test_claude_pass_through_forwards_version_beta_and_query(gateway, fake):
    body = {
        "model": "my-claude",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "pass me through"}],
        "context_management": {"edits": []},
        "metadata": {"user_id": "u-1"},
    }
    response = httpx.post(
        gateway.url + "/v1/messages?beta=true",
        json=body,
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": "2026-10-21",
            "anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "echo: pass me through"
    seen = fake.last_request()
    assert seen["path"] == "/v1/messages" and seen["query"].get("beta") in ("true", ["true"])
    assert seen["headers"]["anthropic-version"] == "2026-10-21"
    assert (
        seen["headers"]["anthropic-beta"]
        == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    )
    assert seen["headers"]["x-api-key"] == "upstream-key"
    assert CLIENT_KEY not in repr(seen["headers"]), "the gateway key must never go upstream"
    assert seen["body"] == {**body, "model": "claude-sonnet-4-5"}, "untouched but for the model"
    assert "x-router-dropped" not in response.headers


def test_chat_pass_through_keeps_fields_it_does_not_know(gateway, fake):
    body = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "keep my fields"}],
        "logit_bias": {"50256": -100},
        "some_vendor_extension": {"x": 1},
    }
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200, response.text
    assert fake.last_request()["body"] == body
    assert fake.last_request()["headers"]["authorization"] == "Bearer upstream-key"


LOSSY = {
    "messages": [{"role": "user", "content": "lossy"}],
    "logprobs": True,
    "presence_penalty": 0.5,
}


def test_fields_that_cannot_be_carried_are_named(gateway, fake):
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "lossy-1", **LOSSY},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200, response.text
    dropped = response.headers["x-router-dropped"].split(",")
    assert {"logprobs", "presence_penalty"} <= set(dropped)
    assert fake.last_request()["path"] == "/v1/messages"
    assert "logprobs" not in fake.last_request()["body"]


def test_strict_request_header_rejects_lossy_translation(gateway, fake):
    fake.reset()
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "lossy-1", **LOSSY},
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-router-strict": "true"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "logprobs" in error["message"] and "presence_penalty" in error["message"]
    assert fake.requests() == [], "nothing is sent upstream"


def test_strict_route_rejects_lossy_translation(gateway):
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "strict-1", **LOSSY},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 400
    assert "strict" in response.json()["error"]["message"]
    clean = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "strict-1", "messages": [{"role": "user", "content": "fine"}]},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert clean.status_code == 200 and "x-router-dropped" not in clean.headers


def test_count_tokens_comes_from_the_upstream_count_endpoint(gateway, fake):
    body = {
        "model": "my-claude",
        "messages": [{"role": "user", "content": "count these tokens " * 20}],
    }
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    response = httpx.post(gateway.url + "/v1/messages/count_tokens", json=body, headers=headers)
    assert response.status_code == 200, response.text
    seen = fake.last_request()
    assert seen["path"] == "/v1/messages/count_tokens"
    assert seen["body"]["model"] == "claude-sonnet-4-5"
    direct = httpx.post(
        fake.url + "/v1/messages/count_tokens",
        json={**body, "model": "claude-sonnet-4-5"},
        headers={"x-api-key": "upstream-key", "anthropic-version": "2023-06-01"},
    )
    assert response.json() == direct.json(), "the upstream's own count, not an estimate"


def test_count_tokens_is_estimated_for_upstreams_without_one(gateway, fake):
    fake.reset()
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 400}]}
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": CLIENT_KEY}
    )
    assert response.status_code == 200, response.text
    # the documented estimate: 400 chars / 4 + 4 framing tokens
    assert response.json() == {"input_tokens": 104}
    assert fake.requests() == []
