"""Provider type -> adapter object, built from `types.PROVIDER_TYPES` on first use.
Adapters are stateless, or keep their own per-instance state keyed by instance id, so one
object per type serves every pool."""

from __future__ import annotations

from importlib import import_module

from router.compiler.plan import Provider
from router.compiler.provider_types import BY_NAME
from router.protocols import ir
from router.providers.base import IRAdapter, WireAdapter

Adapter = WireAdapter | IRAdapter
_ADAPTERS: dict[str, Adapter] = {}


def adapter_for(provider: Provider) -> Adapter:
    adapter = _ADAPTERS.get(provider.type)
    if adapter is None:
        kind = BY_NAME.get(provider.type)
        if kind is None:
            raise ir.Error(501, "api_error", f"provider type {provider.type} is not available yet")
        module, _, name = kind.adapter.partition(":")
        adapter = _ADAPTERS[provider.type] = getattr(import_module(module), name)()
    return adapter


def advertised_models(provider: Provider) -> tuple[str, ...]:
    """The pool's `models`, or its adapter's default list when it has none."""
    return provider.models or adapter_for(provider).default_models
