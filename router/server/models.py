"""The model-list endpoints: which models the reachable pools advertise (the shape to
list them in is `router.protocols.paths.list_protocol`'s)."""

from __future__ import annotations

from router.compiler.plan import Plan
from router.protocols import ir
from router.providers.registry import advertised_models


def reachable_models(plan: Plan, only: str | None = None) -> list[str]:
    if only is not None and only not in plan.providers:
        raise ir.Error(404, "not_found", f"unknown provider {only!r}")
    names: dict[str, None] = {}
    for name, provider in sorted(plan.providers.items()):
        if (only is None or name == only) and provider.available:
            names.update(dict.fromkeys(advertised_models(provider)))
    return list(names)
