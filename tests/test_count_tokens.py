"""Token counting through the gateway: Anthropic's `count_tokens` and Gemini's
`countTokens`, answered by the upstream's own count endpoint where it has one (Anthropic,
Gemini API, Code Assist) and by the documented estimate otherwise or when it fails.
Clients are the official SDKs; the upstream is the wire-exact fake."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

KEY = "upstream-key"
SYSTEM = "Answer briefly, in English, and cite sources."
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
TOOLS = [{"name": "get_weather", "description": "Current weather", "input_schema": SCHEMA}]
MESSAGES: list[Any] = [
    {"role": "user", "content": "What is the weather in Paris? " * 5},
    {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21C"}],
    },
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("count")
    credentials = {
        "access_token": KEY,  # what the fake's Code Assist endpoints accept
        "refresh_token": "1//fake-refresh",
        "expiry_date": int((time.time() + 3600) * 1000),
        "token_type": "Bearer",
    }
    (directory / "creds.json").write_text(json.dumps(credentials))
    write_config(
        directory,
        {
            "providers.yaml": f"""
                providers:
                  gem-api:
                    type: gemini-api
                    instances:
                      - id: gem-api-1
                        base_url: {fake.url}/v1beta
                        api_key: {KEY}
                  gem-cli:
                    type: gemini-cli-oauth
                    instances:
                      - id: gem-cli-1
                        base_url: {fake.url}
                        credentials: creds.json
                        token_url: {fake.url}/token
                        client_id: fake-client
                        client_secret: fake-secret
                        project: fake-project
                        proxy: false
                  antigravity:
                    type: gemini-antigravity
                    instances:
                      - id: agy-1
                        base_url: {fake.url}
                        credentials: creds.json
                        token_url: {fake.url}/token
                        client_id: fake-client
                        client_secret: fake-secret
                        project: fake-project
                        proxy: false
                  claude:
                    type: claude-custom
                    instances:
                      - id: claude-1
                        base_url: {fake.url}
                        api_key: {KEY}
                  chat:
                    type: openai-custom
                    instances:
                      - id: chat-1
                        base_url: {fake.url}/v1
                        api_key: {KEY}
            """,
            "routes.yaml": """
                default: chat
                routes:
                  - name: gemini-api
                    match: { model: "gemini-*" }
                    to: gem-api
                  - name: code-assist
                    match: { model: "cli-*" }
                    to: { provider: gem-cli, model: gemini-2.5-pro }
                  - name: antigravity
                    match: { model: "agy-*" }
                    to: { provider: antigravity, model: gemini-3-flash-preview }
                  - name: claude
                    match: { model: "claude-*" }
                    to: { provider: claude, model: claude-sonnet-4-6 }
            """,
        },
    )
    gateway = Gateway(directory)
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()


@pytest.fixture
def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0)


@pytest.fixture
def gemini_client(gateway) -> genai.Client:
    options = types.HttpOptions(base_url=gateway.url)
    return genai.Client(api_key="client", http_options=options)


def count(claude: anthropic.Anthropic, model: str, **extra: Any) -> tuple[int, str]:
    raw = claude.messages.with_raw_response.count_tokens(
        model=model, messages=extra.pop("messages", MESSAGES), **extra
    )
    return raw.parse().input_tokens, raw.headers["x-router-token-count"]


def fake_count(fake: FakeUpstream, path: str, body: dict[str, Any], **headers: str) -> Any:
    """Ask the fake directly: what its own count for exactly that body is."""
    response = httpx.post(fake.url + path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def estimate(text: str) -> int:
    """router.tokens' documented rule for one piece of text: 1 token per 4 characters."""
    return math.ceil(len(text) / 4)


# --- Anthropic clients ------------------------------------------------------------------


