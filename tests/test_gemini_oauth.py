"""gemini-cli-oauth and gemini-antigravity against a loopback fake of Google (OAuth +
Code Assist): the sign-in flow, token refresh, project discovery, the wrapped wire
format, Antigravity's endpoint fallback, aliases and tool-schema cleaning.

Adapters are called through `router.providers.upstream.call_wire`, the path the gateway
uses, so the envelope and the unwrapping are exercised for real."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import stat
import sys
import textwrap
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
import pytest

from router.compiler.compile import compile_config
from router.compiler.plan import Instance, Provider, Secret
from router.protocols import ir, module_for
from router.protocols.sse import SSEParser
from router.providers.base import Call
from router.providers.code_assist import SSEUnwrapper, unwrap_json
from router.providers.google_oauth import read_credentials
from router.providers.http import close_all
from router.providers.oauth_cli import (
    redirect_uri,
    start_auth,
    store_uploaded_credentials,
    wait_auth,
)
from router.providers.registry import adapter_for
from router.providers.upstream import Answer, AttemptFailed, PrimedStream, call_wire
from tests.fakes.google import FakeGoogleProcess
from tests.fakes.process import REPO_ROOT, free_port, spawn_process

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
GEMINI = module_for("gemini")
_ids = itertools.count(1)
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello code assist"}]}]}


@pytest.fixture(scope="module")
def google_process() -> Iterator[FakeGoogleProcess]:
    with FakeGoogleProcess.start() as fake:
        yield fake


@pytest.fixture
def google(google_process: FakeGoogleProcess) -> FakeGoogleProcess:
    google_process.reset()
    return google_process


def run(coro: Awaitable[T]) -> T:
    """Run on a fresh loop, closing the shared upstream clients on it afterwards."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await close_all()

    return asyncio.run(main())


def make_provider(
    kind: str,
    google: FakeGoogleProcess,
    creds: Path,
    *,
    base_url: str | None = None,
    pool_options: dict[str, Any] | None = None,
    **options: Any,
) -> Provider:
    instance = Instance(
        id=f"{kind}-{next(_ids)}",
        base_url=base_url if base_url is not None else google.url,
        proxy=False,
        options=MappingProxyType(
            {
                "credentials": str(creds),
                "token_url": google.token_url,
                "auth_url": google.auth_url,
                "client_id": google.CLIENT_ID,
                "client_secret": Secret(google.CLIENT_SECRET),
                "onboard_poll_interval": 0.01,
                **options,
            }
        ),
    )
    return Provider(
        name=kind,
        type=kind,
        protocol="gemini",
        instances=(instance,),
        options=MappingProxyType(pool_options or {}),
    )


async def call(
    provider: Provider,
    body: dict[str, Any] = HELLO,
    *,
    model: str = "gemini-2.5-pro",
    stream: bool = False,
    passthrough: bool = False,
) -> Answer | PrimedStream:
    adapter = adapter_for(provider)
    request = Call(
        provider=provider,
        instance=provider.instances[0],
        model=model,
        stream=stream,
        body=json.dumps(body).encode(),
    )
    return await call_wire(
        adapter,  # type: ignore[arg-type]
        request,
        GEMINI,
        passthrough=passthrough,
        timeout=10.0,
        first_token_timeout=None,
        retry_on=frozenset(),
    )


async def generate_text(provider: Provider, **kwargs: Any) -> str:
    answer = await call(provider, **kwargs)
    assert isinstance(answer, Answer)
    body = json.loads(answer.body)
    assert "response" not in body and "candidates" in body  # unwrapped
    return GEMINI.parse_response(body).parts[0].text


async def raw_stream(primed: PrimedStream) -> bytes:
    assert primed.raw is not None
    chunks = list(primed.head_raw)
    async for chunk in primed.raw:
        chunks.append(chunk)
    await primed.close()  # type: ignore[misc]
    return b"".join(chunks)


async def event_stream(primed: PrimedStream) -> list[ir.Event]:
    assert primed.batches is not None
    events = list(primed.head_events)
    async for batch in primed.batches:
        events.extend(batch)
    await primed.close()  # type: ignore[misc]
    return events


