"""Stages 4-5: the client's body, mapped by the route's `request` steps, becomes the body
the target expects: untouched apart from the model (pass-through) or translated through
the intermediate form."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.access.gate import Admitting
from router.access.keys import ClientKey
from router.compiler.plan import Pipeline, Provider, Target
from router.compiler.probe import context, upstream_model
from router.protocols import ir, module_for
from router.providers.base import IRAdapter
from router.providers.registry import adapter_for
from router.records.outcome import Trace
from router.server import signatures
from router.server.images import inline_image_urls

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Inbound:
    """What the endpoint handed over (stage 1), after auth (stage 2). It is a
    `router.compiler.probe.Routable`: resolution and the pipelines read it."""

    protocol: str
    body: dict[str, Any]
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    model: str
    stream: bool
    path_provider: str | None = None
    sse: bool = True  # a stream's framing: SSE, or one JSON array (Gemini without alt=sse)
    strict: bool = False  # the request opted into strict loss policy
    trace: Trace | None = None  # its outcome record, as it is being learned
    key: ClientKey | None = None  # the client key it came with (None: an open gateway)
    admitting: Admitting | None = None  # its key's admission, until answered (dispatch waits)


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


def to_ir(inbound: Inbound, body: dict[str, Any]) -> ir.Request:
    request = module_for(inbound.protocol).parse_request(body)
    # a protocol that names the model in the URL leaves model and stream to the endpoint
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
    model = upstream_model(target, inbound, client_body)[0]
    pipeline = target.pipeline
    headers = _upstream_headers(inbound, provider, pipeline)
    client = module_for(inbound.protocol)
    if provider.protocol == inbound.protocol and _can_pass_through(inbound):
        body = dict(client_body)
        if client.MODEL_IN_BODY:
            body["model"] = model
        body = _upstream_stage(body, pipeline, inbound)
        query = "beta=true" if inbound.query.get("beta") == "true" else ""
        return Prepared(model, True, body=_encode(body), headers=headers, query=query)

    request = copy.deepcopy(client_request) if client_request else to_ir(inbound, client_body)
    request.model = model
    adapter = adapter_for(provider)
    if isinstance(adapter, IRAdapter):
        adapter.note_dropped(request)  # before the strict check, not at call time
        return Prepared(model, False, request=request, headers=headers, dropped=request.dropped)
    upstream = module_for(provider.protocol)
    if upstream.SIGNS_TOOL_CALLS:
        signatures.restore(request)  # signatures a client of another protocol could not keep
    if not upstream.ACCEPTS_IMAGE_URLS:
        admitting = inbound.admitting
        if admitting is not None and not admitting.answered:
            await admitting.wait()  # nothing is fetched for a request over its key's limit
        await inline_image_urls(request)
    body = upstream.build_request(request)
    body = _upstream_stage(body, pipeline, inbound)
    return Prepared(
        model, False, body=_encode(body), request=request, headers=headers, dropped=request.dropped
    )


def _can_pass_through(inbound: Inbound) -> bool:
    # Upstreams are always asked for SSE: a client that streams another framing (Gemini's
    # JSON array) gets its stream re-encoded rather than relayed.
    return inbound.sse or not inbound.stream


def _upstream_stage(
    body: dict[str, Any], pipeline: Pipeline | None, inbound: Inbound
) -> dict[str, Any]:
    if pipeline is None or not pipeline.upstream:
        return body
    return pipeline.run("upstream", body, context(inbound))


def forwarded_headers(inbound: Inbound) -> dict[str, str]:
    """The client headers its protocol passes on to an upstream speaking it too
    (anthropic-version, anthropic-beta). 400 for one that is no printable ASCII: an
    HTTP client upstream could not send it."""
    headers: dict[str, str] = {}
    for name in module_for(inbound.protocol).FORWARDED_HEADERS:
        value = inbound.headers.get(name)
        if value is None:
            continue
        if not (value.isascii() and value.isprintable()):
            raise ir.Error(400, "invalid_request", f"header {name} must be printable ASCII")
        headers[name] = value
    return headers


def _upstream_headers(
    inbound: Inbound, provider: Provider, pipeline: Pipeline | None
) -> dict[str, str]:
    headers = forwarded_headers(inbound) if provider.protocol == inbound.protocol else {}
    if pipeline is not None and pipeline.headers:
        headers = pipeline.run("headers", headers, context(inbound))
    return headers
