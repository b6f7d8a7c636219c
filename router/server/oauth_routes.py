"""Admin endpoints for the Google OAuth providers: start a sign-in from the UI, follow
it, or upload an existing credentials file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from litestar import Request, Response, get, post

from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.providers import oauth_cli
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan


async def _options(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    try:
        options = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ir.Error(400, "invalid_request", "body must be JSON") from None
    if not isinstance(options, dict):
        raise ir.Error(400, "invalid_request", "body must be a JSON object")
    return options


@post("/api/providers/{provider:str}/generate-auth-url", status_code=200)
async def generate_auth_url(request: Request, provider: str) -> Response:
    try:
        plan = admin_plan(request)
        options = await _options(request)
        holder = request.app.state.holder
        sync = request.app.state.sync
        event = {"provider": provider, "instance": options.get("instance")}

        async def finished(path: Path | None, failure: str | None) -> None:
            if path is not None:
                await asyncio.to_thread(holder.reload)
            if sync is not None:
                state = "done" if path is not None else "failed"
                sync.note("oauth", {**event, "status": state, "error": failure})

        result = await oauth_cli.start_auth(
            plan,
            provider,
            options.get("instance"),
            external_host=options.get("callback_host"),
            callback_port=options.get("callback_port"),
            config_dir=plan.config_dir,
            on_finish=finished,
        )
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    if sync is not None:
        sync.note("oauth", {**event, "status": "pending"})
    return json_response(result)


@get("/api/oauth/{sign_in:str}")
async def oauth_status(request: Request, sign_in: str) -> Response:
    try:
        admin_plan(request)
        return json_response(oauth_cli.auth_status(sign_in))
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)


@post("/api/upload-oauth-credentials", status_code=200)
async def upload_oauth_credentials(request: Request) -> Response:
    """Body: {"provider": ..., "instance": ..., "credentials": {...}}."""
    try:
        plan = admin_plan(request)
        options = await _options(request)
        provider = options.get("provider")
        if not isinstance(provider, str) or "credentials" not in options:
            raise ir.Error(400, "invalid_request", "`provider` and `credentials` are required")
        path = oauth_cli.store_uploaded_credentials(
            plan,
            provider,
            options.get("instance"),
            options["credentials"],
            config_dir=plan.config_dir,
        )
        request.app.state.holder.reload()
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    return json_response({"stored": path.name, "provider": provider})


ROUTES = [generate_auth_url, oauth_status, upload_oauth_credentials]
