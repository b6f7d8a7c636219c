"""Defects a new user hit, each with the test that failed on the code before the fix: the
shipped gemini-api URL, deep JSON, two servers on one port, an unconfigured pool's
error, the config watcher waking on the gateway's own writes, OpenAI's model rules on
the Responses side (with the real Claude Code CLI as the client), and smaller ones."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from router.compiler import compile_config
from router.providers.base import Call
from router.providers.registry import adapter_for
from tests.claude_cli import find_claude, isolated_env
from tests.conftest import REPO, write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway, clean_env

PROMPT = [{"role": "user", "content": "hello"}]
ROUTER = [sys.executable, "-m", "router.cli"]
CLAUDE = find_claude()


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    directory = write_config(
        tmp_path_factory.mktemp("hardening"),
        {
            "providers.yaml": f"""
                providers:
                  echo: {{ type: echo }}
                  gemini-host:
                    type: gemini-api
                    instances:
                      - {{ id: gh-1, base_url: "{fake.url}", api_key: upstream-key }}
                  openai-custom:
                    type: openai-custom
                    instances:
                      - {{ id: unset-1, base_url: "{fake.url}/v1", api_key: "${{NO_SUCH_KEY}}" }}
                  chat:
                    type: openai-custom
                    instances:
                      - {{ id: chat-1, base_url: "{fake.url}/v1", api_key: upstream-key }}
                  responses:
                    type: openaiResponses-custom
                    instances:
                      - {{ id: responses-1, base_url: "{fake.url}/v1", api_key: upstream-key }}
            """,
            "routes.yaml": """
                default: echo
                routes:
                  - { name: to-gemini, match: { model: "gemini-*" }, to: gemini-host }
                  - name: chat-4o
                    match: { model: chat-4o }
                    to: { provider: chat, model: gpt-4o }
                  - name: responses-4o
                    match: { model: responses-4o }
                    to: { provider: responses, model: gpt-4o }
            """,
        },
    )
    with Gateway(directory) as gateway:
        yield gateway


def chat(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=20)


# --- 1. gemini-api's base URL ----------------------------------------------------------


def test_gemini_api_takes_a_host_without_the_api_version(gateway, fake) -> None:
    fake.reset()
    answer = chat(gateway).chat.completions.create(model="gemini-2.5-flash", messages=PROMPT)
    assert answer.choices[0].message.content
    assert fake.last_request()["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_the_shipped_gemini_api_pool_calls_the_v1beta_api() -> None:
    plan, diagnostics = compile_config(str(REPO), env={"GEMINI_API_KEY": "k"})
    assert plan is not None, diagnostics
    provider = plan.providers["gemini-api"]
    [instance] = provider.instances
    call = Call(provider=provider, instance=instance, model="gemini-2.5-pro", stream=False)
    url = adapter_for(provider).url(call)  # type: ignore[union-attr]
    assert url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
    )


# --- 2. deep JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": PROMPT}),
        ("/v1/responses", {"model": "m", "input": "hi"}),
        ("/v1/messages", {"model": "m", "max_tokens": 8, "messages": PROMPT}),
        ("/v1beta/models/m:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}),
        ("/v1/messages/count_tokens", {"model": "m", "messages": PROMPT}),
        ("/v1beta/models/m:countTokens", {"contents": [{"parts": [{"text": "hi"}]}]}),
    ],
)
def test_deeply_nested_json_is_a_400(gateway, path: str, body: dict) -> None:
    deep = "[" * 5000 + "]" * 5000
    raw = json.dumps(body)[:-1] + f', "metadata": {{"deep": {deep}}}}}'
    response = httpx.post(
        gateway.url + path, content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "Traceback" not in gateway.log() and "RecursionError" not in gateway.log()


# --- 3. one server per address ---------------------------------------------------------


def test_a_second_server_on_a_taken_port_refuses_to_start(gateway, tmp_path) -> None:
    second = subprocess.run(
        [*ROUTER, "serve", "--config-dir", str(gateway.config_dir), "--port", str(gateway.port)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert f"127.0.0.1:{gateway.port} is already in use" in second.stderr
    assert gateway.health()["status"] == "ok"  # the first one serves on


# --- 4. an unconfigured pool -----------------------------------------------------------


def test_an_unconfigured_pool_says_what_is_missing(gateway) -> None:
    response = httpx.post(
        gateway.url + "/openai-custom/v1/chat/completions",
        json={"model": "gpt-4o", "messages": PROMPT},
    )
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert message == "provider openai-custom has no configured instance (NO_SUCH_KEY is not set)"
    assert response.headers["x-router-attempts"] == "0"
    health = httpx.get(gateway.url + "/provider_health").json()
    [instance] = health["providers"]["openai-custom"]["instances"]
    assert instance["failures"] == 0 and instance["last_error"] is None


# --- 5. the config watcher -------------------------------------------------------------


def test_the_watcher_ignores_the_gateways_own_writes(tmp_path) -> None:
    directory = write_config(
        tmp_path / "config",
        {
            "providers.yaml": "providers:\n  echo: { type: echo }\n",
            "routes.yaml": "default: echo\n",
        },
    )
    with Gateway(directory) as gateway:
        generation = gateway.health()["generation"]
        before = gateway.log().count("\n")
        log_file = directory / "gateway.log"
        state = directory / ".router"
        state.mkdir()
        with log_file.open("a") as out:
            for i in range(30):  # a log line every 50 ms for 1.5 s, and state writes
                out.write(f"line {i}\n")
                out.flush()
                (state / "router.db").write_bytes(b"x" * i)
                time.sleep(0.05)
        time.sleep(1.5)  # past the debounce and one poll
        assert gateway.log().count("\n") == before, gateway.log()
        assert gateway.health()["generation"] == generation
        # the config itself is still watched
        routes = "default: echo\nroutes:\n  - { name: new, match: { model: x }, to: echo }\n"
        (directory / "routes.yaml").write_text(routes)
        deadline = time.monotonic() + 10
        while gateway.health()["generation"] == generation:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)


# --- 7. OpenAI's model rules on both OpenAI builders ------------------------------------


@pytest.mark.parametrize("model", ["chat-4o", "responses-4o"])
def test_reasoning_and_a_long_user_are_dropped_for_gpt_4o(gateway, fake, model: str) -> None:
    fake.reset()
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "user_" + "a" * 145},
        messages=PROMPT,
    )
    assert raw.parse().content
    assert set(raw.headers["x-router-dropped"].split(",")) >= {"reasoning", "user"}
    body = fake.last_request()["body"]
    assert body["model"] == "gpt-4o"
    assert not {"reasoning", "reasoning_effort", "include", "user"} & set(body)


@pytest.mark.slow
@pytest.mark.skipif(CLAUDE is None, reason="Claude Code CLI not installed")
def test_claude_code_through_the_gateway_to_a_responses_upstream(gateway, fake, tmp_path):
    fake.reset()
    home = tmp_path / "home"
    home.mkdir()
    env = isolated_env(
        str(home), gateway.url, ANTHROPIC_MODEL="responses-4o", MAX_THINKING_TOKENS="4096"
    )
    result = subprocess.run(
        [CLAUDE, "-p", "say hello", "--output-format", "json"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr + gateway.log()[-3000:]
    assert json.loads(result.stdout)["is_error"] is False
    turns = [r for r in fake.requests() if r["path"] == "/v1/responses"]
    assert turns
    sent = turns[-1]["body"]
    assert sent["model"] == "gpt-4o"
    assert "reasoning" not in sent and "include" not in sent
    assert len(sent.get("user", "")) <= 64


# --- 8. smaller ones ---------------------------------------------------------------------


def test_a_model_that_is_not_a_string(gateway) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": 7, "messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "`model` must be a string"


def test_an_anthropic_request_needs_max_tokens(gateway) -> None:
    # the SDK will not send one without it; curl would
    response = httpx.post(gateway.url + "/v1/messages", json={"model": "echo", "messages": PROMPT})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]


def test_echo_ids_are_unique(gateway) -> None:
    first = chat(gateway).chat.completions.create(model="echo", messages=PROMPT)
    second = chat(gateway).chat.completions.create(model="echo", messages=PROMPT)
    assert first.id != second.id
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    calls = [
        chat(gateway)
        .chat.completions.create(model="echo", messages=PROMPT, tools=tools, tool_choice="required")
        .choices[0]
        .message.tool_calls
        for _ in range(2)
    ]
    assert calls[0] and calls[1] and calls[0][0].id != calls[1][0].id


def router(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROUTER, *args], capture_output=True, text=True, timeout=30)


def test_the_cli_has_a_version_and_shows_defaults(tmp_path: Path) -> None:
    version = router("--version")
    assert version.returncode == 0 and version.stdout.startswith("router 0.")
    help_text = router("serve", "--help").stdout
    assert "(default: 3000)" in help_text and "(default: 127.0.0.1)" in help_text
    missing = tmp_path / "nowhere"
    checked = router("check", "--config-dir", str(missing))
    assert checked.returncode == 2
    assert f"config dir {missing} does not exist" in checked.stderr
