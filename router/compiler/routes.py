"""routes.yaml `routes:` -> Routes: match specs, failover chains with their pipelines,
cross-references (providers, pipelines, duplicate names) and shadowed-route warnings.

A target whose provider has no usable instance is left out of the chain the server walks
(it stays in `Route.declared` for dumps and explain); a route left with no target is
inactive and takes no traffic, so requests fall through to later routes and the default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.compiler.context import Context
from router.compiler.expressions import did_you_mean
from router.compiler.glob import glob_problem
from router.compiler.matcher import MatchSpec
from router.compiler.plan import Pipeline, Provider, Route, Target
from router.compiler.shadow import find_shadows
from router.compiler.written import Written
from router.config.loaded import LoadedFile
from router.config.schema import display_path
from router.config.yamlsource import Path as DataPath


def compile_routes(
    ctx: Context,
    loaded: LoadedFile,
    providers: Mapping[str, Provider],
    provider_names: set[str],
    pipelines: Mapping[str, Pipeline],
    pipeline_names: set[str],
) -> list[Route]:
    """`provider_names`/`pipeline_names` include broken definitions, so that a mistake
    there is not reported again as an unknown name here."""
    data = loaded.data if isinstance(loaded.data, dict) else {}
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        return []
    routes: list[Route] = []
    specs: list[tuple[int, MatchSpec]] = []  # (index in routes.yaml, match) per route
    first_index: dict[str, int] = {}  # route name -> index of its first definition
    starts = loaded.source.item_positions(("routes",))
    names = _Names(provider_names, pipeline_names, ctx.providers_unknown)
    has_refs = bool(ctx.written.file(loaded.name))
    for index, raw in enumerate(raw_routes):
        path: DataPath = ("routes", index)
        if not loaded.usable(path):
            continue
        if has_refs:
            _record_written(ctx.written, loaded.name, raw, path)
        name = raw["name"]
        if name in first_index:
            first = loaded.where(("routes", first_index[name], "name"))
            message = f"duplicate route name {name!r} (first defined at {first})"
            loaded.error((*path, "name"), message)
        else:
            first_index[name] = index
        line, col = starts[index]
        source = f"{loaded.name}:{line}:{col}"
        route = _route(ctx, loaded, raw, path, providers, pipelines, names, source)
        if route is not None:
            routes.append(route)
            specs.append((index, route.match or MatchSpec()))
    _report_shadows(loaded, raw_routes, specs)
    return routes


@dataclass(frozen=True, slots=True)
class _Names:
    """Every provider and pipeline name defined, broken definitions included."""

    providers: set[str]
    pipelines: set[str]
    providers_unknown: bool  # providers.yaml missing or unparsable: nothing to check


def _route(
    ctx: Context,
    loaded: LoadedFile,
    raw: dict[str, Any],
    path: DataPath,
    providers: Mapping[str, Provider],
    pipelines: Mapping[str, Pipeline],
    names: _Names,
    source: str,
) -> Route | None:
    ok = True
    match = raw.get("match") or {}
    models = match.get("model", ())
    models = (models,) if isinstance(models, str) else tuple(models)
    for index, pattern in enumerate(models):
        problem = glob_problem(pattern)
        if problem:
            at = (*path, "match", "model")
            if isinstance(match["model"], list):
                at = (*at, index)
            loaded.error(at, f"{display_path(at)}: bad glob {pattern!r}: {problem}")
            ok = False
    protocols = match.get("protocol", ())
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    when = match.get("when")
    if when is not None and ctx.expression(loaded, when, (*path, "match", "when")) is None:
        ok = False

    route_pipeline = raw.get("pipeline")
    if route_pipeline is not None and route_pipeline not in names.pipelines:
        at = (*path, "pipeline")
        loaded.error(
            at,
            f"{display_path(at)}: unknown pipeline {route_pipeline!r}"
            f"{did_you_mean(route_pipeline, names.pipelines)} "
            f"(no file pipelines/{route_pipeline}.yaml)",
        )
        ok = False

    to = raw["to"]
    declared: list[Target] = []
    for index, item in enumerate(to if isinstance(to, list) else [to]):
        at = (*path, "to", index) if isinstance(to, list) else (*path, "to")
        spec = {"provider": item} if isinstance(item, str) else item
        provider = spec["provider"]
        if provider not in names.providers:
            if not names.providers_unknown:
                where = at if isinstance(item, str) else (*at, "provider")
                loaded.error(
                    where,
                    f"{display_path(where)}: unknown provider {provider!r}"
                    f"{did_you_mean(provider, names.providers)}",
                )
            ok = False
            continue
        pipeline = spec.get("pipeline", route_pipeline)
        if "pipeline" in spec and pipeline is not None and pipeline not in names.pipelines:
            loaded.error(
                (*at, "pipeline"),
                f"{display_path((*at, 'pipeline'))}: unknown pipeline {pipeline!r}"
                f"{did_you_mean(pipeline, names.pipelines)}",
            )
            ok = False
            continue
        chosen = pipelines.get(pipeline) if pipeline else None
        declared.append(Target(provider=provider, model=spec.get("model"), pipeline=chosen))
    if not ok:
        return None

    usable = [t for t in declared if t.provider in providers and providers[t.provider].available]
    targets = tuple(usable)
    if not targets:
        why = ", ".join(why_unavailable(providers, t.provider) for t in declared)
        loaded.warning(
            (*path, "to"),
            f"route {raw['name']!r} is inactive: no provider in its chain has a usable "
            f"instance ({why})",
        )
    return Route(
        name=raw["name"],
        targets=targets,
        strict=raw.get("strict", False),
        retry_on=frozenset(raw.get("retry_on") or ()),
        max_attempts=raw.get("max_attempts"),
        match=MatchSpec(models=models, protocols=protocols, when=when),
        pipeline=route_pipeline,
        declared=tuple(declared),
        source=source,
    )


def _record_written(written: Written, file: str, raw: dict[str, Any], path: DataPath) -> None:
    """Give the dump the text of references written in a short form (`to: NAME`,
    `model: NAME`) or inherited (a target's pipeline from its route) under the path of the
    long form, `to[i].provider` and `match.model[0]`; and `retry_on` as written (the
    Route keeps a set)."""
    match = raw.get("match") or {}
    for key in ("model", "protocol"):
        if isinstance(match.get(key), str):
            written.inherit(file, (*path, "match", key, 0), (*path, "match", key))
    to = raw["to"]
    for index, item in enumerate(to if isinstance(to, list) else [to]):
        at = (*path, "to", index) if isinstance(to, list) else (*path, "to")
        target = (*path, "to", index)
        if isinstance(item, str):
            written.inherit(file, (*target, "provider"), at)
        elif at != target:
            for key in ("provider", "model", "pipeline"):
                written.inherit(file, (*target, key), (*at, key))
        if not isinstance(item, dict) or "pipeline" not in item:
            written.inherit(file, (*target, "pipeline"), (*path, "pipeline"))
    retry_on = raw.get("retry_on") or []
    texts = written.file(file)
    if any((*path, "retry_on", i) in texts for i in range(len(retry_on))):
        items = tuple(texts.get((*path, "retry_on", i), v) for i, v in enumerate(retry_on))
        written.keep(file, (*path, "retry_on"), items)


def _report_shadows(
    loaded: LoadedFile, raw_routes: list[Any], specs: list[tuple[int, MatchSpec]]
) -> None:
    indexes = [index for index, _ in specs]
    for shadow in find_shadows([spec for _, spec in specs]):
        route = raw_routes[indexes[shadow.route]]
        path: DataPath = ("routes", indexes[shadow.route])
        by = raw_routes[indexes[shadow.by]]
        by_where = loaded.where(("routes", indexes[shadow.by]))
        if shadow.pattern is None:
            loaded.warning(
                path,
                f"route {route['name']!r} is never matched: route {by['name']!r} "
                f"({by_where}) comes first and matches every request it would",
            )
            continue
        model = route["match"]["model"]
        at = (*path, "match", "model")
        if isinstance(model, list):
            at = (*at, model.index(shadow.pattern))
        loaded.warning(
            at,
            f"model {shadow.pattern!r} of route {route['name']!r} is never matched here: "
            f"route {by['name']!r} ({by_where}) comes first",
        )


def why_unavailable(providers: Mapping[str, Provider], name: str) -> str:
    """`name: OPENAI_API_KEY unset` and the like, for warnings."""
    provider = providers.get(name)
    if provider is None:
        return f"{name}: invalid"
    reasons = sorted(
        {
            r.removeprefix("file:") + " missing" if r.startswith("file:") else f"{r} unset"
            for i in provider.instances
            if i.enabled
            for r in i.unconfigured
        }
    )
    if not reasons:
        return f"{name}: no enabled instance"
    return f"{name}: {', '.join(reasons)}"
