"""gemini-cli-oauth: Google's Code Assist API (`{base}/v1internal:...`) with the OAuth
account gemini-cli signs in with.

* `:generateContent` / `:streamGenerateContent?alt=sse`, the Gemini request wrapped as
  `{model, project, request}`; each answer (and each stream event) comes back wrapped as
  `{"response": {...}, "traceId": ...}` and is unwrapped before the Gemini decoder.
* The project is the configured `project`, else discovered once per account:
  `:loadCodeAssist` -> `cloudaicompanionProject`, else `:onboardUser` polled until done.
* The access token is refreshed before expiry and once after a 401 (google_oauth)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from router.compiler.plan import Instance, Provider
from router.protocols import gemini, ir
from router.providers.base import Call, CountCall, StreamTransformer, WireAdapter
from router.providers.google_oauth import (
    LoopLock,
    OAuthSettings,
    TokenStore,
    oauth_settings,
    option,
    token_store,
)
from router.providers.http import client_for
from router.tokens import estimate_request_tokens

log = logging.getLogger("router.code_assist")

DEFAULT_BASE = "https://cloudcode-pa.googleapis.com"
API_VERSION = "v1internal"
DEFAULT_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-2.5-pro-preview-06-05",
    "gemini-2.5-flash-preview-09-2025",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
)
ONBOARD_POLL_INTERVAL = 5.0
ONBOARD_TIMEOUT = 120.0
DISCOVERY_TIMEOUT = 30.0

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Account:
    """What one instance needs across calls: its OAuth settings and token, its endpoints,
    and its project once known."""

    instance: Instance
    settings: OAuthSettings
    tokens: TokenStore
    base_urls: tuple[str, ...]
    user_agent: str
    aliases: Mapping[str, str]
    project: str | None
    poll_interval: float
    onboard_timeout: float
    session_id: str = ""
    lock: LoopLock = field(default_factory=LoopLock)

    def same_upstream(self, other: Account) -> bool:
        """Whether a discovered project carries over to `other` (after a reload)."""
        return (self.settings.credentials, self.base_urls) == (
            other.settings.credentials,
            other.base_urls,
        )


class CodeAssistAdapter(WireAdapter):
    protocol = "gemini"
    default_models = DEFAULT_MODELS
    provider_type = "gemini-cli-oauth"
    default_bases: tuple[str, ...] = (DEFAULT_BASE,)
    default_user_agent = "GeminiCLI/0.21.0 (linux; x64)"
    default_aliases: Mapping[str, str] = {}
    ide_type = "IDE_UNSPECIFIED"

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}

    # --- per-instance state --------------------------------------------------------
    def account(self, provider: Provider, instance: Instance) -> Account:
        account = self._accounts.get(instance.id)
        if account is not None and account.instance is instance:
            return account
        fresh = self.build_account(provider, instance)
        if account is not None and fresh.project is None and account.same_upstream(fresh):
            fresh.project = account.project
        self._accounts[instance.id] = fresh
        return fresh

    def build_account(self, provider: Provider, instance: Instance) -> Account:
        settings = oauth_settings(self.provider_type, provider, instance)

        def get(key: str, default: Any = None) -> Any:
            return option(provider, instance, key, default)

        bases = get("base_urls") or ((instance.base_url,) if instance.base_url else None)
        return Account(
            instance=instance,
            settings=settings,
            tokens=token_store(settings.credentials),
            base_urls=tuple(b.rstrip("/") for b in bases or self.default_bases),
            user_agent=str(get("user_agent", self.default_user_agent)),
            aliases={
                **self.default_aliases,
                **(provider.options.get("model_aliases") or {}),
                **(instance.options.get("model_aliases") or {}),
            },
            project=get("project") or None,
            poll_interval=float(get("onboard_poll_interval", ONBOARD_POLL_INTERVAL)),
            onboard_timeout=float(get("onboard_timeout", ONBOARD_TIMEOUT)),
        )

    # --- WireAdapter ---------------------------------------------------------------
    async def prepare(self, call: Call) -> None:
        account = self.account(call.provider, call.instance)
        call.state["account"] = account
        call.state["base_index"] = 0
        model = call.model.removeprefix("models/")
        call.state["model"] = account.aliases.get(model, model)
        call.state["token"] = await account.tokens.token(account.settings)
        call.state["project"] = await self.project(account, call.instance)

    def url(self, call: Call) -> str:
        account: Account = call.state["account"]
        base = account.base_urls[call.state.get("base_index", 0)]
        if call.stream:
            return f"{base}/{API_VERSION}:streamGenerateContent?alt=sse"
        return f"{base}/{API_VERSION}:generateContent"

    def auth_headers(self, instance: Instance) -> dict[str, str]:
        return account_headers(self._accounts[instance.id])

    def wrap_body(self, call: Call) -> bytes:
        head = _encode({"model": call.state["model"], "project": call.state["project"]})
        return head[:-1] + b',"request":' + (call.body or b"{}") + b"}"

    def unwrap_body(self, body: bytes) -> bytes:
        return unwrap_json(body)

    def unwrap_stream(self) -> StreamTransformer:
        return SSEUnwrapper()

    async def retry(self, call: Call, status: int | None) -> bool:
        if status != 401 or call.state.get("reauthorized"):
            return False
        call.state["reauthorized"] = True
        account: Account = call.state["account"]
        try:
            call.state["token"] = await account.tokens.reauthorize(
                account.settings, call.state.get("token")
            )
        except ir.Error as error:
            log.warning("instance %s: refresh after 401 failed: %s", call.instance.id, error)
            return False
        return True

    # --- project discovery ---------------------------------------------------------
    async def project(self, account: Account, instance: Instance) -> str:
        if account.project:
            return account.project
        async with account.lock():
            if not account.project:
                account.project = await self.discover_project(account, instance)
                log.info("instance %s: Code Assist project discovered", instance.id)
        return account.project

    async def discover_project(self, account: Account, instance: Instance) -> str:
        metadata = {
            "ideType": self.ide_type,
            "platform": "PLATFORM_UNSPECIFIED",
            "pluginType": "GEMINI",
        }
        loaded = await self.internal(account, instance, "loadCodeAssist", {"metadata": metadata})
        project = project_id(loaded.get("cloudaicompanionProject"))
        if project:
            return project
        if loaded.get("currentTier"):
            raise ir.Error(
                403,
                "permission",
                "this Code Assist account needs a Google Cloud project: "
                f"set `project` on instance {instance.id}",
            )
        body = {"tierId": onboard_tier(loaded), "metadata": metadata}
        operation = await self.poll_onboarding(account, instance, body)
        project = project_id((operation.get("response") or {}).get("cloudaicompanionProject"))
        if not project:
            raise ir.Error(
                403,
                "permission",
                "Code Assist onboarding returned no project: "
                f"set `project` on instance {instance.id}",
            )
        return project

    async def poll_onboarding(
        self, account: Account, instance: Instance, body: dict[str, Any]
    ) -> dict[str, Any]:
        deadline = time.monotonic() + account.onboard_timeout
        while True:
            operation = await self.internal(account, instance, "onboardUser", body)
            if operation.get("done"):
                if isinstance(operation.get("error"), dict):
                    error = operation["error"]
                    message = f"Code Assist onboarding failed: {error.get('message', error)}"
                    raise ir.Error(502, "bad_gateway", message)
                return operation
            if time.monotonic() + account.poll_interval > deadline:
                raise ir.Error(504, "timeout", "Code Assist onboarding did not finish in time")
            await asyncio.sleep(account.poll_interval)

    async def internal(
        self, account: Account, instance: Instance, method: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST one `v1internal:{method}` call: the next base URL on 429 or a network
        error, a refresh and one retry on 401."""
        reauthorized = False
        index = 0
        while True:
            url = f"{account.base_urls[index]}/{API_VERSION}:{method}"
            token = await account.tokens.token(account.settings)
            headers = {"content-type": "application/json", **account_headers(account)}
            headers.update(instance.headers)
            try:
                response = await client_for(instance.proxy).post(
                    url, content=_encode(body), headers=headers, timeout=DISCOVERY_TIMEOUT
                )
            except httpx.HTTPError as exc:
                if index + 1 < len(account.base_urls):
                    index += 1
                    continue
                message = f"Code Assist {method} unreachable: {type(exc).__name__}"
                raise ir.Error(502, "bad_gateway", message) from None
            status = response.status_code
            if status == 401 and not reauthorized:
                reauthorized = True
                await account.tokens.reauthorize(account.settings, token)
                continue
            if status == 429 and index + 1 < len(account.base_urls):
                index += 1
                continue
            if status >= 400:
                error = gemini.parse_error(status, response.content)
                error.message = f"Code Assist {method}: {error.message}"
                raise error
            return _object(response.content, method)

    # --- countTokens -------------------------------------------------------------------
    counts_tokens = True

    async def count_tokens(self, call: CountCall) -> int:
        """`v1internal:countTokens` counts the contents only (the body gemini-cli sends);
        the system instruction and the tools are added as the estimate."""
        contents = gemini.build_request(call.request)["contents"]
        counted = await self.count_contents(call.provider, call.instance, call.model, contents)
        request = call.request
        rest = ir.Request(request.model, system=request.system, tools=request.tools)
        return counted + estimate_request_tokens(rest)

    async def count_contents(
        self, provider: Provider, instance: Instance, model: str, contents: list[Any]
    ) -> int:
        """`v1internal:countTokens` with the body gemini-cli sends,
        `{request: {model: "models/<m>", contents}}`, answered with `totalTokens`."""
        account = self.account(provider, instance)
        name = model.removeprefix("models/")
        name = account.aliases.get(name, name)
        body = {"request": {"model": f"models/{name}", "contents": count_contents(contents)}}
        return gemini.count_from(await self.internal(account, instance, "countTokens", body))


