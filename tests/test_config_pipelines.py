"""Field-mapping steps: set / default / rename / drop / map, `when` guards, the headers
stage, and copy-on-write (a step never alters its input or the Plan)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from router.compiler import compile_config
from router.compiler.plan import Pipeline
from router.compiler.steps import path_problem

CONTEXT = {"model": "gpt-4o", "protocol": "openai-chat", "headers": {"x-user": "ada"}}


def pipeline(tmp_path: Path, text: str) -> Pipeline:
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    (tmp_path / "pipelines" / "p.yaml").write_text(textwrap.dedent(text).lstrip())
    (tmp_path / "providers.yaml").write_text("providers:\n  echo: {type: echo}\n")
    (tmp_path / "routes.yaml").write_text("default: echo\n")
    plan, diagnostics = compile_config(tmp_path, env={"TEAM": "research"})
    assert plan is not None, "\n".join(map(str, diagnostics))
    return plan.pipelines["p"]


STEP_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("set-value", "set: { path: a.b, value: 1 }", {"a": {"c": 2}}, {"a": {"b": 1, "c": 2}}),
    ("set-creates-parents", "set: { path: x.y.z, value: [1] }", {}, {"x": {"y": {"z": [1]}}}),
    ("set-mapping-form", "set: { temperature: 0.2, metadata.team: core }", {"temperature": 1},
     {"temperature": 0.2, "metadata": {"team": "core"}}),
    ("set-expr", "set: { path: max_tokens, expr: 'min([body.max_tokens, `100`])' }",
     {"max_tokens": 500}, {"max_tokens": 100}),
    ("set-expr-sees-context", "set: { path: user, expr: \"headers.\\\"x-user\\\"\" }", {},
     {"user": "ada"}),
    ("set-expr-null", "set: { path: gone, expr: body.missing }", {}, {"gone": None}),
    ("set-list-index", "set: { path: messages.0.role, value: system }",
     {"messages": [{"role": "user"}, {"role": "user"}]},
     {"messages": [{"role": "system"}, {"role": "user"}]}),
    ("default-absent", "default: { temperature: 0.7, top_p: 1 }", {"top_p": 0.5},
     {"temperature": 0.7, "top_p": 0.5}),
    ("default-null-counts-as-absent", "default: { temperature: 0.7 }", {"temperature": None},
     {"temperature": 0.7}),
    ("rename", "rename: { max_tokens: max_completion_tokens, a.b: c }",
     {"max_tokens": 5, "a": {"b": 1, "k": 2}}, {"max_completion_tokens": 5, "a": {"k": 2}, "c": 1}),
    ("rename-absent-is-noop", "rename: { nope: other }", {"x": 1}, {"x": 1}),
    ("drop-list", "drop: [logit_bias, a.b, missing.deep]",
     {"logit_bias": {}, "a": {"b": 1, "c": 2}}, {"a": {"c": 2}}),
    ("drop-single", "drop: seed", {"seed": 1, "n": 1}, {"n": 1}),
    ("drop-list-item", "drop: [messages.1]", {"messages": ["a", "b", "c"]},
     {"messages": ["a", "c"]}),
    ("map-alias", "map: { path: model, values: { fast: gemini-2.5-flash } }", {"model": "fast"},
     {"model": "gemini-2.5-flash"}),
    ("map-unlisted", "map: { path: model, values: { fast: x } }", {"model": "slow"},
     {"model": "slow"}),
    ("map-non-string", "map: { path: n, values: { '1': 2 } }", {"n": 1}, {"n": 1}),
    ("interpolated", "set: { team: '${TEAM}' }", {}, {"team": "research"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "before", "after"), [c[1:] for c in STEP_CASES], ids=[c[0] for c in STEP_CASES]
)
def test_request_step(tmp_path: Path, step: str, before: dict, after: dict) -> None:
    compiled = pipeline(tmp_path, f"request:\n  - {step}\n")
    original = copy.deepcopy(before)
    assert compiled.run("request", before, CONTEXT) == after
    assert before == original  # the input document is never modified


@pytest.mark.parametrize(
    ("guard", "applies"),
    [
        ("model == 'gpt-4o'", True),
        ("model == 'o3'", False),
        ("body.stream", False),
        ("protocol == 'openai-chat' && body.n == `2`", True),
        ("length(body.missing)", False),  # a run-time type error counts as false
    ],
)
def test_when_guard(tmp_path: Path, guard: str, applies: bool) -> None:
    compiled = pipeline(tmp_path, f'request:\n  - set: {{ hit: true }}\n    when: "{guard}"\n')
    result = compiled.run("request", {"n": 2}, CONTEXT)
    assert ("hit" in result) is applies


def test_steps_run_in_order_per_stage(tmp_path: Path) -> None:
    compiled = pipeline(
        tmp_path,
        """
        request:
          - default: { max_tokens: 8192 }
          - set: { path: max_tokens, expr: "min([body.max_tokens, `4096`])" }
        upstream:
          - rename: { max_tokens: max_completion_tokens }
        response:
          - set: { path: model, value: public-name }
        """,
    )
    assert compiled.run("request", {}, CONTEXT) == {"max_tokens": 4096}
    assert compiled.run("upstream", {"max_tokens": 1}, CONTEXT) == {"max_completion_tokens": 1}
    assert compiled.run("response", {"model": "x"}, CONTEXT) == {"model": "public-name"}


def test_headers_stage(tmp_path: Path) -> None:
    compiled = pipeline(
        tmp_path,
        """
        headers:
          - set: { X-Team: platform, X-Retries: 3, X-Flag: true }
          - default: { X-Team: ignored, X-Region: eu }
          - set: { path: X-User, expr: "headers.\\"x-user\\"" }
          - set: { path: X-Absent, expr: "headers.nope" }
          - rename: { x-old: X-New }
          - drop: [X-Drop.Me]
        """,
    )
    headers = {"x-old": "1", "x-drop.me": "gone", "x-absent": "stale"}
    assert compiled.run("headers", headers, CONTEXT) == {
        "x-team": "platform",
        "x-retries": "3",
        "x-flag": "true",
        "x-region": "eu",
        "x-user": "ada",
        "x-new": "1",
    }


def test_literal_values_are_never_shared_between_requests(tmp_path: Path) -> None:
    compiled = pipeline(tmp_path, "request:\n  - set: { metadata: { tags: [a] } }\n")
    first = compiled.run("request", {}, CONTEXT)
    first["metadata"]["tags"].append("mutated")
    assert compiled.run("request", {}, CONTEXT) == {"metadata": {"tags": ["a"]}}


def test_unchanged_documents_are_not_copied(tmp_path: Path) -> None:
    compiled = pipeline(tmp_path, "request:\n  - drop: [absent]\n  - rename: { nope: x }\n")
    document = {"a": 1}
    assert compiled.run("request", document, CONTEXT) is document


def test_steps_keep_their_spec_for_dumps_and_explain(tmp_path: Path) -> None:
    compiled = pipeline(tmp_path, "request:\n  - drop: [a]\n    when: body.x\n")
    (step,) = compiled.request
    assert (step.kind, dict(step.spec)) == ("drop", {"drop": ["a"], "when": "body.x"})


PATH_CASES: list[tuple[str, bool, str | None]] = [
    # (path, headers stage, the dotted form suggested; None: valid, "" : no suggestion)
    ("messages.0.content", False, None),
    ("metadata.user-id", False, None),
    ("X-Team", True, None),
    ("x.dotted.header", True, None),
    ("messages[0].content", False, "messages.0.content"),
    ("a[0][12].b", False, "a.0.12.b"),
    ("a.[0]", False, "a.0"),
    ("metadata['team']", False, "metadata.team"),
    ('metadata["team"].tier', False, "metadata.team.tier"),
    ("generation..max", False, "generation.max"),
    (".model", False, "model"),
    ("messages[-1].role", False, ""),
    ("tools[*].type", False, ""),
    ("a['b.c']", False, ""),
    ("x.*.y", False, ""),
    ("x team", True, ""),
    ("x-a[0]", True, ""),
]


@pytest.mark.parametrize(("path", "headers", "dotted"), PATH_CASES)
def test_path_grammar(path: str, headers: bool, dotted: str | None) -> None:
    problem = path_problem(path, headers)
    if dotted is None:
        assert problem is None
        return
    assert problem is not None and repr(path) in problem
    if dotted:
        assert problem.endswith(f": write {dotted!r}")
        assert path_problem(dotted, headers) is None  # the suggestion is itself valid
    else:
        assert ": write " not in problem


def test_a_bracket_path_is_a_config_error_at_its_position(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(
        "request:\n"
        "  - set: { path: messages.0.role, value: system }\n"
        "    when: \"body.messages[0].role == 'user'\"\n"  # JMESPath keeps its brackets
        "  - drop:\n"
        "      - messages[0].content\n"
        "  - set: { \"metadata['team']\": core }\n"
    )
    (tmp_path / "providers.yaml").write_text("providers:\n  echo: {type: echo}\n")
    (tmp_path / "routes.yaml").write_text("default: echo\n")
    plan, diagnostics = compile_config(tmp_path, env={})
    assert plan is None
    shown = sorted(str(d) for d in diagnostics)
    assert shown == [
        "pipelines/p.yaml:5:9: error: request[1].drop[0]: path 'messages[0].content' uses "
        "brackets, but step paths are dot-separated, with list indexes as plain numbers: "
        "write 'messages.0.content'",
        "pipelines/p.yaml:6:12: error: request[2].set: path \"metadata['team']\" uses "
        "brackets, but step paths are dot-separated, with list indexes as plain numbers: "
        "write 'metadata.team'",
    ]