def envelope(google: FakeGoogleProcess, method: str = "generateContent") -> dict[str, Any]:
    return google.calls(method)[-1]["body"]


# --- the sign-in flow --------------------------------------------------------------


def write_config(directory: Path, google: FakeGoogleProcess, instance_id: str) -> Path:
    (directory / "providers.yaml").write_text(
        textwrap.dedent(
            f"""
            providers:
              gemini-cli-oauth:
                type: gemini-cli-oauth
                options: {{ callback_port: 0, onboard_poll_interval: 0.01 }}
                instances:
                  - id: {instance_id}
                    base_url: {google.url}
                    credentials: configs/gemini/oauth_creds.json
                    token_url: {google.token_url}
                    auth_url: {google.auth_url}
                    client_id: {google.CLIENT_ID}
                    client_secret: ${{TEST_GEMINI_SECRET:-{google.CLIENT_SECRET}}}
                    proxy: false
            """
        )
    )
    (directory / "routes.yaml").write_text("default: gemini-cli-oauth\nroutes: []\n")
    return directory


def follow_browser(auth_url: str) -> httpx.Response:
    """What the user's browser does: open the URL, consent (the fake redirects at once),
    land on the loopback callback."""
    with httpx.Client(follow_redirects=True, trust_env=False, timeout=10.0) as browser:
        return browser.get(auth_url)


def test_full_oauth_flow_then_a_request_succeeds(google: FakeGoogleProcess, tmp_path: Path):
    config_dir = write_config(tmp_path, google, "gcli-flow")
    plan, diagnostics = compile_config(config_dir, env={})
    assert plan is not None, diagnostics
    creds_path = tmp_path / "configs/gemini/oauth_creds.json"

    async def scenario() -> str:
        started = await start_auth(plan, "gemini-cli-oauth", "gcli-flow")
        assert started["auth_url"].startswith(google.auth_url + "?")
        assert started["credentials"] == str(creds_path)
        query = dict(httpx.URL(started["auth_url"]).params)
        assert query["code_challenge_method"] == "S256"
        assert query["state"] == started["state"]
        assert query["redirect_uri"] == started["redirect_uri"]
        assert query["access_type"] == "offline"
        assert "https://www.googleapis.com/auth/cloud-platform" in query["scope"].split()
        assert "client_secret" not in started["auth_url"]

        # a callback with a foreign state is refused and does not end the sign-in
        forged = started["redirect_uri"] + "?code=4/forged&state=not-the-state"
        refused = await asyncio.to_thread(follow_browser, forged)
        assert refused.status_code == 400

        landed = await asyncio.to_thread(follow_browser, started["auth_url"])
        assert landed.status_code == 200, landed.text
        assert "Signed in" in landed.text
        assert await wait_auth(started["state"], 10) == creds_path

        provider = plan.providers["gemini-cli-oauth"]
        return await generate_text(provider)

    assert run(scenario()) == "echo: hello code assist"
    assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
    creds = json.loads(creds_path.read_text())
    assert creds["refresh_token"].startswith("1//fake-refresh-")
    assert creds["expiry_date"] > time.time() * 1000
    assert google.stats()["exchanges"] == 1
    sent = envelope(google)
    assert sent["project"] == "fake-project-123" and sent["model"] == "gemini-2.5-pro"
    assert sent["request"] == HELLO


def test_cli_sign_in(google: FakeGoogleProcess, tmp_path: Path):
    config_dir = write_config(tmp_path, google, "gcli-cli")
    program = (
        "import sys; from router.providers.oauth_cli import run_oauth_cli; "
        "sys.exit(run_oauth_cli('gemini-cli-oauth', 'gcli-cli', sys.argv[1], timeout=20))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with spawn_process(
        [sys.executable, "-c", program, str(config_dir)],
        env=env,
        ready=lambda proc: "http" in proc.output() and "Waiting" in proc.output(),
        timeout=20,
        name="router-oauth",
    ) as proc:
        url = re.search(r"^\s+(http\S+)$", proc.output(), re.M)
        assert url, proc.output()
        assert follow_browser(url.group(1)).status_code == 200
        proc.popen.wait(20)
        assert proc.popen.returncode == 0, proc.output()
        assert "Credentials saved to" in proc.output()
    creds_path = config_dir / "configs/gemini/oauth_creds.json"
    assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
    assert "refresh_token" in read_credentials(creds_path)


