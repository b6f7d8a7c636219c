"""`router.testing`: the pytest helpers users import in their own repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.testing import ConfigError, check_config, compile_plan, run_route_tests
from tests.routercli import FIXTURES, clean_env, copy_shipped, router


def test_compile_plan_is_the_router_compile_output(snapshot) -> None:
    text = compile_plan(FIXTURES / "minimal")
    assert text == router("compile", "--config-dir", str(FIXTURES / "minimal")).stdout
    assert text == snapshot


def test_compile_plan_ignores_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-developer-shell")
    without = compile_plan(FIXTURES / "failover")
    assert "api_key: ${OPENAI_API_KEY}\n" in without  # as written, set or not
    assert "sk-from-the-developer-shell" not in without
    assert compile_plan(FIXTURES / "failover", env={"OPENAI_API_KEY": "sk-x"}) == without


def test_compile_plan_raises_with_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_plan(FIXTURES / "broken" / "unknown-key")
    message = str(caught.value)
    assert "did you mean 'timeout'?" in message
    assert "did you mean 'model'?" in message


def test_check_config_and_route_tests(tmp_path: Path) -> None:
    assert check_config(FIXTURES / "minimal", strict=True) == []
    assert check_config(FIXTURES / "broken" / "bad-glob")[0].startswith("routes.yaml:4:21: error:")
    shipped = copy_shipped(tmp_path / "shipped")
    assert run_route_tests(shipped) == []
    failing = tmp_path / "cases.yaml"
    failing.write_text("- {name: x, request: {model: opus}, expect: {provider: echo}}\n")
    assert run_route_tests(shipped, failing) == [
        "FAIL x: expected provider 'echo', got 'claudeCode-custom'"
    ]


def test_the_plugin_import_is_cheap() -> None:
    code = (
        "import sys, router.testing\n"
        "heavy = [m for m in ('yaml', 'jsonschema', 'jmespath', 'router.compiler') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr
