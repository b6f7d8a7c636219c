"""Console sessions over HTTP: `POST /api/login`, `POST /api/logout`,
`POST /api/admin-password` and `GET /api/session` (router.console.sessions has the rules).

A login shows `{"key": ...}` (an admin key; client keys never) or `{"password": ...}` in
its body and gets the `router_session` cookie (HttpOnly, SameSite=Strict, Path=/, Secure
when the request came over HTTPS or through a proxy saying `x-forwarded-proto: https`)
and the CSRF token that unsafe methods must send back in `x-csrf-token`. The admin
password is runtime state (the state store's, or Redis's), so read-only mode does not
stop it.

`load_session` is the app's before_request hook: it looks the cookie's session up before
the handler, so that `admin_access` stays synchronous."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from router.console import sessions
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_access


def _book(request: Request) -> sessions.SessionBook:
    path = request.app.state.records.state_database
    if path is None:
        raise ir.Error(
            503, "unavailable", "the state store is not available (see the log): no sessions"
        )
    return sessions.book(path)


async def load_session(request: Request) -> None:
    """Before every handler of the app: the session of the request's cookie, and
    whether an admin password is set while no admin key is configured, looked up (see
    router.console.sessions.load) and left in `request.state` for `admin_access`."""
    cookies = request.cookies if "cookie" in request.headers else {}
    plan = request.app.state.holder.plan
    need_password_state = plan is not None and not plan.auth.admin_keys
    if not cookies.get(sessions.COOKIE) and not need_password_state:
        return
    path = request.app.state.records.state_database
    request.state[sessions.STATE] = await sessions.load(path, cookies, need_password_state)


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip().lower() == "https"


def _address(request: Request) -> str:
    """The peer's address (a forwarded-for header is the client's to write: not trusted)."""
    client = request.client
    return client.host if client and client.host else "unknown"


def _body(raw: bytes) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        document = None
    if not isinstance(document, dict):
        raise ir.Error(400, "invalid_request", "the body must be a JSON object")
    return document


def _secret(document: dict[str, Any], name: str, minimum: int = 1) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not minimum <= len(value) <= sessions.MAX_SECRET:
        raise ir.Error(
            400,
            "invalid_request",
            f"`{name}` must be a string of {minimum} to {sessions.MAX_SECRET} characters",
            param=name,
        )
    return value


def _store_error(exc: sqlite3.Error) -> Response:
    error = ir.Error(503, "unavailable", f"the state store cannot be used: {exc}")
    return error_response(ADMIN_PROTOCOL, error)


@post("/api/login", status_code=200)
async def login(request: Request) -> Response:
    """`{"key": admin key}` or `{"password": admin password}` → the session cookie and
    `{"csrf", "expires_in"}` (idle seconds). 401 wrong, 429 locked out, 403 nothing to
    log in with."""
    try:
        plan = request.app.state.holder.plan
        if plan is None:
            raise ir.Error(503, "unavailable", "no valid configuration loaded")
        document = _body(await request.body())
        if ("key" in document) == ("password" in document):
            raise ir.Error(400, "invalid_request", 'send one of "key" or "password"')
        key = _secret(document, "key") if "key" in document else None
        password = _secret(document, "password") if key is None else None
        token, csrf = await sessions.login(
            _book(request),
            plan.auth.admin_keys,
            _address(request),
            key=key,
            password=password,
        )
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    cookie = sessions.cookie(token, secure=_https(request))
    document = {"csrf": csrf, "expires_in": int(sessions.idle_seconds())}
    return json_response(document, headers={"set-cookie": cookie, "cache-control": "no-store"})


@post("/api/logout", status_code=200)
async def logout(request: Request) -> Response:
    """End the cookie's session (a session with its CSRF token, or an admin key, needed)
    and clear the cookie."""
    try:
        admin_access(request)
        token = request.cookies.get(sessions.COOKIE)
        if token:
            await sessions.logout(_book(request), token)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    cookie = sessions.cookie("", secure=_https(request), max_age=0)
    return json_response({"logged_out": True}, headers={"set-cookie": cookie})


@post("/api/admin-password", status_code=200)
async def admin_password(request: Request) -> Response:
    """`{"password": new}` (at least 12 characters): stored as an argon2 hash."""
    try:
        admin_access(request)
        password = _secret(_body(await request.body()), "password", sessions.MIN_PASSWORD)
        await sessions.set_password(_book(request), password)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except sqlite3.Error as exc:
        return _store_error(exc)
    return json_response({"changed": True})


@get("/api/session")
async def session(request: Request) -> Response:
    """Whether the request is admin-authenticated, and how (the web UI asks on load: the
    CSRF token is not readable from the HttpOnly cookie)."""
    try:
        _, found = admin_access(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    document = {
        "authenticated": True,
        "csrf": found.csrf if found else None,
        "via": "session" if found else "key",
    }
    return json_response(document, headers={"cache-control": "no-store"})


ROUTES = [login, logout, admin_password, session]