def test_gemini_api_counts_contents_system_and_tools(claude, fake):
    tokens, source = count(claude, "gemini-2.5-flash", system=SYSTEM, tools=TOOLS)
    assert source == "upstream"
    seen = fake.last_request()
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
    assert seen["headers"]["x-goog-api-key"] == KEY
    inner = seen["body"]["generateContentRequest"]
    assert set(seen["body"]) == {"generateContentRequest"}
    assert inner["model"] == "models/gemini-2.5-flash"
    assert inner["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    declaration = inner["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["parameters"]["properties"]["city"]["type"].lower() == "string"
    roles = [c["role"] for c in inner["contents"]]
    assert roles == ["user", "model", "user"]
    assert inner["contents"][1]["parts"][0]["functionCall"]["args"] == {"city": "Paris"}
    assert "functionResponse" in inner["contents"][2]["parts"][0]
    own = fake_count(fake, seen["path"], seen["body"], **{"x-goog-api-key": KEY})
    assert tokens == own["totalTokens"]
    without = count(claude, "gemini-2.5-flash")[0]
    assert tokens > without, "system and tools are part of the count"


def test_code_assist_counts_contents_the_way_gemini_cli_does(claude, fake):
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": [
                # a Gemini thought, as a Gemini upstream's answer reached an Anthropic client
                {"type": "thinking", "thinking": "Paris is warm.", "signature": "gemini:c2ln"},
                {"type": "text", "text": "It is sunny in Paris."},
            ],
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    tokens, source = count(claude, "cli-model", system=SYSTEM, tools=TOOLS, messages=history)
    assert source == "upstream"
    seen = fake.last_request()
    assert seen["path"] == "/v1internal:countTokens"
    assert seen["headers"]["authorization"] == f"Bearer {KEY}"
    body = seen["body"]
    assert set(body) == {"request"} and set(body["request"]) == {"model", "contents"}
    assert body["request"]["model"] == "models/gemini-2.5-pro"
    thought_turn = body["request"]["contents"][3]
    assert thought_turn["role"] == "model"
    assert thought_turn["parts"][0] == {"text": "Paris is warm."}, "thought parts go as text"
    own = fake_count(fake, seen["path"], body, authorization=f"Bearer {KEY}")["totalTokens"]
    schema_text = json.dumps(SCHEMA, separators=(",", ":"))
    rest = (estimate(SYSTEM) + 4) + (
        4 + estimate("get_weather") + estimate("Current weather") + estimate(schema_text)
    )
    assert tokens == own + rest, "Code Assist counts the contents; system and tools estimated"


def test_antigravity_answers_from_the_estimate(claude, fake):
    text = "y" * 400
    tokens, source = count(claude, "agy-model", messages=[{"role": "user", "content": text}])
    assert (tokens, source) == (104, "estimate")  # 400 / 4 + 4 framing
    assert fake.requests() == []


def test_openai_upstream_answers_from_the_estimate(claude, fake):
    tokens, source = count(claude, "gpt-4o", messages=[{"role": "user", "content": "x" * 400}])
    assert (tokens, source) == (104, "estimate")
    assert fake.requests() == []


@pytest.mark.parametrize("status", [500, 503, 429, 401, 404])
def test_an_upstream_that_cannot_count_gives_way_to_the_estimate(claude, fake, status):
    fake.script({"path": "*countTokens", "status": status})
    messages = [{"role": "user", "content": "x" * 400}]
    assert count(claude, "gemini-2.5-flash", messages=messages) == (104, "estimate")
    assert fake.last_request()["status"] == status
    fake.reset()
    assert count(claude, "gemini-2.5-flash", messages=messages)[1] == "upstream"


def test_an_upstream_network_failure_gives_way_to_the_estimate(claude, fake):
    fake.script({"path": "/v1internal:countTokens", "reset": True})
    messages = [{"role": "user", "content": "x" * 400}]
    assert count(claude, "cli-model", messages=messages) == (104, "estimate")


