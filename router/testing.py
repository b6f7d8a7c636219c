"""Test helpers for configs in your own repository (a pytest plugin, loaded automatically
when the `router` package is installed).

Snapshot the compiled plan, so every routing change shows up in review:

    from router.testing import compile_plan

    def test_plan(snapshot):                     # syrupy's fixture
        assert compile_plan("config") == snapshot

    def test_routes():
        assert run_route_tests("config") == []   # routes.test.yaml: no failures

`compile_plan` returns the `router compile` dump, which shows `${...}` references as
written and leaves out what depends on the machine (unset variables, missing credentials
files, keys from REQUIRED_API_KEY), so the snapshot is the same everywhere. It compiles
with an empty environment unless you pass `env`, so whether the config compiles does not
depend on the machine either.

Importing this module is cheap and has no side effects: the compiler is imported on use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ConfigError", "check_config", "compile_plan", "run_route_tests"]


class ConfigError(AssertionError):
    """The config does not compile; the message lists every diagnostic."""


def compile_plan(
    config_dir: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> str:
    """The `router compile` dump of `config_dir`. Raises ConfigError listing every problem
    when the config does not compile."""
    from router.compiler import compile_config, dump

    plan, diagnostics = compile_config(config_dir, env={} if env is None else env)
    if plan is None:
        errors = "\n".join(str(d) for d in diagnostics)
        raise ConfigError(f"config in {os.fspath(config_dir)} does not compile:\n{errors}")
    return dump(plan)


def check_config(
    config_dir: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
) -> list[str]:
    """Every diagnostic of `router check` as text lines (empty: all clean)."""
    from router.compiler import compile_config

    _, diagnostics = compile_config(config_dir, env={} if env is None else env, strict=strict)
    return [str(d) for d in diagnostics]


def run_route_tests(
    config_dir: str | os.PathLike[str], test_file: str | os.PathLike[str] | None = None
) -> list[str]:
    """Run route test cases (default: routes.test.yaml in `config_dir`); returns the
    failures as `FAIL name: why` lines (empty: every case passed)."""
    from router.compiler.routetest import load_tests, run_tests

    path = Path(test_file) if test_file is not None else Path(config_dir) / "routes.test.yaml"
    tests = load_tests(path, path.name)
    if tests.diagnostics:
        return [str(d) for d in tests.diagnostics]
    outcomes, broken = run_tests(config_dir, tests)
    return [str(d) for d in broken] + [str(o) for o in outcomes if not o.passed]
