"""`router compile` shows the config as written, whatever the machine: `${...}` references
as written, literal secrets as `***`, nothing that depends on the environment or on which
credentials files exist. The generation, `router check`, `router explain` and
/provider_health still follow this machine's environment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router.compiler import compile_config, dump
from router.compiler.plan import redact_url
from router.config.interpolate import mask_literals
from router.testing import compile_plan
from tests.conftest import write_config
from tests.routercli import router

FILES = {
    "providers.yaml": """
        providers:
          openai-custom:
            type: openai-custom
            timeout: ${OPENAI_TIMEOUT:-30s}
            instances:
              - id: openai-1
                base_url: ${OPENAI_BASE_URL:-https://api.openai.com/v1}
                api_key: ${OPENAI_API_KEY}
                headers:
                  Authorization: "Bearer ${OPENAI_API_KEY}"
                  X-Api-Key: ""
                  X-Secret-Token: literal-header-token
                  X-Team: ${TEAM:-platform}
              - id: openai-2
                base_url: https://backup.example/v1
                api_key: literal-api-key
                proxy: http://ops:literal-proxy-password@proxy.internal:3128
          gemini-cli-oauth:
            type: gemini-cli-oauth
            instances:
              - id: gemini-1
                credentials: oauth/creds.json
                client_secret: literal-client-secret
                project: ${GEMINI_PROJECT:-}
          claudeCode-custom:
            type: claudeCode-custom
            instances:
              - id: local
                command: ${CLAUDE_COMMAND:-claude}
                env:
                  ANTHROPIC_BASE_URL: "${CLAUDE_CODE_BASE_URL:-}"
                  ANTHROPIC_AUTH_TOKEN: "${CLAUDE_CODE_TOKEN}"
          echo:
            type: echo
    """,
    "routes.yaml": """
        default: ${DEFAULT_PROVIDER:-echo}
        auth:
          api_keys: ["${TEAM_KEY}", literal-client-key]
        routes:
          - name: gpt
            match: { model: "gpt-*" }
            to: [openai-custom, echo]
            pipeline: tag
            strict: ${STRICT:-false}
          - name: gemini
            match: { model: "gemini-*" }
            to: gemini-cli-oauth
          - name: claude
            match: { model: opus }
            to: claudeCode-custom
    """,
    "pipelines/tag.yaml": """
        headers:
          - set: { x-partner-api-key: "${PARTNER_KEY}", x-team: "${TEAM:-platform}" }
          - set: { path: x-literal-token, value: literal-step-token }
    """,
    "oauth/creds.json": "{}",
}

# every variable the files reference, plus the two keys the server reads itself
ENV = {
    "OPENAI_API_KEY": "sk-env-openai-secret",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_TIMEOUT": "5s",
    "TEAM": "research",
    "GEMINI_PROJECT": "env-project",
    "CLAUDE_COMMAND": "/opt/env/claude",
    "CLAUDE_CODE_BASE_URL": "http://127.0.0.1:8",
    "CLAUDE_CODE_TOKEN": "sk-env-claude-token",
    "DEFAULT_PROVIDER": "openai-custom",
    "TEAM_KEY": "env-team-key",
    "STRICT": "true",
    "PARTNER_KEY": "sk-env-partner-key",
    "REQUIRED_API_KEY": "env-required-key",
    "ADMIN_API_KEY": "env-admin-key",
}
ENV_SECRETS = tuple(v for k, v in ENV.items() if k.endswith(("_KEY", "_TOKEN")))
LITERAL_SECRETS = (
    "literal-header-token",
    "literal-api-key",
    "literal-proxy-password",
    "literal-client-secret",
    "literal-client-key",
    "literal-step-token",
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "with-credentials", FILES)


@pytest.fixture
def without_credentials(config: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(config, tmp_path / "without-credentials")
    (copy / "oauth" / "creds.json").unlink()
    return copy


def test_compile_is_byte_identical_whatever_the_environment_and_credentials_files(
    config: Path, without_credentials: Path, tmp_path: Path
) -> None:
    bare = router("compile", "--config-dir", str(config), env={})
    full = router(
        "compile",
        "--config-dir",
        str(without_credentials),
        env={**ENV, "HOME": str(tmp_path)},
    )
    assert bare.code == 0 and bare.stderr == "", bare.output
    assert full.code == 0 and full.stderr == "", full.output
    assert full.stdout == bare.stdout
    # the pytest helper gives the same text, whatever `env` it compiles with
    assert compile_plan(config) == bare.stdout
    assert compile_plan(without_credentials, env=ENV) == bare.stdout


def test_each_variable_alone_leaves_the_dump_unchanged(config: Path) -> None:
    plan, _ = compile_config(config, env={})
    assert plan is not None
    expected = dump(plan)
    for name, value in ENV.items():
        other, diagnostics = compile_config(config, env={name: value})
        assert other is not None, diagnostics
        assert dump(other) == expected, name


def test_references_are_shown_as_written(config: Path, snapshot) -> None:
    text = compile_plan(config, env=ENV)
    for line in (
        "default: ${DEFAULT_PROVIDER:-echo}",
        "api_keys: ['${TEAM_KEY}', '***']",
        "admin_keys: []",
        "timeout: ${OPENAI_TIMEOUT:-30s}",
        "base_url: ${OPENAI_BASE_URL:-https://api.openai.com/v1}",
        "api_key: ${OPENAI_API_KEY}",
        "Authorization: Bearer ${OPENAI_API_KEY}",
        "X-Team: ${TEAM:-platform}",
        "project: ${GEMINI_PROJECT:-}",
        "command: ${CLAUDE_COMMAND:-claude}",
        "ANTHROPIC_AUTH_TOKEN: ${CLAUDE_CODE_TOKEN}",
        "ANTHROPIC_BASE_URL: ${CLAUDE_CODE_BASE_URL:-}",  # empty here: the Plan drops it
        "x-partner-api-key: ${PARTNER_KEY}",
        "strict: ${STRICT:-false}",
        "credentials: oauth/creds.json",
    ):
        assert f"{line}\n" in text, line
    assert text == snapshot


def test_literal_secrets_are_masked_and_values_from_the_environment_never_shown(
    config: Path,
) -> None:
    text = compile_plan(config, env=ENV)
    for line in (
        "api_key: '***'",
        "X-Api-Key: '***'",  # empty, but written literally
        "X-Secret-Token: '***'",
        "proxy: http://ops:***@proxy.internal:3128",
        "client_secret: '***'",
        "value: '***'",
    ):
        assert f"{line}\n" in text, line
    for secret in (*LITERAL_SECRETS, *ENV_SECRETS):
        assert secret not in text


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("${KEY}", "${KEY}"),
        ("Bearer ${KEY}", "Bearer ${KEY}"),  # an auth scheme word is not the secret
        ("${KEY:-sk-default-in-the-file}", "${KEY:-***}"),  # a default is written literally
        ("${KEY:-}", "${KEY:-}"),
        ("sk-prefix-${KEY}", "***${KEY}"),
        ("${A}:${B:-pw}", "${A}***${B:-***}"),
        ("literal$$dollar", "***"),
    ],
)
def test_a_secret_shows_its_references_but_nothing_written_literally(
    written: str, shown: str
) -> None:
    assert mask_literals(written, "***") == shown


def test_machine_state_is_left_out(config: Path, without_credentials: Path) -> None:
    for directory in (config, without_credentials):
        for env in ({}, ENV):
            text = compile_plan(directory, env=env)
            for word in ("available", "unconfigured", "inactive", "skipped"):
                assert word not in text
            assert "api_keys: ['${TEAM_KEY}', '***']\n" in text  # not REQUIRED_API_KEY
            assert "admin_keys: []\n" in text  # not ADMIN_API_KEY


@pytest.mark.parametrize(
    "change",
    [
        {"OPENAI_API_KEY": "sk-rotated"},  # a secret
        {"OPENAI_BASE_URL": "http://127.0.0.1:10/v1"},  # a value with a default
        {"REQUIRED_API_KEY": "another-client-key"},  # a key only the environment has
    ],
    ids=["secret", "plain-value", "environment-key"],
)
def test_the_generation_still_follows_the_environment(config: Path, change: dict) -> None:
    plan, _ = compile_config(config, env=ENV)
    same, _ = compile_config(config, env=dict(ENV))
    changed, _ = compile_config(config, env={**ENV, **change})
    assert plan and same and changed
    assert plan.generation == same.generation
    assert changed.generation != plan.generation
    assert dump(changed) == dump(plan)


def test_the_generation_follows_the_credentials_file(
    config: Path, without_credentials: Path
) -> None:
    present, _ = compile_config(config, env=ENV)
    missing, _ = compile_config(without_credentials, env=ENV)
    assert present and missing
    assert present.generation != missing.generation
    assert dump(present) == dump(missing)


def test_check_explain_and_provider_health_still_show_this_machines_state(
    without_credentials: Path,
) -> None:
    from router.server.management import provider_health_document

    check = router("check", "--config-dir", str(without_credentials), env={})
    assert "instance 'openai-1' of provider 'openai-custom' is unconfigured" in check.stdout
    assert "credentials file 'oauth/creds.json' does not exist" in check.stdout
    assert "route 'gemini' is inactive" in check.stdout

    explain = router("explain", "--config-dir", str(without_credentials), "--model", "gpt-4o")
    assert "openai-1 (unconfigured: OPENAI_API_KEY)" in explain.stdout
    with_key = router(
        "explain", "--config-dir", str(without_credentials), "--model", "gpt-4o", env=ENV
    )
    assert with_key.code == 0 and "unconfigured" not in with_key.stdout
    gemini = router("explain", "--config-dir", str(without_credentials), "--model", "gemini-x")
    assert "gemini (routes.yaml:10:5): skipped: matches" in gemini.stdout
    assert "but is inactive" in gemini.stdout

    for env, configured in (({}, False), (ENV, True)):
        plan, _ = compile_config(without_credentials, env=env)
        assert plan is not None
        document = provider_health_document(plan)
        (first, _) = document["providers"]["openai-custom"]["instances"]
        assert first["configured"] is configured
        assert first["missing_env"] == ([] if configured else ["OPENAI_API_KEY"])
        assert document["generation"] == plan.generation


URL_OPTIONS = {
    "providers.yaml": """
        providers:
          gemini-antigravity:
            type: gemini-antigravity
            options:
              token_url: https://oauth.example/token?key=literal-pool-token-key
            instances:
              - id: ag-1
                credentials: oauth/ag.json
                base_urls:
                  - https://ops:literal-base-password@daily.example
                  - "https://backup.example/v1?api_key=${AG_KEY}&region=eu"
                  - "https://${AG_HOST:-ag.example}/v1?key=literal-query-key"
                auth_url: https://accounts.example/auth?key=literal-auth-key
    """,
    "routes.yaml": """
        default: gemini-antigravity
        routes:
          - name: gemini
            match: { model: "gemini-*" }
            to: gemini-antigravity
    """,
    "oauth/ag.json": "{}",
}


def test_url_options_hide_passwords_and_secret_query_values(tmp_path: Path) -> None:
    config = write_config(tmp_path, URL_OPTIONS)
    text = compile_plan(config, env={"AG_KEY": "sk-env-ag-key"})
    for line in (
        "token_url: https://oauth.example/token?key=***",
        "base_urls: ['https://ops:***@daily.example',"
        " 'https://backup.example/v1?api_key=${AG_KEY}&region=eu',"
        " 'https://${AG_HOST:-ag.example}/v1?key=***']",
        "auth_url: https://accounts.example/auth?key=***",
    ):
        assert f"{line}\n" in text, line
    for secret in (
        "literal-pool-token-key",
        "literal-base-password",
        "literal-query-key",
        "literal-auth-key",
    ):
        assert secret not in text
    assert "sk-env-ag-key" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ops:pw@host/v1", "https://ops:***@host/v1"),
        ("https://host/v1?key=k&alt=sse", "https://host/v1?key=***&alt=sse"),
        ("https://host/v1?api%5Fkey=k&q=a%20b", "https://host/v1?api%5Fkey=***&q=a%20b"),
        ("https://host/v1?flag&token=", "https://host/v1?flag&token=***"),
        ("https://host/v1", "https://host/v1"),
    ],
)
def test_redact_url_hides_only_secrets_and_keeps_the_rest_as_written(url: str, shown: str) -> None:
    assert redact_url(url) == shown
