"""JSON Schema <-> Gemini `Schema` (the OpenAPI 3.0 subset of `parameters` and
`responseSchema`).

Gemini's proto parser rejects the whole request on the first keyword it does not know,
so `to_gemini` keeps an allowlist and rewrites what it can:

* `$ref` (into `$defs`/`definitions` or any local JSON pointer) is inlined; a reference
  cycle becomes a bare `{"type": "object"}` at the point it recurs.
* `anyOf`/`oneOf` `[X, null]` -> X + `nullable: true`; other unions stay `anyOf`.
* type lists: `["string", "null"]` -> string + nullable; several types -> `anyOf`.
* `allOf` is merged (properties and required united).
* `const` -> a one-value `enum`; `anyOf` of string consts -> one `enum`.
* non-string enums (Gemini enums are strings only) -> values listed in `description`.
* `exclusiveMinimum`/`exclusiveMaximum` (number form) -> `minimum`/`maximum`.
* `format` is kept only for the values Gemini documents; `required` is filtered to
  existing properties; an empty `properties` map is removed (Gemini rejects it).
* everything else (`additionalProperties`, `$schema`, `default`, `title`, `examples`,
  `patternProperties`, `uniqueItems`, ...) is dropped.

`from_gemini` goes the other way for requests a Gemini client sends: upper-case types
become JSON Schema types and `nullable` becomes a `null` union member.
"""

from __future__ import annotations

import json
from typing import Any

_JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
_FORMATS = {"date-time", "enum", "int32", "int64", "float", "double"}
_ARRAY_KEYS = ("items", "minItems", "maxItems")
_OBJECT_KEYS = ("properties", "required", "minProperties", "maxProperties")
_STRING_KEYS = ("enum", "format", "minLength", "maxLength", "pattern")
_NUMBER_KEYS = ("minimum", "maximum", "format", "exclusiveMinimum", "exclusiveMaximum")
_KEYS_BY_TYPE = {
    "array": _ARRAY_KEYS,
    "object": _OBJECT_KEYS,
    "string": _STRING_KEYS,
    "number": _NUMBER_KEYS,
    "integer": _NUMBER_KEYS,
}
_COPIED = (
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
)


def to_gemini(schema: Any, *, property_ordering: bool = False) -> dict[str, Any]:
    """Reduce a JSON Schema to what Gemini's `Schema` accepts. `property_ordering` adds
    `propertyOrdering` (for `responseSchema`, so keys come out in the declared order)."""
    if not isinstance(schema, dict):
        return {}
    return _Reducer(schema, property_ordering).reduce(schema)


