"""The loader's building blocks: interpolation, durations, YAML positions, the schemas and
the fast schema check, globs."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from router.compiler.glob import glob_problem, glob_test
from router.config import schema as schemas
from router.config.diagnostics import Diagnostic, Reporter
from router.config.durations import PATTERN, parse_duration
from router.config.fastschema import compile_checker
from router.config.interpolate import interpolate
from router.config.yamlsource import parse_yaml

SCHEMA_FILES = sorted((Path(__file__).resolve().parent.parent / "schemas").glob("*.schema.json"))


@pytest.mark.parametrize(
    ("text", "env", "value", "missing"),
    [
        ("plain", {}, "plain", ()),
        ("${A}", {"A": "1"}, "1", ()),
        ("${A}", {}, "", ("A",)),
        ("${A}", {"A": ""}, "", ("A",)),
        ("${A:-fallback}", {}, "fallback", ()),
        ("${A:-fallback}", {"A": ""}, "fallback", ()),
        ("${A:-}", {}, "", ()),
        ("${A:-x}", {"A": "set"}, "set", ()),
        ("Bearer ${T}/${U:-u}", {"T": "t"}, "Bearer t/u", ()),
        ("cost: $$5 and ${A}", {"A": "a"}, "cost: $5 and a", ()),
        ("a $ sign", {}, "a $ sign", ()),
        ("${A:-http://x:8080/v1}", {}, "http://x:8080/v1", ()),
    ],
)
def test_interpolation(text: str, env: dict, value: str, missing: tuple) -> None:
    result = interpolate(text, env)
    assert (result.value, result.missing, result.error) == (value, missing, None)


@pytest.mark.parametrize("text", ["${1A}", "${A", "${A B}", "${}"])
def test_malformed_interpolation(text: str) -> None:
    assert interpolate(text, {}).error is not None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("500ms", 0.5), ("60s", 60.0), ("5m", 300.0), ("1h", 3600.0),
     ("1d", 86400.0), ("1m30s", 90.0), ("2.5", 2.5), (" 10s ", 10.0)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["10 minutes", "5x", "-1s", -1, True, "", "s", None])
def test_bad_durations(value: object) -> None:
    import re

    with pytest.raises(ValueError):
        parse_duration(value)
    if isinstance(value, str):
        assert re.search(PATTERN, value) is None  # the schema rejects it too


def parse(text: str, env: dict[str, str] | None = None) -> tuple[object, list[Diagnostic]]:
    sink: list[Diagnostic] = []
    source = parse_yaml(text, "t.yaml", env or {}, Reporter("t.yaml", sink))
    return source, sink


def test_positions_are_one_based_for_values_and_keys() -> None:
    source, _ = parse("a:\n  b: [1, {c: x}]\n  d:   yes\n")
    assert source.data == {"a": {"b": [1, {"c": "x"}], "d": True}}
    assert source.pos(("a", "b", 1, "c")) == (2, 14)
    assert source.key_pos(("a", "d")) == (3, 3)
    assert source.pos(("a", "d")) == (3, 8)
    assert source.pos(("a", "missing", "deeper")) == (2, 3)  # nearest existing ancestor


def test_scalar_types_follow_yaml_core_schema() -> None:
    source, _ = parse("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 2024-01-01\ng: yes\nh: 0x10\n")
    assert source.data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "1", "f": "2024-01-01",
                           "g": True, "h": 16}  # fmt: skip


def test_whole_value_references_take_the_type_of_their_value() -> None:
    env = {"FLAG": "false", "N": "8"}
    source, _ = parse("a: ${FLAG}\nb: ${N}\nc: '${N}'\nd: n=${N}\ne: ${UNSET}\n", env)
    assert source.data == {"a": False, "b": 8, "c": "8", "d": "n=8", "e": ""}
    assert source.refs[("e",)].missing == ("UNSET",)


def test_merge_keys_and_anchors() -> None:
    source, sink = parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert source.data["use"] == {"x": 1, "y": 3}
    assert sink == []


def test_duplicate_keys_are_errors() -> None:
    _, sink = parse("a: 1\nb: 2\na: 3\n")
    assert [str(d) for d in sink] == ["t.yaml:3:1: error: duplicate key 'a'"]


def test_syntax_error_position() -> None:
    source, sink = parse("a: [1, 2\nb: 3\n")
    assert not source.ok
    assert str(sink[0]).startswith("t.yaml:2:2: error: YAML syntax error: ")


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schemas_are_valid_2020_12_and_closed(path: Path) -> None:
    document = json.loads(path.read_text())
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)

    def closed(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, node
            for value in node.values():
                closed(value)
        elif isinstance(node, list):
            for value in node:
                closed(value)

    closed(document)


def test_every_schema_compiles_to_a_fast_check() -> None:
    for path in SCHEMA_FILES:
        check, _ = compile_checker(json.loads(path.read_text()))
        assert check is not None, path.name


documents = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 700) | st.floats(-2, 2, allow_nan=False)
    | st.sampled_from(["echo", "gpt-*", "60s", "5xx", "openai-chat", "", "bad name", "x"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(["providers", "routes", "default", "type", "name", "to", "match",
                         "model", "instances", "id", "timeout", "retry_on", "request", "set",
                         "drop", "echo", "x-a", "health", "cases", "expect", "protocol"]),
        inner, max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(document=documents, name=st.sampled_from(["providers", "routes", "pipeline", "routes.test"]))
def test_fast_check_never_accepts_what_jsonschema_rejects(document: object, name: str) -> None:
    check, _ = compile_checker(schemas.schema(name))
    assert check is not None
    valid = Draft202012Validator(schemas.schema(name)).is_valid(document)
    if check(document):
        assert valid


@settings(max_examples=500, deadline=None)
@given(
    pattern=st.text(alphabet="ab*?[]!-", min_size=0, max_size=6),
    name=st.text(alphabet="ab*?[]-", min_size=0, max_size=6),
)
def test_globs_follow_fnmatch(pattern: str, name: str) -> None:
    if glob_problem(pattern) is None:
        assert glob_test(pattern)(name) == fnmatch.fnmatchcase(name, pattern)


@pytest.mark.parametrize(
    ("pattern", "bad"),
    [("gpt-[4o", True), ("x[", True), ("[!]", True), ("o[134]-*", False), ("[]]", False),
     ("a]b", False)],
)  # fmt: skip
def test_bad_globs(pattern: str, bad: bool) -> None:
    assert (glob_problem(pattern) is not None) is bad


def test_bundled_schemas_match_the_schema_files() -> None:
    bundled = (Path(schemas.__file__).with_name("bundled.py")).read_text()
    assert bundled == schemas.bundle_source(), (
        "schemas/*.json changed: run `python -m router.config.schema` to update the bundle"
    )
