"""The console's read-only provider rows: `GET /api/providers[/{pool}]`,
`GET /api/provider-models[/{pool}]` and `GET /api/service-mode`, under the admin key.

`{pool}` is a pool name or, as in the seed, an adapter type meaning every pool of that
type. Health is merged over the server's workers, as `/provider_health` merges it
(router.server.health_view); usage is today's (UTC) from the state store's daily
aggregates (or PostgreSQL's), null when they cannot be read."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get

from router.compiler.dump import Collector
from router.compiler.dump import instance_dump as dump_instance
from router.compiler.plan import Instance, Plan, Provider
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.providers.registry import advertised_models
from router.records import usage
from router.records.reader import RecordsReader, Unavailable
from router.server.errors import error_response
from router.server.health_view import merge, worker_books
from router.server.json_response import json_response
from router.server.management import admin_plan, instance_view, providers_named

log = logging.getLogger("router.console")


# usage of today: (pool, None) for the pool, (pool, instance) for one of its instances
Usage = dict[tuple[str, str | None], dict[str, Any]]


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _usage_rows(reader: RecordsReader, day: str) -> Usage:
    found: Usage = {}
    for row in reader.usage(day, day, ("pool",))["rows"]:
        found[(row.pop("pool") or "", None)] = row
    for row in reader.usage(day, day, ("pool", "instance"))["rows"]:
        pool, instance = row.pop("pool") or "", row.pop("instance")
        if instance:  # a built-in pool's records name no instance
            found[(pool, instance)] = row
    return found


async def _usage_today(request: Request, day: str) -> Usage | None:
    reader = request.app.state.records.reader
    if reader is None:
        return None
    try:
        return await asyncio.to_thread(_usage_rows, reader, day)
    except Unavailable as exc:
        log.warning("usage of today unavailable: %s", exc)
        return None


def _empty_usage() -> dict[str, Any]:
    return usage.counters((0,) * 12)


def _usage_of(found: Usage | None, pool: str, instance: str | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return found.get((pool, instance)) or _empty_usage()


def _why(reason: str, config_dir: str) -> str:
    """One entry of Instance.unconfigured, in words."""
    if reason.startswith("file:"):
        path = reason.removeprefix("file:")
        if os.path.isabs(path) and os.path.commonpath([path, config_dir]) == config_dir:
            path = os.path.relpath(path, config_dir)
        return f"credentials file {path} does not exist"
    return f"environment variable {reason} is not set"


def _instance(plan: Plan, provider: Provider, instance: Instance, found: Usage | None) -> Any:
    view = instance_view(provider, instance)
    config = dump_instance(instance, plan.config_dir, Collector(), {}, ())
    view["api_key"] = "***" if instance.api_key is not None else None
    view["options"] = config["options"]
    view["unconfigured"] = [_why(r, plan.config_dir) for r in instance.unconfigured]
    view["usage_today"] = _usage_of(found, provider.name, instance.id)
    return view


def _pool(plan: Plan, provider: Provider, found: Usage | None) -> dict[str, Any]:
    return {
        "type": provider.type,
        "protocol": provider.protocol,
        "built_in": provider.built_in,
        "models": list(advertised_models(provider)),
        "available": provider.available,
        "health_policy": {
            "max_errors": provider.health.max_errors,
            "recover_after": provider.health.recover_after,
        },
        "usage_today": _usage_of(found, provider.name, None),
        "instances": [_instance(plan, provider, i, found) for i in provider.instances],
    }


async def _providers(request: Request, name: str | None) -> Response:
    try:
        plan = admin_plan(request)
        pools = sorted(plan.providers.values(), key=lambda p: p.name)
        if name is not None:
            pools = providers_named(plan, name)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return json_response(await providers_document(request, plan, pools))


async def providers_document(request: Request, plan: Plan, pools: list[Provider]) -> dict[str, Any]:
    """`pools` with their config, today's usage and health merged over the workers."""
    day = _today()
    found = await _usage_today(request, day)
    document = {
        "generation": plan.generation,
        "worker": os.getpid(),
        "time": time.time(),
        "day": day,
        "usage_available": found is not None,
        "providers": {p.name: _pool(plan, p, found) for p in pools},
    }
    merge(document, await worker_books(request, plan), per_worker=False)
    return document


@get("/api/providers")
async def providers(request: Request) -> Response:
    """Every pool: type, protocol, models, availability, instances (config with secrets
    `***`, configured or why not, health in this worker), today's usage."""
    return await _providers(request, None)


@get("/api/providers/{name:str}")
async def pools_named(request: Request, name: str) -> Response:
    """The pool `name`, or every pool of adapter type `name`; 404 for neither."""
    return await _providers(request, name)


def _models(request: Request, name: str | None) -> Response:
    try:
        plan = admin_plan(request)
        pools = sorted(plan.providers.values(), key=lambda p: p.name)
        if name is not None:
            pools = providers_named(plan, name)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return json_response({p.name: list(advertised_models(p)) for p in pools})


@get("/api/provider-models")
async def provider_models(request: Request) -> Response:
    """{pool: [models it advertises]}."""
    return _models(request, None)


@get("/api/provider-models/{name:str}")
async def provider_models_named(request: Request, name: str) -> Response:
    return _models(request, name)


def worker_count() -> int:
    """Granian workers of this server: `router serve` exports ROUTER_WORKERS."""
    try:
        return max(1, int(os.environ.get("ROUTER_WORKERS", "1")))
    except ValueError:
        return 1


@get("/api/service-mode")
async def service_mode(request: Request) -> Response:
    try:
        admin_plan(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    workers = worker_count()
    return json_response({"mode": "workers" if workers > 1 else "standalone", "workers": workers})


ROUTES = [
    providers,
    pools_named,
    provider_models,
    provider_models_named,
    service_mode,
]
