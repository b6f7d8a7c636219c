"""Token counting for `POST /v1/messages/count_tokens` (Anthropic clients) and
`POST /v1beta/models/{model}:countTokens` (Gemini clients).

The adapter of the route's first target decides where the count comes from: one whose
`counts_tokens` is set asks its upstream (`count_tokens`: claude-custom, gemini-api,
gemini-cli-oauth, each documented in its adapter); for any other, the documented estimate
in router.tokens answers.

When the upstream cannot count (network error, timeout, 401/403, 404, 408, 429, 5xx,
an unreadable answer) the next healthy instance is asked, then the estimate answers: a
count never fails because an upstream is unavailable. An upstream that rejects the
request itself (400, 413, 422) is answered with that error, in the client's protocol,
because the generation would fail the same way. A failed count does not count against
the instance's health (count endpoints have their own quotas; generation decides).
`Count.source` says where the answer came from (the endpoint reports it in
`x-router-token-count`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from router.access.gate import scoped_route
from router.compiler.plan import Plan, Provider
from router.compiler.probe import resolve
from router.pool.select import instances_for
from router.protocols import ir, module_for
from router.providers.base import CountCall, WireAdapter
from router.providers.registry import adapter_for
from router.server.images import inline_image_urls
from router.server.translate import Inbound, forwarded_headers
from router.tokens import estimate_request_tokens

log = logging.getLogger("router.counting")

# The upstream rejected the request itself: the client gets that error.
_REQUEST_FAULTS = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class Count:
    tokens: int
    source: str  # "upstream" | "estimate"


async def count_tokens(plan: Plan, inbound: Inbound) -> Count:
    target = scoped_route(resolve(plan, inbound).route, inbound.key).targets[0]
    provider = plan.providers[target.provider]
    model = target.model or inbound.model
    counting = module_for(inbound.protocol).COUNTING
    if counting is None:
        raise ir.Error(404, "not_found", f"{inbound.protocol} has no token-count endpoint")
    request = counting.parse_request(inbound.body)
    request.model = model
    forwarded_headers(inbound)  # an upstream count passes them on: printable ASCII only
    adapter = adapter_for(provider)
    if isinstance(adapter, WireAdapter) and adapter.counts_tokens:
        if not module_for(provider.protocol).ACCEPTS_IMAGE_URLS:
            await inline_image_urls(request)  # as for generation: the upstream fetches none
        tokens = await _upstream_count(adapter, provider, inbound, request)
        if tokens is not None:
            return Count(tokens, "upstream")
    return Count(estimate_request_tokens(request), "estimate")


async def _upstream_count(
    adapter: WireAdapter, provider: Provider, inbound: Inbound, request: ir.Request
) -> int | None:
    """The first instance's count that succeeds; None when none could count."""
    for instance in instances_for(provider, request.model):
        call = CountCall(
            provider,
            instance,
            request.model,
            request,
            inbound.protocol,
            inbound.body,
            inbound.headers,
        )
        try:
            return await adapter.count_tokens(call)
        except ir.Error as error:
            if error.status in _REQUEST_FAULTS:
                raise
            failure = error
        except httpx.HTTPError as exc:
            failure = ir.Error(502, "bad_gateway", f"{type(exc).__name__}: {exc}")
        log.warning(
            "count_tokens: %s/%s could not count (%s); trying the next instance or the estimate",
            provider.name,
            instance.id,
            failure,
        )
    return None
