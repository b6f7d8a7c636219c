"""The real Claude Code CLI as a client: it talks Anthropic Messages to the gateway,
which routes to a fake OpenAI Chat upstream."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.claude_cli import find_claude, isolated_env
from tests.conftest import write_config
from tests.fakes import FakeUpstream

CLAUDE = find_claude()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CLAUDE is None, reason="Claude Code CLI not installed (see README test command)"
    ),
]


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream.start(api_key="upstream-key") as upstream:
        yield upstream


@pytest.fixture
def gateway(fake, tmp_path, start_gateway):
    directory = write_config(
        tmp_path / "config",
        {
            "providers.yaml": f"""
                providers:
                  chat:
                    type: openai-custom
                    instances:
                      - id: chat-1
                        base_url: {fake.url}/v1
                        api_key: upstream-key
            """,
            "routes.yaml": "default: chat\n",
        },
    )
    return start_gateway(directory)


def run_claude(gateway, tmp_path, prompt: str) -> list[dict]:
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "stream-json", "--verbose"],
        env=isolated_env(str(home), gateway.url),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:] + gateway.log()[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_claude_code_completes_a_turn_through_an_openai_upstream(gateway, fake, tmp_path):
    fake.reset()
    lines = run_claude(gateway, tmp_path, "say hello to the gateway")
    result = lines[-1]
    assert result["type"] == "result" and result["subtype"] == "success", result
    assert result["is_error"] is False
    assert result["result"].startswith("echo: ") and result["result"].endswith(
        "say hello to the gateway"
    )
    assert result["usage"]["output_tokens"] > 0

    turns = [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]
    assert turns, "the turn must reach the OpenAI upstream"
    body = turns[-1]["body"]
    assert body["stream"] is True
    assert len(body["tools"]) >= 10, "Claude Code's tools are translated to OpenAI function tools"
    assert all(t["type"] == "function" and t["function"]["name"] for t in body["tools"])
    # Claude Code's top-level system prompt and its in-conversation system message survive
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] in ("system", "developer") and "user" in roles
    assert turns[-1]["status"] == 200 and turns[-1]["completed"] is True
