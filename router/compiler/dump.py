"""The canonical dump of a Plan (`router compile`) and the generation hash.

The dump shows what the config files say, compiled, and nothing about the machine: the
same files give the same bytes on every run and machine, whatever the environment and
whichever credentials files exist, so it can be snapshot-tested and reviewed. So:

- a value written with `${...}` is shown as written (`${OPENAI_API_KEY}`,
  `${BASE_URL:-https://...}`, `Bearer ${TOKEN}`), secret or not: a variable's name is not
  a secret, and its value here is this machine's, not the config's;
- a secret written literally is `***`: api keys, client secrets, auth keys, the values of
  headers and env entries with secret-looking names (empty or not), passwords and
  secret-looking query values in URLs;
- what depends on the machine is left out: whether instances are configured, providers
  available, routes inactive, targets skipped, and the keys from REQUIRED_API_KEY /
  ADMIN_API_KEY. `router check` warns about those; `router explain` and /provider_health
  show them;
- effective values are shown (defaults filled in, durations in seconds). Mappings whose
  order carries no meaning are sorted (providers, pipelines, headers, options); the route
  list and failover chains keep their order.

The generation hash is the other way round: it covers the Plan as resolved here, this
machine's state included, and the secret values, so that a rotated key or a changed
variable makes a new generation without the generation revealing either."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from router.access.keys import ClientKey

from router.compiler.layout import PROVIDERS_FILE, ROUTES_FILE, pipeline_file
from router.compiler.plan import (
    SECRET_NAME,
    Instance,
    Pipeline,
    Plan,
    Price,
    Provider,
    Route,
    Secret,
    Step,
    Target,
    redact_query_pair,
    redact_url,
)
from router.compiler.written import DataPath, Written
from router.config.interpolate import mask_literals

MASK = "***"
SENSITIVE = SECRET_NAME  # header / env names whose values are treated as secrets
URL_OPTIONS = frozenset({"base_urls", "token_url", "auth_url"})  # a URL, or a list of them

Texts = Mapping[DataPath, Any]  # one file's `Written` record
_NONE: Texts = {}  # never written to


class Collector:
    """Shows the Plan as this machine resolved it, secrets as `***`, and gathers the secret
    values for the generation hash. `router explain` shows steps with it."""

    as_written = False

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def texts(self, file: str) -> Texts:
        """What `file` wrote where the Plan holds something else; nothing, here."""
        return _NONE

    def secret(self, value: Any, text: str | None = None) -> str:
        self.secrets.append(value.value if isinstance(value, Secret) else str(value))
        return MASK

    def url(self, value: str, text: str | None = None) -> str:
        shown = redact_url(value)
        if shown != value:
            self.secrets.append(value)
        return shown

    def masked(self, mapping: Mapping[str, Any], texts: Texts = _NONE, at: DataPath = ()) -> Any:
        return {
            k: self.secret(v) if SENSITIVE.search(k) and v not in ("", None) else _plain(v)
            for k, v in sorted(mapping.items())
        }


class AsWritten(Collector):
    """Shows what the files wrote: a reference's text rather than its value here, and
    literal secrets as `***`."""

    as_written = True

    def __init__(self, written: Written) -> None:
        super().__init__()
        self.written = written

    def texts(self, file: str) -> Texts:
        return self.written.file(file)

    def secret(self, value: Any, text: str | None = None) -> str:
        return MASK if text is None else mask_literals(text, MASK)

    def url(self, value: str, text: str | None = None) -> str:
        return redact_url(value) if text is None else redact_literals(text)

    def masked(self, mapping: Mapping[str, Any], texts: Texts = _NONE, at: DataPath = ()) -> Any:
        out: dict[str, Any] = {}
        for key, value in sorted(mapping.items()):
            path = (*at, key)
            text = texts.get(path)
            if SENSITIVE.search(key):
                out[key] = self.secret(value, text)
            elif text is not None:
                out[key] = text
            else:
                out[key] = _tree(texts, path, value)
        return out


def canonical(plan: Plan, collector: Collector | None = None) -> dict[str, Any]:
    """The Plan as plain data, in canonical order: as written (the dump) by default, as
    resolved here with a `Collector`."""
    c = collector or AsWritten(plan.written)
    texts = c.texts(ROUTES_FILE)
    providers = c.texts(PROVIDERS_FILE)
    out = {
        "default": texts.get(("default",), plan.default),
        "overrides": {
            "path_prefix": texts.get(("overrides", "path_prefix"), plan.path_prefix),
            "header": texts.get(("overrides", "header"), plan.header),
        },
        "auth": _auth(plan, c, texts),
        **({"state": state} if (state := _state(plan, c, texts)) else {}),
        "providers": {
            name: _provider(plan.providers[name], plan.config_dir, c, providers)
            for name in sorted(plan.providers)
        },
        "pipelines": {
            name: _pipeline(plan.pipelines[name], c, c.texts(pipeline_file(name)))
            for name in sorted(plan.pipelines)
        },
        "routes": [
            _route(r, plan.providers, c, texts, ("routes", i)) for i, r in enumerate(plan.routes)
        ],
    }
    if plan.admin.read_only:  # only when set: dumps of configs without it stay as they were
        out["admin"] = {"read_only": True}
    return out


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
    """12 hex digits over the Plan as resolved here and the secret values, so rotating a
    key changes the generation without the generation revealing the key."""
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


def _tree(texts: Texts, path: DataPath, value: Any) -> Any:
    """`value` (found at `path` in its file) as plain data, with what the file wrote
    wherever a reference was."""
    if not texts:
        return _plain(value)
    text = texts.get(path)
    if isinstance(text, str):
        return text
    if isinstance(value, Mapping):
        return {str(k): _tree(texts, (*path, k), v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_tree(texts, (*path, i), v) for i, v in enumerate(value)]
    return _plain(value)


def _items(texts: Texts, at: DataPath, key: str, values: tuple[str, ...]) -> list[Any]:
    """A list of names (at `at` + `key`), each as written."""
    if not texts:
        return list(values)
    return [texts.get((*at, key, index), value) for index, value in enumerate(values)]


def _put(out: dict[str, Any], key: str, texts: Texts, at: DataPath, value: Any) -> None:
    """`out[key]`: the text written at `at` + `key`, else `value` unless None (then no key)."""
    text = texts.get((*at, key)) if texts else None
    if text is not None:
        out[key] = text
    elif value is not None:
        out[key] = value


def redact_literals(url: str) -> str:
    """A URL as written with `${...}` references, which are shown, less a password or a
    secret-looking query value written literally (as `redact_url` would hide them)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min([i for i in map(rest.find, "/?#") if i >= 0] or [len(rest)])
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, _, password = userinfo.partition(":")
        if "${" not in password and (password or "${" not in user):  # `${USERINFO}@host`
            authority = f"{user}:{MASK}@{host}"
    path, question, query = tail.partition("?")
    if question:
        query, hashmark, fragment = query.partition("#")
        pairs = [
            p if "${" in p.partition("=")[2] else redact_query_pair(p) for p in query.split("&")
        ]
        tail = f"{path}?{'&'.join(pairs)}{hashmark}{fragment}"
    return f"{scheme}://{authority}{tail}"


