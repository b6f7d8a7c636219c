"""Pipelines end to end: a `pipelines/*.yaml` in the config dir, the real gateway, a fake
upstream that records what it received, and the official SDKs on the client side.

Each stage is checked where the README and DESIGN.md put it: `request` rewrites the
client's body in the client's protocol (before translation), `upstream` the body about
to be sent in the upstream's protocol (after translation), `response` the answer (or
each stream event) going back in the client's protocol, and `headers` the upstream
request headers. Every test asserts an effect that is absent without the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway
from tests.routercli import router

CLIENT_KEY = "client-key-not-for-upstreams"
PARTNER_KEY = "sk-partner-9f8e7d6c5b4a"  # interpolated into a secret-looking header
LITERAL_TOKEN = "tok-literal-1a2b3c4d5e"  # written as is in the pipeline file
OLD_TOKEN = "tok-old-5e4d3c2b1a"  # set, then rewritten by a `map` step ...
MAPPED_TOKEN = "tok-mapped-6f7a8b9c0d"  # ... into this
ENV = {"REQUIRED_API_KEY": CLIENT_KEY, "PARTNER_KEY": PARTNER_KEY}

PIPELINES = {
    # OpenAI Chat clients, OpenAI Chat upstream: pass-through, so `request` and
    # `upstream` see the same protocol; the difference is the order they run in.
    "pipelines/shape.yaml": f"""
        name: shape
        request:
          - default: {{ temperature: 0.25 }}
          - set: {{ path: max_tokens, expr: "min([body.max_tokens, `512`])" }}
            when: "body.max_tokens != null"
          - drop: [logit_bias, metadata.internal]
        upstream:
          - rename: {{ max_tokens: max_completion_tokens }}
          - default: {{ seed: 7 }}
        headers:
          - set: {{ x-team: platform }}
          - set: {{ path: x-client-user, expr: 'headers."x-user"' }}
          - set: {{ x-partner-api-key: "${{PARTNER_KEY}}" }}
          - set: {{ path: x-partner-token, value: {LITERAL_TOKEN} }}
          - set: {{ x-rotated-token: {OLD_TOKEN} }}
          - map: {{ path: x-rotated-token, values: {{ {OLD_TOKEN}: {MAPPED_TOKEN} }} }}
        response:
          - set: {{ system_fingerprint: fp-pipeline }}
          - set:
              path: choices.0.message.content
              expr: "join('', [body.choices[0].message.content, ' [shaped]'])"
            when: "body.object == 'chat.completion'"
          - set:
              path: choices.0.delta.content
              expr: "join('', [body.choices[0].delta.content, '~'])"
            when: "body.choices[0].delta.content"
    """,
    # Anthropic clients, OpenAI Chat upstream: translated.
    "pipelines/cross.yaml": """
        name: cross
        request:        # Anthropic Messages, as the client sent it
          - default: { temperature: 0.4 }
          - set: { system: pipeline system prompt }
          - set: { path: max_tokens, expr: "min([body.max_tokens, `64`])" }
        upstream:       # OpenAI Chat, as it goes upstream
          - rename: { max_tokens: max_completion_tokens }
          - default: { seed: 11 }
        response:       # Anthropic Messages again, as the client gets it
          - set: { path: content.0.text, expr: "join('', [body.content[0].text, ' [cross]'])" }
            when: "body.type == 'message'"
          - set: { path: delta.text, expr: "join('', [body.delta.text, '~'])" }
            when: "body.type == 'content_block_delta' && body.delta.type == 'text_delta'"
    """,
    # Anthropic clients, Anthropic upstream: pass-through, the stream is relayed.
    "pipelines/relay.yaml": """
        name: relay
        response:
          - set: { path: delta.text, expr: "join('', [body.delta.text, '+'])" }
            when: "body.type == 'content_block_delta' && body.delta.type == 'text_delta'"
          - set: { path: message.id, value: msg_from_pipeline }
            when: "body.type == 'message_start'"
    """,
    # OpenAI Chat clients, Anthropic upstream: the second target of a failover chain.
    "pipelines/to-claude.yaml": """
        name: to-claude
        request:        # OpenAI Chat
          - default: { temperature: 0.9 }
        upstream:       # Anthropic Messages
          - default: { top_k: 5 }
          - set: { metadata.user_id: from-pipeline }
        headers:
          - set: { x-team: claude-side }
    """,
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def config_dir(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chat = f'base_url: "{fake.url}/v1", api_key: upstream-key'
    return write_config(
        tmp_path_factory.mktemp("pipelines-gateway"),
        {
            "providers.yaml": f"""
                providers:
                  chat:
                    type: openai-custom
                    health: {{ max_errors: 1000 }}
                    instances:
                      - id: chat-1
                        base_url: "{fake.url}/v1"
                        api_key: upstream-key
                        headers: {{ x-instance: from-instance, x-team: instance-team }}
                  chat-a:
                    type: openai-custom
                    health: {{ max_errors: 1000 }}
                    instances: [{{ id: chat-a-1, {chat} }}]
                  chat-b:
                    type: openai-custom
                    health: {{ max_errors: 1000 }}
                    instances: [{{ id: chat-b-1, {chat} }}]
                  claude:
                    type: claude-custom
                    health: {{ max_errors: 1000 }}
                    instances:
                      - {{ id: claude-1, base_url: "{fake.url}", api_key: upstream-key }}
            """,
            "routes.yaml": """
                default: chat
                routes:
                  - name: shaped
                    match: { model: "shaped-*" }
                    to: chat
                    pipeline: shape
                  - name: cross
                    match: { model: "cross-*" }
                    to: chat
                    pipeline: cross
                  - name: chain
                    match: { model: "chain-*" }
                    to:
                      - chat-a
                      - { provider: claude, model: claude-sonnet-4-6, pipeline: to-claude }
                    pipeline: shape
                  - name: late-pipeline
                    match: { model: "late-*" }
                    to:
                      - chat-a
                      - { provider: chat-b, pipeline: cross }
                  - name: relay
                    match: { model: "relay-*" }
                    to: { provider: claude, model: claude-haiku-4-5 }
                    pipeline: relay
                  - name: plain
                    match: { model: "plain-*" }
                    to: chat
            """,
            **PIPELINES,
        },
    )


@pytest.fixture(scope="module")
def gateway(config_dir: Path) -> Iterator[Gateway]:
    with Gateway(config_dir, env=ENV) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def chat(gateway: Gateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {CLIENT_KEY}", **headers}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=15)


def upstream_body(fake: FakeUpstream) -> dict[str, Any]:
    (seen,) = fake.requests()
    return seen["body"]


HELLO = [{"role": "user", "content": "hello there"}]


# ---- request and upstream stages ---------------------------------------------------------


def test_request_and_upstream_stages_shape_the_upstream_body(gateway, fake) -> None:
    sent = {
        "model": "shaped-1",
        "messages": HELLO,
        "max_tokens": 5000,
        "logit_bias": {"50256": -100},
        "metadata": {"internal": "do-not-forward", "kept": "yes"},
    }
    response = chat(gateway, sent)
    assert response.status_code == 200, response.text
    assert upstream_body(fake) == {
        "model": "shaped-1",
        "messages": HELLO,
        "temperature": 0.25,  # request: default
        "max_completion_tokens": 512,  # request: capped, then upstream: renamed
        "metadata": {"kept": "yes"},  # request: drop of a nested path
        "seed": 7,  # upstream: default
    }
    # the same request on a route without a pipeline arrives as sent
    fake.reset()
    plain = dict(sent, model="plain-1")
    response = chat(gateway, plain)
    assert response.status_code == 200, response.text
    assert upstream_body(fake) == plain
    assert response.json()["system_fingerprint"] == "fp_fake"


def test_defaults_keep_the_clients_values_and_guards_skip(gateway, fake) -> None:
    response = chat(
        gateway, {"model": "shaped-2", "messages": HELLO, "temperature": 1.5, "seed": 3}
    )
    assert response.status_code == 200, response.text
    # no max_tokens: the guarded cap did not invent one, so there is nothing to rename
    assert upstream_body(fake) == {
        "model": "shaped-2",
        "messages": HELLO,
        "temperature": 1.5,
        "seed": 3,
    }
    # ... and yet the pipeline did run on this request
    assert fake.requests()[0]["headers"]["x-team"] == "platform"
    assert response.json()["system_fingerprint"] == "fp-pipeline"


def test_a_capped_value_below_the_limit_is_kept(gateway, fake) -> None:
    response = chat(gateway, {"model": "shaped-3", "messages": HELLO, "max_tokens": 100})
    assert response.status_code == 200, response.text
    body = upstream_body(fake)
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body


# ---- headers stage ------------------------------------------------------------------------


def test_headers_stage_sets_upstream_headers(gateway, fake) -> None:
    response = chat(gateway, {"model": "shaped-4", "messages": HELLO}, **{"x-user": "ada"})
    assert response.status_code == 200, response.text
    (seen,) = fake.requests()
    headers = seen["headers"]
    assert headers["x-team"] == "platform"  # the pipeline wins over the instance's header
    assert headers["x-instance"] == "from-instance"
    assert headers["x-client-user"] == "ada"  # an expr over the client's headers
    assert headers["x-partner-api-key"] == PARTNER_KEY  # ${VAR} interpolated
    assert headers["x-partner-token"] == LITERAL_TOKEN
    assert headers["x-rotated-token"] == MAPPED_TOKEN  # set, then rewritten by `map`
    assert headers["authorization"] == "Bearer upstream-key"
    assert CLIENT_KEY not in repr(headers)


def test_headers_stage_without_the_client_header_leaves_it_out(gateway, fake) -> None:
    response = chat(gateway, {"model": "shaped-5", "messages": HELLO})
    assert response.status_code == 200, response.text
    (seen,) = fake.requests()
    assert "x-client-user" not in seen["headers"]  # the expr gave null: no header
    assert seen["headers"]["x-team"] == "platform"


def test_compile_and_explain_never_show_secret_header_values(config_dir) -> None:
    env = {"PARTNER_KEY": PARTNER_KEY}
    compiled = router("compile", "--config-dir", str(config_dir), env=env)
    explained = router("explain", "--config-dir", str(config_dir), "--model", "shaped-1", env=env)
    for run in (compiled, explained):
        assert run.code == 0, run.output
        # the steps are shown (so the checks below are not vacuous) ...
        assert "x-partner-api-key" in run.stdout and "x-partner-token" in run.stdout
        assert "x-rotated-token" in run.stdout
        assert "platform" in run.stdout and "***" in run.stdout
        # ... but not the values of secret-looking headers, set or mapped
        assert PARTNER_KEY not in run.output
        assert LITERAL_TOKEN not in run.output
        assert OLD_TOKEN not in run.output and MAPPED_TOKEN not in run.output


# ---- response stage -----------------------------------------------------------------------


def test_response_stage_rewrites_a_json_answer(oai, fake) -> None:
    completion = oai.chat.completions.create(model="shaped-6", messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there [shaped]"
    assert completion.system_fingerprint == "fp-pipeline"  # the fake sends fp_fake


def test_response_stage_rewrites_every_stream_chunk(oai, fake) -> None:
    deltas: list[str] = []
    chunks = 0
    with oai.chat.completions.stream(model="shaped-7", messages=HELLO) as stream:
        for event in stream:
            if event.type == "chunk":
                chunks += 1
                assert event.chunk.system_fingerprint == "fp-pipeline"
            elif event.type == "content.delta" and event.delta:  # the role chunk has ""
                deltas.append(event.delta)
        final = stream.get_final_completion()
    assert fake.last_request()["stream"] is True
    assert chunks >= 3
    assert len(deltas) >= 2, "the fake splits the reply into several deltas"
    assert all(delta.endswith("~") for delta in deltas)
    text = final.choices[0].message.content
    assert text == "".join(deltas)
    assert text.replace("~", "") == "echo: hello there"
    assert final.system_fingerprint == "fp-pipeline"


# ---- across protocols: Anthropic client, OpenAI Chat upstream ----------------------------


def test_request_stage_runs_on_the_clients_protocol_and_upstream_on_the_upstreams(
    claude, fake
) -> None:
    message = claude.messages.create(model="cross-1", max_tokens=1000, messages=HELLO)
    assert message.content[0].text.startswith("echo: hello there")
    body = upstream_body(fake)
    assert fake.requests()[0]["path"] == "/v1/chat/completions"
    # `system` is an Anthropic field: set by the request stage, translated to a message
    assert body["messages"] == [
        {"role": "system", "content": "pipeline system prompt"},
        {"role": "user", "content": "hello there"},
    ]
    assert "system" not in body
    assert body["temperature"] == 0.4
    # max_tokens capped in the Anthropic body, renamed in the Chat body
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    # seed exists only in Chat: an upstream-stage default, after translation
    assert body["seed"] == 11


def test_response_stage_runs_on_the_clients_protocol(claude) -> None:
    message = claude.messages.create(model="cross-2", max_tokens=100, messages=HELLO)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there [cross]"


def test_response_stage_rewrites_every_translated_stream_event(claude, fake) -> None:
    with claude.messages.stream(model="cross-3", max_tokens=100, messages=HELLO) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert fake.last_request()["stream"] is True
    assert len(deltas) >= 2
    assert all(delta.endswith("~") for delta in deltas)
    assert final.content[0].text == "".join(deltas)
    assert final.content[0].text.replace("~", "") == "echo: hello there"
    assert final.stop_reason == "end_turn"


def test_response_stage_rewrites_every_relayed_stream_event(claude, fake) -> None:
    with claude.messages.stream(model="relay-1", max_tokens=100, messages=HELLO) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    seen = fake.last_request()
    assert seen["path"] == "/v1/messages" and seen["stream"] is True
    assert seen["body"]["model"] == "claude-haiku-4-5"
    assert len(deltas) >= 2
    assert all(delta.endswith("+") for delta in deltas)
    assert final.content[0].text.replace("+", "") == "echo: hello there"
    assert final.id == "msg_from_pipeline"
    assert final.stop_reason == "end_turn"


# ---- failover: every target with its own pipeline ----------------------------------------


def test_each_failover_target_runs_its_own_pipeline(gateway, fake) -> None:
    fake.script({"status": 503})
    response = chat(gateway, {"model": "chain-1", "messages": HELLO, "max_tokens": 900})
    assert response.status_code == 200, response.text
    assert response.headers["x-router-attempts"] == "2"
    first, second = fake.requests()
    # the route's pipeline on the Chat target
    assert first["path"] == "/v1/chat/completions"
    assert first["body"]["temperature"] == 0.25 and first["body"]["seed"] == 7
    assert first["headers"]["x-team"] == "platform"
    # the target's own pipeline on the Anthropic one, from the client's original request
    assert second["path"] == "/v1/messages"
    body = second["body"]
    assert body["model"] == "claude-sonnet-4-6"
    assert body["temperature"] == 0.9  # not shape's 0.25
    assert body["max_tokens"] == 900  # shape's cap to 512 and rename did not run here
    assert body["top_k"] == 5
    assert body["metadata"] == {"user_id": "from-pipeline"}
    assert "seed" not in body
    assert second["headers"]["x-team"] == "claude-side"
    assert "x-partner-api-key" not in second["headers"]


def test_a_later_targets_request_stage_runs_after_a_translated_failure(claude, fake) -> None:
    fake.script({"status": 503})
    message = claude.messages.create(model="late-1", max_tokens=1000, messages=HELLO)
    assert message.content[0].text.startswith("echo:")
    first, second = fake.requests()
    assert "system" not in str(first["body"]) and first["body"]["max_tokens"] == 1000
    body = second["body"]
    assert body["seed"] == 11  # the upstream stage of `cross` ran ...
    assert body["messages"][0] == {"role": "system", "content": "pipeline system prompt"}
    assert body["temperature"] == 0.4
    assert body["max_completion_tokens"] == 64
