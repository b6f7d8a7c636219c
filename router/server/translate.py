"""Stages 4-5: the client's body, mapped by the route's `request` steps, becomes the body
the target expects: untouched apart from the model (pass-through) or translated through
the intermediate form."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import msgspec

from router.compiler.plan import Pipeline, Plan, Provider, Resolution, Target
from router.protocols import ir, module_for
from router.providers.base import IRAdapter
from router.providers.registry import adapter_for
from router.server import signatures
from router.server.images import inline_image_urls

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Inbound:
    """What the endpoint handed over (stage 1), after auth (stage 2)."""

    protocol: str
    body: dict[str, Any]
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    model: str
    stream: bool
    path_provider: str | None = None
    gemini_sse: bool = True  # Gemini stream framing: SSE (alt=sse) or one JSON array
    strict: bool = False  # the request opted into strict loss policy


@dataclass(slots=True)
class Prepared:
    """The request as one target will receive it."""

    model: str
    passthrough: bool
    body: bytes = b""  # wire targets
    request: ir.Request | None = None  # the client's request in ir (None on pass-through)
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    dropped: list[str] = field(default_factory=list)


def resolve(plan: Plan, inbound: Inbound) -> Resolution:
    """Stage 3: which route (and so which chain of targets) serves this request."""
    return plan.resolve(
        protocol=inbound.protocol,
        model=inbound.model,
        headers=inbound.headers,
        body=inbound.body,
        path_provider=inbound.path_provider,
    )


def context(inbound: Inbound) -> dict[str, Any]:
    return {"model": inbound.model, "protocol": inbound.protocol, "headers": dict(inbound.headers)}


def mapped_client_body(inbound: Inbound, pipeline: Pipeline | None) -> dict[str, Any]:
    if pipeline is None or not pipeline.request:
        return inbound.body
    return pipeline.run("request", copy.deepcopy(inbound.body), context(inbound))


def to_ir(inbound: Inbound, body: dict[str, Any]) -> ir.Request:
    request = module_for(inbound.protocol).parse_request(body)
    if inbound.protocol == "gemini":
        request.model = inbound.model
        request.stream = inbound.stream
    return request


async def prepare(
    inbound: Inbound,
    target: Target,
    provider: Provider,
    client_body: dict[str, Any],
    client_request: ir.Request | None,
) -> Prepared:
    """Build what `provider` will be sent. `client_request` is the already-parsed ir form
    of `client_body` when an earlier target needed it (it is copied, never mutated)."""
    model = target.model or _model_of(inbound, client_body)
    pipeline = target.pipeline
    headers = _upstream_headers(inbound, provider, pipeline)
    if provider.protocol == inbound.protocol and _can_pass_through(inbound):
        body = dict(client_body)
        if inbound.protocol != "gemini":
            body["model"] = model
        body = _upstream_stage(body, pipeline, inbound)
        query = "beta=true" if inbound.query.get("beta") == "true" else ""
        return Prepared(model, True, body=_encode(body), headers=headers, query=query)

    request = copy.deepcopy(client_request) if client_request else to_ir(inbound, client_body)
    request.model = model
    if provider.protocol == "gemini":
        signatures.restore(request)  # thought signatures a non-Gemini client could not keep
    if provider.protocol == "ir":
        adapter = adapter_for(provider)
        if isinstance(adapter, IRAdapter):
            adapter.note_dropped(request)  # before the strict check, not at call time
        return Prepared(model, False, request=request, headers=headers, dropped=request.dropped)
    upstream = module_for(provider.protocol)
    if not upstream.ACCEPTS_IMAGE_URLS:
        await inline_image_urls(request)
    body = upstream.build_request(request)
    body = _upstream_stage(body, pipeline, inbound)
    return Prepared(
        model, False, body=_encode(body), request=request, headers=headers, dropped=request.dropped
    )


def _model_of(inbound: Inbound, body: dict[str, Any]) -> str:
    model = body.get("model") if inbound.protocol != "gemini" else None
    return model if isinstance(model, str) and model else inbound.model


def _can_pass_through(inbound: Inbound) -> bool:
    # A Gemini client streaming without alt=sse wants one JSON array; upstreams are always
    # asked for SSE, so that case is re-encoded rather than relayed.
    return not (inbound.protocol == "gemini" and inbound.stream and not inbound.gemini_sse)


def _upstream_stage(
    body: dict[str, Any], pipeline: Pipeline | None, inbound: Inbound
) -> dict[str, Any]:
    if pipeline is None or not pipeline.upstream:
        return body
    return pipeline.run("upstream", body, context(inbound))


_FORWARDED = ("anthropic-version", "anthropic-beta")


def _upstream_headers(
    inbound: Inbound, provider: Provider, pipeline: Pipeline | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if provider.protocol == "anthropic" and inbound.protocol == "anthropic":
        for name in _FORWARDED:
            value = inbound.headers.get(name)
            if value is not None:
                headers[name] = value
    if pipeline is not None and pipeline.headers:
        headers = pipeline.run("headers", headers, context(inbound))
    return headers


def client_module(inbound: Inbound) -> ModuleType:
    return module_for(inbound.protocol)
