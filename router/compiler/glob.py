"""Model-name globs (`gpt-*`, `o[134]-mini`, `claude-?-*`), fnmatch semantics, case-sensitive."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable

WILDCARDS = frozenset("*?[")
_WILD = re.compile(r"[*?\[]")


def is_glob(pattern: str) -> bool:
    return _WILD.search(pattern) is not None


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable glob, or None. fnmatch would silently read an
    unbalanced `[` as a literal character, which is never what was meant in config."""
    if "[" not in pattern:
        return None
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c != "[":
            continue
        j = i
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            return f"unbalanced '[' at position {i} (use '[[]' for a literal '[')"
        i = j + 1
    return None


@functools.lru_cache(maxsize=65536)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A compiled regex; use `.match(text)` (the translation is anchored at the end).
    Remembered, because the shadow check and the matcher both ask for every pattern and
    re's own cache keeps only 512; compiled eagerly by the compiler, so the hot path
    never compiles one."""
    return re.compile(fnmatch.translate(pattern))


def literal_prefix(pattern: str) -> str:
    found = _WILD.search(pattern)
    return pattern if found is None else pattern[: found.start()]


def star_only(pattern: str) -> bool:
    return "?" not in pattern and "[" not in pattern


def glob_test(pattern: str) -> Callable[[str], bool]:
    """A predicate for `pattern`. `*`-only globs (the usual kind) are string operations;
    only `?` and `[...]` need a regex."""
    if not is_glob(pattern):
        return pattern.__eq__
    if not star_only(pattern):
        regex = compile_glob(pattern)
        return lambda s: regex.match(s) is not None
    parts = pattern.split("*")
    head, tail, middle = parts[0], parts[-1], [p for p in parts[1:-1] if p]
    least = len(head) + len(tail) + sum(map(len, middle))
    if not middle:
        return lambda s: len(s) >= least and s.startswith(head) and s.endswith(tail)

    def test(s: str) -> bool:
        if len(s) < least or not s.startswith(head) or not s.endswith(tail):
            return False
        at, end = len(head), len(s) - len(tail)
        for part in middle:
            found = s.find(part, at, end)
            if found < 0:
                return False
            at = found + len(part)
        return True

    return test
