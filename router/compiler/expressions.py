"""JMESPath expressions in config (`when`, `expr`): compiled once, with messages that say
what is wrong and where. Unknown function names are caught here too, not at run time."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import jmespath
from jmespath import functions
from jmespath.exceptions import IncompleteExpressionError, JMESPathError, LexerError

FUNCTIONS = frozenset(functions.Functions().FUNCTION_TABLE)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def compile_expression(text: str) -> tuple[Any, str | None]:
    """(compiled expression, None) or (None, what is wrong)."""
    try:
        compiled = jmespath.compile(text)
    except JMESPathError as exc:
        return None, _problem(exc)
    for name in _functions(compiled.parsed):
        if name not in FUNCTIONS:
            return None, f"unknown function {name}(){did_you_mean(name, FUNCTIONS)}"
    return compiled, None


def _problem(exc: JMESPathError) -> str:
    if isinstance(exc, IncompleteExpressionError):
        what = "incomplete expression"
    elif isinstance(exc, LexerError):
        what = str(getattr(exc, "message", "") or "invalid token")
    else:
        what = str(getattr(exc, "msg", "") or exc)
    position = getattr(exc, "lex_position", None)
    return f"{what} at column {position + 1}" if isinstance(position, int) else what


def _functions(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node.get("value", "")
        for child in node.get("children", ()):
            yield from _functions(child)
