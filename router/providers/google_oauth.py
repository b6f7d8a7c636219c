"""Google OAuth for the Code Assist adapters (gemini-cli-oauth, gemini-antigravity):
per-type defaults, settings resolved from instance/pool options and the environment, the
credentials file, and access tokens refreshed before expiry (or after a 401) under a lock,
so concurrent requests refresh once. With a Redis configured (`state.redis`) the lock and
the refreshed token are shared too: one refresh per Google account across every worker
and server (see `oauth_share`; Redis must then be trusted like the credentials dir).

The credentials file has gemini-cli's shape: `access_token`, `refresh_token`,
`expiry_date` (epoch milliseconds), `token_type`, `scope`, `id_token`. It is written
atomically with mode 0600 and re-read whenever it changes on disk (a new login or an
upload takes effect without a restart). Tokens and secrets are never logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from router.compiler.plan import Instance, Provider
from router.protocols import ir
from router.providers import oauth_share
from router.state import redis_client

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = logging.getLogger("router.oauth")

GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
REFRESH_MARGIN = 300.0  # refresh this many seconds before the access token expires
TOKEN_TIMEOUT = 30.0
_BASE_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
)


@dataclass(frozen=True, slots=True)
class OAuthDefaults:
    env_prefix: str  # {prefix}_CLIENT_ID / {prefix}_CLIENT_SECRET
    credentials: str  # relative to the config dir
    callback_port: int
    scopes: tuple[str, ...]


DEFAULTS: Mapping[str, OAuthDefaults] = {
    "gemini-cli-oauth": OAuthDefaults(
        "GEMINI_CLI_OAUTH", "configs/gemini/oauth_creds.json", 8085, _BASE_SCOPES
    ),
    "gemini-antigravity": OAuthDefaults(
        "ANTIGRAVITY_OAUTH",
        "configs/antigravity/oauth_creds.json",
        8086,
        (
            *_BASE_SCOPES,
            "https://www.googleapis.com/auth/cclog",
            "https://www.googleapis.com/auth/experimentsandconfigs",
        ),
    ),
}


def signs_in_with_google(provider_type: str) -> bool:
    """Whether instances of `provider_type` sign in with Google OAuth (have DEFAULTS)."""
    return provider_type in DEFAULTS


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    provider_type: str
    credentials: Path
    client_id: str | None
    client_secret: str | None = field(repr=False)
    auth_url: str = GOOGLE_AUTH_URL
    token_url: str = GOOGLE_TOKEN_URL
    scopes: tuple[str, ...] = _BASE_SCOPES
    callback_port: int = 8085
    callback_host: str | None = None  # external host (or URL) for the redirect URI
    callback_bind: str | None = None  # listen address; default loopback, or all with a host
    proxy: str | bool | None = None

    @property
    def login_hint(self) -> str:
        return f"sign in with `router oauth {self.provider_type}`"


def option(
    provider: Provider | None, instance: Instance | None, key: str, default: Any = None
) -> Any:
    """An adapter option: the instance's, else the pool's `options:`, else `default`."""
    for source in (instance.options if instance else {}, provider.options if provider else {}):
        value = source.get(key)
        if value is not None and value != "":
            return value
    return default


def default_config_dir() -> Path:
    """Where relative paths resolve when no config dir is known: ROUTER_CONFIG_DIR (set by
    `router serve`), else the working directory."""
    return Path(os.environ.get("ROUTER_CONFIG_DIR") or os.getcwd())


def oauth_settings(
    provider_type: str,
    provider: Provider | None = None,
    instance: Instance | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> OAuthSettings:
    defaults = DEFAULTS[provider_type]
    env = os.environ if env is None else env

    def get(key: str, default: Any = None) -> Any:
        return option(provider, instance, key, default)

    credentials = Path(str(get("credentials", defaults.credentials))).expanduser()
    if not credentials.is_absolute():
        credentials = (Path(config_dir) if config_dir else default_config_dir()) / credentials
    secret = get("client_secret") or env.get(f"{defaults.env_prefix}_CLIENT_SECRET")
    scopes = get("scopes", defaults.scopes)
    return OAuthSettings(
        provider_type=provider_type,
        credentials=credentials,
        client_id=get("client_id") or env.get(f"{defaults.env_prefix}_CLIENT_ID") or None,
        client_secret=getattr(secret, "value", secret) or None,
        auth_url=get("auth_url", GOOGLE_AUTH_URL),
        token_url=get("token_url", GOOGLE_TOKEN_URL),
        scopes=tuple(scopes.split() if isinstance(scopes, str) else scopes),
        callback_port=int(get("callback_port", defaults.callback_port)),
        callback_host=get("callback_host"),
        callback_bind=get("callback_bind"),
        proxy=instance.proxy if instance else None,
    )


# --- the credentials file ----------------------------------------------------------


def read_credentials(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ir.Error(401, "authentication", f"OAuth credentials file {path} not found") from None
    except (OSError, ValueError) as exc:
        message = f"OAuth credentials file {path} is unreadable: {type(exc).__name__}"
        raise ir.Error(401, "authentication", message) from None
    if not isinstance(data, dict):
        raise ir.Error(401, "authentication", f"OAuth credentials file {path} is not an object")
    return data


def write_credentials(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically (temp file + rename in the same directory), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(dict(data), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def credentials_from_token(
    token: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A token endpoint answer (or an uploaded file) in the credentials file's shape,
    keeping what `previous` had that the answer does not repeat (the refresh token)."""
    creds = dict(previous or {})
    for key in ("access_token", "refresh_token", "token_type", "scope", "id_token"):
        if token.get(key):
            creds[key] = token[key]
    if "token" in token and "access_token" not in token:  # google-auth authorized_user
        creds["access_token"] = token["token"]
    for key in ("client_id", "client_secret", "type"):
        if token.get(key):
            creds[key] = token[key]
    expiry = _expiry_ms(token)
    if expiry is not None:
        creds["expiry_date"] = expiry
    for key in ("expires_in", "expires_at", "expiry", "token"):
        creds.pop(key, None)
    return creds