def test_redirect_uri_for_remote_setups():
    assert redirect_uri(None, 8085) == "http://localhost:8085/oauth2callback"
    assert redirect_uri("gw.internal", 8085) == "http://gw.internal:8085/oauth2callback"
    assert redirect_uri("gw.internal:9000", 8085) == "http://gw.internal:9000/oauth2callback"
    assert redirect_uri("https://gw.example.com", 8085) == "https://gw.example.com/oauth2callback"
    assert redirect_uri("https://gw.example.com/cb", 8085) == "https://gw.example.com/cb"


def test_uploaded_credentials_are_normalised_and_private(tmp_path: Path):
    uploaded = {
        "type": "authorized_user",
        "client_id": "x.apps.googleusercontent.com",
        "client_secret": "s",
        "refresh_token": "1//r",
        "token": "ya29.a",
        "expiry": "2030-01-01T00:00:00Z",
    }
    path = store_uploaded_credentials(
        None, "gemini-antigravity", None, json.dumps(uploaded), config_dir=str(tmp_path)
    )
    assert path == tmp_path / "configs/antigravity/oauth_creds.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = read_credentials(path)
    assert creds["access_token"] == "ya29.a" and creds["refresh_token"] == "1//r"
    assert creds["expiry_date"] == 1893456000000
    with pytest.raises(ir.Error):
        store_uploaded_credentials(None, "gemini-cli-oauth", None, b"{}", config_dir=str(tmp_path))


# --- tokens ------------------------------------------------------------------------


def test_expired_token_refreshes_once_under_20_concurrent_requests(
    google: FakeGoogleProcess, tmp_path: Path
):
    creds_path = tmp_path / "oauth_creds.json"
    old = google.write_credentials(creds_path, expired=True)
    google.configure(token_delay=0.2)  # a slow token endpoint widens the race
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="fake-project-123")

    async def burst() -> list[str]:
        return await asyncio.gather(*(generate_text(provider) for _ in range(20)))

    assert run(burst()) == ["echo: hello code assist"] * 20
    assert google.stats()["refreshes"] == 1
    creds = read_credentials(creds_path)
    assert creds["access_token"] != old["access_token"]
    assert creds["refresh_token"] == old["refresh_token"]
    assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
    tokens = {e["headers"]["authorization"] for e in google.calls("generateContent")}
    assert tokens == {f"Bearer {creds['access_token']}"}


def test_a_401_refreshes_once_and_retries(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="fake-project-123")
    assert run(generate_text(provider)) == "echo: hello code assist"
    google.revoke()  # the token still looks fresh, but the upstream refuses it

    async def after_revoke() -> list[str]:
        return await asyncio.gather(*(generate_text(provider) for _ in range(5)))

    assert run(after_revoke()) == ["echo: hello code assist"] * 5
    assert google.stats()["refreshes"] == 1


def test_a_refused_refresh_is_an_authentication_error(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    creds = google.write_credentials(creds_path, expired=True)
    creds_path.write_text(json.dumps({**creds, "refresh_token": "1//unknown"}))
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="p")
    with pytest.raises(AttemptFailed) as failure:
        run(call(provider))
    assert failure.value.retryable  # another instance may have a working account
    assert failure.value.error.status == 401
    assert "invalid_grant" in failure.value.error.message
    assert "router oauth gemini-cli-oauth" in failure.value.error.message
    assert "1//unknown" not in failure.value.error.message


# --- project discovery -------------------------------------------------------------


