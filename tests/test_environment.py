"""The seed's set-up carries over: `.env` in the working directory (the real environment
wins), and the seed's environment names in the shipped config, documented in README."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from router.compiler import compile_config
from router.compiler.plan import Plan
from router.providers.code_assist import DEFAULT_BASE, CodeAssistAdapter
from tests.conftest import REPO, copy_shipped_config, write_config
from tests.fakes import FakeProxy, FakeUpstream
from tests.gateway import Gateway, clean_env, free_port
from tests.routercli import router

SEED_NAMES = {
    "REQUIRED_API_KEY",
    "MODEL_PROVIDER",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CLAUDE_API_KEY",
    "CLAUDE_BASE_URL",
    "GEMINI_BASE_URL",
    "GEMINI_API_BASE_URL",
    "GEMINI_API_KEY",
    "PROMPT_LOG_MODE",
    "PROMPT_LOG_FILENAME",
    "USE_SYSTEM_PROXY_GEMINI",
    "USE_SYSTEM_PROXY_OPENAI",
    "USE_SYSTEM_PROXY_CLAUDE",
}
PROXY_SWITCHES = {
    "USE_SYSTEM_PROXY_OPENAI": {"openai-custom", "openaiResponses-custom"},
    "USE_SYSTEM_PROXY_CLAUDE": {"claude-custom"},
    "USE_SYSTEM_PROXY_GEMINI": {"gemini-api", "gemini-cli-oauth"},
}


# --- .env ----------------------------------------------------------------------------


@contextmanager
def serve_from(cwd: Path, config_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """`router serve` started in `cwd`, as an operator would from a shell; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "router.cli", "serve", "--config-dir", str(config_dir)]
    log = cwd / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=cwd,
            env=clean_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def status_with_key(url: str, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers).status_code


@pytest.mark.parametrize(
    ("real_env", "effective"),
    [({}, "key-from-dotenv"), ({"REQUIRED_API_KEY": "key-from-env"}, "key-from-env")],
    ids=["from-the-file", "the-environment-wins"],
)
def test_dotenv_in_the_working_directory_sets_the_client_key(
    tmp_path: Path, real_env: dict[str, str], effective: str
) -> None:
    config = copy_shipped_config(tmp_path / "config")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("# the seed's set-up\nREQUIRED_API_KEY=key-from-dotenv\n")
    with serve_from(work, config, real_env) as url:
        assert status_with_key(url, effective) == 200
        assert status_with_key(url, None) == 401
        other = "key-from-env" if effective == "key-from-dotenv" else "key-from-dotenv"
        assert status_with_key(url, other) == 401


def test_dotenv_is_read_by_every_command(tmp_path: Path) -> None:
    config = copy_shipped_config(tmp_path / "config")
    unconfigured = "instance 'openai-1' of provider 'openai-custom' is unconfigured"
    without = router("check", "--config-dir", str(config), cwd=tmp_path)
    assert without.code == 0 and unconfigured in without.stdout
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nMODEL_PROVIDER=claude-custom\n")
    checked = router("check", "--config-dir", str(config), cwd=tmp_path)
    assert checked.code == 0 and unconfigured not in checked.stdout
    explained = router("explain", "--config-dir", str(config), "--model", "x", cwd=tmp_path)
    assert explained.code == 0 and "4. default: claude-custom\n" in explained.stdout


def test_an_unreadable_dotenv_is_reported_not_fatal(tmp_path: Path) -> None:
    config = copy_shipped_config(tmp_path / "config")
    (tmp_path / ".env").write_bytes(b"OPENAI_API_KEY=\xff\xfe\n")
    checked = router("check", "--config-dir", str(config), cwd=tmp_path)
    assert checked.code == 0, checked.output
    assert "router: .env not loaded" in checked.stderr


# --- the shipped config's variables ----------------------------------------------------


def shipped_plan(env: dict[str, str]) -> Plan:
    plan, diagnostics = compile_config(REPO, env=env)
    assert plan is not None, diagnostics
    return plan


