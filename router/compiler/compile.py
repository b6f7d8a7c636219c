"""config dir -> Plan: load the YAML files, validate them against the schemas,
cross-check them, and build the immutable Plan.

Every problem is reported (not only the first) as a `Diagnostic`. An element that failed
schema validation is left out of the cross-checks, so one mistake does not cascade into
unrelated messages. The steps live in their own modules: providers, pipelines, routes,
auth; this one orders them and assembles the Plan."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from router.compiler import auth, providers
from router.compiler.auth import compile_auth
from router.compiler.context import Context
from router.compiler.dump import generation
from router.compiler.expressions import did_you_mean
from router.compiler.layout import PIPELINES_DIR, PROVIDERS_FILE, ROUTES_FILE
from router.compiler.matcher import MatchSpec, build_matcher
from router.compiler.pipelines import compile_pipeline
from router.compiler.plan import Admin, Plan, Route, Target
from router.compiler.providers import compile_providers
from router.compiler.routes import compile_routes
from router.compiler.state import compile_state
from router.config.diagnostics import Diagnostic, has_errors, promote_warnings, sort_diagnostics
from router.config.loaded import LoadedFile, load_file
from router.config.schema import display_path

DEFAULT_HEADER = "Model-Provider"


def compile_config(
    config_dir: str | os.PathLike[str],
    *,
    strict: bool = False,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], bool] | None = None,
) -> tuple[Plan | None, list[Diagnostic]]:
    """Compile the config in `config_dir` with `env` (default: the process environment).
    Returns the Plan (None when there is any error) and every diagnostic, sorted.
    `strict` turns warnings (unconfigured instances, shadowed routes...) into errors.
    `overrides` set instances' `enabled` at run time: (pool, instance id) -> enabled; the
    Plan routes by them, and its dump and generation keep the files' values."""
    ctx = Context(Path(os.path.abspath(config_dir)), os.environ if env is None else env)
    ctx.overrides = overrides or {}
    # A big config allocates many small objects at once; without this the cyclic GC
    # re-scans them over and over and dominates the compile time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        plan = _compile(ctx)
    finally:
        if enabled:
            gc.enable()
    diagnostics = promote_warnings(ctx.diagnostics) if strict else ctx.diagnostics
    diagnostics = sort_diagnostics(diagnostics)
    if plan is None or has_errors(diagnostics):
        return None, diagnostics
    return plan, diagnostics


def _compile(ctx: Context) -> Plan | None:
    def load(relative: str, schema: str, *, required: bool) -> LoadedFile | None:
        loaded = load_file(ctx.dir, relative, schema, ctx.env, ctx.diagnostics, required=required)
        if loaded is not None:
            ctx.written.add(loaded)
        return loaded

    providers_file = load(PROVIDERS_FILE, "providers", required=True)
    routes_file = load(ROUTES_FILE, "routes", required=True)
    pipeline_files: dict[str, LoadedFile] = {}
    if (ctx.dir / PIPELINES_DIR).is_dir():
        for path in sorted((ctx.dir / PIPELINES_DIR).glob("*.yaml")):
            loaded = load(f"{PIPELINES_DIR}/{path.name}", "pipeline", required=False)
            if loaded is not None:
                pipeline_files[path.stem] = loaded

    pools = compile_providers(ctx, providers_file) if providers_file else {}
    provider_names = set(pools)
    raw = providers_file.data if providers_file else None
    raw = raw.get("providers") if isinstance(raw, dict) else None
    if isinstance(raw, dict):
        provider_names |= set(raw)  # broken ones too: no cascade of "unknown provider"
    else:
        ctx.providers_unknown = True
    pipelines = {
        name: pipeline
        for name, loaded in pipeline_files.items()
        if (pipeline := compile_pipeline(ctx, name, loaded)) is not None
    }
    for loaded in (providers_file, routes_file, *pipeline_files.values()):
        if loaded is not None:
            _warn_unset_variables(loaded)
    if routes_file is None or not routes_file.source.ok:
        return None

    routes = compile_routes(ctx, routes_file, pools, provider_names, pipelines, set(pipeline_files))
    data = routes_file.data if isinstance(routes_file.data, dict) else {}
    default = data.get("default")
    if isinstance(default, str) and default and routes_file.usable(("default",)):
        if default not in provider_names and not ctx.providers_unknown:
            routes_file.error(
                ("default",),
                f"default: unknown provider {default!r}{did_you_mean(default, provider_names)}",
            )
        elif default in pools and not pools[default].available:
            routes_file.warning(
                ("default",),
                f"default provider {default!r} has no usable instance; requests that match "
                "no route will fail",
            )
    overrides = data.get("overrides") or {}
    header = overrides.get("header", DEFAULT_HEADER)
    keys = compile_auth(
        routes_file,
        data.get("auth") or {},
        ctx.env,
        ctx.written,
        None if ctx.providers_unknown else pools,
    )
    engines = compile_state(routes_file, data.get("state") or {}, ctx.env)
    if has_errors(ctx.diagnostics) or not isinstance(default, str):
        return None

    active = [(i, route.match or MatchSpec()) for i, route in enumerate(routes) if route.active]
    when = {spec.when: ctx.expressions[spec.when][0] for _, spec in active if spec.when}
    plan = Plan(
        generation="",
        config_dir=str(ctx.dir),
        providers=MappingProxyType(pools),
        routes=tuple(routes),
        pipelines=MappingProxyType(dict(sorted(pipelines.items()))),
        default=default,
        path_prefix=overrides.get("path_prefix", True),
        header=header.lower() if isinstance(header, str) else None,
        auth=keys,
        matcher=build_matcher(active, when),
        direct=MappingProxyType({name: _single(f"provider:{name}", name) for name in pools}),
        default_route=_single("default", default),
        written=ctx.written,
        admin=Admin(read_only=(data.get("admin") or {}).get("read_only", False)),
        state=engines,
    )
    return replace(plan, generation=generation(plan))


def _single(name: str, provider: str) -> Route:
    """The synthetic route of an override or of the default: one target, no pipeline."""
    chain = (Target(provider=provider),)
    return Route(name=name, targets=chain, declared=chain)


def _warn_unset_variables(loaded: LoadedFile) -> None:
    """An unset `${VAR}` without a default outside secrets (those make their instance
    unconfigured instead) becomes an empty string: worth a warning."""
    for path, ref in loaded.source.refs.items():
        if not ref.missing or _is_secret_path(loaded.name, path):
            continue
        for name in dict.fromkeys(ref.missing):
            message = (
                f"{display_path(path)}: {name} is not set and has no default; using an empty string"
            )
            loaded.warning(path, message)


def _is_secret_path(file: str, path: tuple[str | int, ...]) -> bool:
    if file == PROVIDERS_FILE:
        return providers.is_secret_path(path)
    return file == ROUTES_FILE and auth.is_secret_path(path)
