"""A minimal JSON value that satisfies a JSON Schema, for deterministic replies.

Handles what tool and output schemas use in practice: objects with required and optional
properties, arrays with minItems, enums and consts, anyOf/oneOf/allOf, local $refs,
and string formats. Unknown constructs fall back to a string.

The schema comes from a client, so nothing in it is trusted: a value of the wrong type
is ignored, counts and lengths are capped, and the whole sample is bounded (depth and
number of values), so no schema can make it fail or grow without end."""

from __future__ import annotations

import math
from typing import Any

_MAX_DEPTH = 12
_MAX_ITEMS = 16  # per array, whatever minItems says
_MAX_LENGTH = 4096  # per string, whatever minLength says
_MAX_VALUES = 2000  # in the whole sample
_FORMATS = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "email": "a@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def sample_for_schema(schema: dict[str, Any], hint: str = "") -> Any:
    return _Sampler(schema, hint).sample(schema, 0)


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return value


def _count(value: Any, default: int, cap: int) -> int:
    return int(min(max(_number(value, default), 0), cap))


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


class _Sampler:
    def __init__(self, root: dict[str, Any], hint: str) -> None:
        self.root = root
        self.hint = hint or "sample"
        self.budget = _MAX_VALUES

    def sample(self, schema: Any, depth: int) -> Any:
        self.budget -= 1
        if not isinstance(schema, dict) or depth > _MAX_DEPTH or self.budget <= 0:
            return self.hint
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.sample(self._resolve(ref), depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            options = _dicts(schema.get(key))
            if options:
                not_null = [s for s in options if s.get("type") != "null"]
                return self.sample((not_null or options)[0], depth + 1)
        parts = _dicts(schema.get("allOf"))
        if parts:
            merged: dict[str, Any] = {}
            for part in parts:
                ref = part.get("$ref")
                resolved = self._resolve(ref) if isinstance(ref, str) else part
                merged.update(resolved if isinstance(resolved, dict) else {})
            return self.sample(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if isinstance(k, str) and k != "null"), "null")
        if not isinstance(kind, str):
            kind = "object" if isinstance(schema.get("properties"), dict) else "string"
        by_type = {
            "object": self._object,
            "array": self._array,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }
        return by_type.get(kind, self._string)(schema, depth)

    def _resolve(self, ref: str) -> Any:
        node: Any = self.root
        if not ref.startswith("#"):
            return {}
        for token in ref.lstrip("#/").split("/"):
            if not token:
                continue
            token = token.replace("~1", "/").replace("~0", "~")
            node = node.get(token, {}) if isinstance(node, dict) else {}
        return node

    def _object(self, schema: dict[str, Any], depth: int) -> Any:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = (
            [name for name in required if isinstance(name, str)]
            if isinstance(required, list)
            else list(properties)
        )
        return {
            name: self.sample(properties.get(name, {}), depth + 1)
            for name in names
            if name in properties or not properties
        }

    def _array(self, schema: dict[str, Any], depth: int) -> Any:
        count = max(1, _count(schema.get("minItems"), 1, _MAX_ITEMS))
        items = schema.get("items")
        if isinstance(items, list):  # the tuple form
            items = items[0] if items else {}
        return [self.sample(items, depth + 1) for _ in range(count)]

    def _string(self, schema: dict[str, Any], depth: int) -> Any:
        kind = schema.get("format")
        value = _FORMATS.get(kind, self.hint) if isinstance(kind, str) else self.hint
        value = value.ljust(_count(schema.get("minLength"), 0, _MAX_LENGTH), "x")
        if "maxLength" in schema:
            value = value[: _count(schema["maxLength"], len(value), _MAX_LENGTH)]
        return value

    def _integer(self, schema: dict[str, Any], depth: int) -> Any:
        if "minimum" in schema:
            return int(_number(schema["minimum"], 1))
        if "exclusiveMinimum" in schema:
            return int(_number(schema["exclusiveMinimum"], 0)) + 1
        return 1

    def _number(self, schema: dict[str, Any], depth: int) -> Any:
        return float(self._integer(schema, depth))

    def _boolean(self, schema: dict[str, Any], depth: int) -> Any:
        return True

    def _null(self, schema: dict[str, Any], depth: int) -> Any:
        return None