def count_contents(contents: list[Any]) -> list[Any]:
    """Contents as countTokens takes them. Like gemini-cli, thought parts become plain
    text (the count endpoint rejects `thought` parts); thought signatures are not input
    the model reads, so they are left out, and so are parts left empty by that."""
    out = []
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            out.append(content)
            continue
        parts = [_count_part(part) for part in content["parts"]]
        out.append({**content, "parts": [part for part in parts if part]})
    return [c for c in out if not isinstance(c, dict) or c.get("parts") != []]


def _count_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    kept = {k: v for k, v in part.items() if k not in ("thought", "thoughtSignature")}
    return None if kept in ({}, {"text": ""}) else kept


def account_headers(account: Account) -> dict[str, str]:
    return {
        "authorization": f"Bearer {account.tokens.access_token}",
        "user-agent": account.user_agent,
    }


def project_id(value: Any) -> str | None:
    """`cloudaicompanionProject` is a string in loadCodeAssist, `{id, name}` in onboardUser."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def onboard_tier(loaded: Mapping[str, Any]) -> str:
    for tier in loaded.get("allowedTiers") or []:
        if isinstance(tier, dict) and tier.get("isDefault") and tier.get("id"):
            return str(tier["id"])
    return "legacy-tier"


def _object(body: bytes, method: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise ir.Error(502, "bad_gateway", f"Code Assist {method} sent no JSON object")
    return value


# --- unwrapping answers -------------------------------------------------------------


def unwrap_json(body: bytes) -> bytes:
    """`{"response": X, "traceId": ...}` -> X; anything else unchanged."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    if isinstance(value, dict) and isinstance(value.get("response"), dict):
        return _encode(value["response"])
    return body


class SSEUnwrapper:
    """Re-emits each SSE event of a Code Assist stream with its data unwrapped, whatever
    the chunking: `data: {"response": X, ...}` -> `data: X`. Other fields and comments
    pass through; an event is emitted once its blank line arrives (or at close)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._fields: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = bytearray()
        while (newline := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:newline]).rstrip(b"\r")
            del self._buffer[: newline + 1]
            out += self._line(line)
        return bytes(out)

    def close(self) -> bytes:
        tail = self._line(bytes(self._buffer).rstrip(b"\r")) if self._buffer else b""
        self._buffer.clear()
        return tail + self._line(b"")

    def _line(self, line: bytes) -> bytes:
        if not line:
            return self._emit()
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        else:
            self._fields.append(line)
        return b""

    def _emit(self) -> bytes:
        if not self._data and not self._fields:
            return b""
        out = b"".join(line + b"\n" for line in self._fields)
        if self._data:
            data = b"\n".join(self._data)
            unwrapped = unwrap_json(data)
            lines = [unwrapped] if unwrapped is not data else self._data
            out += b"".join(b"data: " + line + b"\n" for line in lines)
        self._data, self._fields = [], []
        return out + b"\n"
