"""The compiled, immutable Plan the server runs. Built by `router.compiler.compile`.

Nothing here reads YAML or compiles a schema, glob or expression: the compiler did
that. `Plan.resolve` is the hot-path entry point."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from router.compiler.written import Written
from router.protocols import ir

if TYPE_CHECKING:
    from router.access.keys import ClientKey
    from router.compiler.matcher import MatchSpec, RouteMatcher


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value. Never printed: repr and str are `***`."""

    value: str = field(repr=False)
    env: str | None = None  # the variable it came from, for diagnostics
    name: str | None = None  # what records call it (client keys): never the value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


SECRET_NAME = re.compile(r"(?i)authorization|api[-_]?key|token|secret|password|cookie|credential")


def redact_url(url: str) -> str:
    """A URL without its password and without secret-looking query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(map(redact_query_pair, parts.query.split("&"))) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_query_pair(pair: str) -> str:
    """One `name=value` of a query, as written unless the name (decoded) looks secret."""
    name, equals, _ = pair.partition("=")
    decoded = unquote_plus(name)
    return f"{name}=***" if equals and (SECRET_NAME.search(decoded) or decoded == "key") else pair


class Redacted(dict):  # type: ignore[type-arg]
    """A plain dict (headers, env) whose repr shows secret-looking entries as `***`."""

    def __repr__(self) -> str:
        shown = {k: "***" if SECRET_NAME.search(str(k)) else v for k, v in self.items()}
        return repr(shown)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    max_errors: int = 3
    recover_after: float = 60.0  # seconds


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    enabled: bool = True  # as routed: the runtime override when there is one, else the file's
    enabled_in_file: bool = True
    override: bool | None = None  # the runtime override (router.state.overrides), if any
    base_url: str | None = None
    api_key: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # globs; empty means every model
    exclude_models: tuple[str, ...] = ()  # globs
    # None: follow the system proxy (HTTPS_PROXY...); False: no proxy; str: this proxy URL
    proxy: str | bool | None = None
    # why it cannot be used: names of required env vars that are unset, or
    # "file:PATH" for a credentials file that does not exist. Skipped at run time.
    unconfigured: tuple[str, ...] = ()
    # adapter-specific keys (credentials: absolute path; client_secret: a Secret;
    # env: empty values left out; max_concurrency, model_aliases, command, ...)
    options: Mapping[str, Any] = field(default_factory=dict)
    # compiled matcher for models/exclude_models: model name -> allowed?
    serves: Callable[[str], bool] = field(default=lambda _model: True, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, in USD per million tokens (`pricing:` of a pool)."""

    model: str  # the glob as written
    input: float
    output: float
    cached_input: float | None = None  # default: the input price
    matches: Callable[[str], bool] = field(default=lambda _model: True, repr=False, compare=False)

    def cost(self, usage: ir.Usage) -> float:
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        fresh = usage.input_tokens - cached
        total = fresh * self.input + cached * cached_price + usage.output_tokens * self.output
        return total / 1_000_000


@dataclass(frozen=True, slots=True)
class Provider:
    """A pool: every instance speaks the same adapter."""

    name: str
    type: str
    protocol: str  # spoken upstream (router.compiler.provider_types); "ir": no wire translation
    models: tuple[str, ...] = ()
    instances: tuple[Instance, ...] = ()
    health: HealthPolicy = field(default_factory=HealthPolicy)
    timeout: float = 600.0
    first_token_timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    built_in: bool = False  # serves without instances (echo)
    pricing: tuple[Price, ...] = ()  # first match wins

    def price_for(self, model: str) -> Price | None:
        for price in self.pricing:
            if price.matches(model):
                return price
        return None

    @property
    def available(self) -> bool:
        """Can take traffic: a built-in always; others need an enabled, configured instance."""
        if self.built_in:
            return True
        return any(i.enabled and not i.unconfigured for i in self.instances)

    @property
    def available_in_file(self) -> bool:
        """`available` as the files have it, runtime overrides aside (the dump's)."""
        if self.built_in:
            return True
        return any(i.enabled_in_file and not i.unconfigured for i in self.instances)


