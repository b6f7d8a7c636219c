"""YAML as HTML with its parts marked for the console's stylesheet (keys, comments,
quoted strings, `${VARIABLE}` references, list dashes): the Config page's view of each
file. Line by line and escaped first; it marks what it recognizes and leaves the rest as
text, so a file it does not understand still shows exactly as written."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_KEY = re.compile(r"^(\s*(?:-\s+)*)([^\s#'\"{\[][^:#]*?|'[^']*'|\"[^\"]*\")(:)(?=\s|$)")
_DASH = re.compile(r"^(\s*)(-)(?=\s|$)")
_PARTS = re.compile(r"(\$\{[^}]*\})|('[^']*'|\"(?:[^\"\\]|\\.)*\")|(\s#.*$|^#.*$)")


def highlight_yaml(text: str) -> Markup:
    return Markup("\n").join(_line(line) for line in text.split("\n"))


def _line(line: str) -> Markup:
    head = Markup("")
    rest = line
    key = _KEY.match(line)
    if key:
        indent, name, colon = key.groups()
        head = _dashes(indent) + _span("yaml-key", name) + escape(colon)
        rest = line[key.end() :]
    else:
        dash = _DASH.match(line)
        if dash:
            head = escape(dash.group(1)) + _span("yaml-dash", "-")
            rest = line[dash.end() :]
    return head + _values(rest)


def _dashes(indent: str) -> Markup:
    return Markup("").join(
        _span("yaml-dash", part) if part == "-" else escape(part)
        for part in re.split(r"(-)", indent)
    )


def _values(text: str) -> Markup:
    out = Markup("")
    at = 0
    for found in _PARTS.finditer(text):
        out += escape(text[at : found.start()])
        reference, quoted, comment = found.groups()
        if reference:
            out += _span("yaml-ref", reference)
        elif quoted:
            out += _span("yaml-string", quoted)
        else:
            out += _span("yaml-comment", comment)
        at = found.end()
    return out + escape(text[at:])


def _span(kind: str, text: str) -> Markup:
    return Markup('<span class="{}">{}</span>').format(kind, text)
