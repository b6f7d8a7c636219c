"""One OAuth refresh per Google account across servers that share a Redis: two `router
serve` processes of two workers each, a real `redis-server` and the fake Google token
endpoint, which counts the refreshes. Without Redis (stopped or hung) every server
refreshes on its own and no request fails."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from router.providers import oauth_share
from router.providers.google_oauth import read_credentials
from tests.fakes.google import FakeGoogleProcess
from tests.gateway import Gateway
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)
CREDENTIALS = "configs/gemini/oauth_creds.json"


@pytest.fixture(scope="module")
def google_process() -> Iterator[FakeGoogleProcess]:
    with FakeGoogleProcess.start() as fake:
        yield fake


@pytest.fixture
def google(google_process: FakeGoogleProcess) -> FakeGoogleProcess:
    google_process.reset()
    return google_process


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def write_config(directory: Path, google: FakeGoogleProcess, redis_url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(
        textwrap.dedent(
            f"""
            providers:
              gemini-cli-oauth:
                type: gemini-cli-oauth
                models: [gemini-2.5-flash]
                instances:
                  - id: gcli
                    base_url: {google.url}
                    credentials: {CREDENTIALS}
                    token_url: {google.token_url}
                    client_id: {google.CLIENT_ID}
                    client_secret: {google.CLIENT_SECRET}
                    project: fake-project-123
                    proxy: false
            """
        )
    )
    (directory / "routes.yaml").write_text(
        f"default: gemini-cli-oauth\nstate: {{ redis: '{redis_url}' }}\nroutes: []\n"
    )
    return directory


@pytest.fixture
def servers(
    tmp_path: Path, google: FakeGoogleProcess, redis: RedisServer
) -> Iterator[list[Gateway]]:
    """Two servers of two workers each, each with its own config and state dirs holding
    the same Google account, whose access token has expired."""
    first = write_config(tmp_path / "server-1", google, redis.url)
    google.write_credentials(first / CREDENTIALS, expired=True)
    second = write_config(tmp_path / "server-2", google, redis.url)
    (second / CREDENTIALS).parent.mkdir(parents=True)
    shutil.copy2(first / CREDENTIALS, second / CREDENTIALS)
    gateways: list[Gateway] = []
    try:
        for directory in (first, second):
            gateways.append(Gateway(directory, workers=2))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


async def ask(client: httpx.AsyncClient, gateway: Gateway, n: int) -> tuple[int, str]:
    response = await client.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": f"q{n}"}]},
    )
    if response.status_code != 200:
        return response.status_code, response.text
    return 200, response.json()["choices"][0]["message"]["content"]


def burst(gateways: list[Gateway], per_server: int = 12) -> list[tuple[int, str]]:
    """`per_server` concurrent chat requests to each server."""

    async def main() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60.0, trust_env=False, limits=limits) as client:
            return await asyncio.gather(
                *(ask(client, gateway, i) for i in range(per_server) for gateway in gateways)
            )

    return asyncio.run(main())


def answered(results: list[tuple[int, str]]) -> None:
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed
    assert all(text.startswith("echo: q") for _, text in results)


def oauth_keys(redis: RedisServer) -> dict[str, Any]:
    with SyncRedis.from_url(redis.url) as client:
        return {
            key.decode(): (client.get(key), client.pttl(key))
            for key in client.scan_iter("router:oauth:*")
        }


def test_two_servers_refresh_an_expired_token_once(
    servers: list[Gateway], google: FakeGoogleProcess, redis: RedisServer
):
    old = read_credentials(servers[0].config_dir / CREDENTIALS)
    google.configure(token_delay=0.3)  # a slow token endpoint widens the race
    answered(burst(servers))
    assert google.stats()["refreshes"] == 1

    # every server wrote the one new token to its own file; the refresh token is kept
    files = [read_credentials(s.config_dir / CREDENTIALS) for s in servers]
    assert files[0]["access_token"] == files[1]["access_token"] != old["access_token"]
    assert files[0]["refresh_token"] == files[1]["refresh_token"] == old["refresh_token"]
    tokens = {c["headers"]["authorization"] for c in google.calls("generateContent")}
    assert tokens == {f"Bearer {files[0]['access_token']}"}

    # in Redis: the token under the account's hash, until it expires; no refresh token,
    # and the lock is gone
    account = oauth_share.account_id(old["refresh_token"])
    stored = oauth_keys(redis)
    assert set(stored) == {f"router:oauth:{account}:token"}
    value, ttl = stored[f"router:oauth:{account}:token"]
    shared = json.loads(value)
    assert shared["access_token"] == files[0]["access_token"]
    assert "refresh_token" not in shared
    assert 3000_000 < ttl <= 3600_000
    for gateway in servers:
        log = gateway.log()
        assert "ya29." not in log and old["refresh_token"] not in log


def test_a_401_on_both_servers_refreshes_once(servers: list[Gateway], google: FakeGoogleProcess):
    answered(burst(servers, per_server=4))  # the expired token refreshed (once)
    google.revoke()  # the token still looks fresh, but Google refuses it now
    google.configure(token_delay=0.3)
    answered(burst(servers))
    assert google.stats()["refreshes"] == 2
    files = [read_credentials(s.config_dir / CREDENTIALS) for s in servers]
    assert files[0]["access_token"] == files[1]["access_token"]


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_without_redis_each_server_refreshes_for_itself(
    servers: list[Gateway], google: FakeGoogleProcess, redis: RedisServer, fault: str
):
    if fault == "stopped":
        redis.stop()
    else:
        redis.pause()
    try:
        answered(burst(servers, per_server=6))
    finally:
        redis.resume()
    refreshes = google.stats()["refreshes"]
    assert 2 <= refreshes <= 4  # each server's file, at most once per worker
    for gateway in servers:
        assert read_credentials(gateway.config_dir / CREDENTIALS)["expiry_date"] > (
            time.time() * 1000
        )


# --- the lock itself, from several clients as several processes would -------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def fresh_token(n: int, **extra: Any) -> dict[str, Any]:
    expiry = int((time.time() + 3600) * 1000)
    return {"access_token": f"ya29.test-{n}", "expiry_date": expiry, **extra}


def test_one_of_many_refreshes_and_a_rotated_refresh_token_is_shared(redis: RedisServer):
    calls: list[int] = []

    async def refresh() -> dict[str, Any]:
        calls.append(1)
        await asyncio.sleep(0.3)
        return fresh_token(len(calls), refresh_token="1//rotated", id_token="not shared")

    async def one() -> dict[str, Any] | None:
        async with Redis.from_url(redis.url) as client:
            return await oauth_share.refresh_once(
                client, "1//original", lambda token: True, refresh
            )

    async def main() -> list[dict[str, Any] | None]:
        return await asyncio.gather(*(one() for _ in range(5)))

    results = run(main())
    assert len(calls) == 1
    assert results.count(None) == 1  # the one that refreshed
    shared = [r for r in results if r is not None]
    assert all(r == shared[0] for r in shared)
    assert shared[0]["access_token"] == "ya29.test-1"
    assert shared[0]["refresh_token"] == "1//rotated"
    assert "id_token" not in shared[0]
    assert all("1//original" not in key for key in oauth_keys(redis))


def test_a_lock_taken_over_by_another_is_not_released(redis: RedisServer):
    account = oauth_share.account_id("1//r")
    lock = f"router:oauth:{account}:lock"

    async def refresh() -> dict[str, Any]:
        # our lock expired meanwhile and another process took it
        async with Redis.from_url(redis.url) as other:
            await other.set(lock, "someone-else")
        return fresh_token(1)

    async def main() -> None:
        async with Redis.from_url(redis.url) as client:
            assert await oauth_share.refresh_once(client, "1//r", lambda t: True, refresh) is None

    run(main())
    with SyncRedis.from_url(redis.url) as client:
        assert client.get(lock) == b"someone-else"


def test_an_unusable_shared_token_is_refreshed_anyway(redis: RedisServer):
    """A published token that is the one that just failed (or about to expire) is not
    taken: the caller refreshes."""
    calls: list[int] = []

    async def refresh() -> dict[str, Any]:
        calls.append(1)
        return fresh_token(2)

    async def main() -> dict[str, Any] | None:
        async with Redis.from_url(redis.url) as client:
            key = f"router:oauth:{oauth_share.account_id('1//r')}:token"
            await client.set(key, json.dumps(fresh_token(1)))
            return await oauth_share.refresh_once(
                client, "1//r", lambda t: t["access_token"] != "ya29.test-1", refresh
            )

    assert run(main()) is None and calls == [1]
    with SyncRedis.from_url(redis.url) as client:
        key = f"router:oauth:{oauth_share.account_id('1//r')}:token"
        assert json.loads(client.get(key))["access_token"] == "ya29.test-2"
