"""Failover through the real gateway against scripted fake upstreams: instance failover in
a pool, chain failover across protocols, what is (not) retried, timeouts, streams that
break before or after their first content, and client disconnects."""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

CLIENT_KEY = "client-key-never-upstream"
ADMIN_KEY = "admin-key"
PROMPT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-a") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-b") as upstream:
        yield upstream


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(fake_a, fake_b, tmp_path_factory) -> Iterator[Gateway]:
    a, b = fake_a.url, fake_b.url
    directory = write_config(
        tmp_path_factory.mktemp("failover"),
        {
            "providers.yaml": f"""
                providers:
                  pool:
                    type: openai-custom
                    timeout: 1s
                    first_token_timeout: 0.5s
                    health: {{ max_errors: 100, recover_after: 60s }}
                    instances:
                      - id: pool-1
                        base_url: {a}/v1
                        api_key: key-a
                        headers: {{ X-Instance: one, Connection: keep-alive, Host: evil }}
                      - id: pool-2
                        base_url: {b}/v1
                        api_key: key-b
                  single:
                    type: openai-custom
                    timeout: 10s
                    health: {{ max_errors: 100 }}
                    instances:
                      - id: single-1
                        base_url: {a}/v1
                        api_key: key-a
                  responses-single:
                    type: openaiResponses-custom
                    instances:
                      - id: responses-1
                        base_url: {a}/v1
                        api_key: key-a
                  claude-down:
                    type: claude-custom
                    health: {{ max_errors: 100 }}
                    instances:
                      - id: claude-1
                        base_url: {a}/v1
                        api_key: key-a
                  refusing:
                    type: openai-custom
                    instances:
                      - id: dead-1
                        base_url: http://127.0.0.1:{closed_port()}/v1
                        api_key: key-a
                      - id: alive-1
                        base_url: {b}/v1
                        api_key: key-b
                  gemini-up:
                    type: gemini-api
                    instances:
                      - id: gemini-1
                        base_url: {b}/v1beta
                        api_key: key-b
            """,
            "routes.yaml": """
                default: pool
                routes:
                  - name: cross
                    match: { model: cross-model }
                    to:
                      - { provider: claude-down, model: claude-sonnet-4-5 }
                      - { provider: gemini-up, model: gemini-2.5-flash }
                  - name: single
                    match: { model: "single-*" }
                    to: single
                  - name: refused
                    match: { model: "refused-*" }
                    to: refusing
                  - { name: pt-responses, match: { model: pt-responses }, to: responses-single }
                  - { name: pt-claude, match: { model: pt-claude }, to: claude-down }
                  - { name: pt-gemini, match: { model: pt-gemini }, to: gemini-up }
                  - name: only-503
                    match: { model: only-503 }
                    to: pool
                    retry_on: [503]
                  - name: one-attempt
                    match: { model: one-attempt }
                    to: pool
                    max_attempts: 1
            """,
        },
    )
    env = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
    with Gateway(directory, env=env) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh(gateway, fake_a, fake_b) -> None:
    """Each test starts with empty fake logs and scripts and a clean health book (so LRU
    order starts at each pool's first instance)."""
    fake_a.reset()
    fake_b.reset()
    for name in ("openai-custom", "openaiResponses-custom", "claude-custom", "gemini-api"):
        reset_health(gateway, name)


def reset_health(gateway: Gateway, provider: str) -> None:
    response = http().post(
        f"{gateway.url}/api/providers/{provider}/reset-health",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200


@functools.cache
def http() -> httpx.Client:
    """One client for the whole module: building one per call costs ~50 ms (TLS setup)."""
    return httpx.Client(timeout=10)


@functools.cache
def chat(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10
    )


@functools.cache
def claude(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)


def post_chat(gateway: Gateway, model: str = "m", **body) -> httpx.Response:
    return http().post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": model, "messages": PROMPT, **body},
        timeout=10,
    )


