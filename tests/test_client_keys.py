"""Client keys from routes.yaml (`auth.keys`): scopes, expiry and limits, enforced by a
real `router serve` of two workers, each refusal in the client's own protocol. Limits
here count in the embedded store, shared by the server's workers."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

PROMPT = [{"role": "user", "content": "hello"}]
KEYS = {
    "scoped": "sk-scoped-0123456789",
    "hashed": "sk-hashed-0123456789",
    "expired": "sk-expired-0123456789",
    "rpm": "sk-rpm-0123456789",
    "concurrent": "sk-concurrent-0123456789",
    "tokens": "sk-tokens-0123456789",
    "monthly": "sk-monthly-0123456789",
    "anthropic": "sk-anthropic-0123456789",
    "plain": "sk-plain-0123456789",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    hashed = hashlib.sha256(KEYS["hashed"].encode()).hexdigest()
    directory = write_config(
        tmp_path_factory.mktemp("client-keys"),
        {
            "providers.yaml": f"""
                providers:
                  echo: {{ type: echo }}
                  other: {{ type: echo }}
                  slow:
                    type: openai-custom
                    health: {{ max_errors: 1000 }}
                    instances: [{{ id: slow-1, base_url: "{fake.url}/v1", api_key: k }}]
            """,
            "routes.yaml": f"""
                default: echo
                routes:
                  - {{ name: other, match: {{ model: "other-*" }}, to: other }}
                  - {{ name: slow, match: {{ model: "slow-*" }}, to: slow }}
                auth:
                  api_keys: ["{KEYS["plain"]}"]
                  keys:
                    - name: scoped
                      key: ${{SCOPED_KEY}}
                      models: ["gpt-*", "claude-*", "gemini-*", "other-*"]
                      providers: [echo]
                    - {{ name: hashed, key: "sha256:{hashed}" }}
                    - {{ name: expired, key: "{KEYS["expired"]}", expires: 2020-01-01 }}
                    - {{ name: rpm, key: "{KEYS["rpm"]}", limits: {{ rpm: 30 }} }}
                    - name: concurrent
                      key: "{KEYS["concurrent"]}"
                      limits: {{ concurrency: 3 }}
                    - name: tokens
                      key: "{KEYS["tokens"]}"
                      limits: {{ daily_tokens: 100 }}
                    - name: monthly
                      key: "{KEYS["monthly"]}"
                      limits: {{ monthly_requests: 2, tpm: 1000000 }}
                    - name: anthropic
                      key: "{KEYS["anthropic"]}"
                      limits: {{ concurrency: 1, monthly_requests: 1000, tpm: 1000000 }}
            """,
        },
    )
    env = {"SCOPED_KEY": KEYS["scoped"], "ROUTER_METRICS_PUBLIC": "1"}
    server = Gateway(directory, env=env, workers=2)
    yield server
    server.stop()


def chat(gateway: Gateway, key: str, model: str = "gpt-4o", **extra) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **extra.pop("headers", {})},
        json={"model": model, "messages": PROMPT, **extra},
        timeout=30,
    )


def test_named_keys_unrestricted_keys_and_digests_are_accepted(gateway: Gateway) -> None:
    for name in ("plain", "hashed", "scoped"):
        response = chat(gateway, KEYS[name])
        assert response.status_code == 200, response.text
    assert chat(gateway, "sk-nobody").status_code == 401
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json={}).status_code == 401


def test_an_expired_key_is_refused_with_401_naming_it(gateway: Gateway) -> None:
    response = chat(gateway, KEYS["expired"])
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_a_model_outside_the_keys_globs_is_403_in_each_protocol(gateway: Gateway) -> None:
    key = KEYS["scoped"]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as chat_error:
        client.chat.completions.create(model="llama-3", messages=PROMPT)
    assert "llama-3" in chat_error.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="llama-3", input="hello")
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as messages_error:
        claude.messages.create(model="llama-3", max_tokens=10, messages=PROMPT)
    assert messages_error.value.body["error"]["type"] == "permission_error"
    gemini = genai.Client(
        api_key=key,
        http_options=genai_types.HttpOptions(base_url=gateway.url, retry_options=None),
    )
    with pytest.raises(genai_errors.ClientError) as gemini_error:
        gemini.models.generate_content(model="llama-3", contents="hello")
    assert gemini_error.value.code == 403
    assert gemini_error.value.status == "PERMISSION_DENIED"
    # within its globs it goes through, in every protocol
    assert client.chat.completions.create(model="gpt-4o", messages=PROMPT).choices
    assert claude.messages.create(model="claude-x", max_tokens=10, messages=PROMPT).content
    assert gemini.models.generate_content(model="gemini-x", contents="hello").text


def test_a_pool_outside_the_key_is_403_by_route_path_and_header(gateway: Gateway) -> None:
    key = KEYS["scoped"]
    by_route = chat(gateway, key, model="other-1")  # the route sends it to `other`
    assert by_route.status_code == 403
    assert "other" in by_route.json()["error"]["message"]
    by_path = httpx.post(
        f"{gateway.url}/other/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": "claude-x", "max_tokens": 10, "messages": PROMPT},
    )
    assert by_path.status_code == 403
    assert by_path.json()["type"] == "error"
    assert by_path.json()["error"]["type"] == "permission_error"
    by_header = chat(gateway, key, headers={"model-provider": "other"})
    assert by_header.status_code == 403
    # the unrestricted key reaches it
    assert chat(gateway, KEYS["plain"], model="other-1").status_code == 200


def test_the_model_list_shows_only_what_the_key_may_use(gateway: Gateway) -> None:
    listed = httpx.get(
        f"{gateway.url}/other/v1/models", headers={"authorization": f"Bearer {KEYS['scoped']}"}
    )
    assert listed.status_code == 403
    mine = httpx.get(
        f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {KEYS['scoped']}"}
    )
    assert mine.status_code == 200


async def _burst(gateway: Gateway, key: str, count: int, model: str = "gpt-4o") -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> int:
            response = await client.post(
                f"{gateway.url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": model, "messages": PROMPT},
            )
            return response.status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def test_rpm_admits_exactly_its_count_across_both_workers(gateway: Gateway) -> None:
    statuses = asyncio.run(_burst(gateway, KEYS["rpm"], 100))
    assert statuses.count(200) == 30
    assert statuses.count(429) == 70
    refused = chat(gateway, KEYS["rpm"])
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


def test_concurrency_admits_exactly_its_count_in_flight(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    fake.reset()
    fake.script({"hang": 1.5, "times": 20})
    started = time.monotonic()
    statuses = asyncio.run(_burst(gateway, KEYS["concurrent"], 12, model="slow-1"))
    assert statuses.count(200) == 3
    assert statuses.count(429) == 9
    assert time.monotonic() - started < 10
    fake.reset()
    # the slots were given back when those answers ended
    again = asyncio.run(_burst(gateway, KEYS["concurrent"], 3, model="slow-1"))
    assert again == [200, 200, 200]


def test_a_token_budget_is_counted_after_each_answer(gateway: Gateway) -> None:
    spent = 0
    answered = 0
    while True:
        response = chat(gateway, KEYS["tokens"])
        if response.status_code != 200:
            break
        answered += 1
        spent += response.json()["usage"]["total_tokens"]
        assert answered < 50
    assert response.status_code == 429
    assert "daily_tokens" in response.json()["error"]["message"]
    # refused only once the budget was spent, and not before
    assert spent >= 100
    assert spent - response.json().get("usage", {}).get("total_tokens", 0) < 100 + spent
    per_request = spent // answered
    assert spent - per_request < 100  # the last admitted request started under the budget
    # until UTC midnight
    assert 0 < int(response.headers["retry-after"]) <= 86400


def test_answers_carry_the_rate_limit_headers(gateway: Gateway) -> None:
    first = chat(gateway, KEYS["monthly"])
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert chat(gateway, KEYS["monthly"]).status_code == 200
    third = chat(gateway, KEYS["monthly"])
    assert third.status_code == 429
    assert "monthly_requests" in third.json()["error"]["message"]


def test_anthropic_clients_get_anthropic_headers_and_the_sdk_backs_off(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    seen: list[httpx2.Response] = []
    http = httpx2.Client(event_hooks={"response": [seen.append]})  # the SDK's own httpx
    claude = anthropic.Anthropic(
        base_url=gateway.url, api_key=KEYS["anthropic"], max_retries=4, http_client=http
    )
    raw = claude.messages.with_raw_response.create(model="claude-x", max_tokens=10, messages=PROMPT)
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "1000"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "999"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.headers["anthropic-ratelimit-tokens-limit"] == "1000000"
    # one slow request holds the key's only slot for 2.5 s
    fake.reset()
    fake.script({"hang": 2.5})
    slow = threading.Thread(
        target=lambda: anthropic.Anthropic(
            base_url=gateway.url, api_key=KEYS["anthropic"], max_retries=0
        ).messages.create(model="slow-1", max_tokens=10, messages=PROMPT)
    )
    slow.start()
    time.sleep(0.5)
    seen.clear()
    started = time.monotonic()
    answer = claude.messages.create(model="claude-x", max_tokens=10, messages=PROMPT)
    waited = time.monotonic() - started
    slow.join(timeout=30)
    fake.reset()
    assert answer.content
    statuses = [response.status_code for response in seen]
    # refused while the slot was held, told when to come back, and the SDK waited for it
    assert statuses[0] == 429 and statuses[-1] == 200, statuses
    refused = seen[0]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "1000"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert waited >= 1.0


def test_records_name_the_key_never_the_key(gateway: Gateway) -> None:
    assert chat(gateway, KEYS["hashed"]).status_code == 200
    text = gateway.log_path.read_text()
    for key in KEYS.values():
        assert key not in text


def test_metrics_count_requests_and_tokens_by_key_name(gateway: Gateway) -> None:
    for _ in range(3):
        assert chat(gateway, KEYS["hashed"]).status_code == 200
    assert chat(gateway, KEYS["expired"]).status_code == 401

    def counted() -> str | None:
        """The exposition once all three answers are in it."""
        text = httpx.get(f"{gateway.url}/metrics").text
        ok = 'router_key_requests_total{key="hashed",status="200"} '
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(ok)]
        done = values and values[0] >= 3 and 'key="hashed",kind="output"' in text
        return text if done else None

    deadline = time.monotonic() + 10
    while (text := counted()) is None:
        assert time.monotonic() < deadline, "the key's requests never reached /metrics"
        time.sleep(0.2)
    assert 'router_key_requests_total{key="expired",status="401"}' in text
    for key in KEYS.values():
        assert key not in text
