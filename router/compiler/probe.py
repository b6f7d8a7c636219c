"""A request as routing sees it. `Routable` is what resolution and the pipelines read of
a request; the server's `Inbound` (built from HTTP) and `Probe` (built here from
command-line or test-case input, for `router explain` and `router test`) both are one,
so the server and explain resolve, map and pick the upstream model the same way."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.compiler.plan import Pipeline, Plan, Resolution, Target
from router.protocols import module_for, paths


class Routable(Protocol):
    @property
    def protocol(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names
    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def path_provider(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Probe:
    protocol: str
    model: str
    path: str | None = None
    path_provider: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)


def split_path(path: str) -> tuple[str | None, str]:
    """`/claude-custom/v1/messages?x=1` -> ("claude-custom", "/v1/messages")."""
    path = path.split("?", 1)[0]
    parts = path.lstrip("/").split("/", 1)
    if parts[0] and parts[0] not in paths.API_ROOTS:
        return parts[0], "/" + (parts[1] if len(parts) > 1 else "")
    return None, path


def header_lines(lines: Iterable[str]) -> dict[str, str]:
    """`Name: value` lines (`router explain --header`, the console's explain form) as
    request headers, names lower-case; blank lines skipped. ValueError for a line
    without a name and a colon."""
    headers = {}
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {line!r}: expected 'Name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


def make_probe(
    *,
    protocol: str | None = None,
    model: str | None = None,
    path: str | None = None,
    headers: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Probe:
    """Fill in what is implied: the protocol and (for Gemini) the model from the path, the
    model from the body, the body's `model` field for the body-carrying protocols.
    Raises ValueError when no model can be found."""
    path_provider = None
    path_model = None
    if path is not None:
        path_provider, rest = split_path(path)
        found = paths.match(rest.rstrip("/") or "/")
        if found is not None:
            protocol = protocol or found.endpoint.protocol
            path_model = found.model
    protocol = protocol or paths.DEFAULT_PROTOCOL
    in_body = module_for(protocol).MODEL_IN_BODY
    document = dict(body or {})
    model = model or path_model or (document.get("model") if in_body else None)
    if not isinstance(model, str) or not model:
        raise ValueError("no model given (use --model, a body with `model`, or a Gemini path)")
    if in_body:
        document.setdefault("model", model)
    return Probe(
        protocol=protocol,
        model=model,
        path=path,
        path_provider=path_provider,
        headers={str(k).lower(): _text(v) for k, v in (headers or {}).items()},
        body=document,
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def context(request: Routable) -> dict[str, Any]:
    """What pipeline expressions see besides the document."""
    return {"model": request.model, "protocol": request.protocol, "headers": dict(request.headers)}


def resolve(plan: Plan, request: Routable) -> Resolution:
    """Stage 3: which route (and so which chain of targets) serves `request`. Raises
    ir.Error for an override naming no provider."""
    return plan.resolve(
        protocol=request.protocol,
        model=request.model,
        headers=request.headers,
        body=request.body,
        path_provider=request.path_provider,
    )


def mapped_body(pipeline: Pipeline | None, request: Routable) -> dict[str, Any]:
    """The client body after the `request` steps: the body itself when there are none
    (read it, do not change it), else a mapped copy."""
    if pipeline is None or not pipeline.request:
        return request.body  # type: ignore[return-value]
    return pipeline.run("request", copy.deepcopy(dict(request.body)), context(request))


def upstream_model(target: Target, request: Routable, body: Mapping[str, Any]) -> tuple[str, str]:
    """(model, why): the target's model, else the mapped body's, else the client's."""
    if target.model is not None:
        return target.model, "set by the route"
    mapped = body.get("model") if module_for(request.protocol).MODEL_IN_BODY else None
    if isinstance(mapped, str) and mapped and mapped != request.model:
        return mapped, "mapped by the pipeline"
    return request.model, "the client's"
