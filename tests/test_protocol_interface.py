"""Every protocol package satisfies `router.protocols.interface.WireProtocol` completely:
each member the interface declares (walked from the class, so a member added later is
checked without touching this file), each method's signature, the stream classes, the
package layout and the rule that a package knows no other protocol package."""

from __future__ import annotations

import ast
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.protocols import interface, ir, module_for, paths
from router.protocols.interface import TokenCounting, WireProtocol

ROUTER = Path(__file__).resolve().parent.parent / "router"
MAX_LINES = 800


def _data_members() -> dict[str, Any]:
    """The interface's annotated members with their resolved types."""
    own = inspect.get_annotations(WireProtocol)  # the class's own, as written
    hints = typing.get_type_hints(WireProtocol, vars(interface))
    return {name: hints[name] for name in own if not name.startswith("_")}


def _methods() -> dict[str, Callable[..., Any]]:
    """The functions written in the interface's class body (not those `Protocol` adds)."""
    return {
        name: value
        for name, value in vars(WireProtocol).items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and value.__qualname__ == f"WireProtocol.{name}"
    }


def _conforms(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint`, as far as that is simply checkable."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(args) == len(value) and all(map(_conforms, value, args))
    if isinstance(origin, type):  # list[str], Callable[..., X]: the container's type
        return isinstance(value, origin)
    if hint is bool:
        return type(value) is bool
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # not simply checkable: its presence was checked


def _package_dir(package: Any) -> Path:
    return Path(package.__file__).resolve().parent


def _layout_names() -> set[str]:
    """The module files interface.py's docstring lays out (`    name.py   what`)."""
    return set(re.findall(r"^ {4}(\w+\.py) ", interface.__doc__ or "", re.MULTILINE))


def _imported(tree: ast.AST, module: str) -> set[str]:
    """Every module name the file `module` imports (for `from X import y`: X and X.y)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.fixture(params=ir.PROTOCOLS)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def package(name: str) -> Any:
    return module_for(name)


def test_interface_declares_members() -> None:
    data = _data_members()
    methods = _methods()
    assert {"NAME", "MODEL_IN_BODY", "COUNTING", "StreamDecoder"} <= data.keys()
    assert {"parse_request", "stream_error", "model_list"} <= methods.keys()


def test_package_is_a_wire_protocol(name: str, package: Any) -> None:
    assert isinstance(package, WireProtocol)
    assert name == package.NAME


def test_package_has_every_data_member(package: Any) -> None:
    for member, hint in _data_members().items():
        assert hasattr(package, member), f"{package.__name__} lacks {member}"
        value = getattr(package, member)
        assert _conforms(value, hint), f"{package.__name__}.{member} = {value!r} is not {hint}"


def test_counting_is_none_or_token_counting(package: Any) -> None:
    assert package.COUNTING is None or isinstance(package.COUNTING, TokenCounting)


def test_package_has_every_method_with_its_signature(package: Any) -> None:
    for member, method in _methods().items():
        function = getattr(package, member, None)
        assert callable(function), f"{package.__name__} lacks {member}"
        expected = list(inspect.signature(method).parameters.values())[1:]
        actual = list(inspect.signature(function).parameters.values())
        shape = [(p.name, p.kind, p.default) for p in actual]
        wanted = [(p.name, p.kind, p.default) for p in expected]
        assert shape == wanted, f"{package.__name__}.{member}"


def test_stream_decoder(package: Any) -> None:
    decoder = package.StreamDecoder()
    assert callable(decoder.feed)
    assert callable(decoder.close)


def test_stream_encoder(package: Any) -> None:
    encoder = package.StreamEncoder(ir.Request(model="m"), sse=True)
    assert isinstance(encoder.content_type, str)
    assert callable(encoder.encode)
    assert encoder.content_type == package.stream_media_type(True)


def test_stream_error_carries_the_message(package: Any) -> None:
    data = package.stream_error(ir.Error(502, "bad_gateway", "boom"), 3)
    assert isinstance(data, bytes)
    assert data
    assert b"boom" in data


# Modules a package has beyond the shared layout, each for a concern only it has.
OWN_MODULES = {"gemini": {"schema.py"}}  # Gemini's dialect of JSON Schema (tool parameters)


def test_packages_share_one_layout() -> None:
    layout = _layout_names()
    assert layout, "interface.py's docstring lists no modules"
    expected = layout | {"__init__.py"}
    for name in ir.PROTOCOLS:
        names = {path.name for path in _package_dir(module_for(name)).glob("*.py")}
        assert names == expected | OWN_MODULES.get(name, set()), (
            f"{name}: {sorted(names ^ expected)}"
        )


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(ROUTER)): count
        for path in ROUTER.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long


def test_package_imports_no_other_protocol(package: Any) -> None:
    own = package.__name__
    others = [module_for(n).__name__ for n in ir.PROTOCOLS if module_for(n).__name__ != own]
    directory = _package_dir(package)
    for path in sorted(directory.glob("*.py")):
        module = f"{own}.{path.stem}"  # relative imports resolve against `own`
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imported(tree, module):
            for other in others:
                assert not (imported == other or imported.startswith(f"{other}.")), (
                    f"{path.name} imports {imported}"
                )


def test_model_in_body_matches_the_endpoint_paths() -> None:
    in_url = {e.protocol for e in paths.ENDPOINTS if "{model}" in e.path}
    not_in_body = {name for name in ir.PROTOCOLS if not module_for(name).MODEL_IN_BODY}
    assert not_in_body == in_url
    for endpoint in paths.ENDPOINTS:
        package = module_for(endpoint.protocol)
        assert ("{model}" in endpoint.path) == (not package.MODEL_IN_BODY), endpoint.path
