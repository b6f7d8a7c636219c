"""JSON Schema validation of a parsed file, reported as diagnostics at source positions.

The schemas live in `schemas/` at the repository root (they are also what editors use via
`# yaml-language-server: $schema=...`). Each is compiled once per process."""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.config.diagnostics import Reporter
from router.config.fastschema import Check, compile_checker
from router.config.yamlsource import Source

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


@cache
def schema(name: str) -> dict[str, Any]:
    """`name` is e.g. "providers" for schemas/providers.schema.json."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


@cache
def _fast(name: str) -> Check | None:
    return compile_checker(schema(name))[0]


@cache
def _validator(name: str) -> Any:
    # jsonschema is imported only when a file has errors: it is slow to import and a
    # valid config never needs it
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    root = schema(name)
    _, by_id = compile_checker(root)
    original_items = Draft202012Validator.VALIDATORS["items"]

    # jsonschema only descends into the list items the fast check rejects, so an error in
    # one route of thousands costs one route's worth of jsonschema time.
    def items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Any:
        fast = by_id.get(id(items)) if isinstance(items, dict) else None
        if fast is None or "prefixItems" in schema or not isinstance(instance, list):
            yield from original_items(validator, items, instance, schema)
            return
        for index, item in enumerate(instance):
            if not fast(item):
                yield from validator.descend(item, items, path=index)

    cls = extend(Draft202012Validator, {"items": items})
    return cls(root)


def validate(
    source: Source, name: str, report: Reporter
) -> list[tuple[tuple[str | int, ...], str]]:
    """Report every schema violation in `source`. Returns (data path, keyword) of each, so
    later checks can skip the broken parts."""
    fast = _fast(name)
    if fast is not None and fast(source.data):
        return []
    found = []
    for error in _validator(name).iter_errors(source.data):
        error = _specific(error)
        _report(source, error, report)
        kind = "propertyNames" if "propertyNames" in error.absolute_schema_path else error.validator
        found.append((tuple(error.absolute_path), str(kind)))
    return found


def _specific(error: ValidationError) -> ValidationError:
    from jsonschema.exceptions import best_match

    # anyOf/oneOf/if-then: the branch that best fits the value says what is wrong
    while error.context:
        error = best_match(error.context)
    return error


def _report(source: Source, error: ValidationError, report: Reporter) -> None:
    path = tuple(error.absolute_path)
    where = display_path(path)
    prefix = f"{where}: " if where else ""
    kind = error.validator
    value = error.instance
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if "propertyNames" in error.absolute_schema_path:  # a bad mapping key
        detail = custom or error.message
        report.error(source.key_pos((*path, value)), f"{prefix}invalid name {value!r}: {detail}")
        return

    if kind == "additionalProperties" and isinstance(value, dict):
        known = sorted(error.schema.get("properties", {}))
        patterns = error.schema.get("patternProperties", {})
        for key in _extra_keys(value, known, patterns):
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            choices = "" if hint or not known else f" (expected one of: {', '.join(known)})"
            where_in = f" in {where}" if where else ""
            report.error(
                source.key_pos((*path, key)), f"unknown key {key!r}{where_in}{suggestion}{choices}"
            )
        return
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        report.error(source.pos(path), f"{prefix}missing required key {missing[0]!r}")
        return
    if kind == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        report.error(source.pos(path), f"{prefix}expected {wanted}, got {_describe(value)}")
        return
    if kind == "enum":
        options = [str(o) for o in error.validator_value]
        hint = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        report.error(
            source.pos(path),
            f"{prefix}{value!r} is not one of: {', '.join(options)}{suggestion}",
        )
        return
    if kind == "pattern" and custom:
        report.error(source.pos(path), f"{prefix}{value!r} {custom}")
        return
    if kind in ("minimum", "maximum"):
        bound = "at least" if kind == "minimum" else "at most"
        detail = custom or f"must be {bound} {error.validator_value}"
        report.error(source.pos(path), f"{prefix}{value!r} {detail}")
        return
    if kind == "minItems" or kind == "minProperties":
        report.error(source.pos(path), f"{prefix}must not be empty")
        return
    if kind == "minLength":
        report.error(source.pos(path), f"{prefix}must not be an empty string")
        return
    if kind == "uniqueItems":
        report.error(source.pos(path), f"{prefix}contains duplicates")
        return
    if kind == "not":
        report.error(source.pos(path), f"{prefix}{value!r} is not allowed here")
        return
    report.error(source.pos(path), f"{prefix}{error.message}")


def _extra_keys(value: dict[str, Any], known: list[str], patterns: dict[str, Any]) -> list[str]:
    compiled = [re.compile(p) for p in patterns]
    return [k for k in value if k not in known and not any(p.search(k) for p in compiled)]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"number {value}"
    return f"string {value!r}"


def display_path(path: tuple[str | int, ...]) -> str:
    """(`routes`, 0, `match`) -> `routes[0].match`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
