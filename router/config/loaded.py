"""One config file, parsed and validated: its data, where each value came from, and which
parts failed the schema, so that later checks can skip them instead of cascading."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.config.diagnostics import Diagnostic, Reporter
from router.config.schema import validate
from router.config.yamlsource import Path as DataPath
from router.config.yamlsource import Source, parse_yaml

# schema errors about an object's keys, not its values: its children are still sound
_SHAPE_ONLY = frozenset({"required", "additionalProperties", "propertyNames", "minProperties"})


@dataclass(slots=True)
class LoadedFile:
    source: Source
    report: Reporter
    errors: list[tuple[DataPath, str]] = field(default_factory=list)  # (path, keyword)

    @property
    def data(self) -> Any:
        return self.source.data

    @property
    def name(self) -> str:
        return self.source.file

    def usable(self, path: DataPath) -> bool:
        """No schema error at or inside `path`, and no broken value above it."""
        if not self.errors:
            return True
        size = len(path)
        for error_path, kind in self.errors:
            if error_path[:size] == path:
                return False
            if kind not in _SHAPE_ONLY and path[: len(error_path)] == error_path:
                return False
        return True

    def error(self, path: DataPath, message: str, *, key: bool = False) -> None:
        self.report.error(self.source.key_pos(path) if key else self.source.pos(path), message)

    def warning(self, path: DataPath, message: str, *, key: bool = False) -> None:
        self.report.warning(self.source.key_pos(path) if key else self.source.pos(path), message)

    def where(self, path: DataPath) -> str:
        """`file:line:col` of the value at `path`, for messages that point elsewhere."""
        line, col = self.source.pos(path)
        return f"{self.source.file}:{line}:{col}"


def load_file(
    directory: Path,
    relative: str,
    schema_name: str,
    env: Mapping[str, str],
    diagnostics: list[Diagnostic],
    *,
    required: bool,
) -> LoadedFile | None:
    """Parse and validate `directory/relative`; None when it does not exist (an error
    when `required`) or cannot be read."""
    report = Reporter(relative, diagnostics)
    try:
        text = (directory / relative).read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            report.error(
                (1, 1), "file not found (a config dir needs providers.yaml and routes.yaml)"
            )
        return None
    except (OSError, UnicodeDecodeError) as exc:
        report.error((1, 1), f"cannot read file: {exc}")
        return None
    source = parse_yaml(text, relative, env, report)
    loaded = LoadedFile(source, report)
    if not source.ok:
        loaded.errors.append(((), "syntax"))
        return loaded
    if source.data is None:
        source.data = {}
    loaded.errors.extend(validate(source, schema_name, report))
    return loaded
