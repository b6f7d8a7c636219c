"""Operator endpoints: /health, /provider_health and the admin API under /api/."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from router.compiler.plan import SECRET_NAME, Instance, Plan, Provider, Secret, redact_url
from router.pool.health import HEALTH
from router.pool.select import instances_for
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.providers.health_check import check, probe_model
from router.providers.upstream import AttemptFailed
from router.server.auth import check_admin, check_client
from router.server.errors import error_response
from router.server.reload import request_reload
from router.server.state import PlanHolder

_encode = msgspec.json.Encoder().encode


def _json(document: Any, status: int = 200) -> Response:
    return Response(_encode(document), status_code=status, media_type="application/json")


def _holder(request: Request) -> PlanHolder:
    return request.app.state.holder


@get("/health")
async def health(request: Request) -> Response:
    holder = _holder(request)
    plan = holder.plan
    error = holder.last_error
    document = {
        "status": "ok" if plan is not None else "unavailable",
        "generation": plan.generation if plan else None,
        "loaded_at": holder.loaded_at,
        "last_reload_error": (
            {"at": error.at, "diagnostics": list(error.diagnostics)} if error else None
        ),
    }
    return _json(document, 200 if plan is not None else 503)


def instance_view(provider: Provider, instance: Instance) -> dict[str, Any]:
    state = HEALTH.of(provider.name, instance.id)
    secrets = _secrets(instance)
    last = state.last_error
    return {
        "id": instance.id,
        "enabled": instance.enabled,
        "configured": not instance.unconfigured,
        "missing_env": list(instance.unconfigured),
        "base_url": redact_url(instance.base_url) if instance.base_url else None,
        "proxy": redact_url(instance.proxy) if isinstance(instance.proxy, str) else instance.proxy,
        "headers": {k: "***" if SECRET_NAME.search(k) else v for k, v in instance.headers.items()},
        "models": list(instance.models),
        "exclude_models": list(instance.exclude_models),
        "healthy": state.healthy,
        "consecutive_errors": state.consecutive_errors,
        "successes": state.successes,
        "failures": state.failures,
        "last_used": state.last_used or None,
        "last_error": (
            {"at": last.at, "status": last.status, "message": redact(last.message, secrets)}
            if last
            else None
        ),
        "down_since": state.down_since,
        "recovers_at": state.recovers_at(provider.health),
        "probing": state.probing,
        "cooldown_until": state.cooldown_until or None,
    }


def _secrets(instance: Instance) -> list[str]:
    values = [instance.api_key.value] if instance.api_key else []
    values += [v for k, v in instance.headers.items() if SECRET_NAME.search(k)]
    client_secret = instance.options.get("client_secret")
    if isinstance(client_secret, Secret):
        values.append(client_secret.value)
    return [v for v in values if len(v) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def provider_health_document(plan: Plan) -> dict[str, Any]:
    providers = {}
    for name, provider in sorted(plan.providers.items()):
        providers[name] = {
            "type": provider.type,
            "reachable": provider.available,
            "health": {
                "max_errors": provider.health.max_errors,
                "recover_after": provider.health.recover_after,
            },
            "instances": [instance_view(provider, i) for i in provider.instances],
        }
    # health is kept per worker process: say which one answered
    return {
        "generation": plan.generation,
        "worker": os.getpid(),
        "time": time.time(),
        "providers": providers,
    }


@get("/provider_health")
async def provider_health(request: Request) -> Response:
    """As open as the generating endpoints: with client keys configured it takes one of
    them, or an admin key (upstream URLs and error messages are not for everyone)."""
    plan = _holder(request).plan
    if plan is None:
        return _json({"providers": {}}, 503)
    keys = plan.auth.api_keys
    if keys:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            check_client(keys + plan.auth.admin_keys, headers, dict(request.query_params))
        except ir.Error as error:
            return error_response(ADMIN_PROTOCOL, error)
    return _json(provider_health_document(plan))


def admin_plan(request: Request) -> Plan:
    """The live plan, once the request shows an admin key (ir.Error 401/403 otherwise)."""
    plan = _holder(request).plan
    if plan is None:
        raise ir.Error(503, "unavailable", "no valid configuration loaded")
    headers = {k.lower(): v for k, v in request.headers.items()}
    check_admin(plan.auth.admin_keys, headers, dict(request.query_params))
    return plan


@post("/api/reload-config", status_code=200)
async def reload_config(request: Request) -> Response:
    try:
        admin_plan(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    holder = _holder(request)
    ok = holder.reload()
    request_reload()  # the other workers follow through the shared trigger
    plan = holder.plan
    error = holder.last_error
    return _json(
        {
            "reloaded": ok,
            "generation": plan.generation if plan else None,
            "error": list(error.diagnostics) if error else None,
        },
        200 if ok else 422,
    )


def providers_named(plan: Plan, name: str) -> list[Provider]:
    """The pools called `name`, or else every pool of adapter type `name`."""
    if name in plan.providers:
        return [plan.providers[name]]
    matched = [p for _, p in sorted(plan.providers.items()) if p.type == name]
    if not matched:
        raise ir.Error(404, "not_found", f"no provider named or of type {name!r}")
    return matched


@post("/api/providers/{name:str}/reset-health", status_code=200)
async def reset_health(request: Request, name: str) -> Response:
    try:
        providers = providers_named(admin_plan(request), name)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    for provider in providers:
        HEALTH.reset(provider.name)
    return _json({"reset": [p.name for p in providers]})


@post("/api/providers/{name:str}/health-check", status_code=200)
async def health_check(request: Request, name: str) -> Response:
    """Send a tiny real request to every enabled, configured instance of the pools named
    (or typed) `name`, at once; record the results in the health book and report them.
    `?model=` picks the model; otherwise the pool's first listed model."""
    try:
        providers = providers_named(admin_plan(request), name)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    model = request.query_params.get("model")
    checks = [_check_pool(provider, model) for provider in providers]
    results = await asyncio.gather(*checks)
    document = {
        p.name: {"type": p.type, "instances": r} for p, r in zip(providers, results, strict=True)
    }
    ok = all(i.get("ok", True) for r in results for i in r)
    return _json({"ok": ok, "providers": document})


async def _check_pool(provider: Provider, model: str | None) -> list[dict[str, Any]]:
    instances = provider.instances or instances_for(provider, "")
    return list(await asyncio.gather(*(_check(provider, i, model) for i in instances)))


async def _check(provider: Provider, instance: Instance, model: str | None) -> dict[str, Any]:
    if not instance.enabled or instance.unconfigured:
        return {
            "id": instance.id,
            "skipped": "disabled" if not instance.enabled else "unconfigured",
        }
    model = model or probe_model(provider, instance)
    if model is None:
        message = "no model to probe with: list `models` for the provider or pass ?model="
        return {"id": instance.id, "ok": False, "status": None, "error": message}
    health = HEALTH.of(provider.name, instance.id)
    started = time.perf_counter()
    try:
        await check(provider, instance, model)
    except AttemptFailed as failure:
        health.record_failure(provider.health, failure.error, failure.retryable)
        return _probe_result(instance, model, started, failure.error)
    except ir.Error as error:
        health.fail(provider.health, error.status, error.message)
        return _probe_result(instance, model, started, error)
    health.succeed()
    return _probe_result(instance, model, started, None)


def _probe_result(
    instance: Instance, model: str, started: float, error: ir.Error | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": instance.id,
        "ok": error is None,
        "model": model,
        "status": 200 if error is None else error.status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if error is not None:
        result["error"] = redact(error.message, _secrets(instance))
    return result


ROUTES = [health, provider_health, reload_config, reset_health, health_check]
