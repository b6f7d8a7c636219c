"""config dir -> Plan: load the YAML files, validate them against the schemas,
cross-check them, and build the immutable Plan.

Every problem is reported (not only the first) as a `Diagnostic`. An element that failed
schema validation is left out of the cross-checks, so one mistake does not cascade into
unrelated messages."""

from __future__ import annotations

import difflib
import gc
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jmespath
from jmespath import functions as jmespath_functions
from jmespath.exceptions import IncompleteExpressionError, JMESPathError, LexerError

from router.compiler.dump import SENSITIVE, generation
from router.compiler.glob import compile_glob, glob_problem
from router.compiler.matcher import MatchSpec, build_matcher
from router.compiler.plan import (
    ADAPTER_PROTOCOLS,
    Auth,
    HealthPolicy,
    Instance,
    Pipeline,
    Plan,
    Provider,
    Redacted,
    Route,
    Secret,
    Step,
    Target,
)
from router.compiler.shadow import find_shadows
from router.compiler.steps import compile_step
from router.config.diagnostics import (
    Diagnostic,
    Reporter,
    has_errors,
    promote_warnings,
    sort_diagnostics,
)
from router.config.durations import parse_duration
from router.config.schema import display_path, validate
from router.config.yamlsource import Path as DataPath
from router.config.yamlsource import Source, parse_yaml

PROVIDERS_FILE = "providers.yaml"
ROUTES_FILE = "routes.yaml"
PIPELINES_DIR = "pipelines"
STAGES = ("request", "upstream", "response", "headers")

# Instance keys holding secrets: an unset `${VAR}` in one makes the instance unconfigured.
# So does one in a `headers` or `env` entry whose name looks secret (Authorization, *KEY*).
SECRET_KEYS = ("api_key", "client_secret")
# Adapter-specific instance keys, and the adapter types that use them.
ADAPTER_KEYS: Mapping[str, frozenset[str]] = {
    "claudeCode-custom": frozenset({"command", "args", "env"}),
    "gemini-cli-oauth": frozenset(
        {"credentials", "project", "token_url", "auth_url", "client_id", "client_secret"}
    ),
    "gemini-antigravity": frozenset(
        {
            "credentials",
            "project",
            "base_urls",
            "token_url",
            "auth_url",
            "client_id",
            "client_secret",
        }
    ),
}
_SPECIFIC_KEYS = frozenset().union(*ADAPTER_KEYS.values())
OPTION_KEYS = _SPECIFIC_KEYS | {"max_concurrency", "model_aliases"}
# First path segments the server owns; a provider of that name could not be addressed.
RESERVED_NAMES = frozenset({"v1", "v1beta", "api", "health", "provider_health"})
DEFAULT_HEADER = "Model-Provider"
_FUNCTIONS = frozenset(jmespath_functions.Functions().FUNCTION_TABLE)