class _Reducer:
    def __init__(self, root: dict[str, Any], property_ordering: bool) -> None:
        self.root = root
        self.property_ordering = property_ordering
        self.expanding: list[str] = []

    def reduce(self, schema: Any) -> dict[str, Any]:
        if schema is True or not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            return self._reduce_ref(schema)
        if "allOf" in schema:
            return self.reduce(_merge_all_of(schema))
        union = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(union, list):
            return self._reduce_union(schema, union)
        type_ = schema.get("type")
        if isinstance(type_, list):
            return self._reduce_type_list(schema, type_)
        return self._reduce_plain(schema)

    def _reduce_ref(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema["$ref"]
        if not isinstance(ref, str) or ref in self.expanding:
            return _with_description({"type": "object"}, schema)
        target = _resolve_pointer(self.root, ref)
        if target is None:
            return _with_description({"type": "object"}, schema)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        self.expanding.append(ref)
        try:
            reduced = self.reduce({**target, **siblings} if siblings else target)
        finally:
            self.expanding.pop()
        return reduced

    def _reduce_union(self, schema: dict[str, Any], members: list[Any]) -> dict[str, Any]:
        nullable = any(_is_null(m) for m in members)
        rest = [m for m in members if not _is_null(m)]
        outer = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        consts = [m.get("const") for m in rest if isinstance(m, dict) and "const" in m]
        if rest and len(consts) == len(rest) and all(isinstance(c, str) for c in consts):
            rest = [{"type": "string", "enum": consts}]
        if len(rest) == 1:
            merged = {**rest[0], **outer} if isinstance(rest[0], dict) else outer
            reduced = self.reduce(merged)
        elif not rest:
            reduced = {"type": "string"}
        else:
            reduced = {"anyOf": [self.reduce(m) for m in rest]}
            description = outer.get("description")
            if isinstance(description, str):
                reduced["description"] = description
        if nullable:
            reduced["nullable"] = True
        return reduced

    def _reduce_type_list(self, schema: dict[str, Any], types: list[Any]) -> dict[str, Any]:
        nullable = "null" in types
        rest = [t for t in types if t != "null" and t in _JSON_TYPES]
        if len(rest) <= 1:
            reduced = self.reduce({**schema, "type": rest[0] if rest else "string"})
        else:
            branches = []
            for type_ in rest:
                keys = _KEYS_BY_TYPE.get(type_, ())
                branch = {"type": type_, **{k: schema[k] for k in keys if k in schema}}
                branches.append(self.reduce(branch))
            reduced = {"anyOf": branches}
            if isinstance(schema.get("description"), str):
                reduced["description"] = schema["description"]
        if nullable:
            reduced["nullable"] = True
        return reduced

    def _reduce_plain(self, schema: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        type_ = schema.get("type")
        if type_ is None:
            type_ = _infer_type(schema)
        if type_ == "null":
            return {"type": "string", "nullable": True}
        if type_ in _JSON_TYPES:
            out["type"] = type_
        for key in _COPIED:
            value = schema.get(key)
            if value is not None and not isinstance(value, bool):
                out[key] = value
        if isinstance(schema.get("description"), str):
            out["description"] = schema["description"]
        _fold_exclusive_bounds(schema, out)
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            out["format"] = fmt
        if schema.get("nullable") is True:
            out["nullable"] = True
        _reduce_enum(schema, out)
        if type_ == "array" or "items" in schema:
            items = schema.get("items")
            if isinstance(items, list):  # draft-4 tuple form
                items = items[0] if items else {}
            out["items"] = self.reduce(items) if isinstance(items, dict) else {"type": "string"}
            out.setdefault("type", "array")
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            out["properties"] = {str(name): self.reduce(sub) for name, sub in properties.items()}
            out.setdefault("type", "object")
            required = schema.get("required")
            if isinstance(required, list):
                kept = [r for r in required if isinstance(r, str) and r in properties]
                if kept:
                    out["required"] = kept
            if self.property_ordering:
                out["propertyOrdering"] = list(out["properties"])
        return out


def _resolve_pointer(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node if isinstance(node, dict) else None


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for member in schema.get("allOf") or []:
        if not isinstance(member, dict):
            continue
        for key, value in member.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                seen = merged.get("required", [])
                merged["required"] = seen + [r for r in value if r not in seen]
            else:
                merged.setdefault(key, value)
    return merged


def _is_null(member: Any) -> bool:
    return isinstance(member, dict) and (
        member.get("type") == "null" or ("const" in member and member["const"] is None)
    )


def _infer_type(schema: dict[str, Any]) -> str | None:
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    values = schema.get("enum")
    if "const" in schema:
        values = [schema["const"]]
    if isinstance(values, list) and values:
        return "string" if all(isinstance(v, str) for v in values if v is not None) else None
    return None


def _fold_exclusive_bounds(schema: dict[str, Any], out: dict[str, Any]) -> None:
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(bound, value)


def _reduce_enum(schema: dict[str, Any], out: dict[str, Any]) -> None:
    values = schema.get("enum")
    if "const" in schema:
        values = [schema["const"]]
    if not isinstance(values, list) or not values:
        return
    if None in values:
        out["nullable"] = True
        values = [v for v in values if v is not None]
    if values and all(isinstance(v, str) for v in values):
        out["enum"] = values
        out["type"] = "string"
        return
    allowed = "Allowed values: " + ", ".join(_render(v) for v in values)
    description = out.get("description")
    out["description"] = f"{description}\n{allowed}" if description else allowed


def _render(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _with_description(out: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("description"), str):
        out["description"] = schema["description"]
    return out


# --- Gemini Schema -> JSON Schema ----------------------------------------------------


# protobuf JSON also accepts the snake_case field names (google-genai sends them)
_SNAKE_KEYWORDS = {
    "any_of": "anyOf",
    "property_ordering": "propertyOrdering",
    "max_items": "maxItems",
    "min_items": "minItems",
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_properties": "maxProperties",
    "min_properties": "minProperties",
    "additional_properties": "additionalProperties",
}


def from_gemini(schema: Any) -> dict[str, Any]:
    """A Gemini `Schema` (as a Gemini client sends it) as JSON Schema."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _SNAKE_KEYWORDS.get(raw_key, raw_key)
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: from_gemini(sub) for name, sub in value.items()}
        elif key == "items":
            out["items"] = from_gemini(value)
        elif key == "anyOf" and isinstance(value, list):
            out["anyOf"] = [from_gemini(member) for member in value]
        elif key in ("nullable", "propertyOrdering"):
            continue
        elif key == "example":
            out["examples"] = [value]
        elif key in ("defs", "$defs") and isinstance(value, dict):
            out["$defs"] = {name: from_gemini(sub) for name, sub in value.items()}
        elif key == "ref":
            out["$ref"] = value
        else:
            out[key] = value
    if out.get("type") == "type_unspecified":
        del out["type"]
    if schema.get("nullable") is True:
        type_ = out.get("type")
        if isinstance(type_, str):
            out["type"] = [type_, "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out
