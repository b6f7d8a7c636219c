"""A minimal JSON value that satisfies a JSON Schema, for deterministic replies.

Handles what tool and output schemas use in practice: objects with required and optional
properties, arrays with minItems, enums and consts, anyOf/oneOf/allOf, local $refs,
and string formats. Unknown constructs fall back to a string."""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 12


def sample_for_schema(schema: dict[str, Any], hint: str = "") -> Any:
    return _sample(schema, schema, hint, 0)


def _sample(schema: Any, root: dict[str, Any], hint: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return hint or "sample"
    if "$ref" in schema:
        return _sample(_resolve(schema["$ref"], root), root, hint, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [
                s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")
            ]
            return _sample((options or schema[key])[0], root, hint, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            merged.update(_resolve(sub["$ref"], root) if "$ref" in sub else sub)
        return _sample(merged, root, hint, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _BY_TYPE.get(kind, _string)(schema, root, hint, depth)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    if not ref.startswith("#"):
        return {}
    for token in ref.lstrip("#/").split("/"):
        if not token:
            continue
        token = token.replace("~1", "/").replace("~0", "~")
        node = node.get(token, {}) if isinstance(node, dict) else {}
    return node


def _object(schema: dict[str, Any], root: dict[str, Any], hint: str, depth: int) -> Any:
    properties = schema.get("properties") or {}
    required = schema.get("required") or list(properties)
    return {
        name: _sample(properties.get(name, {}), root, hint, depth + 1)
        for name in required
        if name in properties or not properties
    }


def _array(schema: dict[str, Any], root: dict[str, Any], hint: str, depth: int) -> Any:
    count = max(1, int(schema.get("minItems", 1)))
    return [_sample(schema.get("items", {}), root, hint, depth + 1) for _ in range(count)]


def _string(schema: dict[str, Any], root: dict[str, Any], hint: str, depth: int) -> Any:
    formats = {
        "date": "2025-01-01",
        "date-time": "2025-01-01T00:00:00Z",
        "email": "a@example.com",
        "uri": "https://example.com",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    value = formats.get(schema.get("format", ""), hint or "sample")
    min_length = int(schema.get("minLength", 0))
    max_length = schema.get("maxLength")
    value = value.ljust(min_length, "x")
    return value[: int(max_length)] if max_length is not None else value


def _integer(schema: dict[str, Any], *_: Any) -> Any:
    return int(
        schema.get(
            "minimum", schema.get("exclusiveMinimum", -1) + 1 if "exclusiveMinimum" in schema else 1
        )
    )


def _number(schema: dict[str, Any], *_: Any) -> Any:
    return float(_integer(schema))


_BY_TYPE = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda *_: True,
    "null": lambda *_: None,
}
