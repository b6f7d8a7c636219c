"""One table for provider types (`router.compiler.provider_types.PROVIDER_TYPES`): the schema
lists the same names in the same order, the registry builds the adapter each type names,
and neither the compiler nor the server writes a type name or compares a protocol or
type with a string of its own."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from router.compiler import provider_types
from router.compiler.plan import Provider
from router.compiler.provider_types import PROVIDER_TYPES, ProviderType
from router.config.bundled import SCHEMAS
from router.protocols import ir
from router.providers.base import IRAdapter, WireAdapter
from router.providers.registry import adapter_for

ROOT = Path(__file__).resolve().parent.parent
NAMES = [kind.name for kind in PROVIDER_TYPES]
COMPARED = {"protocol", "type"}


def _type_enum(schema: dict[str, Any]) -> list[str]:
    return schema["$defs"]["provider"]["properties"]["type"]["enum"]


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).glob("*.py"))


def _named(node: ast.expr, names: set[str]) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in names) or (
        isinstance(node, ast.Name) and node.id in names
    )


def test_schema_lists_the_types_in_order() -> None:
    schema = json.loads((ROOT / "schemas" / "providers.schema.json").read_text("utf-8"))
    assert _type_enum(schema) == NAMES


def test_bundled_schema_lists_the_types_in_order() -> None:
    assert _type_enum(json.loads(SCHEMAS["providers"])) == NAMES


def test_names_are_unique() -> None:
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("kind", PROVIDER_TYPES, ids=NAMES)
def test_type_protocol_is_known(kind: ProviderType) -> None:
    assert kind.protocol in (*ir.PROTOCOLS, "ir")


@pytest.mark.parametrize("kind", PROVIDER_TYPES, ids=NAMES)
def test_registry_builds_the_named_adapter(kind: ProviderType) -> None:
    adapter = adapter_for(Provider(name="p", type=kind.name, protocol=kind.protocol))
    cls = type(adapter)
    assert f"{cls.__module__}:{cls.__qualname__}" == kind.adapter
    if kind.protocol == "ir":
        assert isinstance(adapter, IRAdapter)
    else:
        assert isinstance(adapter, WireAdapter)
        assert adapter.protocol == kind.protocol


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(id(first.value))
    return found


def _written_type_names(source: str) -> list[str]:
    """The type names (but "echo") that a string literal of the code contains; prose
    (comments, docstrings) may name them."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    literals = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]
    return [name for name in NAMES if name != "echo" and any(name in value for value in literals)]


def _string_comparisons(source: str) -> list[str]:
    """`protocol == "..."`, `x.type != "..."` and the like."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        literal = any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands)
        if literal and any(_named(o, COMPARED) for o in operands):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_written_type_names_finds_literals_not_prose() -> None:
    prose = '"""Speaks to gemini-api and claude-custom."""\n# openai-custom\n'
    assert _written_type_names(prose) == []
    code = 'def f(t):\n    """doc"""\n    return t in ("gemini-api", f"/claude-custom/{t}")\n'
    assert _written_type_names(code) == ["claude-custom", "gemini-api"]
    assert _written_type_names('KIND = "echo"\n') == []


def test_string_comparisons_finds_protocol_and_type() -> None:
    assert _string_comparisons('if protocol == "gemini": pass\n')
    assert _string_comparisons('ok = "anthropic" != plan.protocol\n')
    assert _string_comparisons('ok = provider.type == "gemini-api"\n')
    assert _string_comparisons('ok = a.protocol == b.protocol and c.kind == "x"\n') == []


THE_TABLE = Path(provider_types.__file__).resolve()


@pytest.mark.parametrize(
    "path",
    [p for p in _sources("router/compiler", "router/server") if p.resolve() != THE_TABLE],
    ids=str,
)
def test_no_second_table_of_type_names(path: Path) -> None:
    written = _written_type_names(path.read_text(encoding="utf-8"))
    assert not written, f"{path.relative_to(ROOT)} writes {written}"


@pytest.mark.parametrize("path", _sources("router/server"), ids=str)
def test_server_compares_no_protocol_or_type_with_a_string(path: Path) -> None:
    found = _string_comparisons(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)}: {found}"


def test_server_sources_exist() -> None:
    assert _sources("router/server")
    assert _sources("router/compiler")