def test_project_from_load_code_assist(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = make_provider("gemini-cli-oauth", google, creds_path)

    async def three() -> list[str]:
        return await asyncio.gather(*(generate_text(provider) for _ in range(3)))

    run(three())
    assert google.stats()["load"] == 1  # discovered once, then cached
    assert google.stats()["onboard"] == 0
    assert envelope(google)["project"] == "fake-project-123"
    metadata = envelope(google, "loadCodeAssist")["metadata"]
    assert metadata["pluginType"] == "GEMINI"


def test_project_from_onboard_user_polled_until_done(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    google.configure(mode="onboard", onboard_polls=2, project="onboarded-project")
    provider = make_provider("gemini-cli-oauth", google, creds_path)
    run(generate_text(provider))
    stats = google.stats()
    assert stats["load"] == 1
    assert stats["onboard"] == 3  # two answers with done=false, then done
    assert envelope(google, "onboardUser")["tierId"] == "free-tier"
    assert envelope(google)["project"] == "onboarded-project"


def test_configured_project_skips_discovery(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    google.configure(project="my-own-project")
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="my-own-project")
    run(generate_text(provider))
    assert google.stats()["load"] == 0
    assert envelope(google)["project"] == "my-own-project"


def test_a_tier_without_project_asks_for_one(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    google.configure(mode="tier")
    provider = make_provider("gemini-cli-oauth", google, creds_path)
    with pytest.raises(AttemptFailed) as failure:
        run(call(provider))
    assert "set `project`" in failure.value.error.message


# --- streaming ---------------------------------------------------------------------


def test_stream_is_unwrapped_for_pass_through(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="fake-project-123")

    async def scenario() -> bytes:
        primed = await call(provider, stream=True, passthrough=True)
        assert isinstance(primed, PrimedStream)
        return await raw_stream(primed)

    raw = run(scenario())
    events = SSEParser().feed(raw)
    chunks = [json.loads(e.data) for e in events]
    assert len(chunks) == 4 and all("candidates" in c and "response" not in c for c in chunks)
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "echo: hello code assist"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert google.calls("streamGenerateContent")[-1]["query"] == {"alt": "sse"}


def test_stream_is_unwrapped_for_translation(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = make_provider("gemini-cli-oauth", google, creds_path, project="fake-project-123")

    async def scenario() -> list[ir.Event]:
        primed = await call(provider, stream=True)
        assert isinstance(primed, PrimedStream)
        return await event_stream(primed)

    events = run(scenario())
    text = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    assert text == "echo: hello code assist"
    assert isinstance(events[-1], ir.Finish) and events[-1].reason == "stop"


def test_sse_unwrapper_survives_any_chunking():
    events = [
        {"response": {"candidates": [{"content": {"parts": [{"text": "a\nb"}]}}]}, "traceId": "1"},
        {"response": {"candidates": [], "usageMetadata": {"totalTokenCount": 3}}},
        {"error": {"code": 429, "message": "slow down"}},
    ]
    wire = b": keep-alive\r\n\r\n" + b"".join(
        b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events
    )
    for size in (1, 2, 7, len(wire)):
        unwrapper = SSEUnwrapper()
        out = b"".join(unwrapper.feed(wire[i : i + size]) for i in range(0, len(wire), size))
        out += unwrapper.close()
        parsed = [json.loads(e.data) for e in SSEParser().feed(out) if e.data]
        assert parsed == [events[0]["response"], events[1]["response"], events[2]]
    unwrapper = SSEUnwrapper()  # an unterminated last event is flushed at close
    assert unwrapper.feed(b'data: {"response": {"x": 1}}') == b""
    assert unwrapper.close() == b'data: {"x":1}\n\n'
    assert unwrap_json(b'{"response": {"a": 1}, "traceId": "t"}') == b'{"a":1}'
    assert unwrap_json(b'{"candidates": []}') == b'{"candidates": []}'


# --- Antigravity ---------------------------------------------------------------------


def antigravity(google: FakeGoogleProcess, creds_path: Path, **options: Any) -> Provider:
    options.setdefault("base_urls", (google.url + "/daily", google.url + "/autopush"))
    return make_provider("gemini-antigravity", google, creds_path, base_url="", **options)


def test_antigravity_envelope_and_user_agent(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(google, creds_path)
    assert run(generate_text(provider, model="gemini-2.5-flash")) == "echo: hello code assist"
    sent = google.calls("generateContent")[-1]
    assert sent["prefix"] == "/daily"
    assert sent["headers"]["user-agent"].startswith("antigravity/")
    body = sent["body"]
    assert body["userAgent"] == "antigravity"
    assert body["requestId"].startswith("agent-")
    assert body["project"] == "fake-project-123"
    assert body["request"]["sessionId"]
    assert body["request"]["contents"] == HELLO["contents"]
    metadata = envelope(google, "loadCodeAssist")["metadata"]
    assert metadata["ideType"] == "ANTIGRAVITY"


def test_antigravity_falls_back_to_the_next_base_url_on_429(
    google: FakeGoogleProcess, tmp_path: Path
):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(google, creds_path, project="fake-project-123")
    google.script({"match": "/daily/v1internal:streamGenerateContent", "status": 429})

    async def scenario() -> list[ir.Event]:
        primed = await call(provider, stream=True, model="gemini-2.5-flash")
        assert isinstance(primed, PrimedStream)
        return await event_stream(primed)

    events = run(scenario())
    assert "".join(e.text for e in events if isinstance(e, ir.TextDelta)) == (
        "echo: hello code assist"
    )
    prefixes = [e["prefix"] for e in google.calls("streamGenerateContent")]
    assert prefixes == ["/daily", "/autopush"]
    bodies = [e["body"] for e in google.calls("streamGenerateContent")]
    assert bodies[0]["requestId"] == bodies[1]["requestId"]


def test_antigravity_falls_back_on_a_network_error(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    provider = antigravity(google, creds_path, base_urls=(closed, google.url + "/autopush"))
    assert run(generate_text(provider, model="gemini-2.5-flash")) == "echo: hello code assist"
    assert [e["prefix"] for e in google.calls("generateContent")] == ["/autopush"]


def test_antigravity_429_on_the_last_base_url_is_reported(
    google: FakeGoogleProcess, tmp_path: Path
):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(google, creds_path, project="fake-project-123")
    google.script({"match": "v1internal:generateContent", "status": 429, "times": 2})
    with pytest.raises(AttemptFailed) as failure:
        run(call(provider, model="gemini-2.5-flash"))
    assert failure.value.error.status == 429 and failure.value.retryable


@pytest.mark.parametrize(
    ("client_model", "upstream_model", "aliases"),
    [
        ("gemini-3-pro-preview", "gemini-3-pro-high", {}),
        ("gemini-claude-sonnet-4-5", "claude-sonnet-4-5", {}),
        ("gemini-claude-opus-4-5-thinking", "claude-opus-4-5-thinking", {}),
        ("gemini-2.5-flash", "gemini-2.5-flash", {}),
        ("gemini-3-pro-preview", "gemini-3-pro-low", {"gemini-3-pro-preview": "gemini-3-pro-low"}),
        ("my-model", "claude-sonnet-4-5", {"my-model": "claude-sonnet-4-5"}),
    ],
)
def test_antigravity_model_aliases(
    google: FakeGoogleProcess, tmp_path: Path, client_model: str, upstream_model: str, aliases
):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(google, creds_path, project="fake-project-123", model_aliases=aliases)
    run(generate_text(provider, model=client_model))
    assert envelope(google)["model"] == upstream_model


def test_pool_aliases_apply_below_instance_aliases(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(
        google,
        creds_path,
        project="fake-project-123",
        model_aliases={"b": "from-instance"},
        pool_options={"model_aliases": {"a": "from-pool", "b": "from-pool"}},
    )
    run(generate_text(provider, model="a"))
    assert envelope(google)["model"] == "from-pool"
    run(generate_text(provider, model="b"))
    assert envelope(google)["model"] == "from-instance"


def test_antigravity_cleans_tool_schemas(google: FakeGoogleProcess, tmp_path: Path):
    creds_path = tmp_path / "oauth_creds.json"
    google.write_credentials(creds_path)
    provider = antigravity(google, creds_path, project="fake-project-123")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "city": {"type": "string", "minLength": 1, "default": "Paris"},
            "unit": {"anyOf": [{"const": "c"}, {"const": "f"}]},
            "days": {"type": ["integer", "null"], "exclusiveMinimum": 0},
        },
        "required": ["city"],
    }
    body = {
        **HELLO,
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "weather", "description": "w", "parametersJsonSchema": schema},
                    {
                        "name": "legacy",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"q": {"type": "STRING", "nullable": True}},
                        },
                    },
                ]
            }
        ],
    }
    run(generate_text(provider, body=body, model="gemini-claude-sonnet-4-5"))
    declarations = envelope(google)["request"]["tools"][0]["functionDeclarations"]
    weather = declarations[0]["parameters"]
    assert "parametersJsonSchema" not in declarations[0]
    assert weather["properties"]["unit"] == {"type": "string", "enum": ["c", "f"]}
    assert "minLength: 1" in weather["properties"]["city"]["description"]
    assert weather["required"] == ["city"]
    assert declarations[1]["parameters"]["properties"]["q"]["type"] == "string"


