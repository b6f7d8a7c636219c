"""A health check of one instance: a tiny real request through its adapter, which passes
only when the answer parses as an answer of the upstream's protocol."""

from __future__ import annotations

import msgspec

from router.compiler.plan import Instance, Provider
from router.protocols import ir, module_for
from router.providers.base import Call, WireAdapter
from router.providers.registry import adapter_for, advertised_models
from router.providers.upstream import Answer, attempt, decode_json

PROBE_TIMEOUT = 30.0  # seconds, at most: a health check must not hang the admin
PROBE_MAX_TOKENS = 16
_encode = msgspec.json.Encoder().encode


def probe_model(provider: Provider, instance: Instance) -> str | None:
    """The model a check asks for: the first exact name the instance serves, else the
    adapter's own (echo answers any)."""
    for name in (*advertised_models(provider), *instance.models):
        if not any(c in name for c in "*?[") and instance.serves(name):
            return name
    return adapter_for(provider).probe_model


async def check(provider: Provider, instance: Instance, model: str) -> None:
    """Raises AttemptFailed (or ir.Error for an unusable answer) when the check fails."""
    request = ir.Request(
        model=model, messages=[ir.Message("user", [ir.Text("ping")])], max_tokens=PROBE_MAX_TOKENS
    )
    body = b""
    if isinstance(adapter_for(provider), WireAdapter):
        body = _encode(module_for(provider.protocol).build_request(request))
    call = Call(
        provider=provider, instance=instance, model=model, stream=False, request=request, body=body
    )
    result = await attempt(provider, call, timeout=min(provider.timeout, PROBE_TIMEOUT))
    if isinstance(result, Answer) and result.response is None:  # a 2xx that is no answer
        module_for(provider.protocol).parse_response(decode_json(result.body))