def sdk_stream(gateway: Gateway) -> tuple[str, httpx.Headers]:
    """A Chat stream through the OpenAI SDK: the text it assembled, and the headers."""
    raw = chat(gateway).chat.completions.with_raw_response.create(
        model="m", messages=PROMPT, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return text, raw.headers


def trace(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    headers = response.headers
    return (
        headers.get("x-router-provider"),
        headers.get("x-router-instance"),
        headers.get("x-router-attempts"),
    )


# --- instance and chain failover ---------------------------------------------------------


def test_instance_failover_inside_a_pool(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 500})
    raw = chat(gateway).chat.completions.with_raw_response.create(model="m", messages=PROMPT)
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-router-provider"] == "pool"
    assert raw.headers["x-router-instance"] == "pool-2"
    assert raw.headers["x-router-attempts"] == "2"
    [first] = fake_a.requests()
    [second] = fake_b.requests()
    assert first["status"] == 500
    # each instance its own key and extra headers; hop-by-hop ones and the client's key stay
    assert first["headers"]["authorization"] == "Bearer key-a"
    assert first["headers"]["x-instance"] == "one"
    assert first["headers"]["host"] != "evil"
    assert second["headers"]["authorization"] == "Bearer key-b"
    assert "x-instance" not in second["headers"]
    for seen in (first, second):
        assert CLIENT_KEY not in repr(seen["headers"]) + repr(seen["query"])


def test_chain_failover_across_protocols_with_model_remapped(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 500})
    raw = chat(gateway).chat.completions.with_raw_response.create(
        model="cross-model", messages=PROMPT
    )
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert (raw.headers["x-router-provider"], raw.headers["x-router-attempts"]) == (
        "gemini-up",
        "2",
    )
    [claude_call] = fake_a.requests()
    assert claude_call["protocol"] == "anthropic" and claude_call["path"] == "/v1/messages"
    assert claude_call["body"]["model"] == "claude-sonnet-4-5"
    [gemini_call] = fake_b.requests()
    assert gemini_call["protocol"] == "gemini"
    assert gemini_call["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert gemini_call["headers"]["x-goog-api-key"] == "key-b"
    assert gemini_call["body"]["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]


def test_chain_failover_on_connection_reset_while_streaming(gateway, fake_a, fake_b) -> None:
    fake_a.script({"reset": True})
    with chat(gateway).chat.completions.stream(model="cross-model", messages=PROMPT) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: hello"
    assert fake_a.requests()[0]["reset"] is True
    gemini_call = fake_b.last_request()
    assert gemini_call["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert gemini_call["query"] == {"alt": "sse"}


# --- what is retried ---------------------------------------------------------------------


def test_no_retry_on_400_and_the_error_comes_back_in_the_clients_shape(
    gateway, fake_a, fake_b
) -> None:
    fake_a.script({"status": 400, "error_message": "bad field"})
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude(gateway).messages.create(model="m", max_tokens=50, messages=PROMPT)
    error = raised.value
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "invalid_request_error"
    assert "bad field" in error.body["error"]["message"]
    headers = error.response.headers
    assert (headers["x-router-instance"], headers["x-router-attempts"]) == ("pool-1", "1")
    assert len(fake_a.requests()) == 1
    assert fake_b.requests() == []


def test_connection_reset_fails_over(gateway, fake_a, fake_b) -> None:
    fake_a.script({"reset": True})
    response = post_chat(gateway)
    assert response.status_code == 200
    assert trace(response) == ("pool", "pool-2", "2")


def test_hang_past_the_timeout_fails_over(gateway, fake_a, fake_b) -> None:
    fake_a.script({"hang": 5})
    started = time.monotonic()
    response = post_chat(gateway)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert trace(response) == ("pool", "pool-2", "2")
    assert 1.0 <= elapsed < 3.0  # the pool's timeout is 1 s
    fake_a.wait_for(lambda log: log and log[0]["disconnected"])


def test_first_token_timeout_is_separate_from_the_total(gateway, fake_a, fake_b) -> None:
    fake_a.script({"first_event_delay": 0.8})  # within the 1 s total, past the 0.5 s TTFT
    started = time.monotonic()
    text, headers = sdk_stream(gateway)
    assert text == "echo: hello"
    assert time.monotonic() - started < 0.8 + 0.5
    assert headers["x-router-instance"] == "pool-2"


def test_total_timeout_covers_the_whole_stream(gateway, fake_a) -> None:
    fake_a.script({"delay_between_events": 0.4})  # first content at once, the rest too slow
    started = time.monotonic()
    with http().stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "m", "messages": PROMPT, "stream": True},
        timeout=10,
    ) as response:
        body = response.read()
    assert time.monotonic() - started < 2.0
    assert response.headers["x-router-instance"] == "pool-1"
    assert body.rstrip().splitlines()[-1].startswith(b'data: {"error"')
    assert b"total timeout" in body


def test_429_with_retry_after_moves_on_at_once_and_cools_the_instance(
    gateway, fake_a, fake_b
) -> None:
    fake_a.script({"status": 429, "retry_after": 30})
    started = time.monotonic()
    response = post_chat(gateway)
    assert time.monotonic() - started < 1.0
    assert trace(response) == ("pool", "pool-2", "2")
    # pool-1 is least recently used, but its Retry-After has not passed
    assert trace(post_chat(gateway)) == ("pool", "pool-2", "1")
    assert len(fake_a.requests()) == 1
    state = instance_state(gateway, "pool", "pool-1")
    assert state["cooldown_until"] > time.time() + 25
    assert state["last_error"]["status"] == 429


def test_short_retry_after_with_nothing_left_is_waited_out_once(gateway, fake_a) -> None:
    fake_a.script({"status": 429, "retry_after": 1})
    started = time.monotonic()
    response = post_chat(gateway, model="single-m")
    assert response.status_code == 200
    assert 1.0 <= time.monotonic() - started < 2.5
    assert trace(response) == ("single", "single-1", "2")


def test_long_retry_after_with_nothing_left_goes_back_to_the_client(gateway, fake_a) -> None:
    fake_a.script({"status": 429, "retry_after": 7})
    response = post_chat(gateway, model="single-m")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert trace(response) == ("single", "single-1", "1")
    again = post_chat(gateway, model="single-m")  # the instance sits the Retry-After out
    assert again.status_code == 429
    assert again.headers["retry-after"] in ("6", "7")
    assert again.headers["x-router-attempts"] == "0"
    assert len(fake_a.requests()) == 1


def test_retry_on_limits_what_is_retried(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 500})
    response = post_chat(gateway, model="only-503")
    assert response.status_code == 500
    assert trace(response) == ("pool", "pool-1", "1")
    assert fake_b.requests() == []
    reset_health(gateway, "pool")
    fake_a.script({"status": 503})
    assert trace(post_chat(gateway, model="only-503"))[1:] == ("pool-2", "2")


