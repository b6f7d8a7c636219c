"""The `router` CLI as a subprocess: explain, test, and the serve delegation."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from router import cli
from tests.routercli import FIXTURES, clean_env, copy_shipped, router


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_shipped(tmp_path_factory.mktemp("cli") / "shipped")


EXPLAIN_CASES = {
    "gpt-no-credentials": ([ "--model", "gpt-4o"], {}),
    "gpt-anthropic-client-with-key": (
        ["--model", "gpt-4o", "--protocol", "anthropic"],
        {"OPENAI_API_KEY": "sk-secret-value", "CLAUDE_API_KEY": "sk-ant-secret"},
    ),
    "claude-code-alias-from-path": (["--model", "opus", "--path", "/v1/messages"], {}),
    "gemini-model-from-path": (["--path", "/v1beta/models/gemini-2.5-pro:generateContent"], {}),
    "path-prefix": (["--model", "gpt-4o", "--path", "/claudeCode-custom/v1/chat/completions"], {}),
    "header-override": (["--model", "opus", "--header", "Model-Provider: echo"], {}),
    "unknown-header-provider": (["--model", "opus", "--header", "Model-Provider: nope"], {}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(EXPLAIN_CASES))
def test_explain(shipped: Path, case: str, snapshot) -> None:
    args, env = EXPLAIN_CASES[case]
    run = router("explain", "--config-dir", str(shipped), *args, env=env)
    assert run.code == 0, run.output
    assert run.output == snapshot
    for secret in env.values():
        assert secret not in run.stdout


def test_explain_with_a_body_and_when_conditions(tmp_path: Path, snapshot) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user"}] * 41}))
    run = router(
        "explain", "--config-dir", str(FIXTURES / "failover"), "--body", str(body),
        "--header", "X-User: grace",
    )  # fmt: skip
    assert run.code == 0, run.output
    assert run.output == snapshot


def test_explain_agrees_with_the_resolution_for_every_shipped_test_case(shipped: Path) -> None:
    cases = [("gpt-4o", "default"), ("opus", "claude-code"), ("gemini-2.5-pro", "default")]
    for model, route in cases:
        run = router("explain", "--config-dir", str(shipped), "--model", model)
        assert f"=> route {route!r}" in run.stdout


def test_explain_usage_errors(shipped: Path) -> None:
    bad_header = router("explain", "--config-dir", str(shipped), "--model", "x", "--header", "x")
    assert bad_header.code == 2
    run = router("explain", "--config-dir", str(shipped))
    assert run.code == 2 and "no model given" in run.stderr


def test_router_test_passes_on_the_shipped_config(shipped: Path, snapshot) -> None:
    run = router("test", "--config-dir", str(shipped))
    assert run.code == 0, run.output
    assert run.output == snapshot


def test_router_test_reports_each_failure(shipped: Path, tmp_path: Path, snapshot) -> None:
    cases = tmp_path / "failing.yaml"
    cases.write_text(
        textwrap.dedent(
            """
            - name: passes
              request: { model: opus }
              expect: { route: claude-code }
            - name: wrong route and provider
              request: { model: gpt-4o }
              expect: { route: gpt, provider: openai-custom, model: gpt-4o }
            - name: wrong chain
              request: { model: sonnet }
              expect: { chain: [claudeCode-custom] }
            - name: field after mapping
              request: { model: haiku, body: { temperature: 1, top_k: 3, max_tokens: 5 } }
              expect: { fields: { max_tokens: 5, temperature: 1, "length(keys(@))": 2 } }
            - name: expected an error
              request: { model: opus }
              expect: { error: 400 }
            - name: unexpected rejection
              request: { model: opus, headers: { model-provider: missing } }
              expect: { route: claude-code }
            - name: with a key it passes
              env: { OPENAI_API_KEY: sk-test }
              request: { model: gpt-4o }
              expect: { route: gpt, provider: openai-custom }
            """
        )
    )
    run = router("test", "--config-dir", str(shipped), str(cases), cwd=tmp_path)
    assert run.code == 1
    assert run.output.replace(str(tmp_path), "<tmp>") == snapshot


def test_router_test_rejects_a_malformed_test_file(shipped: Path, tmp_path: Path) -> None:
    cases = tmp_path / "bad.yaml"
    cases.write_text("- name: x\n  request: { modle: gpt-4o }\n  expect: {}\n")
    run = router("test", "--config-dir", str(shipped), "bad.yaml", cwd=tmp_path)
    assert run.code == 1
    unknown = "bad.yaml:2:14: error: unknown key 'modle' in [0].request; did you mean 'model'?"
    assert unknown in run.stdout
    assert "bad.yaml:3:11: error: [0].expect: must not be empty" in run.stdout


def test_router_test_reports_a_broken_config(tmp_path: Path) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "providers.yaml").write_text("providers:\n  echo: {type: echo}\n")
    (directory / "routes.yaml").write_text("default: nope\n")
    (directory / "routes.test.yaml").write_text(
        "- {name: a, request: {model: x}, expect: {provider: echo}}\n"
    )
    run = router("test", "--config-dir", str(directory))
    assert run.code == 1
    assert run.stdout.splitlines() == [
        "routes.yaml:1:10: error: default: unknown provider 'nope'",
        "FAIL a: the config does not compile (1 error)",
        "0 passed, 1 failed",
    ]


def test_module_entry_points_and_help() -> None:
    for module in ("router", "router.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], env=clean_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0
        for command in ("serve", "check", "compile", "explain", "test"):
            assert command in done.stdout


def test_serve_delegates_to_the_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []
    fake = types.ModuleType("router.server.serve")

    def serve(config_dir: str, host: str, port: int, workers: int, state_dir: str | None) -> int:
        calls.append((config_dir, host, port, workers, state_dir))
        return 7

    fake.main = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "router.server.serve", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    argv = ["serve", "--config-dir", "conf", "--port", "8080", "--workers", "2"]
    assert cli.main([*argv, "--state-dir", "st"]) == 7
    assert cli.main(["serve"]) == 7
    assert calls == [("conf", "127.0.0.1", 8080, 2, "st"), (".", "127.0.0.1", 3000, 1, None)]
