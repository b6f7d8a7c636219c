"""`router check`: every problem reported as file:line:col, snapshot per broken config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.routercli import FIXTURES, copy_shipped, router

BROKEN = sorted(p.name for p in (FIXTURES / "broken").iterdir() if p.is_dir())
STRICT = {"missing-env"}  # checked with --strict: the unset variable must fail the check


def test_every_broken_config_has_a_snapshot_case() -> None:
    assert len(BROKEN) >= 10
    assert {
        "unknown-key",
        "bad-type",
        "bad-glob",
        "bad-jmespath",
        "dangling-provider",
        "duplicate-name",
        "shadowed-route",
        "missing-env",
        "bad-duration",
        "yaml-syntax",
        "bad-path",
    } <= set(BROKEN)


@pytest.mark.parametrize("name", BROKEN)
def test_check_broken_config(name: str, snapshot) -> None:
    args = ["check", "--config-dir", str(FIXTURES / "broken" / name)]
    if name in STRICT:
        args.append("--strict")
    run = router(*args)
    assert run.output == snapshot
    if name != "shadowed-route":  # shadowing is a warning: the config still compiles
        assert run.code == 1
    assert run.stderr == ""


def test_missing_env_is_only_a_warning_without_strict() -> None:
    run = router("check", "--config-dir", str(FIXTURES / "broken" / "missing-env"))
    assert run.code == 0
    assert "warning: instance 'openai-1' of provider 'openai-custom' is unconfigured" in run.stdout
    assert "0 errors, 3 warnings" in run.stdout


def test_missing_env_is_satisfied_by_the_environment() -> None:
    run = router(
        "check",
        "--strict",
        "--config-dir",
        str(FIXTURES / "broken" / "missing-env"),
        env={"ROUTER_TEST_MISSING_KEY": "sk-set", "ROUTER_TEST_TEAM": "platform"},
    )
    assert run.code == 0, run.output
    assert run.stdout.startswith("0 errors, 0 warnings; generation ")


def test_check_shipped_config_without_credentials(tmp_path: Path, snapshot) -> None:
    run = router("check", "--config-dir", str(copy_shipped(tmp_path / "shipped")))
    assert run.code == 0
    assert run.output == snapshot


def test_check_shipped_config_strict_fails_on_unconfigured(tmp_path: Path) -> None:
    run = router("check", "--strict", "--config-dir", str(copy_shipped(tmp_path / "shipped")))
    assert run.code == 1
    assert "error: instance 'openai-1' of provider 'openai-custom' is unconfigured" in run.stdout


def test_check_shipped_config_strict_passes_with_every_credential(tmp_path: Path) -> None:
    directory = copy_shipped(tmp_path / "shipped")
    credentials = directory / "configs" / "gemini" / "oauth_creds.json"
    credentials.parent.mkdir(parents=True)
    credentials.write_text("{}")
    env = {"OPENAI_API_KEY": "sk-1", "CLAUDE_API_KEY": "sk-2", "GEMINI_API_KEY": "g-3"}
    run = router("check", "--strict", "--config-dir", str(directory), env=env)
    assert run.code == 0, run.output


def test_fixture_configs_check_clean() -> None:
    run = router("check", "--strict", "--config-dir", str(FIXTURES / "minimal"))
    assert (run.code, run.stdout.split(";")[0]) == (0, "0 errors, 0 warnings")
    run = router("check", "--config-dir", str(FIXTURES / "anchors"))
    assert run.code == 0, run.output
    assert "0 errors, 1 warning;" in run.stdout  # local-b is disabled: its route is inactive
