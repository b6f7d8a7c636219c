"""What the compile steps share: the config dir, the environment, the diagnostics, the
config as written, and a few cross-file facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.compiler.expressions import compile_expression
from router.compiler.written import Written
from router.config.diagnostics import Diagnostic
from router.config.loaded import LoadedFile
from router.config.schema import display_path
from router.config.yamlsource import Path as DataPath


@dataclass(slots=True)
class Context:
    dir: Path  # absolute
    env: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # expression text -> (compiled, problem); the same text compiles once
    expressions: dict[str, tuple[Any, str | None]] = field(default_factory=dict)
    instance_ids: dict[str, str] = field(default_factory=dict)  # id -> where first defined
    # providers.yaml is missing or unparsable: provider names cannot be checked
    providers_unknown: bool = False
    written: Written = field(default_factory=Written)  # for the Plan: see written.py
    # runtime overrides of instances' `enabled` (pool, instance id) -> enabled; the state
    # store keeps them, the console sets them (router.state.overrides)
    overrides: Mapping[tuple[str, str], bool] = field(default_factory=dict)

    def expression(self, loaded: LoadedFile, text: str, path: DataPath) -> Any:
        """The compiled JMESPath expression, or None after reporting why it is invalid."""
        if text not in self.expressions:
            self.expressions[text] = compile_expression(text)
        compiled, problem = self.expressions[text]
        if problem:
            loaded.error(
                path, f"{display_path(path)}: invalid JMESPath expression {text!r}: {problem}"
            )
        return compiled
