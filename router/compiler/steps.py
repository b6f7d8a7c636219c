"""Field-mapping steps, compiled once into closures `apply(doc, context) -> doc`.

Paths are dotted (`a.b.c`; a numeric part indexes a list). In the `headers` stage a path
is one header name, lower-cased, never split on dots. Anything else is a config error
(`path_problem`): JMESPath's `messages[0].content` would otherwise name a field called
`messages[0]` and silently do nothing, so brackets, empty parts and wildcards are rejected,
with the dotted form to write instead when there is one.

Documents are never mutated: a step copies the containers along the path it writes (copy
on write) and returns the new document, or the same object when it changed nothing.
Literal values from config are copied when they are containers, so requests never share
(and never alter) the Plan's data.

JMESPath expressions (`expr`, `when`) see the context (`model`, `protocol`, `headers`)
plus the document under `body`."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from router.compiler.matcher import evaluate, truthy
from router.compiler.plan import Step

KINDS = ("set", "default", "rename", "drop", "map")
_MISSING: Any = object()

Doc = dict[str, Any]
Apply = Callable[[Doc, Mapping[str, Any]], Doc]
Compile = Callable[[str, tuple[str | int, ...]], Any]  # JMESPath text -> compiled, or None


class Problem(Protocol):
    """Reports a problem at a data path: at the value there, or with `key` at the mapping
    key that names it (the message then describes the mapping holding that key)."""

    def __call__(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        pass


# RFC 9110 5.1: a field name is a token
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# JMESPath-style subscripts that have a dotted equivalent: [0] and ['name'] / ["name"]
_SUBSCRIPT = re.compile(r"""\[\s*(?:(\d+)|'([^'.\[\]]+)'|"([^".\[\]]+)")\s*\]""")


def path_problem(path: str, headers: bool) -> str | None:
    """Why `path` is not a path of a step (None when it is one)."""
    if headers:
        if _HEADER_NAME.fullmatch(path):
            return None
        return (
            f"{path!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~; "
            "the headers stage takes one header name per path)"
        )
    if "[" in path or "]" in path:
        dotted = _dotted(path)
        if dotted is None:
            return (
                f"path {path!r} uses brackets, but step paths are dot-separated, with list "
                "indexes as plain numbers; it has no dotted form (wildcards, slices, negative "
                "indexes and keys with dots are not supported)"
            )
        return (
            f"path {path!r} uses brackets, but step paths are dot-separated, with list "
            f"indexes as plain numbers: write {dotted!r}"
        )
    parts = path.split(".")
    if "" in parts:
        fix = ".".join(p for p in parts if p)
        return (
            f"path {path!r} has an empty part: step paths are field names and list indexes "
            f"separated by single dots" + (f": write {fix!r}" if fix else "")
        )
    if "*" in parts:
        return f"path {path!r}: wildcards are not supported in step paths"
    return None


def _dotted(path: str) -> str | None:
    """`messages[0].content` -> `messages.0.content`; None when there is no such form."""
    dotted = _SUBSCRIPT.sub(lambda m: "." + (m.group(1) or m.group(2) or m.group(3)), path)
    dotted = re.sub(r"\.{2,}", ".", dotted).strip(".")
    if "[" in dotted or "]" in dotted or path_problem(dotted, False) is not None:
        return None
    return dotted


def _check_paths(
    paths: list[tuple[Any, tuple[str | int, ...], bool]], headers: bool, problem: Problem
) -> bool:
    """Report each (path, data path, at a key?) that is not a valid path; True if all are."""
    ok = True
    for path, where, key in paths:
        message = path_problem(str(path), headers)
        if message is not None:
            problem(where, message, key=key)
            ok = False
    return ok


def split(path: str, headers: bool) -> tuple[str, ...]:
    return (path.lower(),) if headers else tuple(path.split("."))