# --- the four SDKs through the real gateway --------------------------------------------


@pytest.fixture(scope="module")
def oauth_gateway(google_process: FakeGoogleProcess, tmp_path_factory: pytest.TempPathFactory):
    """The gateway with a gemini-cli-oauth pool (path prefix /gemini-cli-oauth) and an
    Antigravity pool, both on the fake; the access tokens are already expired."""
    from tests.gateway import Gateway

    directory = tmp_path_factory.mktemp("oauth-gateway")
    google_process.reset()
    google_process.write_credentials(directory / "configs/gemini/oauth_creds.json", expired=True)
    google_process.write_credentials(
        directory / "configs/antigravity/oauth_creds.json", expired=True
    )
    common = f"""
                    token_url: {google_process.token_url}
                    client_id: {google_process.CLIENT_ID}
                    client_secret: {google_process.CLIENT_SECRET}
                    proxy: false"""
    (directory / "providers.yaml").write_text(
        textwrap.dedent(
            f"""
            providers:
              gemini-cli-oauth:
                type: gemini-cli-oauth
                models: [gemini-2.5-flash]
                instances:
                  - id: gcli-gateway
                    base_url: {google_process.url}
                    credentials: configs/gemini/oauth_creds.json{common}
              gemini-antigravity:
                type: gemini-antigravity
                models: [gemini-claude-sonnet-4-5]
                instances:
                  - id: antigravity-gateway
                    base_urls: [{google_process.url}/daily, {google_process.url}/autopush]
                    credentials: configs/antigravity/oauth_creds.json{common}
            """
        )
    )
    (directory / "routes.yaml").write_text(
        textwrap.dedent(
            """
            default: gemini-cli-oauth
            routes:
              - name: antigravity
                match: { model: "gemini-claude-*" }
                to: gemini-antigravity
            """
        )
    )
    gateway = Gateway(directory)
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-claude-sonnet-4-5"])
def test_four_sdks_stream_through_the_gateway(
    oauth_gateway, google_process: FakeGoogleProcess, model: str
):
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    url = oauth_gateway.url
    oai = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    gemini = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=url))

    with oai.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": "chat words"}]
    ) as stream:
        assert stream.get_final_completion().choices[0].message.content == "echo: chat words"
    with oai.responses.stream(model=model, input="responses words") as stream:
        assert stream.get_final_response().output_text == "echo: responses words"
    with claude.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "claude words"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "echo: claude words" and final.stop_reason == "end_turn"
    chunks = list(gemini.models.generate_content_stream(model=model, contents="gemini words"))
    assert "".join(c.text or "" for c in chunks) == "echo: gemini words"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP

    calls = google_process.calls("streamGenerateContent")[-4:]
    assert len(calls) == 4 and all(c["query"] == {"alt": "sse"} for c in calls)
    upstream_model = "claude-sonnet-4-5" if "claude" in model else model
    assert {c["body"]["model"] for c in calls} == {upstream_model}
    assert google_process.stats()["refreshes"] <= 2  # one per credentials file, at most


def test_the_gateway_log_holds_no_token_or_secret(oauth_gateway, google_process):
    log = oauth_gateway.log()
    assert "config generation" in log  # the log is the gateway's
    for secret in ("ya29.", "1//fake-refresh", google_process.CLIENT_SECRET):
        assert secret not in log
