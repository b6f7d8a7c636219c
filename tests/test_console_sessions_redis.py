"""Console sessions and login lockouts shared through Redis (issue 17): a real
`redis-server` and two `router serve` processes of two workers each, with state dirs of
their own, behind no balancer: the test is the balancer. A session made on one server
opens the other; a logout on one is refused by the other; failed logins count across
both; a password set through one works on the other; Redis holds no token and no
password; with Redis killed the console goes on locally (never a 5xx), and shares again
once Redis is back."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import copy_shipped_config
from tests.gateway import Gateway
from tests.redis_server import RedisServer
from tests.test_console_sessions import (
    ADMIN,
    ADMIN_KEY,
    CLIENT_KEY,
    PASSWORD,
    call,
    cookie_of,
    login,
    session,
    with_cookie,
)

ENV = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
ADDRESS = "127.0.0.1"  # every test client's
SESSION_KEYS = "router:console:session:*"

Pair = tuple[Gateway, Gateway]


def start_pair(directory: Path, redis_url: str, env: dict[str, str] | None = None) -> Pair:
    """Two servers of two workers on the shipped (echo) config, sharing `redis_url`
    through ROUTER_REDIS_URL; each has a state dir of its own."""
    config = copy_shipped_config(directory / "config")
    env = {**ENV, "ROUTER_REDIS_URL": redis_url, **(env or {})}
    first = Gateway(config, env=env, workers=2)
    try:
        second = Gateway(config, env=env, workers=2)
    except BaseException:
        first.stop()
        raise
    return first, second


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Pair]:
    first, second = start_pair(tmp_path_factory.mktemp("servers"), redis_server.url)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def inspect(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Pair]]:
    """Pairs of servers (and their Redis) of one test, stopped after it."""
    started: list[Gateway] = []

    def run(redis_url: str, env: dict[str, str] | None = None) -> Pair:
        first, second = start_pair(tmp_path / f"pair{len(started)}", redis_url, env)
        started.extend((first, second))
        return first, second

    yield run
    for gateway in started:
        gateway.stop()


def statuses(gateway: Gateway, headers: dict[str, str], times: int = 6) -> set[int]:
    """GET /api/providers with `headers` over fresh connections (either worker)."""
    return {call(gateway, "GET", "/api/providers", headers).status_code for _ in range(times)}


# ---- a session is the servers'


def test_a_session_made_on_one_server_works_on_the_other(pair: Pair):
    a, b = pair
    token, csrf = session(a)
    assert statuses(b, with_cookie(token)) == {200}
    mine = call(b, "GET", "/api/session", with_cookie(token)).json()
    assert mine == {"authenticated": True, "csrf": csrf, "via": "session"}
    refused = call(b, "POST", "/api/reload-config", with_cookie(token))
    assert refused.status_code == 403 and "x-csrf-token" in refused.text
    _, other_csrf = session(b)  # a session made on B: its CSRF token does not open A's
    crossed = call(b, "POST", "/api/reload-config", with_cookie(token, other_csrf))
    assert crossed.status_code == 403
    done = call(b, "POST", "/api/reload-config", with_cookie(token, csrf))
    assert done.status_code == 200, done.text
    assert call(a, "GET", "/api/providers", with_cookie("forged")).status_code == 401


def test_a_logout_on_one_server_is_refused_on_the_other(pair: Pair):
    a, b = pair
    token, csrf = session(a)
    assert statuses(a, with_cookie(token)) == {200}  # both of A's workers cache it
    assert statuses(b, with_cookie(token)) == {200}
    response = call(b, "POST", "/api/logout", with_cookie(token, csrf))
    assert response.status_code == 200, response.text
    assert cookie_of(response)["max-age"] == "0"
    time.sleep(1.0)  # the workers' caches are trusted for half a second
    assert statuses(a, with_cookie(token)) == {401}
    assert statuses(b, with_cookie(token)) == {401}


def test_failed_logins_on_both_servers_lock_the_address_on_both(pair: Pair, inspect: redis.Redis):
    a, b = pair
    try:
        for attempt in range(5):  # A, B, A, B, A: five failures in all, none on its own
            response = login((a, b)[attempt % 2], {"key": f"wrong-{attempt}"})
            assert response.status_code == 401, (attempt, response.text)
        for gateway in (a, b, a, b):
            locked = login(gateway, {"key": ADMIN_KEY})  # even the right key
            assert locked.status_code == 429, locked.text
            assert 1 <= int(locked.headers["retry-after"]) <= 900
            assert "set-cookie" not in locked.headers
        assert 0 < inspect.pttl(f"router:console:lock:{ADDRESS}") <= 900_000
        # the lockout is for logins: an admin key still opens the API
        assert call(a, "GET", "/api/providers", ADMIN).status_code == 200
        assert call(b, "GET", "/api/providers", ADMIN).status_code == 200
    finally:  # the address is every test's
        inspect.delete(f"router:console:lock:{ADDRESS}", f"router:console:failures:{ADDRESS}")
    assert login(b, {"key": ADMIN_KEY}).status_code == 200


def test_a_success_clears_the_failures_on_both(pair: Pair):
    a, b = pair
    for gateway in (a, b, a, b):
        assert login(gateway, {"key": "wrong"}).status_code == 401
    session(b)
    for gateway in (b, a, b, a):
        assert login(gateway, {"key": "wrong"}).status_code == 401
    assert login(a, {"key": ADMIN_KEY}).status_code == 200


def test_a_password_set_on_one_server_logs_in_on_the_other(pair: Pair, inspect: redis.Redis):
    a, b = pair
    changed = call(a, "POST", "/api/admin-password", ADMIN, json={"password": PASSWORD})
    assert changed.status_code == 200, changed.text
    wrong = login(b, {"password": PASSWORD + "x"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    token, csrf = session(b, {"password": PASSWORD})
    assert statuses(a, with_cookie(token)) == {200}
    assert call(a, "POST", "/api/reload-config", with_cookie(token, csrf)).status_code == 200
    by_key, _ = session(a)
    # Redis keeps the hash of the password and of each token, never either
    assert inspect.get("router:console:admin_password").startswith(b"$argon2")
    found = dump(inspect)
    assert found, "nothing in Redis"
    for secret in (token, by_key, PASSWORD):
        assert all(secret.encode() not in data for data in found), secret
    for secret in (token, by_key):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        assert f"router:console:session:{digest}".encode() in found
    # and so does each server's own store (the password's hash mirrored there)
    for gateway in (a, b):
        for path in sorted(gateway.state_dir.glob("router.db*")):
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and token.encode() not in data, path


def dump(client: redis.Redis) -> list[bytes]:
    """Every key of Redis and every value in it (strings, hashes, lists, sets, streams)."""
    found: list[bytes] = []
    for name in client.scan_iter(count=1000):
        found.append(name)
        kind = client.type(name)
        if kind == b"string":
            found.append(client.get(name) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(name).items():
                found += [field, value]
        elif kind == b"list":
            found += client.lrange(name, 0, -1)
        elif kind == b"set":
            found += list(client.smembers(name))
        elif kind == b"zset":
            found += [member for member, _ in client.zrange(name, 0, -1, withscores=True)]
        elif kind == b"stream":
            for _, fields in client.xrange(name):
                for field, value in fields.items():
                    found += [field, value]
    return found


def test_session_keys_expire_after_the_idle_timeout(start, tmp_path: Path):
    with RedisServer(tmp_path / "redis") as server:
        a, b = start(server.url, {"ROUTER_SESSION_IDLE_SECONDS": "2"})
        response = login(a, {"key": ADMIN_KEY})
        assert response.json()["expires_in"] == 2
        token = cookie_of(response)["value"]
        key = f"router:console:session:{hashlib.sha256(token.encode()).hexdigest()}"
        client = redis.Redis.from_url(server.url)
        try:
            assert 0 < client.pttl(key) <= 2_200  # the idle timeout and the lag of `seen`
            # used more often than the timeout, on A: alive on B past it
            with httpx.Client(base_url=a.url, headers=with_cookie(token), timeout=10) as c:
                for _ in range(5):
                    assert c.get("/api/providers").status_code == 200
                    time.sleep(0.7)
            assert statuses(b, with_cookie(token)) == {200}
            time.sleep(2.6)
            assert statuses(a, with_cookie(token)) == {401}
            assert statuses(b, with_cookie(token)) == {401}
            assert client.exists(key) == 0
        finally:
            client.close()


# ---- Redis away


def test_with_redis_killed_the_console_goes_on_locally(start, tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    try:
        a, b = start(server.url)
        shared, _ = session(a)
        assert statuses(b, with_cookie(shared)) == {200}
        server.kill()
        # a login works, locally: the session opens its own server only
        local, csrf = session(a)
        assert statuses(a, with_cookie(local)) == {200}
        assert call(a, "POST", "/api/reload-config", with_cookie(local, csrf)).status_code == 200
        assert statuses(b, with_cookie(local)) == {401}
        # the shared session cannot be looked up: log in again, no 5xx anywhere
        assert statuses(a, with_cookie(shared)) == {401}
        assert statuses(b, with_cookie(shared)) == {401}
        for gateway in (a, b):
            assert login(gateway, {"key": "wrong"}).status_code == 401
            assert login(gateway, {"password": PASSWORD}).status_code == 401  # none set
            assert call(gateway, "GET", "/api/session", {}).status_code == 401
            changed = call(
                gateway, "POST", "/api/admin-password", ADMIN, json={"password": PASSWORD}
            )
            assert changed.status_code == 200, changed.text
            assert login(gateway, {"password": PASSWORD}).status_code == 200
        assert "Redis unavailable for" in a.log()
        # Redis back: shared again, and the local session still opens its server
        server.start()
        time.sleep(1.5)  # the local store answers alone for a second after a failure
        again, _ = session(b)
        assert statuses(a, with_cookie(again)) == {200}
        assert statuses(a, with_cookie(local)) == {200}
        out = call(a, "POST", "/api/logout", with_cookie(local, csrf))
        assert out.status_code == 200
        time.sleep(1.0)
        assert statuses(a, with_cookie(local)) == {401}
    finally:
        server.kill()


def test_with_redis_hung_a_login_still_works_in_time(start, tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    try:
        a, _ = start(server.url)
        server.pause()  # connections are accepted, nothing answers
        began = time.monotonic()
        token, _ = session(a)
        assert statuses(a, with_cookie(token), times=2) == {200}
        assert time.monotonic() - began < 5.0  # a timeout or two, not one per call
    finally:
        server.kill()
