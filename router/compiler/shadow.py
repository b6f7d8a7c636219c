"""Which routes (or which model patterns of a route) can never match because an earlier
route already takes every request they would.

Sound but not complete: an earlier route covers a later one only when it has no stricter
condition (no `protocol`/`when`, or exactly the same ones) and its model patterns cover
the later patterns:
* no model key covers everything;
* an exact name is covered by the same name or by any glob matching it;
* a glob is covered by the same glob, or by a `*`-only glob matching its text when the
  later glob itself uses only `*` (then every name it matches, the earlier one matches).
Lookups go through dicts and literal-prefix buckets, so 10,000 routes stay fast."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.compiler.glob import glob_test, is_glob, literal_prefix, star_only
from router.compiler.matcher import MatchSpec

Key = tuple[tuple[str, ...], str | None]  # (sorted protocols, when)


@dataclass(frozen=True, slots=True)
class Shadow:
    route: int  # index of the shadowed route
    by: int  # index of the earliest route covering it
    pattern: str | None  # the covered model pattern; None: the whole route


@dataclass(slots=True)
class _Group:
    catch_all: int | None = None
    exact: dict[str, int] = field(default_factory=dict)  # pattern text -> first route
    globs: dict[str, list[tuple[int, Callable[[str], bool], bool]]] = field(default_factory=dict)
    lengths: set[int] = field(default_factory=set)

    def covering(self, pattern: str, literal: bool) -> int | None:
        """The earliest route seen so far that covers `pattern` (a name when `literal`,
        else a glob)."""
        best = self.catch_all
        hit = self.exact.get(pattern)
        if hit is not None and (best is None or hit < best):
            best = hit
        if self.globs and (literal or star_only(pattern)):
            size = len(pattern)
            for length in self.lengths:
                if length > size:
                    continue
                for index, test, only_stars in self.globs.get(pattern[:length], ()):
                    if best is not None and index >= best:
                        break
                    if (literal or only_stars) and test(pattern):
                        best = index
                        break
        return best

    def add(self, index: int, spec: MatchSpec) -> None:
        if not spec.models:
            if self.catch_all is None:
                self.catch_all = index
            return
        for pattern in spec.models:
            self.exact.setdefault(pattern, index)
            if pattern and set(pattern) == {"*"}:  # "*" matches every model: a catch-all
                if self.catch_all is None:
                    self.catch_all = index
            elif is_glob(pattern):
                prefix = literal_prefix(pattern)
                self.lengths.add(len(prefix))
                self.globs.setdefault(prefix, []).append(
                    (index, glob_test(pattern), star_only(pattern))
                )


def find_shadows(specs: Sequence[MatchSpec]) -> list[Shadow]:
    groups: dict[Key | None, _Group] = {None: _Group()}
    shadows: list[Shadow] = []
    for index, spec in enumerate(specs):
        key: Key | None = (tuple(sorted(spec.protocols)), spec.when) if spec.conditional else None
        relevant = [groups[None]]
        if key is not None:
            relevant.append(groups.setdefault(key, _Group()))
        shadows.extend(_check(index, spec, relevant))
        (groups[key] if key is not None else groups[None]).add(index, spec)
    return shadows


def _check(index: int, spec: MatchSpec, groups: list[_Group]) -> list[Shadow]:
    if not spec.models:
        covering = [g.catch_all for g in groups if g.catch_all is not None]
        return [Shadow(index, min(covering), None)] if covering else []
    covered: list[tuple[str, int]] = []
    for pattern in spec.models:
        literal = not is_glob(pattern)
        hits = [h for g in groups if (h := g.covering(pattern, literal)) is not None]
        if hits:
            covered.append((pattern, min(hits)))
    if covered and len(covered) == len(spec.models):
        return [Shadow(index, min(by for _, by in covered), None)]
    return [Shadow(index, by, pattern) for pattern, by in covered]
