"""The literal secrets of a config file's text: hidden as the console shows the file, put
back when a client sends the shown text again. One rule for GET /api/config, the
upload-configs view and its download-all zip, and for POST /api/config and PUT
/api/providers/{pool}/{id}.

`mask_text(file, text)` shows each secret written literally as `***` (`${VAR}` as
written, `${VAR:-***}` for a literal default) and each URL less its password and its
secret-looking query values, in place: comments, order, anchors and layout kept. A scalar
(a value, or a key of a mapping in a secret) is a secret when
- it lies under a key whose name looks secret: SECRET_NAME's words or `admin_keys`, not
  counts, timeouts and what describes a token (`max_tokens`, `first_token_timeout`,
  `token_url`), nor the file `credentials:` names;
- it is an entry of a `headers` or `env` mapping, or of a `set`/`default` step of a
  pipeline's headers stage, whose name SECRET_NAME matches (as `router compile` hides it);
- it is the `value` or `values` of a step whose `path` names a secret-looking header or a
  `${...}`.
A file that does not parse is masked line by line, erring on the side of hiding
(secret_lines.mask_lines).

`restore_secrets(file, original, candidate)` puts each masked value the candidate sends
back where the original holds the secret at the same data path. A data path follows an
instance by its `id` (a route or case by its `name`; one renamed in place keeps its
secrets) and a masked key or list item by its rank among those shown alike, so an
instance or key added before one moves no secret. A masked value it cannot put back (no
secret there, a file that does not parse, or which of several equal masks a client
removed cannot be told) is a MaskedValueError, never written as `***`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.compiler.dump import MASK
from router.compiler.dump import redact_literals as redact_url_literals
from router.compiler.layout import PIPELINES_DIR
from router.compiler.plan import SECRET_NAME
from router.config.interpolate import mask_literals
from router.config.yamlsource import _pairs

# names SECRET_NAME matches that hold no secret: counts, timeouts, a token's type or URL
NOT_SECRET = re.compile(r"(?i)tokens|timeout|token_(?:type|uri|url)\b|_(?:url|uri|file|path)$")
SECRET_LISTS = re.compile(r"(?i)admin[-_]?keys")  # lists of keys, not named like secrets
_NAMED = ("headers", "env")  # mappings of a header's or variable's name to its value
_LIMIT = 200_000  # scalars walked (aliases followed): past it, the file is masked by line


class MaskedValueError(ValueError):
    """A masked value sent back that cannot be put back."""


@dataclass(frozen=True, slots=True)
class _Masked:
    """A data path's part for a masked key or list item: its shown form and its rank
    among those shown so in the same mapping or list."""

    shown: str
    rank: int


_KEY = ("key",)  # a data path's last part for the key of the entry before it
DataPath = tuple[Any, ...]
Entry = tuple[DataPath, ScalarNode, bool]  # data path, scalar, whether a secret


def secret_name(name: str) -> bool:
    """Whether the value of a key named `name` is a secret."""
    if SECRET_LISTS.search(name):
        return True
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET.search(name)


def _shown(value: str, secret: bool) -> str:
    return mask_literals(value, MASK) if secret else redact_url_literals(value)


def _placeholder(value: str, secret: bool, sent: bool) -> bool:
    """Whether `value` is a masked one: as `mask_text` shows it (in a client's text,
    `sent`) or one it hides (in a file)."""
    if not secret and "://" not in value:
        return False
    display = _shown(value, secret)
    return MASK in value and display == value if sent else MASK in display


# --- the walk -----------------------------------------------------------------------------


def _entries(
    file: str, text: str, sent: bool, lists: dict[DataPath, list[Any]] | None = None
) -> list[Entry]:
    """Every scalar of `text` with its data path (document number first), merge keys
    flattened and aliases followed (a value written once under an anchor appears under
    every path using it). A masked key or list item is addressed by its shown form and
    rank; an item of a list by its `id` or `name` when unique (the parts by index go in
    `lists`), else by its index."""
    out: list[Entry] = []
    stack: set[int] = set()  # the collections being walked (a recursive alias)

    def walk(node: Node | None, path: DataPath, secret: bool) -> Iterator[Entry]:
        if isinstance(node, ScalarNode):
            yield path, node, secret
        if not isinstance(node, SequenceNode | MappingNode) or id(node) in stack:
            return
        stack.add(id(node))
        ranks: dict[str, int] = {}

        def part(key: Node, default: Any) -> Any:
            if not isinstance(key, ScalarNode) or not _placeholder(key.value, secret, sent):
                return default
            display = key.value if sent else _shown(key.value, secret)
            ranks[display] = ranks.get(display, 0) + 1
            return _Masked(display, ranks[display] - 1)

        if isinstance(node, SequenceNode):
            names = {} if secret else _item_names(node.value)
            parts = [part(item, names.get(i, i)) for i, item in enumerate(node.value)]
            if names and lists is not None:
                lists[path] = parts
            for item, at in zip(node.value, parts, strict=True):
                yield from walk(item, (*path, at), secret)
        else:
            pairs = _pairs(node)
            fields = {k.value: v for k, v in pairs if isinstance(k, ScalarNode)}
            target = fields.get("path")
            step = isinstance(target, ScalarNode) and bool(
                "${" in target.value or SECRET_NAME.search(target.value)
            )
            named = path[-1] in _NAMED or (
                file.startswith(f"{PIPELINES_DIR}/")
                and path[1::2] in (("headers", "set"), ("headers", "default"))
            )
            for index, (key, value) in enumerate(pairs):
                name = key.value if isinstance(key, ScalarNode) else ""
                at = (*path, part(key, name if isinstance(key, ScalarNode) else ("?", index)))
                yield from walk(key, (*at, _KEY), secret)
                inner = (
                    secret
                    or (step and name in ("value", "values"))
                    or (named and bool(SECRET_NAME.search(name)))
                    or (
                        secret_name(name)
                        and not (name == "credentials" and isinstance(value, ScalarNode))
                    )
                )
                yield from walk(value, at, inner)
        stack.discard(id(node))

    for number, root in enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader)):
        for entry in walk(root, (number,), False):
            out.append(entry)
            if len(out) > _LIMIT:
                raise yaml.YAMLError("too many values (aliases)")
    return out


def _item_names(items: list[Node]) -> dict[int, tuple[str, str]]:
    """The items of a list that carry an `id` (or a `name`) no other item has."""
    for field in ("id", "name"):
        found: dict[int, tuple[str, str]] = {}
        for index, item in enumerate(items):
            if isinstance(item, MappingNode):
                value = next((v for k, v in _pairs(item) if k.value == field), None)
                if isinstance(value, ScalarNode):
                    found[index] = (field, value.value)
        if found and len(set(found.values())) == len(found):
            return found
    return {}


def _hidden(entries: list[Entry]) -> dict[int, tuple[ScalarNode, str]]:
    """Node id -> (scalar, how it is shown), a secret wherever it appears."""
    secret = {id(node) for _, node, is_secret in entries if is_secret}
    return {id(node): (node, _shown(node.value, id(node) in secret)) for _, node, _ in entries}


# --- showing ------------------------------------------------------------------------------


def mask_text(file: str, text: str) -> str:
    """`text` of config file `file` (relative to the config dir) as the console shows it."""
    try:
        entries = _entries(file, text, sent=False)
    except (yaml.YAMLError, RecursionError):
        from router.console.secret_lines import mask_lines  # (it uses secret_name)

        return mask_lines(text)
    edits = {}
    for node, display in _hidden(entries).values():
        if display != node.value:
            start = _value_start(text, node)
            edits[start] = (node.end_mark.index, json.dumps(display, ensure_ascii=False))
    return splice(text, edits)


def literal_secrets(file: str, text: str) -> list[str]:
    """The values `mask_text` hides (to keep them out of diagnostics too)."""
    try:
        entries = _entries(file, text, sent=False)
    except (yaml.YAMLError, RecursionError):
        return []
    return [node.value for node, display in _hidden(entries).values() if display != node.value]


def _value_start(text: str, node: Node) -> int:
    """Where `node`'s value starts, after its anchor and tag."""
    start = node.start_mark.index
    properties = re.match(r"(?:[&!]\S*\s+)*", text[start : node.end_mark.index])
    return start + (properties.end() if properties else 0)