def _expiry_ms(token: Mapping[str, Any]) -> int | None:
    if isinstance(token.get("expiry_date"), int | float):
        return int(token["expiry_date"])
    if isinstance(token.get("expires_at"), int | float):
        return int(token["expires_at"] * 1000)
    if isinstance(token.get("expires_in"), int | float):
        return int((time.time() + token["expires_in"]) * 1000)
    if isinstance(token.get("expiry"), str):  # google-auth: ISO 8601
        with contextlib.suppress(ValueError):
            expiry = datetime.fromisoformat(token["expiry"].replace("Z", "+00:00"))
            if expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=UTC)
            return int(expiry.timestamp() * 1000)
    return None


def oauth_client(settings: OAuthSettings, **kwargs: Any) -> AsyncOAuth2Client:
    """An authlib client for Google's endpoints (client secret sent in the form body).
    authlib (with cryptography) is imported here, not at start: a worker with no OAuth
    provider is about 7 MB smaller without it."""
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    proxy = settings.proxy
    return AsyncOAuth2Client(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        token_endpoint_auth_method="client_secret_post",
        timeout=TOKEN_TIMEOUT,
        trust_env=proxy is None or proxy is True,
        proxy=proxy if isinstance(proxy, str) else None,
        **kwargs,
    )


def token_failures() -> tuple[type[Exception], ...]:
    """What a token request can raise, for an `except` clause (evaluated only when
    something was raised, so authlib stays unloaded until OAuth is used)."""
    from authlib.integrations.httpx_client import OAuthError

    return (OAuthError, httpx.HTTPError)


def token_error(settings: OAuthSettings, exc: Exception) -> ir.Error:
    """A token endpoint failure in protocol-neutral terms (no secrets in the message)."""
    from authlib.integrations.httpx_client import OAuthError

    if isinstance(exc, OAuthError):
        detail = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
        message = f"OAuth token request failed ({detail}); {settings.login_hint}"
        return ir.Error(401, "authentication", message)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return ir.Error(502, "bad_gateway", f"OAuth token endpoint answered HTTP {status}")
    return ir.Error(502, "bad_gateway", f"OAuth token endpoint unreachable: {type(exc).__name__}")


# --- access tokens -----------------------------------------------------------------


