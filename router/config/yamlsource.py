"""YAML with source positions.

`parse_yaml` composes the node tree (libyaml when available), builds plain data from it
while interpolating `${VAR}` references, and keeps the tree so that any data path can be
mapped back to a 1-based (line, col) when a diagnostic needs one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from router.config.diagnostics import Reporter
from router.config.interpolate import Interpolated
from router.config.interpolate import interpolate as substitute

Path = tuple[str | int, ...]
Pos = tuple[int, int]

_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
_MAP = _TAG + "map"
_SEQ = _TAG + "seq"
# first characters for which a plain scalar might be something other than a string
_TYPED_FIRST = frozenset(k for k in Resolver.yaml_implicit_resolvers if k)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    # libyaml asks Python for the tag of every node, and the stock resolver runs a list of
    # regexes per scalar. Plain words can only be strings, collections get the default
    # tags (no path resolvers are registered), and the rest is memoised per document.
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0] or (value and value[0] not in _TYPED_FIRST):
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = super().resolve(kind, value, implicit)
            return tag
        if kind is MappingNode:
            return _MAP
        return _SEQ


_MERGE = _TAG + "merge"
_WHOLE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")
_constructor = SafeConstructor()
_resolver = Resolver()


@dataclass(slots=True)
class Source:
    file: str  # relative to the config dir
    data: Any = None
    root: Node | None = None
    ok: bool = True  # False on a syntax error
    # every scalar that referenced a variable, by data path
    refs: dict[Path, Interpolated] = field(default_factory=dict)

    def pos(self, path: Path) -> Pos:
        """Where the value at `path` starts; the nearest existing ancestor otherwise."""
        node, _ = self._walk(path)
        return _mark(node)

    def item_positions(self, path: Path) -> list[Pos]:
        """Where each item of the list at `path` starts (one walk for the whole list)."""
        node, _ = self._walk(path)
        if not isinstance(node, SequenceNode):
            return []
        return [_mark(item) for item in node.value]

    def key_pos(self, path: Path) -> Pos:
        """Where the mapping key naming the last element of `path` starts."""
        node, key = self._walk(path)
        return _mark(key if key is not None else node)

    def _walk(self, path: Path) -> tuple[Node | None, Node | None]:
        node, key = self.root, None
        for part in path:
            if isinstance(node, MappingNode):
                found = _find(node, part)
                if found is None:
                    return node, None
                key, node = found
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return node, None
                key, node = None, node.value[part]
            else:
                return node, None
        return node, key


def parse_yaml(
    text: str, file: str, env: Mapping[str, str], report: Reporter, *, interpolate: bool = True
) -> Source:
    """Parse `text`; `${VAR}` references are filled from `env` unless `interpolate` is off."""
    source = Source(file)
    try:
        source.root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        report.error(where, f"YAML syntax error: {problem}{context}")
        source.ok = False
        return source
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
        report.error((1, 1), f"YAML error: {exc}")
        source.ok = False
        return source
    if source.root is not None:
        source.data = _Builder(source, env, report, interpolate).build(source.root)
    return source


def _mark(node: Node | None) -> Pos:
    if node is None:
        return (1, 1)
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _pairs(node: MappingNode) -> list[tuple[Node, Node]]:
    """The mapping's pairs with YAML merge keys (`<<: *base`) flattened; explicit keys win."""
    if not any(k.tag == _MERGE for k, _ in node.value):
        return node.value
    merged: list[tuple[Node, Node]] = []
    own: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag != _MERGE:
            own.append((key, value))
            continue
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if isinstance(source, MappingNode):
                merged.extend(_pairs(source))
    seen = {k.value for k, _ in own if isinstance(k, ScalarNode)}
    inherited: list[tuple[Node, Node]] = []
    for key, value in merged:
        name = key.value if isinstance(key, ScalarNode) else None
        if name not in seen:
            seen.add(name)
            inherited.append((key, value))
    return inherited + own


def _find(node: MappingNode, part: str | int) -> tuple[Node, Node] | None:
    for key, value in reversed(_pairs(node)):
        if isinstance(key, ScalarNode) and key.value == str(part):
            return key, value
    return None


def _scalar(node: ScalarNode) -> Any:
    tag = node.tag
    if tag == _TAG + "str":
        return node.value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return _constructor.construct_yaml_bool(node)
    if tag == _TAG + "int":
        return _constructor.construct_yaml_int(node)
    if tag == _TAG + "float":
        return _constructor.construct_yaml_float(node)
    return node.value  # timestamps, custom tags: the text as written


class _Builder:
    def __init__(
        self, source: Source, env: Mapping[str, str], report: Reporter, interpolate: bool
    ) -> None:
        self.source = source
        self.env = env
        self.report = report
        self.interpolate = interpolate
        self.path: list[str | int] = []
        self.active: set[int] = set()  # guards against recursive aliases

    def build(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            value = node.value if node.tag == _STR else _scalar(node)
            if self.interpolate and isinstance(value, str) and "$" in value:
                return self._interpolate(node, value)
            return value
        if id(node) in self.active:
            self.report.error(_mark(node), "recursive YAML alias")
            return None
        self.active.add(id(node))
        path = self.path
        try:
            if isinstance(node, SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    if isinstance(item, ScalarNode) and item.tag == _STR and "$" not in item.value:
                        items.append(item.value)
                        continue
                    path.append(index)
                    items.append(self.build(item))
                    path.pop()
                return items
            assert isinstance(node, MappingNode)
            return self._mapping(node)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        result: dict[str, Any] = {}
        pairs = node.value
        inherited = 0
        for key_node, _ in pairs:
            if key_node.tag == _MERGE:
                pairs = _pairs(node)
                inherited = len(pairs) - sum(1 for k, _ in node.value if k.tag != _MERGE)
                break
        path = self.path
        for index, (key_node, value_node) in enumerate(pairs):
            if not isinstance(key_node, ScalarNode):
                self.report.error(_mark(key_node), "mapping keys must be plain strings")
                continue
            key = key_node.value
            if key in result and index >= inherited:
                self.report.error(_mark(key_node), f"duplicate key {key!r}")
            if (
                isinstance(value_node, ScalarNode)
                and value_node.tag == _STR
                and "$" not in value_node.value
            ):
                result[key] = value_node.value
                continue
            path.append(key)
            result[key] = self.build(value_node)
            path.pop()
        return result

    def _interpolate(self, node: ScalarNode, text: str) -> Any:
        result = substitute(text, self.env)
        path = tuple(self.path)
        if result.error:
            self.report.error(_mark(node), result.error)
        if result.variables:
            self.source.refs[path] = result
        # `enabled: ${FLAG:-false}`: a plain scalar that is only a reference takes the
        # type its value would have had if written literally (bool, int, float, null).
        if result.value and not node.style and _WHOLE_REF.fullmatch(text):  # plain: '' or None
            tag = _resolver.resolve(ScalarNode, result.value, (True, False))
            if tag != _TAG + "str":
                return _scalar(ScalarNode(tag, result.value))
        return result.value
