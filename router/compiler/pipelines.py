"""pipelines/NAME.yaml -> a Pipeline of compiled steps per stage."""

from __future__ import annotations

from typing import Any

from router.compiler.context import Context
from router.compiler.plan import Pipeline, Step
from router.compiler.steps import compile_step
from router.config.loaded import LoadedFile
from router.config.schema import display_path
from router.config.yamlsource import Path as DataPath

STAGES = ("request", "upstream", "response", "headers")


def compile_pipeline(ctx: Context, name: str, loaded: LoadedFile) -> Pipeline | None:
    """None when any step is broken (the problems are reported)."""
    if not loaded.source.ok or not isinstance(loaded.data, dict):
        return None
    data = loaded.data
    declared = data.get("name")
    if isinstance(declared, str) and declared != name:
        message = f"pipeline name {declared!r} does not match its file name {name + '.yaml'!r}"
        loaded.error(("name",), message)

    def problem(at: DataPath, message: str, *, key: bool = False) -> None:
        # a problem with a mapping key is told about the mapping, at the key's position
        loaded.error(at, f"{display_path(at[:-1] if key else at)}: {message}", key=key)

    def expression(text: str, at: DataPath) -> Any:
        return ctx.expression(loaded, text, at)

    stages: dict[str, tuple[Step, ...]] = {}
    broken = False
    for stage in STAGES:
        raw_steps = data.get(stage) or []
        if not isinstance(raw_steps, list):
            broken = True
            continue
        steps = []
        for index, raw in enumerate(raw_steps):
            at = (stage, index)
            step = None
            if loaded.usable(at) and isinstance(raw, dict):
                headers = stage == "headers"
                step = compile_step(
                    raw, headers=headers, path=at, problem=problem, jmespath=expression
                )
            if step is None:
                broken = True
            else:
                steps.append(step)
        stages[stage] = tuple(steps)
    return None if broken else Pipeline(name=name, **stages)
