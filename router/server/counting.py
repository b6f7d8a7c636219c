"""`POST /v1/messages/count_tokens`: the upstream's own count where the first target of
the route has one (Anthropic, Gemini), otherwise the documented estimate in
router.tokens."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from router.compiler.plan import Plan
from router.protocols import module_for
from router.providers.http import client_for
from router.server.dispatch import HEALTH, instances_for
from router.server.translate import Inbound, resolve, to_ir
from router.tokens import estimate_request_tokens

_encode = msgspec.json.Encoder().encode


async def count_tokens(plan: Plan, inbound: Inbound) -> dict[str, Any]:
    resolution = resolve(plan, inbound)
    target = resolution.route.targets[0]
    provider = plan.providers[target.provider]
    model = target.model or inbound.model
    body = dict(inbound.body)
    body.pop("max_tokens", None)
    body.pop("stream", None)
    if provider.protocol == "anthropic":
        counted = await _anthropic_count(plan, provider.name, model, body, inbound)
        if counted is not None:
            return counted
    return {"input_tokens": estimate_request_tokens(to_ir(inbound, {**body, "max_tokens": 1}))}


async def _anthropic_count(
    plan: Plan, provider_name: str, model: str, body: dict[str, Any], inbound: Inbound
) -> dict[str, Any] | None:
    provider = plan.providers[provider_name]
    for instance in instances_for(provider, model):
        base = (instance.base_url or "https://api.anthropic.com").rstrip("/")
        base = base[:-3] if base.endswith("/v1") else base
        headers = {
            "content-type": "application/json",
            "anthropic-version": inbound.headers.get("anthropic-version", "2023-06-01"),
            **instance.headers,
        }
        if "anthropic-beta" in inbound.headers:
            headers["anthropic-beta"] = inbound.headers["anthropic-beta"]
        if instance.api_key:
            headers["x-api-key"] = instance.api_key.value
        try:
            response = await client_for(instance.proxy).post(
                base + "/v1/messages/count_tokens",
                content=_encode({**body, "model": model}),
                headers=headers,
                timeout=30.0,
            )
        except httpx.HTTPError as exc:
            HEALTH.of(provider.name, instance.id).fail(provider.health, None, str(exc))
            continue
        if response.status_code == 200:
            return msgspec.json.decode(response.content)
        if response.status_code < 500 and response.status_code != 429:
            raise module_for("anthropic").parse_error(response.status_code, response.content)
    return None
