"""The model-list endpoints: which models the reachable pools advertise (the shape to
list them in is `router.protocols.paths.list_protocol`'s)."""

from __future__ import annotations

from router.access.gate import check_pool
from router.access.keys import ClientKey
from router.compiler.plan import Plan
from router.protocols import ir
from router.providers.registry import advertised_models


def reachable_models(
    plan: Plan, only: str | None = None, key: ClientKey | None = None
) -> list[str]:
    """The models of the pools a client may reach: `only` that pool (its path prefix),
    and only the pools and models its key may use."""
    if only is not None and only not in plan.providers:
        raise ir.Error(404, "not_found", f"unknown provider {only!r}")
    if only is not None:
        check_pool(key, only)
    names: dict[str, None] = {}
    for name, provider in sorted(plan.providers.items()):
        reachable = only is None or name == only
        if reachable and provider.available and (key is None or key.may_use_pool(name)):
            names.update(dict.fromkeys(advertised_models(provider)))
    if key is not None and key.models is not None:
        return [name for name in names if key.may_use_model(name)]
    return list(names)