def get(doc: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            doc = doc.get(part, _MISSING)
            if doc is _MISSING:
                return _MISSING
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return _MISSING
    return doc


def put(doc: Any, parts: tuple[str, ...], value: Any) -> Any:
    """A copy of `doc` with `value` at `parts`; missing or non-container parents become
    mappings."""
    head, rest = parts[0], parts[1:]
    if isinstance(doc, list) and head.isdigit() and int(head) < len(doc):
        new_list = list(doc)
        index = int(head)
        new_list[index] = put(doc[index], rest, value) if rest else value
        return new_list
    new = dict(doc) if isinstance(doc, dict) else {}
    new[head] = put(new.get(head), rest, value) if rest else value
    return new


def remove(doc: Any, parts: tuple[str, ...]) -> Any:
    """A copy of `doc` without `parts`; `doc` itself when there was nothing to remove."""
    head, rest = parts[0], parts[1:]
    if isinstance(doc, dict):
        if head not in doc:
            return doc
        if not rest:
            new = dict(doc)
            del new[head]
            return new
        child = remove(doc[head], rest)
        if child is doc[head]:
            return doc
        new = dict(doc)
        new[head] = child
        return new
    if isinstance(doc, list) and head.isdigit() and int(head) < len(doc):
        index = int(head)
        if not rest:
            return doc[:index] + doc[index + 1 :]
        child = remove(doc[index], rest)
        if child is doc[index]:
            return doc
        new_list = list(doc)
        new_list[index] = child
        return new_list
    return doc


def _fresh(value: Any) -> Any:
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _scope(doc: Doc, context: Mapping[str, Any]) -> dict[str, Any]:
    scope = dict(context)
    scope["body"] = doc
    return scope


def compile_step(
    raw: Mapping[str, Any],
    *,
    headers: bool,
    path: tuple[str | int, ...],
    problem: Problem,
    jmespath: Compile,
) -> Step | None:
    """`raw` is one schema-valid step mapping. Problems are reported through `problem`
    (with the data path of the offending value); None is returned for a broken step."""
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        listed = ", ".join(kinds) if kinds else "none"
        problem(path, f"a step needs exactly one of {', '.join(KINDS)} (found: {listed})")
        return None
    kind = kinds[0]
    spec = raw[kind]
    where = (*path, kind)
    build = _BUILDERS[kind]
    apply = build(spec, headers, where, problem, jmespath)
    if apply is None:
        return None
    if "when" in raw:
        guard = jmespath(raw["when"], (*path, "when"))
        if guard is None:
            return None
        apply = _guarded(apply, guard)
    return Step(kind=kind, spec=dict(raw), apply=apply)


def _guarded(apply: Apply, guard: Any) -> Apply:
    def guarded(doc: Doc, context: Mapping[str, Any]) -> Doc:
        if truthy(evaluate(guard, _scope(doc, context))):
            return apply(doc, context)
        return doc

    return guarded


def _header_value(value: Any, where: tuple[str | int, ...], problem: Problem) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    problem(where, "a header value must be a string, number or boolean")
    return None


def _build_set(spec: Any, headers: bool, where: tuple, problem: Problem, jmespath: Compile):
    if "path" in spec:
        extra = sorted(set(spec) - {"path", "value", "expr"})
        sources = [k for k in ("value", "expr") if k in spec]
        if extra or len(sources) != 1 or not isinstance(spec["path"], str) or not spec["path"]:
            problem(
                where,
                "set with `path` takes exactly one of `value` or `expr` and nothing else "
                "(to set several fields use the mapping form `set: {field: value}`)",
            )
            return None
        if not _check_paths([(spec["path"], (*where, "path"), False)], headers, problem):
            return None
        parts = split(spec["path"], headers)
        if "expr" in spec:
            if not isinstance(spec["expr"], str):
                problem((*where, "expr"), "expr must be a JMESPath string")
                return None
            expression = jmespath(spec["expr"], (*where, "expr"))
            if expression is None:
                return None
            return _set_expr(parts, expression, headers)
        value = spec["value"]
        if headers:
            value = _header_value(value, (*where, "value"), problem)
            if value is None:
                return None
        return _set_values(((parts, value),))
    if not _check_paths([(k, (*where, k), True) for k in spec], headers, problem):
        return None
    pairs = []
    for key, value in spec.items():
        if headers:
            value = _header_value(value, (*where, key), problem)
            if value is None:
                return None
        pairs.append((split(key, headers), value))
    return _set_values(tuple(pairs))


def _set_values(pairs: tuple[tuple[tuple[str, ...], Any], ...]) -> Apply:
    def set_values(doc: Doc, _context: Mapping[str, Any]) -> Doc:
        for parts, value in pairs:
            doc = put(doc, parts, _fresh(value))
        return doc

    return set_values


def _set_expr(parts: tuple[str, ...], expression: Any, headers: bool) -> Apply:
    def set_expr(doc: Doc, context: Mapping[str, Any]) -> Doc:
        value = evaluate(expression, _scope(doc, context))
        if headers:
            if value is None:
                return remove(doc, parts)
            if not isinstance(value, str):
                value = _header_text(value)
        return put(doc, parts, value)

    return set_expr


def _header_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _build_default(spec: Any, headers: bool, where: tuple, problem: Problem, jmespath: Compile):
    if not _check_paths([(k, (*where, k), True) for k in spec], headers, problem):
        return None
    pairs = []
    for key, value in spec.items():
        if headers:
            value = _header_value(value, (*where, key), problem)
            if value is None:
                return None
        pairs.append((split(key, headers), value))
    frozen = tuple(pairs)

    def defaults(doc: Doc, _context: Mapping[str, Any]) -> Doc:
        for parts, value in frozen:
            current = get(doc, parts)
            if current is _MISSING or current is None:
                doc = put(doc, parts, _fresh(value))
        return doc

    return defaults


def _build_rename(spec: Any, headers: bool, where: tuple, problem: Problem, jmespath: Compile):
    olds = [(old, (*where, old), True) for old in spec]
    news = [(new, (*where, old), False) for old, new in spec.items()]
    if not _check_paths(olds + news, headers, problem):
        return None
    pairs = tuple((split(old, headers), split(new, headers)) for old, new in spec.items())

    def rename(doc: Doc, _context: Mapping[str, Any]) -> Doc:
        for old, new in pairs:
            value = get(doc, old)
            if value is not _MISSING:
                doc = put(remove(doc, old), new, value)
        return doc

    return rename


def _build_drop(spec: Any, headers: bool, where: tuple, problem: Problem, jmespath: Compile):
    if isinstance(spec, str):
        checked = [(spec, where, False)]
    else:
        checked = [(p, (*where, i), False) for i, p in enumerate(spec)]
    if not _check_paths(checked, headers, problem):
        return None
    paths = tuple(split(p, headers) for p in ([spec] if isinstance(spec, str) else spec))

    def drop(doc: Doc, _context: Mapping[str, Any]) -> Doc:
        for parts in paths:
            doc = remove(doc, parts)
        return doc

    return drop


def _build_map(spec: Any, headers: bool, where: tuple, problem: Problem, jmespath: Compile):
    if not _check_paths([(spec["path"], (*where, "path"), False)], headers, problem):
        return None
    parts = split(spec["path"], headers)
    table = dict(spec["values"])
    if headers:
        for key, value in table.items():
            text = _header_value(value, (*where, "values", key), problem)
            if text is None:
                return None
            table[key] = text

    def map_values(doc: Doc, _context: Mapping[str, Any]) -> Doc:
        current = get(doc, parts)
        if isinstance(current, str) and current in table:
            return put(doc, parts, _fresh(table[current]))
        return doc

    return map_values


_BUILDERS = {
    "set": _build_set,
    "default": _build_default,
    "rename": _build_rename,
    "drop": _build_drop,
    "map": _build_map,
}