def splice(text: str, edits: dict[int, tuple[int, str]]) -> str:
    """`text` with each span start -> (end, replacement) replaced; a span's trailing
    whitespace (a block scalar's line breaks) is kept."""
    for start in sorted(edits, reverse=True):
        end, replacement = edits[start]
        span = text[start:end]
        text = text[:start] + replacement + span[len(span.rstrip()) :] + text[end:]
    return text


# --- putting back -------------------------------------------------------------------------


def restore_secrets(file: str, original: str | None, candidate: str) -> str:
    """`candidate` with each masked value put back where `original` holds a secret at the
    same data path, written as the original has it. MaskedValueError when a masked value
    cannot be; the candidate itself when it does not parse (the check says why)."""
    new_lists: dict[DataPath, list[Any]] = {}
    try:
        given = _entries(file, candidate, sent=True, lists=new_lists)
    except (yaml.YAMLError, RecursionError):
        return candidate
    original = original or ""
    old_lists: dict[DataPath, list[Any]] = {}
    try:
        kept, broken = _entries(file, original, sent=False, lists=old_lists), False
    except (yaml.YAMLError, RecursionError):
        kept, broken = [], True
    hidden = _hidden(kept)
    old = {path: hidden[id(node)] for path, node, _ in kept if MASK in hidden[id(node)][1]}
    renamed = _renamed(old_lists, new_lists)
    given = [(renamed(path), node, secret) for path, node, secret in given]
    masked = [(p, n) for p, n, secret in given if _placeholder(n.value, secret, sent=True)]
    wanted: dict[int, tuple[ScalarNode, ScalarNode]] = {}
    for path, node in masked:
        found = old.get(path)
        if found is not None and found[1] == node.value:
            wanted[id(node)] = (node, found[0])
    problems = _ambiguous(file, [p for p, _, _ in kept], [p for p, _, _ in given])
    why = "the file on disk does not parse" if broken else "the file has no secret there"
    problems += [
        f"{file}: {_where(path)}: {node.value!r} is a masked value and {why}: "
        "write the value itself"
        for path, node in masked
        if id(node) not in wanted
    ]
    if problems:
        raise MaskedValueError("; ".join(dict.fromkeys(problems)))
    if not wanted:
        return candidate
    edits = sorted(
        (_value_start(candidate, node), node.end_mark.index, old_node)
        for node, old_node in wanted.values()
    )
    as_written = [
        (start, end, original[_value_start(original, old) : old.end_mark.index].rstrip())
        for start, end, old in edits
    ]
    restored = splice(candidate, {start: (end, text) for start, end, text in as_written})
    if not _reads_as(restored, candidate, as_written, [old.value for _, _, old in edits]):
        # the original's text does not fit where the candidate has it: quote the values
        quoted = {s: (e, json.dumps(old.value, ensure_ascii=False)) for s, e, old in edits}
        restored = splice(candidate, quoted)
    return restored


