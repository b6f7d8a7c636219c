"""The two SQL dialects records and usage are read in: the embedded store's (SQLite) and
PostgreSQL's. A query is written once (router.records.usage, the console's series) and
takes from its dialect only what differs between the two."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What sqlite3's and psycopg's connections both have."""

    def execute(self, sql: Any, parameters: Sequence[Any], /) -> Cursor: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    mark: str  # a query parameter's placeholder
    _integer_sum: str
    _count_if: str
    _whole: str
    _modulo: str

    def integer_sum(self, column: str) -> str:
        """SUM of an integer column, read as an int (PostgreSQL's SUM of a bigint is a
        numeric, read as a Decimal)."""
        return self._integer_sum.format(column)

    def count_if(self, condition: str) -> str:
        """How many rows of a group hold `condition`."""
        return self._count_if.format(condition)

    def whole(self, expression: str) -> str:
        """A non-negative number without its fraction, as an integer (PostgreSQL's CAST
        rounds, SQLite's truncates)."""
        return self._whole.format(expression)

    def modulo(self, left: str, right: str) -> str:
        """`left % right` (`%` is psycopg's placeholder character)."""
        return self._modulo.format(left, right)


SQLITE = Dialect("sqlite", "?", "SUM({})", "SUM({})", "CAST({} AS INTEGER)", "{} % {}")
POSTGRES = Dialect(
    "postgresql",
    "%s",
    "SUM({})::bigint",
    "COUNT(*) FILTER (WHERE {})",
    "floor({})::bigint",
    "mod({}, {})",
)
