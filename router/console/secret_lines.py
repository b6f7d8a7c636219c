"""The masking of a config file that does not parse (`secrets.mask_text`'s fallback),
line by line and erring on the side of hiding:

- the value after a key whose name looks secret (`secrets.secret_name`), in block or flow
  style, in comments too; after a name SECRET_NAME matches in a `headers:` or `env:`
  mapping; after `value:` or `values:` beside a `path:` naming a secret-looking header;
- the lines below such a key that go on with its value (a block, a list, a multi-line
  scalar), each shown as `***`;
- URL passwords (unless only a `${...}` reference) and secret-looking query values.

A `${...}` reference written alone is shown, as `mask_text` shows it."""

from __future__ import annotations

import json
import re

from router.compiler.dump import MASK
from router.compiler.dump import redact_literals as redact_url_literals
from router.compiler.plan import SECRET_NAME
from router.config.interpolate import mask_literals
from router.console.secrets import secret_name

_LINE_KEY = re.compile(r"""(["']?)([\w.-]+)\1[ \t]*:(?=\s|$)""")
_BLOCK_PREFIX = re.compile(r"\s*(?:[-?]\s+)*")  # what may come before a block key
_BLOCK_SCALAR = re.compile(r"[|>][-+0-9]*(?=\s|$)")
_URL = re.compile(r"[a-zA-Z][\w+.-]*://[^\s,}\]\"'#]+")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)([^@\s/]+)@")
_NAMED = ("headers", "env")

Context = tuple[int, str]  # the column of a `headers:`/`env:` key ("named") or of a
# `path:` naming a secret header ("step"), for the lines below it


def mask_lines(text: str) -> str:
    """`text` (that does not parse) with its literal secrets `***`, line by line."""
    out = []
    under: int | None = None  # the column of a secret key whose value goes on below
    contexts: list[Context] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        stripped = body.strip()
        indent = len(body) - len(body.lstrip())
        if stripped and not stripped.startswith("#"):
            if under is not None and (
                indent > under or (indent == under and stripped.startswith("-"))
            ):
                marker = re.match(r"(?:-\s+)*", stripped)
                lead = body[: indent + (marker.end() if marker else 0)]
                out.append(lead + json.dumps(MASK) + ending)
                continue
            under = None
            contexts = [
                (column, kind)
                for column, kind in contexts
                if indent > column or (kind == "step" and indent == column)
            ]
        kinds = {kind for _, kind in contexts}
        code, comment = _split_comment(body)
        code, opened, found = _mask_pairs(code, kinds, in_comment=False)
        comment, _, _ = _mask_pairs(comment, kinds, in_comment=True)
        under = opened if opened is not None else under
        contexts += found
        out.append(_mask_urls(code + comment) + ending)
    return "".join(out)


def _split_comment(body: str) -> tuple[str, str]:
    """A line's code and its comment (`#` after a space, outside quotes)."""
    quote = None
    for index, char in enumerate(body):
        before = body[index - 1] if index else " "
        if quote is None and char == "#" and before.isspace():
            return body[:index], body[index:]
        if quote is None and char in "\"'" and (before.isspace() or before in ":[{,"):
            quote = char
        elif char == quote and (quote == "'" or before != "\\"):
            quote = None
    return body, ""


def _mask_pairs(
    code: str, kinds: set[str], in_comment: bool
) -> tuple[str, int | None, list[Context]]:
    """`code` with the value of each secret key masked; the column of the last one whose
    value goes on below; the contexts it opens for the lines below."""
    out, position, opened, found = [], 0, None, []
    named, step = "named" in kinds, "step" in kinds
    while (key := _LINE_KEY.search(code, position)) is not None:
        name = key.group(2)
        start = key.end() + len(code[key.end() :]) - len(code[key.end() :].lstrip())
        value = code[start:]
        block = in_comment or _BLOCK_PREFIX.fullmatch(code[: key.start()]) is not None
        secret = (
            (secret_name(name) and name != "credentials")  # (credentials: a file's path)
            or (named and bool(SECRET_NAME.search(name)))
            or (step and name in ("value", "values"))
        )
        if not secret:
            if name in _NAMED:
                named = True
                found += [(key.start(), "named")] if block and not value.strip() else []
            elif name == "path" and _names_secret(value):
                step = True
                found += [(key.start(), "step")] if block else []
            out.append(code[position : key.end()])
            position = key.end()
            continue
        end, replacement = _masked_value(value, block)
        if end is None or (block and not in_comment and not value.startswith(("[", "{"))):
            opened = None if in_comment else key.start()
        end = len(value) if end is None else end
        out.append(code[position:start] + (value[:end] if replacement is None else replacement))
        position = start + end
    out.append(code[position:])
    return "".join(out), opened, found


def _names_secret(value: str) -> bool:
    """Whether the `path:` value at the start of `value` names a secret-looking header."""
    written = re.match(r"""["']?([^"',}\s#]*)""", value)
    target = written.group(1) if written else ""
    return "${" in target or bool(SECRET_NAME.search(target))


def _masked_value(value: str, block: bool) -> tuple[int | None, str | None]:
    """How long the value at the start of `value` is and its masked text (None: as
    written); length None when it goes on below (`***` for what this line has of it)."""
    block_scalar = _BLOCK_SCALAR.match(value)
    if not value.strip() or block_scalar:
        return (block_scalar.end() if block_scalar else 0), None
    if value[0] in "\"'":
        close = _closing_quote(value)
        if close is None:
            return None, json.dumps(MASK)
        inner = value[1:close]
        display = mask_literals(inner, MASK)
        return close + 1, None if display == inner else json.dumps(display)
    if value[0] in "[{":
        close = value.find("]" if value[0] == "[" else "}")
        if close < 0:
            return None, json.dumps(MASK)
        if value[0] == "{":
            return close + 1, json.dumps(MASK)
        items = [i.strip().strip("\"'") for i in value[1:close].split(",")]
        shown = ", ".join(json.dumps(mask_literals(i, MASK)) for i in items if i)
        return close + 1, f"[{shown}]"
    stops = [] if block else [i for i in map(value.find, ",}]") if i >= 0]
    written = value[: min(stops, default=len(value))].rstrip()
    display = mask_literals(written, MASK)
    return len(written), None if display == written else json.dumps(display)


def _closing_quote(value: str) -> int | None:
    """Where the quoted scalar at the start of `value` ends on this line."""
    index = 1
    while index < len(value):
        if value[0] == '"' and value[index] == "\\":
            index += 2
        elif value[index] == value[0] and value[index : index + 2] != "''":
            return index
        else:
            index += 2 if value[index] == value[0] else 1
    return None


def _mask_urls(text: str) -> str:
    def password(match: re.Match[str]) -> str:
        written = match.group(2)
        kept = mask_literals(written, MASK) == written  # references only
        return f"{match.group(1)}{written if kept else MASK}@"

    text = _URL.sub(lambda m: redact_url_literals(m.group(0)), text)
    return _URL_PASSWORD.sub(password, text)
