"""Operator endpoints: /health, /provider_health and the admin API under /api/."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from typing import Any

from litestar import Request, Response, get, post

from router.compiler.plan import SECRET_NAME, Instance, Plan, Provider, Secret, redact_url
from router.console import sessions
from router.pool.health import HEALTH, INSTANCE_FAULTS
from router.pool.select import instances_for
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.providers.health_check import check, probe_model
from router.providers.upstream import AttemptFailed
from router.server.auth import check_admin, presented_key
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.reload import request_reload
from router.server.state import PlanHolder

log = logging.getLogger("router.management")


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
    return json_response(document, 200 if plan is not None else 503)


def instance_view(provider: Provider, instance: Instance) -> dict[str, Any]:
    state = HEALTH.of(provider.name, instance.id)
    secrets = _secrets(instance)
    last = state.last_error
    return {
        "id": instance.id,
        "enabled": instance.enabled,
        "enabled_in_file": instance.enabled_in_file,
        "override": instance.override,
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
    # the answering worker's own health (router.server.health_view merges all workers)
    return {
        "generation": plan.generation,
        "worker": os.getpid(),
        "time": time.time(),
        "providers": providers,
    }


def admin_plan(request: Request) -> Plan:
    """The live plan, once the request shows an admin key or a console session (ir.Error
    401/403 otherwise)."""
    return admin_access(request)[0]


def admin_access(request: Request) -> tuple[Plan, sessions.Session | None]:
    """The live plan and the console session that opened it (None: an admin key did).
    A key shown is checked alone; without one, the session cookie, and for methods other
    than GET/HEAD its CSRF token in `x-csrf-token` (router.console.sessions)."""
    plan = _holder(request).plan
    if plan is None:
        raise ir.Error(503, "unavailable", "no valid configuration loaded")
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = dict(request.query_params)
    keys = plan.auth.admin_keys
    if presented_key(headers, query) is None:
        database = request.app.state.records.state_database
        loaded = request.state.get(sessions.STATE)  # router.console.sessions_api.load_session
        session = sessions.authenticate(database, loaded, keys, request.method, headers)
        if session is not None:
            return plan, session
        if not keys and sessions.password_set(database):
            raise ir.Error(401, "authentication", "missing admin key or console session")
    check_admin(keys, headers, query)
    return plan, None


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
    return json_response(
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
    names = [p.name for p in providers]
    await _tell_workers(request, "reset-health", {"pools": names})
    return json_response({"reset": names})


async def _tell_workers(request: Request, action: str, data: dict[str, Any]) -> None:
    """Every other worker of the server does it too (router.server.worker_sync)."""
    sync = request.app.state.sync
    if sync is not None:
        try:
            await sync.broadcast(action, data)
        except (OSError, sqlite3.Error) as exc:
            log.warning("other workers not told to %s: %s", action, exc)


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
    for provider, result in zip(providers, results, strict=True):
        await _tell_workers(request, "probed", {"pool": provider.name, "results": result})
    document = {
        p.name: {"type": p.type, "instances": r} for p, r in zip(providers, results, strict=True)
    }
    ok = all(i.get("ok", True) for r in results for i in r)
    return json_response({"ok": ok, "providers": document})


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
        return {"id": instance.id, "ok": False, "status": None, "error": message, "counted": False}
    health = HEALTH.of(provider.name, instance.id)
    started = time.perf_counter()
    try:
        await check(provider, instance, model)
    except AttemptFailed as failure:
        health.record_failure(provider.health, failure.error, failure.retryable)
        counted = failure.retryable or failure.error.status in INSTANCE_FAULTS
        return _probe_result(instance, model, started, failure.error, counted)
    except ir.Error as error:
        health.fail(provider.health, error.status, error.message)
        return _probe_result(instance, model, started, error)
    health.succeed()
    return _probe_result(instance, model, started, None)


def _probe_result(
    instance: Instance, model: str, started: float, error: ir.Error | None, counted: bool = True
) -> dict[str, Any]:
    """What the check found; `counted`: whether it counted toward the instance's health
    (the other workers learn it as this one did: router.server.worker_sync)."""
    result: dict[str, Any] = {
        "id": instance.id,
        "ok": error is None,
        "model": model,
        "status": 200 if error is None else error.status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    result["counted"] = counted
    if error is not None:
        result["error"] = redact(error.message, _secrets(instance))
        if counted and error.retry_after:
            result["retry_after"] = error.retry_after
    return result


ROUTES = [health, reload_config, reset_health, health_check]