def _renamed(old: dict[DataPath, list[Any]], new: dict[DataPath, list[Any]]) -> Any:
    """How a client's data path reads in the file: an item whose `id` (or `name`) is new,
    where the file's item at its index has one the client's list no longer has, is that
    item renamed."""
    renames = {}
    for where, parts in new.items():
        before = old.get(where, [])
        for index, part in enumerate(parts):
            was = before[index] if index < len(before) else None
            if (
                isinstance(part, tuple)
                and isinstance(was, tuple)
                and part not in before
                and was not in parts
            ):
                renames[(where, part)] = was
    if not renames:
        return lambda path: path
    return lambda path: tuple(
        renames.get((path[:index], part), part) if isinstance(part, tuple) else part
        for index, part in enumerate(path)
    )


def _reads_as(
    restored: str, candidate: str, edits: list[tuple[int, int, str]], values: list[str]
) -> bool:
    """Whether each of the `edits` (in order) of `candidate` reads as its value in
    `restored`."""
    try:
        roots = list(yaml.compose_all(restored, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return False
    at = {_value_start(restored, n): n.value for root in roots for n in _scalars(root)}
    shift = 0
    for (start, end, text), value in zip(edits, values, strict=True):
        if at.get(start + shift) != value:
            return False
        shift += len(text) - len(candidate[start:end].rstrip())
    return True


def _scalars(node: Node | None) -> Iterator[ScalarNode]:
    stack, seen = [node], set()
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ScalarNode):
            yield item
        elif isinstance(item, SequenceNode):
            stack.extend(item.value)
        elif isinstance(item, MappingNode):
            stack.extend(n for pair in item.value for n in pair)


def _ambiguous(file: str, old: list[DataPath], new: list[DataPath]) -> list[str]:
    """Lists and mappings where a client removed some of several values shown alike."""
    counts: list[dict[tuple[DataPath, str], int]] = [{}, {}]
    for paths, count in ((old, counts[0]), (new, counts[1])):
        for path in paths:
            for index, part in enumerate(path):
                if isinstance(part, _Masked):
                    where = (path[:index], part.shown)
                    count[where] = max(count.get(where, 0), part.rank + 1)
    return [
        f"{file}: {_where(where)}: {before - counts[1][(where, mask)]} of the {before} values "
        f"shown as {mask!r} were removed, and which cannot be told: write out those to keep"
        for (where, mask), before in counts[0].items()
        if 0 < counts[1].get((where, mask), 0) < before
    ]


def _where(path: DataPath) -> str:
    """A data path as people write it: `providers.p.instances[id=a].api_key`."""
    out = ""
    for part in path[1:]:  # (the document's number first)
        if isinstance(part, _Masked):
            out += f"[{part.shown} #{part.rank + 1}]"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, tuple):
            out += f"[{part[0]}={part[1]}]" if len(part) == 2 else " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out or "(the document)"