class LoopLock:
    """An asyncio.Lock per event loop (an asyncio.Lock is bound to the loop that first
    used it; module-level state outlives loops in tests and threaded runtimes)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class TokenStore:
    """The access token of one credentials file, shared by every instance using it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.refreshes = 0
        self._creds: dict[str, Any] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = LoopLock()

    @property
    def access_token(self) -> str | None:
        return self._creds.get("access_token")

    async def token(self, settings: OAuthSettings) -> str:
        """A valid access token, refreshed first when it expires within REFRESH_MARGIN."""
        self._reload()
        if fresh(self._creds):
            return self._creds["access_token"]
        async with self._lock():
            self._reload()
            if not fresh(self._creds):
                await self._refresh(settings)
            return self._creds["access_token"]

    async def reauthorize(self, settings: OAuthSettings, failed: str | None) -> str:
        """After a 401 for `failed`: refresh, unless another request already has."""
        async with self._lock():
            self._reload()
            current = self._creds.get("access_token")
            if current is None or current == failed:
                await self._refresh(settings, failed)
            return self._creds["access_token"]

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._creds, self._stamp = {}, None
            raise ir.Error(
                401, "authentication", f"OAuth credentials file {self.path} not found"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._creds = read_credentials(self.path)
            self._stamp = stamp

    async def _refresh(self, settings: OAuthSettings, failed: str | None = None) -> None:
        """Refresh at Google; with Redis, only if no other process (of any server) has
        refreshed this account already or is doing it now, else take its token."""
        refresh_token = self._creds.get("refresh_token")
        redis = redis_client.current()
        if redis is None or not refresh_token:
            await self._refresh_at_google(settings)
            return
        stale = {self._creds.get("access_token"), failed}

        def usable(token: Mapping[str, Any]) -> bool:
            return token["access_token"] not in stale and fresh(token)

        async def refresh() -> Mapping[str, Any]:
            await self._refresh_at_google(settings)
            return self._creds

        shared = await oauth_share.refresh_once(redis, refresh_token, usable, refresh)
        if shared is not None:
            await self._store(credentials_from_token(shared, self._creds))
            log.info("OAuth access token for %s taken from Redis", self.path)

    async def _refresh_at_google(self, settings: OAuthSettings) -> None:
        refresh_token = self._creds.get("refresh_token")
        if not refresh_token:
            message = f"no refresh token in {self.path}; {settings.login_hint}"
            raise ir.Error(401, "authentication", message)
        settings = _with_file_client(settings, self._creds)
        if not settings.client_id:
            prefix = DEFAULTS[settings.provider_type].env_prefix
            message = f"no OAuth client id: set {prefix}_CLIENT_ID or the `client_id` option"
            raise ir.Error(401, "authentication", message)
        try:
            async with oauth_client(settings) as client:
                token = await client.refresh_token(settings.token_url, refresh_token=refresh_token)
        except token_failures() as exc:
            log.warning("OAuth refresh for %s failed: %s", self.path, type(exc).__name__)
            raise token_error(settings, exc) from None
        await self._store(credentials_from_token(token, self._creds))
        self.refreshes += 1
        log.info("OAuth access token for %s refreshed", self.path)

    async def _store(self, creds: dict[str, Any]) -> None:
        await asyncio.to_thread(write_credentials, self.path, creds)
        stat = self.path.stat()
        self._creds, self._stamp = creds, (stat.st_mtime_ns, stat.st_size)


def fresh(creds: Mapping[str, Any]) -> bool:
    """Whether `creds` hold an access token that is not within REFRESH_MARGIN of expiry
    (one without a known expiry is used until the upstream says 401)."""
    if not creds.get("access_token"):
        return False
    expiry = creds.get("expiry_date")
    if not isinstance(expiry, int | float):
        return True
    return expiry / 1000 - time.time() > REFRESH_MARGIN


def _with_file_client(settings: OAuthSettings, creds: Mapping[str, Any]) -> OAuthSettings:
    """Fall back to a client id/secret stored in the credentials file (google-auth's
    `authorized_user` files carry them)."""
    if settings.client_id or not creds.get("client_id"):
        return settings
    return replace(settings, client_id=creds["client_id"], client_secret=creds.get("client_secret"))


_STORES: dict[Path, TokenStore] = {}


def token_store(path: Path) -> TokenStore:
    store = _STORES.get(path)
    if store is None:
        store = _STORES[path] = TokenStore(path)
    return store