def test_max_attempts_caps_the_walk(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 500})
    response = post_chat(gateway, model="one-attempt")
    assert response.status_code == 502
    assert "all upstream attempts failed" in response.json()["error"]["message"]
    assert trace(response) == ("pool", "pool-1", "1")
    assert fake_b.requests() == []


# --- streams -----------------------------------------------------------------------------


def test_error_event_before_content_fails_over(gateway, fake_a, fake_b) -> None:
    fake_a.script({"stream_error": True, "error_status": 503})
    text, headers = sdk_stream(gateway)
    assert text == "echo: hello"
    assert (headers["x-router-instance"], headers["x-router-attempts"]) == ("pool-2", "2")


def test_mid_stream_cut_ends_the_openai_stream_with_an_error(gateway, fake_a) -> None:
    fake_a.script({"cut_after": 3, "reply": "one two three four five six"})
    started = time.monotonic()
    with (
        pytest.raises(openai.APIError, match="mid-way"),
        chat(gateway).chat.completions.stream(model="single-m", messages=PROMPT) as stream,
    ):
        stream.get_final_completion()
    assert time.monotonic() - started < 5.0

    fake_a.script({"cut_after": 3, "reply": "one two three four five six"})
    body = raw_stream(gateway, "/v1/chat/completions", {"model": "single-m", "messages": PROMPT})
    events = body.strip().split(b"\n\n")
    assert events[0].startswith(b"data: {")  # content reached the client first
    assert events[-1].startswith(b'data: {"error": {') or events[-1].startswith(b'data: {"error":{')
    assert b"[DONE]" not in body


def test_mid_stream_cut_ends_a_translated_anthropic_stream_with_an_error_event(
    gateway, fake_a
) -> None:
    fake_a.script({"cut_after": 3, "reply": "one two three four five six"})
    with (
        pytest.raises(anthropic.APIError),
        claude(gateway).messages.stream(model="single-m", max_tokens=50, messages=PROMPT) as stream,
    ):
        stream.get_final_message()

    fake_a.script({"cut_after": 3, "reply": "one two three four five six"})
    body = raw_stream(
        gateway, "/v1/messages", {"model": "single-m", "max_tokens": 50, "messages": PROMPT}
    )
    assert body.startswith(b"event: message_start")
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    assert b'"type":"error"' in last.replace(b" ", b"")
    assert b"message_stop" not in body


# path, body, how each event starts, the position of the first content event
PASSTHROUGH_CUTS = {
    "chat": ("/v1/chat/completions", {"model": "single-m", "messages": PROMPT}, b"data: ", 2),
    "responses": ("/v1/responses", {"model": "pt-responses", "input": "hello"}, b"event: ", 5),
    "anthropic": (
        "/v1/messages",
        {"model": "pt-claude", "max_tokens": 50, "messages": PROMPT},
        b"event: ",
        4,
    ),
    "gemini": (
        "/v1beta/models/pt-gemini:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
        b"data: ",
        1,
    ),
}


