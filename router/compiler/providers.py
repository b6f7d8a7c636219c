"""providers.yaml -> Provider pools with their Instances: durations, secrets, adapter
options, model filters, and which instances are unconfigured (a secret's `${VAR}` unset,
or a credentials file missing) and so skipped at run time."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from router.compiler.context import Context
from router.compiler.glob import compile_glob, glob_problem
from router.compiler.plan import (
    SECRET_NAME,
    HealthPolicy,
    Instance,
    Price,
    Provider,
    Redacted,
    Secret,
)
from router.compiler.provider_types import BY_NAME, PROVIDER_TYPES
from router.config.durations import parse_duration
from router.config.interpolate import Interpolated
from router.config.loaded import LoadedFile
from router.config.schema import display_path
from router.config.yamlsource import Path as DataPath

# Instance keys holding secrets: an unset `${VAR}` in one makes the instance unconfigured.
# So does one in a `headers` or `env` entry whose name looks secret (Authorization, *KEY*).
SECRET_KEYS = ("api_key", "client_secret")
# Adapter-specific instance keys, and the types that use them.
ADAPTER_KEYS: Mapping[str, frozenset[str]] = {t.name: t.keys for t in PROVIDER_TYPES if t.keys}
_SPECIFIC_KEYS = frozenset().union(*ADAPTER_KEYS.values())
# instance keys that go to `Instance.options`
OPTION_KEYS = _SPECIFIC_KEYS | {"max_concurrency", "model_aliases"}
# First path segments the server owns; a provider of that name could not be addressed.
RESERVED_NAMES = frozenset({"v1", "v1beta", "api", "ui", "metrics", "health", "provider_health"})
_PROXY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")  # scheme://host...


def compile_providers(ctx: Context, loaded: LoadedFile) -> dict[str, Provider]:
    data = loaded.data if isinstance(loaded.data, dict) else {}
    raw = data.get("providers")
    if not isinstance(raw, dict):
        return {}
    result: dict[str, Provider] = {}
    for name, spec in raw.items():
        path: DataPath = ("providers", name)
        if name in RESERVED_NAMES:
            message = f"provider name {name!r} is reserved (it is a path the server serves)"
            loaded.error(path, message, key=True)
            continue
        if not loaded.usable(path):
            continue
        provider = _provider(ctx, loaded, name, spec, path)
        if provider is not None:
            result[name] = provider
    return result


def is_secret_path(path: DataPath) -> bool:
    """Is this providers.yaml value a secret (so an unset variable in it is not a
    warning of its own, but makes its instance unconfigured)?"""
    if len(path) == 6 and path[2] == "instances" and path[4] in ("headers", "env"):
        return bool(SECRET_NAME.search(str(path[5])))
    return len(path) == 5 and path[2] == "instances" and path[4] in SECRET_KEYS


def _provider(
    ctx: Context, loaded: LoadedFile, name: str, spec: dict[str, Any], path: DataPath
) -> Provider | None:
    kind = spec["type"]
    provider_type = BY_NAME[kind]
    raw_instances = spec.get("instances") or []
    if not raw_instances and not provider_type.built_in:
        loaded.error(path, f"provider {name!r} (type {kind}) needs at least one instance")
        return None
    pool_proxy = _proxy(loaded, spec.get("proxy"), (*path, "proxy"))
    instances = []
    for index, raw in enumerate(raw_instances):
        instance_path = (*path, "instances", index)
        if loaded.usable(instance_path):
            instance = _instance(ctx, loaded, name, kind, raw, instance_path, pool_proxy)
            instances.append(instance)
    health = spec.get("health") or {}
    timeout = spec.get("timeout")
    first_token = spec.get("first_token_timeout")
    return Provider(
        name=name,
        type=kind,
        protocol=provider_type.protocol,
        models=tuple(spec.get("models") or ()),
        instances=tuple(instances),
        health=HealthPolicy(
            max_errors=health.get("max_errors", 3),
            recover_after=parse_duration(health.get("recover_after", 60)),
        ),
        timeout=parse_duration(timeout) if timeout is not None else 600.0,
        first_token_timeout=parse_duration(first_token) if first_token is not None else None,
        options=MappingProxyType(dict(spec.get("options") or {})),
        built_in=provider_type.built_in,
        pricing=_pricing(loaded, spec.get("pricing") or {}, (*path, "pricing")),
    )


def _instance(
    ctx: Context,
    loaded: LoadedFile,
    provider: str,
    kind: str,
    raw: dict[str, Any],
    path: DataPath,
    pool_proxy: str | bool | None,
) -> Instance:
    instance_id = raw["id"]
    first = ctx.instance_ids.get(instance_id)
    if first is not None:
        message = f"duplicate instance id {instance_id!r} (first defined at {first})"
        loaded.error((*path, "id"), message)
    else:
        ctx.instance_ids[instance_id] = loaded.where((*path, "id"))

    for key in raw:
        if key in _SPECIFIC_KEYS and key not in ADAPTER_KEYS.get(kind, ()):
            message = f"key {key!r} has no effect for provider type {kind!r}"
            loaded.warning((*path, key), message, key=True)

    refs = loaded.source.refs
    unconfigured: list[str] = []
    reasons: list[tuple[DataPath, str]] = []
    secret_paths = [(*path, key) for key in SECRET_KEYS]
    for mapping in ("headers", "env"):
        secret_paths += [
            (*path, mapping, k) for k in raw.get(mapping) or () if SECRET_NAME.search(k)
        ]
    for secret_path in secret_paths:
        ref = refs.get(secret_path)
        for variable in dict.fromkeys(ref.missing if ref else ()):
            if variable not in unconfigured:
                unconfigured.append(variable)
                reasons.append((secret_path, f"{variable} is not set"))

    options: dict[str, Any] = {}
    for key in sorted(OPTION_KEYS & set(raw)):
        value = raw[key]
        if key == "client_secret":
            value = _secret(value, refs.get((*path, key)))
        elif key == "credentials":
            ctx.written.keep(loaded.name, (*path, key), value)  # the Plan's is absolute
            file = Path(value).expanduser()
            if not file.is_absolute():
                file = ctx.dir / file
            if not file.exists():
                unconfigured.append(f"file:{value}")
                reasons.append(((*path, key), f"credentials file {value!r} does not exist"))
            value = str(file)
        elif key == "env":
            if any((*path, key, k) in refs for k in value):
                # the Plan drops empty values, so which keys it has depends on the machine
                shown = (k for k, v in value.items() if text(v) or (*path, key, k) in refs)
                ctx.written.keep(loaded.name, (*path, key), tuple(shown))
            value = MappingProxyType(Redacted({k: text(v) for k, v in value.items() if text(v)}))
        elif key == "model_aliases":
            value = MappingProxyType({k: text(v) for k, v in value.items()})
        elif isinstance(value, list):
            value = tuple(value)
        options[key] = value

    enabled_in_file = raw.get("enabled", True)
    override = ctx.overrides.get((provider, instance_id))
    enabled = enabled_in_file if override is None else override
    if reasons and enabled:
        loaded.warning(
            reasons[0][0],
            f"instance {instance_id!r} of provider {provider!r} is unconfigured: "
            f"{'; '.join(r for _, r in reasons)}; it is skipped at run time",
        )

    models = _globs(loaded, raw.get("models") or (), (*path, "models"))
    excluded = _globs(loaded, raw.get("exclude_models") or (), (*path, "exclude_models"))
    proxy = _proxy(loaded, raw["proxy"], (*path, "proxy")) if "proxy" in raw else pool_proxy
    if "proxy" not in raw:
        ctx.written.inherit(loaded.name, (*path, "proxy"), (*path[:2], "proxy"))
    headers = {k: text(v) for k, v in (raw.get("headers") or {}).items()}
    return Instance(
        id=instance_id,
        enabled=enabled,
        enabled_in_file=enabled_in_file,
        override=override,
        base_url=raw.get("base_url"),
        api_key=_secret(raw.get("api_key"), refs.get((*path, "api_key"))),
        headers=MappingProxyType(Redacted(headers)),
        models=tuple(raw.get("models") or ()),
        exclude_models=tuple(raw.get("exclude_models") or ()),
        proxy=None if proxy is True else proxy,
        unconfigured=tuple(unconfigured),
        options=MappingProxyType(options),
        serves=_serves(models, excluded),
    )


def _proxy(loaded: LoadedFile, value: Any, path: DataPath) -> str | bool | None:
    """true/false, also as the strings an environment variable gives in a quoted scalar
    (`"${USE_SYSTEM_PROXY_OPENAI:-true}"`), or a proxy URL. Anything else is an error
    rather than a proxy named "false"."""
    if not isinstance(value, str):
        return value
    flag = value.strip().lower()
    if flag in ("true", "false"):
        return flag == "true"
    if not _PROXY_URL.match(value):
        expected = "expected true, false or a proxy URL (http://host:port)"
        loaded.error(path, f"{display_path(path)}: {expected}, got {value!r}")
        return None
    return value


def _pricing(loaded: LoadedFile, raw: dict[str, Any], path: DataPath) -> tuple[Price, ...]:
    prices = []
    for pattern, spec in raw.items():
        globs = _globs(loaded, [pattern], (*path, pattern), key=True)
        if not globs:
            continue
        glob = globs[0]
        prices.append(
            Price(
                model=pattern,
                input=float(spec["input"]),
                output=float(spec["output"]),
                cached_input=float(spec["cached_input"]) if "cached_input" in spec else None,
                matches=lambda model, glob=glob: glob.match(model) is not None,
            )
        )
    return tuple(prices)


def _globs(
    loaded: LoadedFile, patterns: Iterable[str], path: DataPath, key: bool = False
) -> list[re.Pattern[str]]:
    compiled = []
    for index, pattern in enumerate(patterns):
        problem = glob_problem(pattern)
        if problem:
            at = path if key else (*path, index)
            loaded.error(at, f"{display_path(at)}: bad glob {pattern!r}: {problem}", key=key)
            continue
        compiled.append(compile_glob(pattern))
    return compiled


def _secret(value: Any, ref: Interpolated | None) -> Secret | None:
    if not isinstance(value, str) or not value:
        return None
    return Secret(value, env=ref.variables[0] if ref is not None and ref.variables else None)


def text(value: Any) -> str:
    """A header/env value as the string it will be sent as."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


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
