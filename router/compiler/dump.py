"""The canonical dump of a Plan (`router compile`) and the generation hash.

Canonical means: the same Plan gives the same bytes on every run and machine. Mappings
whose order carries no meaning are sorted (providers, pipelines, headers, options); the
route list and failover chains keep their order. Secrets are `***`; paths inside the
config dir are shown relative to it; nothing machine-specific (config dir, time) appears.
Effective values are shown (defaults filled in, durations in seconds)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import yaml

from router.compiler.plan import (
    SECRET_NAME,
    Instance,
    Pipeline,
    Plan,
    Provider,
    Route,
    Secret,
    Step,
    Target,
    redact_url,
)

MASK = "***"
SENSITIVE = SECRET_NAME  # header / env names whose values are treated as secrets


class Collector:
    """Gathers the secret values the dump hides, for the generation hash."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def secret(self, value: Any) -> str:
        self.secrets.append(value.value if isinstance(value, Secret) else str(value))
        return MASK

    def url(self, value: str) -> str:
        shown = redact_url(value)
        if shown != value:
            self.secrets.append(value)
        return shown

    def masked(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: self.secret(v) if SENSITIVE.search(k) and v not in ("", None) else _plain(v)
            for k, v in sorted(mapping.items())
        }


def canonical(plan: Plan, collector: Collector | None = None) -> dict[str, Any]:
    """The Plan as plain data, in canonical order."""
    c = collector or Collector()
    return {
        "default": plan.default,
        "overrides": {"path_prefix": plan.path_prefix, "header": plan.header},
        "auth": {
            "api_keys": [c.secret(k) for k in plan.auth.api_keys],
            "admin_keys": [c.secret(k) for k in plan.auth.admin_keys],
        },
        "providers": {
            name: _provider(plan.providers[name], plan.config_dir, c)
            for name in sorted(plan.providers)
        },
        "pipelines": {name: _pipeline(plan.pipelines[name], c) for name in sorted(plan.pipelines)},
        "routes": [_route(route) for route in plan.routes],
    }


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Lists of scalars in flow style, `[a, b]`, everything else in block style. libyaml's
    emitter when available (faster; tests check it writes the same bytes as PyYAML's)."""

    def represent_list(self, data: list[Any]) -> yaml.Node:  # type: ignore[override]
        flow = bool(data) and all(
            isinstance(v, str | int | float | bool) or v is None for v in data
        )
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def dump(plan: Plan) -> str:
    """`router compile` output."""
    return yaml.dump(
        canonical(plan),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )


def generation(plan: Plan) -> str:
    """12 hex digits over the canonical dump and the secret values, so rotating a key
    changes the generation without the generation revealing the key."""
    collector = Collector()
    data = json.dumps(canonical(plan, collector), separators=(",", ":"), ensure_ascii=False)
    secrets = hashlib.sha256("\0".join(sorted(collector.secrets)).encode()).hexdigest()
    return hashlib.sha256(f"{data}\n{secrets}".encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    """Mapping proxies, tuples and sets as YAML-friendly dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=lambda v: (isinstance(v, str), str(v)))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _seconds(value: float | None) -> float | int | None:
    return _plain(value)


def _provider(provider: Provider, config_dir: str, c: Collector) -> dict[str, Any]:
    return {
        "type": provider.type,
        "protocol": provider.protocol,
        "available": provider.available,
        "models": list(provider.models),
        "timeout": _seconds(provider.timeout),
        "first_token_timeout": _seconds(provider.first_token_timeout),
        "health": {
            "max_errors": provider.health.max_errors,
            "recover_after": _seconds(provider.health.recover_after),
        },
        "options": c.masked(provider.options),
        "instances": [_instance(i, config_dir, c) for i in provider.instances],
    }


def _instance(instance: Instance, config_dir: str, c: Collector) -> dict[str, Any]:
    out: dict[str, Any] = {"id": instance.id, "enabled": instance.enabled}
    if instance.base_url is not None:
        out["base_url"] = c.url(instance.base_url)
    if instance.api_key is not None:
        out["api_key"] = c.secret(instance.api_key)
    out["headers"] = c.masked(instance.headers)
    out["models"] = list(instance.models)
    out["exclude_models"] = list(instance.exclude_models)
    out["proxy"] = (
        "system"
        if instance.proxy is None
        else "off"
        if instance.proxy is False
        else c.url(instance.proxy)
    )
    options: dict[str, Any] = {}
    for key, value in sorted(instance.options.items()):
        if isinstance(value, Secret):
            options[key] = c.secret(value)
        elif key == "credentials":
            options[key] = _relative(str(value), config_dir)
        elif key == "env":
            options[key] = c.masked(value)
        else:
            options[key] = _plain(value)
    out["options"] = options
    if instance.unconfigured:
        out["unconfigured"] = list(instance.unconfigured)
    return out


def _relative(path: str, config_dir: str) -> str:
    if os.path.isabs(path):
        try:
            inside = os.path.commonpath([path, config_dir]) == config_dir
        except ValueError:
            inside = False
        if inside:
            return os.path.relpath(path, config_dir).replace(os.sep, "/")
        home = os.path.expanduser("~")
        if home not in ("", "/") and path.startswith(home + os.sep):
            return "~/" + os.path.relpath(path, home).replace(os.sep, "/")
    return path


def _pipeline(pipeline: Pipeline, c: Collector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("request", "upstream", "response", "headers"):
        steps: tuple[Step, ...] = getattr(pipeline, stage)
        if steps:
            out[stage] = [render_step(step, c, headers=stage == "headers") for step in steps]
    return out


def render_step(step: Step, c: Collector, *, headers: bool) -> dict[str, Any]:
    """A step as written; in the headers stage, values of secret-looking headers are `***`."""
    out: dict[str, Any] = {}
    for key, value in step.spec.items():
        if key in ("set", "default") and isinstance(value, Mapping):
            if key == "set" and "path" in value:
                shown = dict(value)
                if headers and "value" in shown and SENSITIVE.search(str(shown["path"])):
                    shown["value"] = c.secret(shown["value"])
                out[key] = _plain_keep_order(shown)
            else:
                out[key] = c.masked(value) if headers else _plain(value)
        else:
            out[key] = _plain(value)
    return out


def _plain_keep_order(mapping: Mapping[str, Any]) -> dict[str, Any]:
    order = {"path": 0, "value": 1, "expr": 1}
    return {k: _plain(mapping[k]) for k in sorted(mapping, key=lambda k: (order.get(k, 2), k))}


def _route(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"name": route.name}
    match: dict[str, Any] = {}
    if route.match is not None:
        if route.match.models:
            match["model"] = list(route.match.models)
        if route.match.protocols:
            match["protocol"] = list(route.match.protocols)
        if route.match.when is not None:
            match["when"] = route.match.when
    out["match"] = match
    active = set(map(id, route.targets))
    out["to"] = [_target(t, id(t) in active) for t in route.declared]
    if not route.active:
        out["inactive"] = True
    if route.strict:
        out["strict"] = True
    if route.retry_on:
        out["retry_on"] = _plain(route.retry_on)
    if route.max_attempts is not None:
        out["max_attempts"] = route.max_attempts
    return out


def _target(target: Target, active: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"provider": target.provider}
    if target.model is not None:
        out["model"] = target.model
    if target.pipeline is not None:
        out["pipeline"] = target.pipeline.name
    if not active:
        out["skipped"] = "no usable instance"
    return out