@pytest.mark.parametrize("protocol", PASSTHROUGH_CUTS)
def test_mid_stream_cut_of_a_relayed_stream_ends_with_the_protocols_error_event(
    gateway, fake_a, fake_b, protocol
) -> None:
    path, body, prefix, cut = PASSTHROUGH_CUTS[protocol]
    fake = fake_b if protocol == "gemini" else fake_a
    fake.script({"cut_after": cut + 1, "reply": "one two three four five six"})
    raw = raw_stream(gateway, path, body).replace(b"\r\n", b"\n")
    events = raw.strip().split(b"\n\n")
    assert len(events) == cut + 2  # relayed as they were, then the error
    assert all(event.startswith(prefix) for event in events)
    data = json.loads(events[-1].split(b"data: ", 1)[1])
    if protocol == "responses":
        assert events[-1].startswith(b"event: error\n")
        assert data["type"] == "error" and data["sequence_number"] == cut + 1
    elif protocol == "anthropic":
        assert events[-1].startswith(b"event: error\n")
        assert data["type"] == "error" and data["error"]["type"] == "api_error"
    else:
        assert set(data) == {"error"} and data["error"]["message"]
    assert fake.last_request()["events_sent"] == cut + 1


def raw_stream(gateway: Gateway, path: str, body: dict) -> bytes:
    """The raw bytes of a stream, read until the server ends the response: returning at
    all (under the client's 5 s timeout) proves the stream terminates rather than hangs."""
    response = http().post(
        gateway.url + path,
        headers={"authorization": f"Bearer {CLIENT_KEY}", "anthropic-version": "2023-06-01"},
        json={**body, "stream": True},
        timeout=5,
    )
    assert response.status_code == 200
    return response.content


def test_client_disconnect_cancels_the_upstream_stream(gateway, fake_a) -> None:
    fake_a.script({"delay_between_events": 0.3, "reply": " ".join(["word"] * 40)})
    with http().stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "single-m", "messages": PROMPT, "stream": True},
        timeout=10,
    ) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"data: ")
    entry = fake_a.wait_for(lambda log: log and log[0]["disconnected"] and log[0], timeout=5)
    assert not entry["completed"]
    assert entry["events_sent"] < 20


def test_client_disconnect_cancels_a_pending_upstream_call(gateway, fake_a) -> None:
    fake_a.script({"hang": 8})
    with pytest.raises(httpx.ReadTimeout):
        post_chat_with_timeout(gateway, 0.5)
    entry = fake_a.wait_for(lambda log: log and log[0]["disconnected"] and log[0], timeout=5)
    assert time.time() - entry["time"] < 3.0


def post_chat_with_timeout(gateway: Gateway, seconds: float) -> httpx.Response:
    return http().post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "single-m", "messages": PROMPT},
        timeout=seconds,
    )


def instance_state(gateway: Gateway, provider: str, instance: str) -> dict:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}  # the gateway has client keys
    document = http().get(gateway.url + "/provider_health", headers=headers, timeout=5).json()
    [state] = [i for i in document["providers"][provider]["instances"] if i["id"] == instance]
    return state


def test_refused_connection_fails_over(gateway, fake_b) -> None:
    response = post_chat(gateway, model="refused-m")
    assert response.status_code == 200
    assert trace(response) == ("refusing", "alive-1", "2")
    state = instance_state(gateway, "refusing", "dead-1")
    assert state["last_error"]["status"] == 502
    assert "unreachable" in state["last_error"]["message"]


@pytest.mark.parametrize(("status", "counted"), [(404, 0), (422, 0), (403, 1), (401, 1)])
def test_rejections_go_back_at_once_and_only_key_faults_count_against_health(
    gateway, fake_a, fake_b, status, counted
) -> None:
    """400/404/422 say the request is wrong: the instance stays healthy. 401/403 say its key
    is: they count towards max_errors. Neither is retried."""
    fake_a.script({"status": status, "error_message": f"rejected {status}"})
    response = post_chat(gateway)
    assert response.status_code == status
    assert f"rejected {status}" in response.json()["error"]["message"]
    assert trace(response) == ("pool", "pool-1", "1")
    assert fake_b.requests() == []
    state = instance_state(gateway, "pool", "pool-1")
    assert state["consecutive_errors"] == counted
    assert (state["last_error"] or {}).get("status") == (status if counted else None)


def test_when_every_attempt_fails_a_503_stays_a_503(gateway, fake_a, fake_b) -> None:
    fake_a.script({"status": 503})
    fake_b.script({"status": 503})
    response = post_chat(gateway)
    assert response.status_code == 503
    assert response.json()["error"]["message"].startswith("all upstream attempts failed")
    assert trace(response) == ("pool", "pool-2", "2")
