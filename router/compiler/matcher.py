"""First-match route lookup without scanning every route.

* Exact model names of unconditional routes resolve through one dict (model -> index of
  the first such route).
* Every other way a route can match (a glob, a `protocol` or `when` condition, no model
  key at all) is an `Entry`. Glob entries are filed under their literal prefix, so a
  request only looks at globs whose prefix its model starts with; conditional exact
  entries are filed under their model; the rest are always candidates.
* Candidates are checked in route order and only while their index is below the exact
  hit, so first-match order holds across all of them.

Everything is compiled by `build_matcher`; `RouteMatcher.first` does dict lookups, the
candidates' pre-compiled regexes and JMESPath expressions, and nothing else. Its answer
for a (model, protocol) that no `when` condition had a say in is remembered (the matcher
belongs to one immutable Plan; the memory is bounded), so a repeated request costs one
dict lookup however many routes there are."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from jmespath.exceptions import JMESPathError

from router.compiler.glob import glob_test, is_glob, literal_prefix

_NONE = 1 << 62
_MISS = object()
CACHE_SIZE = 4096  # (model, protocol) answers kept per Plan; models are client-chosen


@dataclass(frozen=True, slots=True)
class MatchSpec:
    """A route's `match`, normalised. Empty models/protocols mean "any"."""

    models: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    when: str | None = None

    @property
    def conditional(self) -> bool:
        return bool(self.protocols) or self.when is not None


# (route index, model test or None, allowed protocols or None, compiled `when` or None)
Entry = tuple[int, "Callable[[str], bool] | None", "frozenset[str] | None", Any]
_index = itemgetter(0)


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def evaluate(expression: Any, context: Mapping[str, Any]) -> Any:
    """Run a compiled JMESPath expression; a type error at run time counts as null."""
    try:
        return expression.search(context)
    except JMESPathError:
        return None


@dataclass(frozen=True, slots=True)
class RouteMatcher:
    exact: Mapping[str, int]
    exact_conditional: Mapping[str, tuple[Entry, ...]]
    by_prefix: Mapping[str, tuple[Entry, ...]]
    prefix_lengths: tuple[int, ...]
    always: tuple[Entry, ...]
    cache: dict[tuple[str, str], int | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def first(self, model: str, protocol: str, headers: Mapping[str, str], body: Any) -> int | None:
        """Index of the first route matching the request, or None."""
        key = (model, protocol)
        found = self.cache.get(key, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        index, pure = self._first(model, protocol, headers, body)
        if pure:
            if len(self.cache) >= CACHE_SIZE:
                self.cache.clear()
            self.cache[key] = index
        return index

    def _first(
        self, model: str, protocol: str, headers: Mapping[str, str], body: Any
    ) -> tuple[int | None, bool]:
        """(index or None, whether the answer depends on `model` and `protocol` alone)."""
        best = self.exact.get(model, _NONE)
        lists: list[tuple[Entry, ...]] = []
        conditional = self.exact_conditional.get(model)
        if conditional:
            lists.append(conditional)
        if self.prefix_lengths:
            size = len(model)
            by_prefix = self.by_prefix
            for length in self.prefix_lengths:
                if length > size:
                    break
                found = by_prefix.get(model[:length])
                if found:
                    lists.append(found)
        if self.always:
            lists.append(self.always)
        if not lists:
            return (None if best == _NONE else best), True
        candidates = (
            lists[0]
            if len(lists) == 1
            else sorted((e for entries in lists for e in entries), key=_index)
        )
        context: dict[str, Any] | None = None
        pure = True
        for index, test, protocols, when in candidates:
            if index >= best:
                break
            if test is not None and not test(model):
                continue
            if protocols is not None and protocol not in protocols:
                continue
            if when is not None:
                pure = False
                if context is None:
                    context = {
                        "model": model,
                        "protocol": protocol,
                        "headers": headers if isinstance(headers, dict) else dict(headers),
                        "body": body,
                    }
                if not truthy(evaluate(when, context)):
                    continue
            return index, pure
        return (None if best == _NONE else best), pure


def build_matcher(
    specs: Sequence[tuple[int, MatchSpec]], compiled_when: Mapping[str, Any]
) -> RouteMatcher:
    """`specs`: (route index, match) of every route that can take traffic, in order.
    `compiled_when`: expression text -> compiled JMESPath."""
    exact: dict[str, int] = {}
    exact_conditional: dict[str, list[Entry]] = {}
    by_prefix: dict[str, list[Entry]] = {}
    always: list[Entry] = []
    tests: dict[str, Callable[[str], bool] | None] = {}

    for index, spec in specs:
        protocols = frozenset(spec.protocols) if spec.protocols else None
        when = compiled_when[spec.when] if spec.when is not None else None
        if not spec.models:
            always.append((index, None, protocols, when))
            if not spec.conditional:
                break  # a catch-all: nothing after it can ever match
            continue
        for pattern in spec.models:
            if not is_glob(pattern):
                if spec.conditional:
                    exact_conditional.setdefault(pattern, []).append((index, None, protocols, when))
                else:
                    exact.setdefault(pattern, index)
                continue
            prefix = literal_prefix(pattern)
            if pattern not in tests:
                # `prefix*` needs no test: being filed under its prefix is the match
                simple = pattern == prefix + "*" and bool(prefix)
                tests[pattern] = None if simple else glob_test(pattern)
            entry = (index, tests[pattern], protocols, when)
            if prefix:
                by_prefix.setdefault(prefix, []).append(entry)
            else:
                always.append(entry)

    return RouteMatcher(
        exact=exact,
        exact_conditional={k: tuple(v) for k, v in exact_conditional.items()},
        by_prefix={k: tuple(v) for k, v in by_prefix.items()},
        prefix_lengths=tuple(sorted({len(k) for k in by_prefix})),
        always=tuple(always),
    )
