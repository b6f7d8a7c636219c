"""Operator endpoints: /health, /provider_health and the admin API under /api/."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from router.compiler.plan import Plan
from router.pool.health import InstanceHealth
from router.protocols import ir
from router.server.auth import check_admin
from router.server.dispatch import HEALTH
from router.server.errors import error_response
from router.server.models import reachable
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


def _instance_view(provider: str, instance_id: str, state: InstanceHealth) -> dict[str, Any]:
    last = state.last_error
    return {
        "healthy": state.healthy,
        "consecutive_errors": state.consecutive_errors,
        "successes": state.successes,
        "failures": state.failures,
        "last_used": state.last_used or None,
        "last_error": (
            {"at": last.at, "status": last.status, "message": last.message} if last else None
        ),
    }


def provider_health_document(plan: Plan) -> dict[str, Any]:
    providers = {}
    for name, provider in sorted(plan.providers.items()):
        instances = []
        for instance in provider.instances:
            state = HEALTH.of(name, instance.id)
            instances.append(
                {
                    "id": instance.id,
                    "enabled": instance.enabled,
                    "configured": not instance.unconfigured,
                    "missing_env": list(instance.unconfigured),
                    **_instance_view(name, instance.id, state),
                }
            )
        providers[name] = {
            "type": provider.type,
            "reachable": reachable(provider),
            "instances": instances,
        }
    return {"generation": plan.generation, "time": time.time(), "providers": providers}


@get("/provider_health")
async def provider_health(request: Request) -> Response:
    plan = _holder(request).plan
    if plan is None:
        return _json({"providers": {}}, 503)
    return _json(provider_health_document(plan))


def _admin(request: Request) -> Plan:
    plan = _holder(request).plan
    if plan is None:
        raise ir.Error(503, "unavailable", "no valid configuration loaded")
    headers = {k.lower(): v for k, v in request.headers.items()}
    check_admin(plan.auth.admin_keys, headers, dict(request.query_params))
    return plan


@post("/api/reload-config", status_code=200)
async def reload_config(request: Request) -> Response:
    try:
        _admin(request)
    except ir.Error as error:
        return error_response("openai-chat", error)
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


@post("/api/providers/{name:str}/reset-health", status_code=200)
async def reset_health(request: Request, name: str) -> Response:
    try:
        plan = _admin(request)
        if name not in plan.providers:
            raise ir.Error(404, "not_found", f"unknown provider {name!r}")
    except ir.Error as error:
        return error_response("openai-chat", error)
    HEALTH.reset(name)
    return _json({"reset": name})


ROUTES = [health, provider_health, reload_config, reset_health]
