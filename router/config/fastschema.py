"""A fast yes/no check compiled from a JSON Schema, for the common case: a valid config.

jsonschema is thorough but slow on large files (a 10,000-route routes.yaml takes seconds).
`compile_checker` turns the subset of JSON Schema our schemas use into closures that only
answer "valid?". It is conservative: when unsure it answers False, and the caller runs
jsonschema for the real verdict and messages. A schema using a keyword it does not know
is not compiled at all (`None`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "x-message",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


class Unsupported(Exception):
    pass


def compile_checker(root: dict[str, Any]) -> tuple[Check | None, dict[int, Check]]:
    """The root checker and a checker for every subschema, by `id(subschema)`."""
    compiler = _Compiler(root)
    try:
        check = compiler.compile(root)
    except Unsupported:
        return None, {}
    return check, compiler.by_id


_PY_TYPES: dict[str, type] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    raise Unsupported(name)


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.by_id: dict[int, Check] = {}
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return _yes
        if schema is False:
            return _no
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        known = id(schema)
        if known in self.by_id:
            return self.by_id[known]
        checks = [
            self._keyword(schema, key, value)
            for key, value in schema.items()
            if key not in _ANNOTATIONS
        ]
        checks = [c for c in checks if c is not None]
        check = _all(checks)
        self.by_id[known] = check
        return check

    def _ref(self, ref: str) -> Check:
        if ref in self.refs:
            return self.refs[ref]
        if not ref.startswith("#/"):
            raise Unsupported(ref)
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        slot: list[Check] = []
        self.refs[ref] = lambda value: slot[0](value)  # recursion-safe forward reference
        slot.append(self.compile(target))
        return self.refs[ref]

    def _keyword(self, schema: dict[str, Any], key: str, arg: Any) -> Check | None:
        if key == "$ref":
            return self._ref(arg)
        if key == "type":
            names = [arg] if isinstance(arg, str) else list(arg)
            for name in names:
                _is_type(0, name)  # raises Unsupported for an unknown type name
            if "integer" in names or "number" in names:
                return lambda v: any(_is_type(v, n) for n in names)
            pytypes = tuple(_PY_TYPES[n] for n in names)
            return lambda v: isinstance(v, pytypes)
        if key == "properties":
            props = {name: self.compile(sub) for name, sub in arg.items()}

            def properties(v: Any) -> bool:
                if not isinstance(v, dict):
                    return True
                for name, check in props.items():  # noqa: SIM110 - a plain loop is faster
                    if name in v and not check(v[name]):
                        return False
                return True

            return properties
        if key == "patternProperties":
            compiled = [(re.compile(p), self.compile(sub)) for p, sub in arg.items()]

            def pattern_properties(v: Any) -> bool:
                if not isinstance(v, dict):
                    return True
                return all(c(v[k]) for k in v for rx, c in compiled if rx.search(k))

            return pattern_properties
        if key == "additionalProperties":
            known = frozenset(schema.get("properties", {}))
            patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
            check = self.compile(arg)

            def additional(v: Any) -> bool:
                if not isinstance(v, dict):
                    return True
                for k, item in v.items():
                    if k in known or (patterns and any(p.search(k) for p in patterns)):
                        continue
                    if not check(item):
                        return False
                return True

            return additional
        if key == "required":
            names = tuple(arg)

            def required(v: Any) -> bool:
                if isinstance(v, dict):
                    for name in names:
                        if name not in v:
                            return False
                return True

            return required
        if key == "propertyNames":
            check = self.compile(arg)
            return lambda v: not isinstance(v, dict) or all(check(k) for k in v)
        if key == "items":
            if "prefixItems" in schema:
                raise Unsupported("prefixItems")
            check = self.compile(arg)

            def items(v: Any) -> bool:
                if isinstance(v, list):
                    for item in v:
                        if not check(item):
                            return False
                return True

            return items
        if key == "enum":
            options = list(arg)
            return lambda v: any(_same(v, o) for o in options)
        if key == "const":
            return lambda v: _same(v, arg)
        if key == "pattern":
            rx = re.compile(arg)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= arg
        if key == "minItems":
            return lambda v: not isinstance(v, list) or len(v) >= arg
        if key == "minProperties":
            return lambda v: not isinstance(v, dict) or len(v) >= arg
        if key == "minimum":
            return lambda v: not _is_type(v, "number") or v >= arg
        if key == "maximum":
            return lambda v: not _is_type(v, "number") or v <= arg
        if key == "uniqueItems":
            if not arg:
                return None
            return lambda v: not isinstance(v, list) or _unique(v)
        if key == "not":
            check = self.compile(arg)
            return lambda v: not check(v)
        if key == "if":
            test = self.compile(arg)
            then = self.compile(schema.get("then", True))
            otherwise = self.compile(schema.get("else", True))
            return lambda v: then(v) if test(v) else otherwise(v)
        if key in ("then", "else"):
            return None  # handled with "if"
        raise Unsupported(key)


def _yes(_value: Any) -> bool:
    return True


def _no(_value: Any) -> bool:
    return False


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _yes
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    frozen = tuple(checks)

    def every(v: Any) -> bool:
        for check in frozen:  # noqa: SIM110 - a plain loop is faster
            if not check(v):
                return False
        return True

    return every


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return a == b and type(a) is type(b)
    return False if isinstance(a, dict | list) else a == b


def _unique(items: list[Any]) -> bool:
    # conservative: only strings are compared; anything else defers to jsonschema
    if not all(isinstance(i, str) for i in items):
        return False
    return len(set(items)) == len(items)