def _seconds(value: float | None) -> float | int | None:
    return _plain(value)


def _auth(plan: Plan, c: Collector, texts: Texts) -> dict[str, Any]:
    if not c.as_written:
        out: dict[str, Any] = {
            "api_keys": [c.secret(k) for k in plan.auth.api_keys],
            "admin_keys": [c.secret(k) for k in plan.auth.admin_keys],
        }
        keys = [c.secret(key.digest) for key in plan.auth.named]
    else:
        # the keys routes.yaml lists; those from REQUIRED_API_KEY / ADMIN_API_KEY are the
        # machine's
        out = {
            kind: [c.secret(None, text) for text in texts.get(("auth", kind), ())]
            for kind in ("api_keys", "admin_keys")
        }
        listed = texts.get(("auth", "keys"), ())
        keys = [
            text if text and text.lower().startswith("sha256:") else c.secret(None, text)
            for text in listed
        ]
    if plan.auth.named:
        out["keys"] = [
            _named_key(key, shown) for key, shown in zip(plan.auth.named, keys, strict=True)
        ]
    return out


def _named_key(key: ClientKey, shown: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": key.name, "key": shown}
    if key.models is not None:
        out["models"] = list(key.models)
    if key.providers is not None:
        out["providers"] = sorted(key.providers)
    if key.limits:
        out["limits"] = key.limits.as_dict()
    if key.expires is not None:
        out["expires"] = datetime.fromtimestamp(key.expires, UTC).isoformat()
    return out


def _state(plan: Plan, c: Collector, texts: Texts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for engine in ("redis", "database"):
        secret = getattr(plan.state, engine)
        text = texts.get(("state", engine))
        if secret is not None:
            out[engine] = c.url(secret.value, text)
    if plan.state.fail_closed:
        out["fail_closed"] = True
    return out


def _provider(provider: Provider, config_dir: str, c: Collector, texts: Texts) -> dict[str, Any]:
    at = ("providers", provider.name)
    kind = texts.get((*at, "type"))
    out: dict[str, Any] = {"type": provider.type if kind is None else kind}
    if kind is None:  # else the protocol is what this machine makes of `type`
        out["protocol"] = provider.protocol
    if not c.as_written:
        out["available"] = provider.available_in_file
    health = (*at, "health")
    out["models"] = _tree(texts, (*at, "models"), provider.models)
    out["timeout"] = texts.get((*at, "timeout"), _seconds(provider.timeout))
    out["first_token_timeout"] = texts.get(
        (*at, "first_token_timeout"), _seconds(provider.first_token_timeout)
    )
    out["health"] = {
        "max_errors": texts.get((*health, "max_errors"), provider.health.max_errors),
        "recover_after": texts.get(
            (*health, "recover_after"), _seconds(provider.health.recover_after)
        ),
    }
    plain = {k: v for k, v in provider.options.items() if k not in URL_OPTIONS}
    options = c.masked(plain, texts, (*at, "options"))
    for key in URL_OPTIONS.intersection(provider.options):
        options[key] = _urls(provider.options[key], c, texts, (*at, "options", key))
    out["options"] = dict(sorted(options.items()))
    if provider.pricing:  # USD per million tokens, first match wins: in written order
        out["pricing"] = {price.model: _price(price) for price in provider.pricing}
    out["instances"] = [
        instance_dump(instance, config_dir, c, texts, (*at, "instances", index))
        for index, instance in enumerate(provider.instances)
    ]
    return out


def _price(price: Price) -> dict[str, float]:
    out = {"input": price.input, "output": price.output}
    if price.cached_input is not None:
        out["cached_input"] = price.cached_input
    return out


def instance_dump(
    instance: Instance, config_dir: str, c: Collector, texts: Texts, at: DataPath
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": texts.get((*at, "id"), instance.id),
        "enabled": texts.get((*at, "enabled"), instance.enabled_in_file),
    }
    base_url = texts.get((*at, "base_url"))
    if base_url is not None or instance.base_url is not None:
        out["base_url"] = c.url(instance.base_url or "", base_url)
    api_key = texts.get((*at, "api_key"))
    if api_key is not None or instance.api_key is not None:
        out["api_key"] = c.secret(instance.api_key, api_key)
    out["headers"] = c.masked(instance.headers, texts, (*at, "headers"))
    out["models"] = _tree(texts, (*at, "models"), instance.models)
    out["exclude_models"] = _tree(texts, (*at, "exclude_models"), instance.exclude_models)
    proxy = texts.get((*at, "proxy"))
    if proxy is not None:
        out["proxy"] = c.url(str(instance.proxy), proxy)
    elif instance.proxy is None:
        out["proxy"] = "system"
    elif instance.proxy is False:
        out["proxy"] = "off"
    else:
        out["proxy"] = c.url(str(instance.proxy))
    options: dict[str, Any] = {}
    for key, value in sorted(instance.options.items()):
        path = (*at, key)
        text = texts.get(path)
        if key == "env":
            options[key] = c.masked(_env(value, text), texts, path)
        elif isinstance(value, Secret) or key == "client_secret":
            options[key] = None if value is None and text is None else c.secret(value, text)
        elif key == "credentials":
            options[key] = _relative(str(value), config_dir) if text is None else text
        elif key in URL_OPTIONS:
            options[key] = _urls(value, c, texts, path)
        else:
            options[key] = _tree(texts, path, value)
    out["options"] = options
    if not c.as_written and instance.unconfigured:
        out["unconfigured"] = list(instance.unconfigured)
    return out


def _urls(value: Any, c: Collector, texts: Texts, path: DataPath) -> Any:
    """A URL option, or a list of them, less passwords and secret-looking query values."""
    if isinstance(value, list | tuple):
        return [_urls(item, c, texts, (*path, index)) for index, item in enumerate(value)]
    text = texts.get(path)
    return c.url(str(value), text if isinstance(text, str) else None)


def _env(env: Mapping[str, str], written: tuple[str, ...] | None) -> Mapping[str, str]:
    """The env entries to show: the Plan drops empty values, so a `${VAR}` entry is only
    there when the variable is set here; `Written` keeps the keys as written."""
    if written is None:
        return env
    return {key: env.get(key, "") for key in written}


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


def _pipeline(pipeline: Pipeline, c: Collector, texts: Texts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("request", "upstream", "response", "headers"):
        steps: tuple[Step, ...] = getattr(pipeline, stage)
        if steps:
            out[stage] = [
                render_step(step, c, headers=stage == "headers", texts=texts, at=(stage, index))
                for index, step in enumerate(steps)
            ]
    return out


def render_step(
    step: Step, c: Collector, *, headers: bool, texts: Texts = _NONE, at: DataPath = ()
) -> dict[str, Any]:
    """A step as written (`at`: its path in its file); in the headers stage, values of
    secret-looking headers are `***`."""
    out: dict[str, Any] = {}
    for key, value in step.spec.items():
        path = (*at, key)
        if key in ("set", "default") and isinstance(value, Mapping):
            if key == "set" and "path" in value:
                shown = {k: _tree(texts, (*path, k), v) for k, v in value.items()}
                # a header name written with a reference could be any header: a secret one
                secret = _secret_header(value["path"], texts, (*path, "path"))
                if headers and "value" in value and secret:
                    written = texts.get((*path, "value")) if texts else None
                    shown["value"] = c.secret(value["value"], written)
                out[key] = _keep_order(shown)
            else:
                out[key] = c.masked(value, texts, path) if headers else _tree(texts, path, value)
        elif key == "map" and headers and _secret_header(value["path"], texts, (*path, "path")):
            # the table's keys and values are both header values: a secret's, here
            out[key] = {"path": _tree(texts, (*path, "path"), value["path"])}
            out[key]["values"] = c.secret(json.dumps(value["values"], sort_keys=True))
        else:
            out[key] = _tree(texts, path, value)
    return out


def _secret_header(name: Any, texts: Texts, at: DataPath) -> bool:
    """A header name that looks secret; one written with a reference could be any header."""
    return bool(texts and texts.get(at) is not None) or bool(SENSITIVE.search(str(name)))


def _keep_order(mapping: Mapping[str, Any]) -> dict[str, Any]:
    order = {"path": 0, "value": 1, "expr": 1}
    return {k: mapping[k] for k in sorted(mapping, key=lambda k: (order.get(k, 2), k))}


def _route(
    route: Route, providers: Mapping[str, Provider], c: Collector, texts: Texts, at: DataPath
) -> dict[str, Any]:
    # paths are only built when the file wrote something: generation() walks every route
    name = texts.get((*at, "name"), route.name) if texts else route.name
    out: dict[str, Any] = {"name": name}
    match: dict[str, Any] = {}
    spec = route.match
    if spec is not None:
        where = (*at, "match") if texts else at
        # (a single name written as a string is item 0: see routes._record_written)
        if spec.models:
            match["model"] = _items(texts, where, "model", spec.models)
        if spec.protocols:
            match["protocol"] = _items(texts, where, "protocol", spec.protocols)
        if spec.when is not None or texts:
            _put(match, "when", texts, where, spec.when)
    out["match"] = match
    # which targets the files make usable: runtime overrides change what the Plan routes
    # by, not the dump or the generation
    active = [
        target.provider in providers and providers[target.provider].available_in_file
        for target in route.declared
    ]
    out["to"] = [
        _target(target, c, texts, (*at, "to", index) if texts else at, usable)
        for index, (target, usable) in enumerate(zip(route.declared, active, strict=True))
    ]
    if not c.as_written and not any(active):
        out["inactive"] = True
    if route.strict or texts:
        _put(out, "strict", texts, at, True if route.strict else None)
    retry_on = texts.get((*at, "retry_on")) if texts else None
    if retry_on is not None:
        out["retry_on"] = _plain(frozenset(retry_on))
    elif route.retry_on:
        out["retry_on"] = _plain(route.retry_on)
    if route.max_attempts is not None or texts:
        _put(out, "max_attempts", texts, at, route.max_attempts)
    return out


def _target(
    target: Target, c: Collector, texts: Texts, at: DataPath, active: bool
) -> dict[str, Any]:
    provider = texts.get((*at, "provider"), target.provider) if texts else target.provider
    out: dict[str, Any] = {"provider": provider}
    if target.model is not None or texts:
        _put(out, "model", texts, at, target.model)
    if target.pipeline is not None or texts:
        _put(out, "pipeline", texts, at, target.pipeline.name if target.pipeline else None)
    if not c.as_written and not active:
        out["skipped"] = "no usable instance"
    return out
