"""Diagnostics: what `router check` prints, one per problem, as
`file:line:col: severity: message`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    # field order is the sort order: by file, then position, then severity and text
    file: str  # relative to the config dir, with forward slashes
    line: int  # 1-based
    col: int  # 1-based
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diagnostics))


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def promote_warnings(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """`--strict`: every warning becomes an error."""
    return [
        Diagnostic(d.file, d.line, d.col, "error", d.message) if d.severity == "warning" else d
        for d in diagnostics
    ]


def summary(diagnostics: Iterable[Diagnostic]) -> str:
    items = list(diagnostics)
    errors = sum(1 for d in items if d.severity == "error")
    warnings = len(items) - errors
    return f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Reporter:
    """Collects diagnostics for one file."""

    def __init__(self, file: str, sink: list[Diagnostic]) -> None:
        self.file = file
        self.sink = sink

    def error(self, pos: tuple[int, int], message: str) -> None:
        self.sink.append(Diagnostic(self.file, pos[0], pos[1], "error", message))

    def warning(self, pos: tuple[int, int], message: str) -> None:
        self.sink.append(Diagnostic(self.file, pos[0], pos[1], "warning", message))
