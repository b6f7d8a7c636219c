"""Token counting for `POST /v1/messages/count_tokens` (Anthropic clients) and
`POST /v1beta/models/{model}:countTokens` (Gemini clients).

The first target of the route decides where the count comes from:

* claude-custom: the upstream's `/v1/messages/count_tokens` (an Anthropic client's body
  is forwarded as it is, anything else is translated);
* gemini-api: `models/{model}:countTokens` with a `generateContentRequest`, so the
  system instruction and the tools are counted too;
* gemini-cli-oauth: Code Assist's `v1internal:countTokens`, which takes contents only:
  its count plus the estimate for the system instruction and the tools;
* anything else (OpenAI upstreams, Antigravity, Claude Code, echo): the documented
  estimate in router.tokens.

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from router.compiler.plan import Instance, Plan, Provider
from router.protocols import anthropic, gemini, ir
from router.providers.code_assist import CodeAssistAdapter
from router.providers.http import client_for
from router.providers.registry import adapter_for
from router.server.dispatch import instances_for
from router.server.images import inline_image_urls
from router.server.translate import Inbound, resolve
from router.tokens import estimate_request_tokens

log = logging.getLogger("router.counting")

_encode = msgspec.json.Encoder().encode
COUNT_TIMEOUT = 30.0  # seconds
GEMINI_API_BASE = "https://generativelanguage.googleapis.com/v1beta"
ANTHROPIC_BASE = "https://api.anthropic.com"
# The upstream rejected the request itself: the client gets that error.
_REQUEST_FAULTS = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class Count:
    tokens: int
    source: str  # "upstream" | "estimate"


@dataclass(slots=True)
class _Job:
    provider: Provider
    model: str
    inbound: Inbound
    request: ir.Request  # the client's request in ir, model set to the upstream's


Counter = Callable[[_Job, Instance], Awaitable[int]]


async def count_tokens(plan: Plan, inbound: Inbound) -> Count:
    resolution = resolve(plan, inbound)
    target = resolution.route.targets[0]
    provider = plan.providers[target.provider]
    model = target.model or inbound.model
    request = client_request(inbound)
    request.model = model
    counter = _COUNTERS.get(provider.type)
    if counter is not None:
        tokens = await _upstream_count(counter, _Job(provider, model, inbound, request))
        if tokens is not None:
            return Count(tokens, "upstream")
    return Count(estimate_request_tokens(request), "estimate")


def client_request(inbound: Inbound) -> ir.Request:
    if inbound.protocol == "gemini":
        return gemini.parse_count_request(inbound.body)
    return anthropic.parse_count_request(inbound.body)


def count_body(protocol: str, count: Count) -> dict[str, Any]:
    """The answer in the client's protocol."""
    if protocol == "gemini":
        return gemini.count_body(count.tokens)
    return anthropic.count_body(count.tokens)


async def _upstream_count(counter: Counter, job: _Job) -> int | None:
    """The first instance's count that succeeds; None when none could count."""
    provider = job.provider
    for instance in instances_for(provider, job.model):
        try:
            return await counter(job, instance)
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


# --- per upstream type ------------------------------------------------------------------


async def _anthropic(job: _Job, instance: Instance) -> int:
    base = (instance.base_url or ANTHROPIC_BASE).rstrip("/")
    base = base.removesuffix("/v1")
    headers = {
        "content-type": "application/json",
        "anthropic-version": job.inbound.headers.get("anthropic-version", "2023-06-01"),
    }
    if job.inbound.protocol == "anthropic":
        if "anthropic-beta" in job.inbound.headers:
            headers["anthropic-beta"] = job.inbound.headers["anthropic-beta"]
        body = {k: v for k, v in job.inbound.body.items() if k not in ("max_tokens", "stream")}
        body["model"] = job.model
    else:
        body = anthropic.build_count_request(job.request)
    if instance.api_key:
        headers["x-api-key"] = instance.api_key.value
    answer = await _post(
        instance, base + "/v1/messages/count_tokens", body, headers, anthropic.parse_error
    )
    return anthropic.count_from(answer)


async def _gemini_api(job: _Job, instance: Instance) -> int:
    await inline_image_urls(job.request)  # as for generation: Gemini fetches no URLs
    base = (instance.base_url or GEMINI_API_BASE).rstrip("/")
    model = job.model.removeprefix("models/")
    headers = {"content-type": "application/json"}
    if instance.api_key:
        headers["x-goog-api-key"] = instance.api_key.value
    url = f"{base}/models/{model}:countTokens"
    body = gemini.build_count_request(job.request)
    return gemini.count_from(await _post(instance, url, body, headers, gemini.parse_error))


async def _code_assist(job: _Job, instance: Instance) -> int:
    adapter = adapter_for(job.provider)
    assert isinstance(adapter, CodeAssistAdapter)
    await inline_image_urls(job.request)
    contents = gemini.build_request(job.request)["contents"]
    counted = await adapter.count_tokens(job.provider, instance, job.model, contents)
    rest = ir.Request(job.model, system=job.request.system, tools=job.request.tools)
    return counted + estimate_request_tokens(rest)


async def _post(
    instance: Instance,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    parse_error: Callable[[int, bytes], ir.Error],
) -> Any:
    response = await client_for(instance.proxy).post(
        url,
        content=_encode(body),
        headers={**headers, **instance.headers},
        timeout=COUNT_TIMEOUT,
    )
    if response.status_code != 200:
        raise parse_error(response.status_code, response.content)
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        message = "the count endpoint answered with invalid JSON"
        raise ir.Error(502, "bad_gateway", message) from None


_COUNTERS: Mapping[str, Counter] = {
    "claude-custom": _anthropic,
    "gemini-api": _gemini_api,
    "gemini-cli-oauth": _code_assist,
}