def compile_config(
    config_dir: str | os.PathLike[str],
    *,
    strict: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[Plan | None, list[Diagnostic]]:
    """Compile the config in `config_dir` with `env` (default: the process environment).
    Returns the Plan (None when there is any error) and every diagnostic, sorted.
    `strict` turns warnings (unconfigured instances, shadowed routes...) into errors."""
    # A big config allocates many small objects at once; without this the cyclic GC
    # re-scans them over and over and dominates the compile time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        directory = Path(os.path.abspath(config_dir))
        compiler = _Compiler(directory, os.environ if env is None else env)
        plan = compiler.run()
    finally:
        if enabled:
            gc.enable()
    diagnostics = compiler.diagnostics
    if strict:
        diagnostics = promote_warnings(diagnostics)
    diagnostics = sort_diagnostics(diagnostics)
    if plan is None or has_errors(diagnostics):
        return None, diagnostics
    return plan, diagnostics


# schema errors about an object's keys, not its values: its children are still sound
_SHAPE_ONLY = frozenset({"required", "additionalProperties", "propertyNames", "minProperties"})


@dataclass(slots=True)
class _File:
    source: Source
    report: Reporter
    errors: list[tuple[DataPath, str]] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return self.source.data

    def usable(self, path: DataPath) -> bool:
        """No schema error at or inside `path`, and no broken value above it."""
        if not self.errors:
            return True
        size = len(path)
        for error_path, kind in self.errors:
            if error_path[:size] == path:
                return False
            if (
                kind not in _SHAPE_ONLY
                and path[: len(error_path)] == error_path
            ):
                return False
        return True

    def error(self, path: DataPath, message: str, *, key: bool = False) -> None:
        self.report.error(self.source.key_pos(path) if key else self.source.pos(path), message)

    def warning(self, path: DataPath, message: str, *, key: bool = False) -> None:
        self.report.warning(self.source.key_pos(path) if key else self.source.pos(path), message)

    def where(self, path: DataPath) -> str:
        line, col = self.source.pos(path)
        return f"{self.source.file}:{line}:{col}"


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _jmespath_problem(exc: JMESPathError) -> str:
    if isinstance(exc, IncompleteExpressionError):
        what = "incomplete expression"
    elif isinstance(exc, LexerError):
        what = str(getattr(exc, "message", "") or "invalid token")
    else:
        what = str(getattr(exc, "msg", "") or exc)
    position = getattr(exc, "lex_position", None)
    return f"{what} at column {position + 1}" if isinstance(position, int) else what


def _compile_jmespath(text: str) -> tuple[Any, str | None]:
    try:
        compiled = jmespath.compile(text)
    except JMESPathError as exc:
        return None, _jmespath_problem(exc)
    for name in _functions(compiled.parsed):
        if name not in _FUNCTIONS:
            return None, f"unknown function {name}(){_did_you_mean(name, _FUNCTIONS)}"
    return compiled, None


def _functions(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node.get("value", "")
        for child in node.get("children", ()):
            yield from _functions(child)


class _Compiler:
    def __init__(self, config_dir: Path, env: Mapping[str, str]) -> None:
        self.dir = config_dir
        self.env = env
        self.diagnostics: list[Diagnostic] = []
        self.jmespath_cache: dict[str, Any] = {}
        self.instance_ids: dict[str, str] = {}  # id -> where first defined
        self.providers_unknown = False

    # --- files ---------------------------------------------------------------------

    def _load(self, relative: str, schema_name: str, *, required: bool) -> _File | None:
        report = Reporter(relative, self.diagnostics)
        path = self.dir / relative
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if required:
                report.error(
                    (1, 1), "file not found (a config dir needs providers.yaml and routes.yaml)"
                )
            return None
        except (OSError, UnicodeDecodeError) as exc:
            report.error((1, 1), f"cannot read file: {exc}")
            return None
        source = parse_yaml(text, relative, self.env, report)
        loaded = _File(source, report)
        if not source.ok:
            loaded.errors.append(((), "syntax"))
            return loaded
        if source.data is None:
            source.data = {}
        loaded.errors.extend(validate(source, schema_name, report))
        return loaded

    def run(self) -> Plan | None:
        providers_file = self._load(PROVIDERS_FILE, "providers", required=True)
        routes_file = self._load(ROUTES_FILE, "routes", required=True)
        pipeline_files: dict[str, _File] = {}
        pipelines_dir = self.dir / PIPELINES_DIR
        if pipelines_dir.is_dir():
            for path in sorted(pipelines_dir.glob("*.yaml")):
                loaded = self._load(f"{PIPELINES_DIR}/{path.name}", "pipeline", required=False)
                if loaded is not None:
                    pipeline_files[path.stem] = loaded

        providers = self._providers(providers_file) if providers_file else {}
        provider_names = set(providers)
        raw = providers_file.data if providers_file else None
        raw = raw.get("providers") if isinstance(raw, dict) else None
        if isinstance(raw, dict):
            provider_names |= set(raw)  # broken ones too: no cascade of "unknown"
        else:
            self.providers_unknown = True  # missing or unparsable: nothing to check against
        pipelines = {
            name: pipeline
            for name, loaded in pipeline_files.items()
            if (pipeline := self._pipeline(name, loaded)) is not None
        }
        for loaded in (providers_file, routes_file, *pipeline_files.values()):
            if loaded is not None:
                self._unset_variables(loaded)
        if routes_file is None or not routes_file.source.ok:
            return None
        return self._routes(routes_file, providers, provider_names, pipelines, set(pipeline_files))

    def _unset_variables(self, loaded: _File) -> None:
        for path, ref in loaded.source.refs.items():
            if not ref.missing or self._is_secret_path(loaded.source.file, path):
                continue
            for name in dict.fromkeys(ref.missing):
                loaded.warning(
                    path,
                    f"{display_path(path)}: {name} is not set and has no default; "
                    "using an empty string",
                )

    @staticmethod
    def _is_secret_path(file: str, path: DataPath) -> bool:
        if file == PROVIDERS_FILE:
            if len(path) == 6 and path[2] == "instances" and path[4] in ("headers", "env"):
                return bool(SENSITIVE.search(str(path[5])))
            return len(path) == 5 and path[2] == "instances" and path[4] in SECRET_KEYS
        if file == ROUTES_FILE:
            return len(path) == 3 and path[0] == "auth"
        return False

    def _jmespath(self, loaded: _File, text: str, path: DataPath) -> Any:
        """The compiled expression, or None after reporting why it does not compile."""
        if text not in self.jmespath_cache:
            self.jmespath_cache[text] = _compile_jmespath(text)
        compiled, problem = self.jmespath_cache[text]
        if problem:
            loaded.error(
                path, f"{display_path(path)}: invalid JMESPath expression {text!r}: {problem}"
            )
        return compiled

    # --- providers -----------------------------------------------------------------

    def _providers(self, loaded: _File) -> dict[str, Provider]:
        data = loaded.data if isinstance(loaded.data, dict) else {}
        raw = data.get("providers")
        if not isinstance(raw, dict):
            return {}
        result: dict[str, Provider] = {}
        for name, spec in raw.items():
            path: DataPath = ("providers", name)
            if name in RESERVED_NAMES:
                loaded.error(
                    path,
                    f"provider name {name!r} is reserved (it is a path the server serves)",
                    key=True,
                )
                continue
            if not loaded.usable(path):
                continue
            provider = self._provider(loaded, name, spec, path)
            if provider is not None:
                result[name] = provider
        return result

    def _provider(
        self, loaded: _File, name: str, spec: dict[str, Any], path: DataPath
    ) -> Provider | None:
        kind = spec["type"]
        raw_instances = spec.get("instances") or []
        if not raw_instances and kind != "echo":
            loaded.error(path, f"provider {name!r} (type {kind}) needs at least one instance")
            return None
        instances = []
        for index, raw in enumerate(raw_instances):
            instance_path = (*path, "instances", index)
            if not loaded.usable(instance_path):
                continue
            instance = self._instance(loaded, name, kind, raw, instance_path)
            if instance is not None:
                instances.append(instance)
        health = spec.get("health") or {}
        timeout = spec.get("timeout")
        first_token = spec.get("first_token_timeout")
        return Provider(
            name=name,
            type=kind,
            protocol=ADAPTER_PROTOCOLS[kind],
            models=tuple(spec.get("models") or ()),
            instances=tuple(instances),
            health=HealthPolicy(
                max_errors=health.get("max_errors", 3),
                recover_after=parse_duration(health.get("recover_after", 60)),
            ),
            timeout=parse_duration(timeout) if timeout is not None else 600.0,
            first_token_timeout=parse_duration(first_token) if first_token is not None else None,
            options=MappingProxyType(dict(spec.get("options") or {})),
        )

    def _instance(
        self, loaded: _File, provider: str, kind: str, raw: dict[str, Any], path: DataPath
    ) -> Instance | None:
        instance_id = raw["id"]
        first = self.instance_ids.get(instance_id)
        if first is not None:
            loaded.error(
                (*path, "id"), f"duplicate instance id {instance_id!r} (first defined at {first})"
            )
        else:
            self.instance_ids[instance_id] = loaded.where((*path, "id"))

        for key in raw:
            if key in _SPECIFIC_KEYS and key not in ADAPTER_KEYS.get(kind, ()):
                loaded.warning(
                    (*path, key), f"key {key!r} has no effect for provider type {kind!r}", key=True
                )

        unconfigured: list[str] = []
        reasons: list[tuple[DataPath, str]] = []
        secret_paths = [(*path, key) for key in SECRET_KEYS]
        for mapping in ("headers", "env"):
            secret_paths += [
                (*path, mapping, k) for k in raw.get(mapping) or () if SENSITIVE.search(k)
            ]
        for secret_path in secret_paths:
            ref = loaded.source.refs.get(secret_path)
            if ref is not None and ref.missing:
                for variable in dict.fromkeys(ref.missing):
                    if variable not in unconfigured:
                        unconfigured.append(variable)
                        reasons.append((secret_path, f"{variable} is not set"))

        options: dict[str, Any] = {}
        for key in sorted(OPTION_KEYS & set(raw)):
            value = raw[key]
            if key == "client_secret":
                value = self._secret(value, loaded.source.refs.get((*path, key)))
            elif key == "credentials":
                file = Path(value).expanduser()
                if not file.is_absolute():
                    file = self.dir / file
                if not file.exists():
                    unconfigured.append(f"file:{value}")
                    reasons.append(((*path, key), f"credentials file {value!r} does not exist"))
                value = str(file)
            elif key == "env":
                value = MappingProxyType(
                    Redacted({k: _text(v) for k, v in value.items() if _text(v) != ""})
                )
            elif key == "model_aliases":
                value = MappingProxyType({k: _text(v) for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            options[key] = value

        enabled = raw.get("enabled", True)
        if reasons and enabled:
            loaded.warning(
                reasons[0][0],
                f"instance {raw['id']!r} of provider {provider!r} is unconfigured: "
                f"{'; '.join(r for _, r in reasons)}; it is skipped at run time",
            )

        models = self._globs(loaded, raw.get("models") or (), (*path, "models"))
        excluded = self._globs(loaded, raw.get("exclude_models") or (), (*path, "exclude_models"))
        proxy = raw.get("proxy")
        return Instance(
            id=instance_id,
            enabled=enabled,
            base_url=raw.get("base_url"),
            api_key=self._secret(raw["api_key"], loaded.source.refs.get((*path, "api_key")))
            if raw.get("api_key")
            else None,
            headers=MappingProxyType(
                Redacted({k: _text(v) for k, v in (raw.get("headers") or {}).items()})
            ),
            models=tuple(raw.get("models") or ()),
            exclude_models=tuple(raw.get("exclude_models") or ()),
            proxy=None if proxy is True else proxy,
            unconfigured=tuple(unconfigured),
            options=MappingProxyType(options),
            serves=_serves(models, excluded),
        )

    def _globs(
        self, loaded: _File, patterns: Iterable[str], path: DataPath
    ) -> list[re.Pattern[str]]:
        compiled = []
        for index, pattern in enumerate(patterns):
            problem = glob_problem(pattern)
            if problem:
                loaded.error(
                    (*path, index),
                    f"{display_path((*path, index))}: bad glob {pattern!r}: {problem}",
                )
                continue
            compiled.append(compile_glob(pattern))
        return compiled

    def _secret(self, value: Any, ref: Any) -> Secret | None:
        if not isinstance(value, str) or not value:
            return None
        variable = ref.variables[0] if ref is not None and ref.variables else None
        return Secret(value, env=variable)

    # --- pipelines -----------------------------------------------------------------

    def _pipeline(self, name: str, loaded: _File) -> Pipeline | None:
        if not loaded.source.ok or not isinstance(loaded.data, dict):
            return None
        data = loaded.data
        declared = data.get("name")
        if isinstance(declared, str) and declared != name:
            loaded.error(
                ("name",),
                f"pipeline name {declared!r} does not match its file name {name + '.yaml'!r}",
            )
        stages: dict[str, tuple[Step, ...]] = {}
        broken = False
        for stage in STAGES:
            raw_steps = data.get(stage) or []
            if not isinstance(raw_steps, list):
                broken = True
                continue
            steps = []
            for index, raw in enumerate(raw_steps):
                step_path = (stage, index)
                if not loaded.usable(step_path) or not isinstance(raw, dict):
                    broken = True
                    continue

                def problem(at: DataPath, message: str) -> None:
                    loaded.error(at, f"{display_path(at)}: {message}")

                def expression(text: str, at: DataPath) -> Any:
                    return self._jmespath(loaded, text, at)

                step = compile_step(
                    raw,
                    headers=stage == "headers",
                    path=step_path,
                    problem=problem,
                    jmespath=expression,
                )
                if step is None:
                    broken = True
                else:
                    steps.append(step)
            stages[stage] = tuple(steps)
        if broken:
            return None
        return Pipeline(name=name, **stages)

    # --- routes --------------------------------------------------------------------

    def _routes(
        self,
        loaded: _File,
        providers: Mapping[str, Provider],
        provider_names: set[str],
        pipelines: Mapping[str, Pipeline],
        pipeline_names: set[str],
    ) -> Plan | None:
        data = loaded.data if isinstance(loaded.data, dict) else {}
        raw_routes = data.get("routes") or []
        if not isinstance(raw_routes, list):
            raw_routes = []
        routes: list[Route] = []
        specs: list[tuple[int, MatchSpec]] = []  # (index into raw_routes, spec)
        positions: list[int] = []  # raw index of each compiled route
        names: dict[str, int] = {}  # route name -> index of its first definition
        starts = loaded.source.item_positions(("routes",))
        for index, raw in enumerate(raw_routes):
            path: DataPath = ("routes", index)
            if not loaded.usable(path):
                continue
            line, col = starts[index]
            route = self._route(
                loaded,
                raw,
                path,
                providers,
                provider_names,
                pipelines,
                pipeline_names,
                source=f"{loaded.source.file}:{line}:{col}",
            )
            name = raw["name"]
            if name in names:
                first = loaded.where(("routes", names[name], "name"))
                loaded.error(
                    (*path, "name"), f"duplicate route name {name!r} (first defined at {first})"
                )
            else:
                names[name] = index
            if route is not None:
                routes.append(route)
                positions.append(index)
                specs.append((index, route.match or MatchSpec()))

        self._shadows(loaded, raw_routes, specs)

        default = data.get("default")
        if isinstance(default, str) and default and loaded.usable(("default",)):
            if default not in provider_names and not self.providers_unknown:
                loaded.error(
                    ("default",),
                    f"default: unknown provider {default!r}"
                    f"{_did_you_mean(default, provider_names)}",
                )
            elif default in providers and not providers[default].available:
                loaded.warning(
                    ("default",),
                    f"default provider {default!r} has no usable instance; requests that "
                    "match no route will fail",
                )
        overrides = data.get("overrides") or {}
        header = overrides.get("header", DEFAULT_HEADER)
        auth = self._auth(loaded, data.get("auth") or {})

        if has_errors(self.diagnostics) or not isinstance(default, str):
            return None

        active = [(i, route.match or MatchSpec()) for i, route in enumerate(routes) if route.active]
        compiled_when = {
            spec.when: self.jmespath_cache[spec.when][0] for _, spec in active if spec.when
        }
        direct = {name: _single(f"provider:{name}", name) for name in providers}
        plan = Plan(
            generation="",
            config_dir=str(self.dir),
            providers=MappingProxyType(providers),
            routes=tuple(routes),
            pipelines=MappingProxyType(dict(sorted(pipelines.items()))),
            default=default,
            path_prefix=overrides.get("path_prefix", True),
            header=header.lower() if isinstance(header, str) else None,
            auth=auth,
            matcher=build_matcher(active, compiled_when),
            direct=MappingProxyType(direct),
            default_route=_single("default", default),
        )
        return replace(plan, generation=generation(plan))

    def _route(
        self,
        loaded: _File,
        raw: dict[str, Any],
        path: DataPath,
        providers: Mapping[str, Provider],
        provider_names: set[str],
        pipelines: Mapping[str, Pipeline],
        pipeline_names: set[str],
        *,
        source: str,
    ) -> Route | None:
        ok = True
        match = raw.get("match") or {}
        models = match.get("model", ())
        models = (models,) if isinstance(models, str) else tuple(models)
        model_path = (*path, "match", "model")
        for index, pattern in enumerate(models):
            problem = glob_problem(pattern)
            if problem:
                at = model_path if isinstance(match.get("model"), str) else (*model_path, index)
                loaded.error(at, f"{display_path(at)}: bad glob {pattern!r}: {problem}")
                ok = False
        protocols = match.get("protocol", ())
        protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        when = match.get("when")
        if when is not None and self._jmespath(loaded, when, (*path, "match", "when")) is None:
            ok = False

        route_pipeline = raw.get("pipeline")
        if route_pipeline is not None and route_pipeline not in pipeline_names:
            loaded.error(
                (*path, "pipeline"),
                f"{display_path((*path, 'pipeline'))}: unknown pipeline {route_pipeline!r}"
                f"{_did_you_mean(route_pipeline, pipeline_names)} (no file "
                f"{PIPELINES_DIR}/{route_pipeline}.yaml)",
            )
            ok = False

        to = raw["to"]
        items = to if isinstance(to, list) else [to]
        declared: list[Target] = []
        for index, item in enumerate(items):
            at = (*path, "to", index) if isinstance(to, list) else (*path, "to")
            spec = {"provider": item} if isinstance(item, str) else item
            name = spec["provider"]
            if name not in provider_names and self.providers_unknown:
                ok = False
                continue
            if name not in provider_names:
                where = at if isinstance(item, str) else (*at, "provider")
                loaded.error(
                    where,
                    f"{display_path(where)}: unknown provider {name!r}"
                    f"{_did_you_mean(name, provider_names)}",
                )
                ok = False
                continue
            pipeline_name = spec.get("pipeline", route_pipeline)
            if (
                "pipeline" in spec
                and pipeline_name is not None
                and pipeline_name not in pipeline_names
            ):
                loaded.error(
                    (*at, "pipeline"),
                    f"{display_path((*at, 'pipeline'))}: unknown pipeline {pipeline_name!r}"
                    f"{_did_you_mean(pipeline_name, pipeline_names)}",
                )
                ok = False
                continue
            declared.append(
                Target(
                    provider=name,
                    model=spec.get("model"),
                    pipeline=pipelines.get(pipeline_name) if pipeline_name else None,
                )
            )
        if not ok:
            return None

        targets = tuple(
            t for t in declared if t.provider in providers and providers[t.provider].available
        )
        if not targets:
            why = ", ".join(_why_unavailable(providers, t.provider) for t in declared)
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

    def _shadows(
        self, loaded: _File, raw_routes: list[Any], specs: list[tuple[int, MatchSpec]]
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

    def _auth(self, loaded: _File, raw: Mapping[str, Any]) -> Auth:
        keys: dict[str, list[Secret]] = {"api_keys": [], "admin_keys": []}
        for env_name, kind in (("REQUIRED_API_KEY", "api_keys"), ("ADMIN_API_KEY", "admin_keys")):
            value = self.env.get(env_name, "")
            if value:
                keys[kind].append(Secret(value, env=env_name))
        for kind in ("api_keys", "admin_keys"):
            for index, value in enumerate(raw.get(kind) or ()):
                path = ("auth", kind, index)
                ref = loaded.source.refs.get(path)
                if ref is not None and ref.missing:
                    loaded.warning(
                        path,
                        f"{display_path(path)}: {', '.join(ref.missing)} is not set; "
                        "this key is ignored",
                    )
                    continue
                secret = self._secret(value, ref)
                if secret is not None:
                    keys[kind].append(secret)
        return Auth(api_keys=tuple(keys["api_keys"]), admin_keys=tuple(keys["admin_keys"]))


def _single(name: str, provider: str) -> Route:
    """The synthetic route of an override or of the default: one target, no pipeline."""
    chain = (Target(provider=provider),)
    return Route(name=name, targets=chain, declared=chain)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _why_unavailable(providers: Mapping[str, Provider], name: str) -> str:
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


def _serves(
    models: list[re.Pattern[str]], excluded: list[re.Pattern[str]]
) -> Callable[[str], bool]:
    if not models and not excluded:
        return _serves_all
    include = tuple(models)
    exclude = tuple(excluded)

    def serves(model: str) -> bool:
        if include and not any(p.match(model) for p in include):
            return False
        return not any(p.match(model) for p in exclude)

    return serves


def _serves_all(_model: str) -> bool:
    return True