Stage = Literal["request", "upstream", "response", "headers"]


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled mapping step. `apply` returns the (possibly new) document."""

    kind: str  # set | default | rename | drop | map
    spec: Mapping[str, Any]  # as written, for dumps and explain
    apply: Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]] = field(
        repr=False, compare=False
    )


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    request: tuple[Step, ...] = ()
    upstream: tuple[Step, ...] = ()
    response: tuple[Step, ...] = ()
    headers: tuple[Step, ...] = ()

    def run(self, stage: Stage, doc: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the stage's steps in order. `context` is what JMESPath expressions see
        besides the document itself (`model`, `protocol`, `headers`)."""
        for step in getattr(self, stage):
            doc = step.apply(doc, context)
        return doc


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str | None = None  # None: keep the client's model
    pipeline: Pipeline | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    # the failover chain the server walks: targets whose provider can take traffic
    targets: tuple[Target, ...]
    strict: bool = False
    # statuses (int) and classes ("4xx", "5xx"); empty: the default retryable set
    retry_on: frozenset[int | str] = frozenset()
    max_attempts: int | None = None
    match: MatchSpec | None = None  # None for the synthetic override/default routes
    pipeline: str | None = None  # the route's `pipeline:` as written
    declared: tuple[Target, ...] = ()  # the chain as written, including skipped targets
    source: str = ""  # "routes.yaml:12:5"

    @property
    def active(self) -> bool:
        return bool(self.targets)


@dataclass(frozen=True, slots=True)
class Resolution:
    via: Literal["path", "header", "route", "default"]
    route: Route  # for path/header/default a synthetic route named after the provider


@dataclass(frozen=True, slots=True)
class Auth:
    api_keys: tuple[Secret, ...] = ()
    admin_keys: tuple[Secret, ...] = ()
    # every client key, unrestricted ones included, by the hex sha256 of the key
    keys: Mapping[str, ClientKey] = field(default_factory=dict, compare=False)
    named: tuple[ClientKey, ...] = ()  # `auth.keys`, in file order

    @property
    def open(self) -> bool:
        """No client key is configured (runtime keys aside): requests need none."""
        return not self.keys


@dataclass(frozen=True, slots=True)
class StateEngines:
    """`state:` of routes.yaml (else ROUTER_REDIS_URL / ROUTER_DATABASE_URL): the shared
    engines of a set of servers. None: the embedded store alone."""

    redis: Secret | None = None
    database: Secret | None = None  # a PostgreSQL URL
    fail_closed: bool = False  # limits refuse (503) rather than pass while Redis is away


@dataclass(frozen=True, slots=True)
class Admin:
    """`admin:` of routes.yaml."""

    read_only: bool = False  # GitOps mode: the admin API never writes config files


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the server needs for one config generation. Immutable; a reload builds
    a new Plan and swaps it in, requests in flight keep the one they started with."""

    generation: str  # short hash of the Plan as resolved and of the secret values
    config_dir: str
    providers: Mapping[str, Provider]
    routes: tuple[Route, ...]
    pipelines: Mapping[str, Pipeline]
    default: str  # provider name
    path_prefix: bool
    header: str | None  # override header name, lower-case
    auth: Auth
    matcher: RouteMatcher = field(repr=False, compare=False, kw_only=True)
    # synthetic single-target routes: provider name -> "provider:<name>"; "default"
    direct: Mapping[str, Route] = field(repr=False, compare=False, kw_only=True)
    default_route: Route = field(repr=False, compare=False, kw_only=True)
    admin: Admin = field(default_factory=Admin, kw_only=True)
    state: StateEngines = field(default_factory=StateEngines, kw_only=True)
    # the `${...}` texts and values as written, for `router compile`; never used to serve
    written: Written = field(default_factory=Written, repr=False, compare=False, kw_only=True)

    def resolve(
        self,
        *,
        protocol: str,
        model: str,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        path_provider: str | None = None,
    ) -> Resolution:
        """Path prefix > override header > first matching route > default. `headers`
        has lower-case names. Raises `ir.Error` for an override naming no provider."""
        if path_provider is not None:
            if not self.path_prefix:
                raise ir.Error(404, "not_found", "provider path prefixes are disabled")
            route = self.direct.get(path_provider)
            if route is None:
                raise ir.Error(404, "not_found", f"unknown provider {path_provider!r} in path")
            return Resolution("path", route)
        if self.header is not None:
            name = headers.get(self.header)
            if name:
                route = self.direct.get(name.strip())
                if route is None:
                    raise ir.Error(
                        400, "invalid_request", f"unknown provider {name!r} in {self.header} header"
                    )
                return Resolution("header", route)
        index = self.matcher.first(model, protocol, headers, body)
        if index is not None:
            return Resolution("route", self.routes[index])
        return Resolution("default", self.default_route)
