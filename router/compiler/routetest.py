"""`router test`: route test cases for operators, like Envoy's route table check tool.

A test file is a list of cases (or `{env: {...}, cases: [...]}`):

    - name: opus goes to the Claude Code CLI
      request: { protocol: anthropic, model: opus }
      expect: { route: claude-code, provider: claudeCode-custom, model: opus }

Tests are hermetic: the config is compiled with only the `env` the file (and the case)
gives, never the caller's environment, so they pass or fail the same everywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from router.compiler.compile import compile_config
from router.compiler.plan import Plan
from router.compiler.probe import make_probe, mapped_body, resolve, upstream_model
from router.config.diagnostics import Diagnostic, Reporter
from router.config.schema import validate
from router.config.yamlsource import parse_yaml
from router.protocols import ir

Compile = Callable[[Mapping[str, str]], tuple[Plan | None, list[Diagnostic]]]


@dataclass(slots=True)
class Outcome:
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        if self.passed:
            return f"PASS {self.name}"
        return f"FAIL {self.name}: {'; '.join(self.failures)}"


@dataclass(slots=True)
class TestFile:
    cases: list[dict[str, Any]]
    env: dict[str, str]
    diagnostics: list[Diagnostic]


def load_tests(path: Path, shown_as: str) -> TestFile:
    diagnostics: list[Diagnostic] = []
    report = Reporter(shown_as, diagnostics)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        report.error((1, 1), f"cannot read test file: {exc.strerror or exc}")
        return TestFile([], {}, diagnostics)
    source = parse_yaml(text, shown_as, {}, report, interpolate=False)
    if not source.ok:
        return TestFile([], {}, diagnostics)
    if source.data is None:
        source.data = []
    if validate(source, "routes.test", report):
        return TestFile([], {}, diagnostics)
    data = source.data
    if isinstance(data, list):
        return TestFile(data, {}, diagnostics)
    return TestFile(data["cases"], _env(data.get("env")), diagnostics)


def _env(raw: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (raw or {}).items():
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def run_tests(config_dir: str | Path, tests: TestFile) -> tuple[list[Outcome], list[Diagnostic]]:
    """Run every case. Returns the outcomes and the config diagnostics of any env under
    which the config did not compile."""
    plans: dict[frozenset[tuple[str, str]], tuple[Plan | None, list[Diagnostic]]] = {}
    broken: list[Diagnostic] = []
    outcomes = []
    for case in tests.cases:
        env = {**tests.env, **_env(case.get("env"))}
        key = frozenset(env.items())
        if key not in plans:
            plans[key] = compile_config(config_dir, env=env)
            if plans[key][0] is None:
                broken.extend(plans[key][1])
        plan, diagnostics = plans[key]
        outcome = Outcome(case["name"])
        if plan is None:
            errors = sum(1 for d in diagnostics if d.severity == "error")
            noun = "error" if errors == 1 else "errors"
            outcome.failures.append(f"the config does not compile ({errors} {noun})")
        else:
            _check(plan, case, outcome)
        outcomes.append(outcome)
    return outcomes, sorted(set(broken))


def _check(plan: Plan, case: Mapping[str, Any], outcome: Outcome) -> None:
    request = case.get("request") or {}
    expect = case["expect"]
    failures = outcome.failures
    try:
        probe = make_probe(
            protocol=request.get("protocol"),
            model=request.get("model"),
            path=request.get("path"),
            headers=request.get("headers"),
            body=request.get("body"),
        )
    except ValueError as exc:
        failures.append(str(exc))
        return
    try:
        resolution = resolve(plan, probe)
    except ir.Error as error:
        if "error" in expect:
            if error.status != expect["error"]:
                failures.append(
                    f"expected error {expect['error']}, got {error.status} ({error.message})"
                )
        else:
            failures.append(f"rejected with {error.status}: {error.message}")
        return
    route = resolution.route
    if "error" in expect:
        failures.append(f"expected error {expect['error']}, got route {route.name!r}")
    _compare(failures, "route", expect, route.name)
    _compare(failures, "via", expect, resolution.via)
    first = route.targets[0]
    body = mapped_body(first.pipeline, probe)
    _compare(failures, "provider", expect, first.provider)
    _compare(failures, "model", expect, upstream_model(first, probe, body)[0])
    _compare(failures, "chain", expect, [t.provider for t in route.targets])
    for expression, wanted in (expect.get("fields") or {}).items():
        try:
            got = jmespath.search(expression, body)
        except JMESPathError as exc:
            failures.append(f"fields: invalid JMESPath {expression!r}: {exc}")
            continue
        if got != wanted or (type(got) is not type(wanted) and not _numbers(got, wanted)):
            failures.append(f"field {expression}: expected {wanted!r}, got {got!r}")


def _numbers(a: Any, b: Any) -> bool:
    numeric = (int, float)
    return (
        isinstance(a, numeric)
        and isinstance(b, numeric)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )


def _compare(failures: list[str], key: str, expect: Mapping[str, Any], got: Any) -> None:
    if key in expect and expect[key] != got:
        failures.append(f"expected {key} {expect[key]!r}, got {got!r}")


def summary(outcomes: list[Outcome]) -> str:
    passed = sum(1 for o in outcomes if o.passed)
    return f"{passed} passed, {len(outcomes) - passed} failed"