def test_an_upstream_rejecting_the_request_is_the_clients_error(claude, fake):
    fake.script({"path": "*countTokens", "status": 400, "error_message": "contents are not valid"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        count(claude, "gemini-2.5-flash")
    assert "contents are not valid" in str(caught.value)
    assert caught.value.body["error"]["type"] == "invalid_request_error"


# --- Gemini clients ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_gemini_client_counts_through_the_gemini_api(gateway, fake, version):
    options = types.HttpOptions(base_url=gateway.url, api_version=version)
    client = genai.Client(api_key="client", http_options=options)
    result = client.models.count_tokens(model="gemini-2.5-flash", contents="How many tokens?")
    seen = fake.last_request()
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
    inner = seen["body"]["generateContentRequest"]
    assert inner["contents"] == [{"role": "user", "parts": [{"text": "How many tokens?"}]}]
    own = fake_count(fake, seen["path"], seen["body"], **{"x-goog-api-key": KEY})
    assert result.total_tokens == own["totalTokens"]


def test_gemini_client_counts_through_anthropic(gemini_client, fake):
    result = gemini_client.models.count_tokens(model="claude-x", contents="How many tokens?")
    seen = fake.last_request()
    assert seen["path"] == "/v1/messages/count_tokens"
    assert seen["body"]["model"] == "claude-sonnet-4-6"
    text = {"type": "text", "text": "How many tokens?"}
    assert seen["body"]["messages"] == [{"role": "user", "content": [text]}]
    assert "max_tokens" not in seen["body"], "count_tokens rejects generation fields"
    own = fake_count(
        fake,
        seen["path"],
        seen["body"],
        **{"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    assert result.total_tokens == own["input_tokens"]


def test_gemini_client_counts_through_code_assist(gemini_client, fake):
    result = gemini_client.models.count_tokens(model="cli-model", contents="How many tokens?")
    seen = fake.last_request()
    assert seen["path"] == "/v1internal:countTokens"
    own = fake_count(fake, seen["path"], seen["body"], authorization=f"Bearer {KEY}")
    assert result.total_tokens == own["totalTokens"]


def test_gemini_client_gets_the_estimate_elsewhere(gateway, gemini_client, fake):
    result = gemini_client.models.count_tokens(model="gpt-4o", contents="x" * 400)
    assert result.total_tokens == 104
    assert fake.requests() == []
    raw = httpx.post(
        gateway.url + "/chat/v1beta/models/gpt-4o:countTokens",
        json={"contents": [{"parts": [{"text": "x" * 400}]}]},
    )
    assert raw.json() == {"totalTokens": 104}
    assert raw.headers["x-router-token-count"] == "estimate"


def test_gemini_client_count_errors_are_google_errors(gateway):
    response = httpx.post(
        gateway.url + "/v1beta/models/gemini-2.5-flash:countTokens", json={"contents": "nope"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


# --- Code Assist with Google's OAuth (the fake of Google) -------------------------------


def test_code_assist_count_refreshes_an_expired_token_first(tmp_path, start_gateway):
    from tests.fakes.google import FakeGoogleProcess
    from tests.test_gemini_oauth import write_config as write_oauth_config

    with FakeGoogleProcess.start() as google:
        write_oauth_config(tmp_path, google, "gcli-count")
        google.write_credentials(tmp_path / "configs/gemini/oauth_creds.json", expired=True)
        gateway = start_gateway(tmp_path)
        client = anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0)
        raw = client.messages.with_raw_response.count_tokens(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "count me " * 10}]
        )
        assert raw.headers["x-router-token-count"] == "upstream"
        assert google.stats()["refreshes"] == 1 and google.stats()["count"] == 1
        (call,) = google.calls("countTokens")
        assert call["body"] == {
            "request": {
                "model": "models/gemini-2.5-flash",
                "contents": [{"role": "user", "parts": [{"text": "count me " * 10}]}],
            }
        }
        assert raw.parse().input_tokens == estimate("count me " * 10)  # the fake's count
