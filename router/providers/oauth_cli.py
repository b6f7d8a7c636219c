"""Signing in to the Google OAuth providers (gemini-cli-oauth, gemini-antigravity).

Entry points:
* `run_oauth_cli(provider_type, instance, config_dir)`: `router oauth TYPE [--instance ID]`
  prints the authorization URL and waits for the loopback callback;
* `start_auth(plan, provider, instance, external_host=...)`: the same for
  `POST /api/providers/{provider}/generate-auth-url`; the callback is awaited in the
  background, `auth_status(state)` / `wait_auth(state)` follow it;
* `store_uploaded_credentials(plan, provider, instance, payload)`: for
  `POST /api/upload-oauth-credentials`.

Each ends with the credentials file written (atomically, mode 0600) where the instance
reads it; the adapter re-reads a changed file, and the config watcher sees a new one.

The flow: authorization-code grant with PKCE (S256) and a random `state`, offline access
(so Google returns a refresh token), redirect to `http://HOST:PORT/oauth2callback` where
HOST is `localhost` or the configured external callback host (Docker, remote servers)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from router.compiler.plan import Instance, Plan, Provider
from router.protocols import ir
from router.providers.google_oauth import (
    DEFAULTS,
    OAuthSettings,
    credentials_from_token,
    oauth_client,
    oauth_settings,
    signs_in_with_google,
    token_error,
    token_failures,
    write_credentials,
)

log = logging.getLogger("router.oauth")

CALLBACK_PATH = "/oauth2callback"
AUTH_TIMEOUT = 600.0  # seconds a started sign-in waits for its callback
_HEAD_LIMIT = 16 * 1024


def _token(length: int) -> str:
    from authlib.common.security import generate_token  # loaded only for a sign-in

    return generate_token(length)


# --- locating the instance -----------------------------------------------------------


def resolve_target(
    plan: Plan | None, provider: str, instance: str | None = None
) -> tuple[str, Provider | None, Instance | None]:
    """`provider` is a pool name or an adapter type. Returns (type, pool, instance); pool
    and instance are None when the plan has none (the type's defaults apply)."""
    pools: list[Provider] = []
    if plan is not None:
        if provider in plan.providers:
            pools = [plan.providers[provider]]
        else:
            pools = [p for p in plan.providers.values() if p.type == provider]
    for pool in pools:
        if not signs_in_with_google(pool.type):
            raise ir.Error(400, "invalid_request", f"provider {provider!r} does not use OAuth")
        for candidate in pool.instances:
            if instance is None or candidate.id == instance:
                return pool.type, pool, candidate
    if instance is not None:
        raise ir.Error(404, "not_found", f"no instance {instance!r} in provider {provider!r}")
    if pools:
        return pools[0].type, pools[0], None
    if signs_in_with_google(provider):
        return provider, None, None
    raise ir.Error(404, "not_found", f"unknown OAuth provider {provider!r}")


def settings_for(
    plan: Plan | None,
    provider: str,
    instance: str | None = None,
    config_dir: str | None = None,
    callback_port: int | None = None,
) -> OAuthSettings:
    kind, pool, found = resolve_target(plan, provider, instance)
    directory = config_dir or (plan.config_dir if plan is not None else None)
    settings = oauth_settings(kind, pool, found, directory)
    return settings if callback_port is None else replace(settings, callback_port=callback_port)


# --- the authorization flow ------------------------------------------------------------


def redirect_uri(host: str | None, port: int) -> str:
    """`host` may be a bare host, `host:port`, or a URL (used as given, path defaulted)."""
    if host and "://" in host:
        parts = urlsplit(host)
        return host if parts.path not in ("", "/") else host.rstrip("/") + CALLBACK_PATH
    host = host or "localhost"
    return (
        f"http://{host}{CALLBACK_PATH}" if ":" in host else f"http://{host}:{port}{CALLBACK_PATH}"
    )


@dataclass(slots=True)
class AuthFlow:
    """One sign-in: a PKCE verifier and state, the loopback callback server, and the
    code exchange that writes the credentials file."""

    settings: OAuthSettings
    external_host: str | None = None
    state: str = field(default_factory=lambda: _token(32))
    verifier: str = field(default_factory=lambda: _token(64), repr=False)
    redirect_uri: str = ""
    status: str = "pending"  # pending | exchanging | done | failed
    error: str | None = None
    _server: asyncio.Server | None = None
    _done: asyncio.Future[Path] | None = None

    async def start(self) -> str:
        """Listen for the callback; return the URL to open in a browser."""
        if not self.settings.client_id:
            prefix = DEFAULTS[self.settings.provider_type].env_prefix
            message = f"no OAuth client id: set {prefix}_CLIENT_ID or the `client_id` option"
            raise ir.Error(400, "invalid_request", message)
        host = self.external_host or self.settings.callback_host
        bind = self.settings.callback_bind or ("0.0.0.0" if host else "127.0.0.1")
        self._done = asyncio.get_running_loop().create_future()
        try:
            self._server = await asyncio.start_server(
                self._on_connect, bind, self.settings.callback_port, limit=_HEAD_LIMIT
            )
        except OSError as exc:
            message = f"cannot listen on {bind}:{self.settings.callback_port}: {exc.strerror}"
            raise ir.Error(409, "invalid_request", message) from None
        port = self._server.sockets[0].getsockname()[1]
        self.redirect_uri = redirect_uri(host, port)
        async with oauth_client(
            self.settings, redirect_uri=self.redirect_uri, code_challenge_method="S256"
        ) as client:
            url, _ = client.create_authorization_url(
                self.settings.auth_url,
                state=self.state,
                code_verifier=self.verifier,
                scope=" ".join(self.settings.scopes),
                access_type="offline",
                prompt="consent",
            )
        return url

    async def result(self, timeout: float = AUTH_TIMEOUT) -> Path:
        """The credentials path once the callback completed the sign-in."""
        assert self._done is not None, "start() first"
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    async def wait(self, timeout: float = AUTH_TIMEOUT) -> Path:
        """`result`, then stop listening (also on failure or timeout)."""
        try:
            return await self.result(timeout)
        except TimeoutError:
            self._fail("no callback before the timeout")
            raise ir.Error(504, "timeout", "the OAuth sign-in timed out") from None
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._done is not None and not self._done.done():
            self._fail("cancelled")

    def _fail(self, reason: str) -> None:
        self.status, self.error = "failed", reason
        if self._done is not None and not self._done.done():
            self._done.set_exception(ir.Error(401, "authentication", f"OAuth sign-in {reason}"))
            self._done.exception()  # retrieved: no "never retrieved" warning

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            status, message = await self._callback(head.split(b"\r\n", 1)[0].decode("latin-1"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            status, message = 400, "Bad request."
        with contextlib.suppress(OSError):
            writer.write(_page(status, message))
            await writer.drain()
            writer.close()

    async def _callback(self, request_line: str) -> tuple[int, str]:
        parts = request_line.split(" ")
        target = urlsplit(parts[1] if len(parts) == 3 else "/")
        if parts[0] != "GET" or target.path != urlsplit(self.redirect_uri).path:
            return 404, "Not found."
        if self.status != "pending":
            return 409, f"This sign-in is already {self.status}."
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            return 400, "State mismatch: this callback does not belong to the pending sign-in."
        if "error" in query:
            self._fail(f"refused: {query['error']}")
            return 400, f"Sign-in refused: {query['error']}."
        if not query.get("code"):
            return 400, "No authorization code in the callback."
        self.status = "exchanging"
        try:
            path = await self._exchange(query["code"])
        except ir.Error as error:
            self._fail(error.message)
            return 502, f"Sign-in failed: {error.message}"
        self.status = "done"
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(path)
        return 200, "Signed in. You can close this window."

    async def _exchange(self, code: str) -> Path:
        try:
            async with oauth_client(self.settings, redirect_uri=self.redirect_uri) as client:
                token = await client.fetch_token(
                    self.settings.token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=self.verifier,
                )
        except token_failures() as exc:
            raise token_error(self.settings, exc) from None
        creds = credentials_from_token(token)
        if not creds.get("refresh_token"):
            message = "Google returned no refresh token (revoke the app's access and retry)"
            raise ir.Error(502, "bad_gateway", message)
        await asyncio.to_thread(write_credentials, self.settings.credentials, creds)
        log.info("OAuth credentials written to %s", self.settings.credentials)
        return self.settings.credentials


def _page(status: int, message: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}.get(status, "Error")
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>router sign-in</title></head>"
        f"<body><p>{html.escape(message)}</p></body></html>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


# --- management API ------------------------------------------------------------------

_FLOWS: dict[str, AuthFlow] = {}  # by state
_TASKS: set[asyncio.Task[None]] = set()


# told how a sign-in ended: (the credentials file, None) or (None, why it failed)
Finished = Callable[[Path | None, str | None], Awaitable[None] | None]


async def start_auth(
    plan: Plan | None,
    provider: str,
    instance: str | None = None,
    *,
    external_host: str | None = None,
    callback_port: int | None = None,
    config_dir: str | None = None,
    timeout: float = AUTH_TIMEOUT,
    on_finish: Finished | None = None,
) -> dict[str, Any]:
    """Start a sign-in; its callback is awaited in the background (in this event loop),
    then `on_finish(credentials path, None)` or `on_finish(None, why it failed)`.
    A pending sign-in on the same callback port is cancelled first."""
    settings = settings_for(plan, provider, instance, config_dir, callback_port)
    for state, pending in list(_FLOWS.items()):
        port = pending.settings.callback_port
        if pending.status == "pending" and port and port == settings.callback_port:
            await pending.close()
            _FLOWS.pop(state, None)
    flow = AuthFlow(settings, external_host)
    url = await flow.start()
    _forget_finished()
    _FLOWS[flow.state] = flow
    task = asyncio.get_running_loop().create_task(_finish(flow, timeout, on_finish))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return {
        "auth_url": url,
        "state": flow.state,
        "redirect_uri": flow.redirect_uri,
        "provider": settings.provider_type,
        "credentials": str(settings.credentials),
        "expires_in": int(timeout),
    }


async def _finish(flow: AuthFlow, timeout: float, on_finish: Finished | None) -> None:
    path: Path | None = None
    failure: str | None = None
    try:
        path = await flow.wait(timeout)
    except ir.Error as error:
        log.warning("OAuth sign-in for %s failed: %s", flow.settings.provider_type, error.message)
        failure = error.message
    if on_finish is None:
        return
    try:
        result = on_finish(path, failure)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception("after the OAuth sign-in: on_finish failed")


def _forget_finished() -> None:
    """Finished sign-ins stay queryable by `auth_status`; bound how many."""
    if len(_FLOWS) > 64:
        for state in [s for s, f in _FLOWS.items() if f.status != "pending"][:32]:
            _FLOWS.pop(state, None)


def auth_status(state: str) -> dict[str, Any]:
    flow = _FLOWS.get(state)
    if flow is None:
        raise ir.Error(404, "not_found", "no such sign-in")
    document: dict[str, Any] = {"status": flow.status}
    if flow.error:
        document["error"] = flow.error
    if flow.status == "done":
        document["credentials"] = str(flow.settings.credentials)
    return document


async def wait_auth(state: str, timeout: float = AUTH_TIMEOUT) -> Path:
    flow = _FLOWS.get(state)
    if flow is None:
        raise ir.Error(404, "not_found", "no such sign-in")
    return await flow.result(timeout)


def store_uploaded_credentials(
    plan: Plan | None,
    provider: str,
    instance: str | None,
    payload: bytes | str | Mapping[str, Any],
    *,
    config_dir: str | None = None,
) -> Path:
    """Validate an uploaded credentials file (gemini-cli's `oauth_creds.json`, an authlib
    token, or google-auth's `authorized_user` JSON) and write it where the instance reads
    it. Returns the path."""
    settings = settings_for(plan, provider, instance, config_dir)
    if isinstance(payload, bytes | str):
        try:
            payload = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            raise ir.Error(400, "invalid_request", "credentials are not valid JSON") from None
    if not isinstance(payload, Mapping):
        raise ir.Error(400, "invalid_request", "credentials must be a JSON object")
    creds = credentials_from_token(payload)
    if not creds.get("refresh_token"):
        raise ir.Error(400, "invalid_request", "credentials have no refresh_token")
    write_credentials(settings.credentials, creds)
    log.info("uploaded OAuth credentials written to %s", settings.credentials)
    return settings.credentials


# --- CLI ---------------------------------------------------------------------------


def run_oauth_cli(
    provider_type: str,
    instance: str | None,
    config_dir: str,
    *,
    external_host: str | None = None,
    callback_port: int | None = None,
    timeout: float = AUTH_TIMEOUT,
) -> int:
    """`router oauth TYPE [--instance ID]`: print the URL, wait for the callback, write
    the credentials. 0 on success, 1 on failure (message on stderr)."""
    try:
        return asyncio.run(
            _run_cli(provider_type, instance, config_dir, external_host, callback_port, timeout)
        )
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 1


async def _run_cli(
    provider_type: str,
    instance: str | None,
    config_dir: str,
    external_host: str | None,
    callback_port: int | None,
    timeout: float,
) -> int:
    plan = _compile_quietly(config_dir)
    try:
        settings = settings_for(plan, provider_type, instance, config_dir, callback_port)
        flow = AuthFlow(settings, external_host)
        url = await flow.start()
    except ir.Error as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    print(f"Open this URL in a browser to sign in ({settings.provider_type}):\n\n  {url}\n")
    print(f"Waiting for the callback on {flow.redirect_uri} ...", flush=True)
    started = time.monotonic()
    try:
        path = await flow.wait(timeout)
    except ir.Error as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    print(f"Credentials saved to {path} ({time.monotonic() - started:.0f}s).", flush=True)
    return 0


def _compile_quietly(config_dir: str) -> Plan | None:
    from router.compiler.compile import compile_config

    try:
        plan, _ = compile_config(config_dir)
    except Exception:  # a broken config still allows a sign-in with the defaults
        log.debug("config did not compile", exc_info=True)
        return None
    if plan is None:
        print(f"warning: the config in {config_dir} has errors; using defaults", file=sys.stderr)
    return plan
