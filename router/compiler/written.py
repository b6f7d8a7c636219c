"""The config as written, where the Plan only holds what this machine made of it.

The Plan holds resolved values: `${VAR}` filled from the environment, paths made
absolute, keys from REQUIRED_API_KEY merged in. `router compile` must not depend on any of
that, so the compiler also records here, by file and data path:

- the text of every scalar that references a variable (`${VAR}`, `${VAR:-default}`,
  `Bearer ${TOKEN}`), also under the path the dump reads for a value written in a short
  form (`to: NAME` is `to[0].provider`) or inherited (an instance's `proxy` from its
  pool, a target's `pipeline` from its route);
- the few values the Plan keeps only transformed: `credentials` paths, the keys of an
  `env` mapping (the Plan drops empty values), `retry_on` lists (the Plan keeps a set),
  and the keys listed in `auth` (the Plan merges in keys from the environment).

Data paths are those of the files; a Plan exists only when every route, instance and step
compiled, so positions in the Plan's tuples are positions in the files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.config.loaded import LoadedFile

DataPath = tuple[str | int, ...]


class Written:
    """Per file, data path -> what was written there (see the module docstring)."""

    __slots__ = ("_files",)

    def __init__(self) -> None:
        self._files: dict[str, dict[DataPath, Any]] = {}

    def add(self, loaded: LoadedFile) -> None:
        """Record the text of every variable reference in `loaded`."""
        refs = loaded.source.refs
        if refs:
            texts = self._files.setdefault(loaded.name, {})
            texts.update((path, ref.text) for path, ref in refs.items())

    def inherit(self, file: str, path: DataPath, source: DataPath) -> None:
        """The value at `path` is the one written at `source` (not written at `path`)."""
        texts = self._files.get(file)
        if texts is not None and source in texts:
            texts[path] = texts[source]

    def keep(self, file: str, path: DataPath, value: Any) -> None:
        """Record `value` as written at `path`, unless a reference's text is already there."""
        self._files.setdefault(file, {}).setdefault(path, value)

    def file(self, name: str) -> dict[DataPath, Any]:
        """Everything recorded for one file (empty when nothing is)."""
        return self._files.get(name, _EMPTY)


_EMPTY: dict[DataPath, Any] = {}