def proxies(plan: Plan) -> dict[str, set[object]]:
    return {
        name: {instance.proxy for instance in provider.instances}
        for name, provider in plan.providers.items()
        if provider.instances
    }


def test_proxy_follows_the_system_proxy_when_the_switches_are_unset() -> None:
    assert set().union(*proxies(shipped_plan({})).values()) == {None}


@pytest.mark.parametrize("variable", sorted(PROXY_SWITCHES))
@pytest.mark.parametrize(("value", "proxy"), [("false", False), ("False", False), ("true", None)])
def test_each_proxy_switch_sets_its_own_pools(variable: str, value: str, proxy: object) -> None:
    seen = proxies(shipped_plan({variable: value}))
    for name, values in seen.items():
        assert values == ({proxy} if name in PROXY_SWITCHES[variable] else {None}), name


def test_proxy_accepts_quoted_true_and_false_and_rejects_other_words(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "providers.yaml": """
                providers:
                  quoted:
                    type: openai-custom
                    proxy: "${FLAG:-true}"
                    instances:
                      - { id: a, base_url: "http://127.0.0.1:9/v1" }
                      - { id: b, base_url: "http://127.0.0.1:9/v1", proxy: "FALSE" }
                      - { id: c, base_url: "http://127.0.0.1:9/v1", proxy: "http://p:3128" }
            """,
            "routes.yaml": "default: quoted\n",
        },
    )
    plan, _ = compile_config(tmp_path, env={"FLAG": "false"})
    assert plan is not None
    assert [i.proxy for i in plan.providers["quoted"].instances] == [False, False, "http://p:3128"]
    plan, diagnostics = compile_config(tmp_path, env={"FLAG": "nope"})
    assert plan is None
    assert any("expected true, false or a proxy URL" in str(d) for d in diagnostics)


def test_the_proxy_switches_work_end_to_end(tmp_path: Path) -> None:
    with FakeUpstream.start() as fake, FakeProxy.start() as proxy:
        env = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake.url + "/v1",
            "CLAUDE_API_KEY": "sk-ant-test",
            "CLAUDE_BASE_URL": fake.url,
            "HTTP_PROXY": proxy.url,
            "NO_PROXY": "",  # the system proxy, loopback included
            "USE_SYSTEM_PROXY_CLAUDE": "false",
        }
        with Gateway(copy_shipped_config(tmp_path), env=env) as gateway:
            for model in ("gpt-4o", "claude-sonnet-4-5"):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                response = httpx.post(gateway.url + "/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
        targets = [entry["target"] for entry in proxy.log()]
        paths = [request["path"] for request in fake.requests()]
    assert targets == [fake.url + "/v1/chat/completions"]  # OpenAI through the proxy
    assert paths == ["/v1/chat/completions", "/v1/messages"]  # Claude went direct


def test_gemini_cli_oauth_keeps_the_code_assist_host_unless_told() -> None:
    for env, host in [
        ({}, DEFAULT_BASE),
        ({"GEMINI_BASE_URL": "https://ca.test/"}, "https://ca.test"),
    ]:
        provider = shipped_plan(env).providers["gemini-cli-oauth"]
        account = CodeAssistAdapter().build_account(provider, provider.instances[0])
        assert account.base_urls == (host,)


# --- README -------------------------------------------------------------------------


def documented_names() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Environment variables of the shipped config", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def referenced_names() -> set[str]:
    files = [REPO / "providers.yaml", REPO / "routes.yaml", *(REPO / "pipelines").glob("*.yaml")]
    names: set[str] = set()
    for file in files:
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", repr(yaml.safe_load(file.read_text()))))
    return names


def test_readme_documents_the_seed_names_and_every_variable_the_shipped_config_reads() -> None:
    documented = documented_names()
    assert "USE_SYSTEM_PROXY_OPENAI" in referenced_names()
    assert referenced_names() - documented == set()
    assert SEED_NAMES - documented == set()
