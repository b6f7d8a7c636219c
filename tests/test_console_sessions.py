"""Console sessions (issue 16: `POST /api/login`, `POST /api/logout`,
`POST /api/admin-password`, `GET /api/session`) against a real `router serve` with two
workers: the cookie's flags, CSRF on unsafe methods, client keys opening nothing, the
lockout after five failed logins, a logout refused by every worker within a second, idle
expiry, and the admin password kept only as an argon2 hash in the state store."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_config
from tests.gateway import Gateway

CLIENT_KEY = "rk-sessions-client-7a3e91c0d4b2"
ADMIN_KEY = "rk-sessions-admin-2f6d0b8e5c17"
PASSWORD = "correct horse battery staple 41"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
ENV = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
COOKIE = "router_session"


def make_config(directory: Path) -> Path:
    return write_config(
        directory,
        {
            "providers.yaml": """
                providers:
                  echo:
                    type: echo
                    models: [m]
            """,
            "routes.yaml": "default: echo\n",
        },
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    directory = make_config(tmp_path_factory.mktemp("sessions") / "config")
    with Gateway(directory, env=ENV, workers=2) as gateway:
        yield gateway


@pytest.fixture
def start() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def run(directory: Path, env: dict[str, str], workers: int = 1) -> Gateway:
        gateway = Gateway(make_config(directory), env=env, workers=workers)
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        gateway.stop()


# ---- helpers (a fresh connection per call: with two workers either may answer)


def login(gateway: Gateway, body: object, headers: dict[str, str] | None = None):
    return httpx.post(gateway.url + "/api/login", json=body, headers=headers or {}, timeout=10)


def cookie_of(response: httpx.Response) -> dict[str, str]:
    """The Set-Cookie header's value and attributes (lower-case names)."""
    raw = response.headers["set-cookie"]
    first, *attributes = [part.strip() for part in raw.split(";")]
    name, _, value = first.partition("=")
    assert name == COOKIE
    found = {"value": value}
    for attribute in attributes:
        key, _, argument = attribute.partition("=")
        found[key.lower()] = argument
    return found


def session(gateway: Gateway, body: object | None = None) -> tuple[str, str]:
    """(token, csrf) of a new session."""
    response = login(gateway, body or {"key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    return cookie_of(response)["value"], response.json()["csrf"]


def with_cookie(token: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"cookie": f"{COOKIE}={token}"}
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    return headers


def call(gateway: Gateway, method: str, path: str, headers: dict[str, str], **kwargs):
    return httpx.request(method, gateway.url + path, headers=headers, timeout=10, **kwargs)


def per_worker(gateway: Gateway, headers: dict[str, str], rounds: int = 40) -> dict[int, set]:
    """GET /api/providers with `headers` over many fresh connections, a burst at a time,
    until both workers have answered: {worker pid: statuses}. The pid comes from
    GET /api/system under the admin key on the same connection (so the same worker)."""

    def probe(_: int) -> tuple[int, int]:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            status = client.get("/api/providers", headers=headers).status_code
            pid = client.get("/api/system", headers=ADMIN).json()["pid"]
        return pid, status

    seen: dict[int, set] = {}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            for pid, status in pool.map(probe, range(8)):
                seen.setdefault(pid, set()).add(status)
            if len(seen) == 2:
                return seen
    raise AssertionError(f"both workers not reached: {seen}")


# ---- login and the cookie


def test_login_by_key_gives_a_strict_http_only_cookie(gateway: Gateway):
    response = login(gateway, {"key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["expires_in"] == 3600 and len(document["csrf"]) >= 32
    cookie = cookie_of(response)
    assert len(cookie["value"]) >= 40
    assert "httponly" in cookie and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert int(cookie["max-age"]) >= 3600
    assert "secure" not in cookie  # plain http
    token = cookie["value"]
    answer = call(gateway, "GET", "/api/providers", with_cookie(token))
    assert answer.status_code == 200, answer.text
    mine = call(gateway, "GET", "/api/session", with_cookie(token)).json()
    assert mine == {"authenticated": True, "csrf": document["csrf"], "via": "session"}
    by_key = call(gateway, "GET", "/api/session", ADMIN).json()
    assert by_key == {"authenticated": True, "csrf": None, "via": "key"}
    assert call(gateway, "GET", "/api/session", {}).status_code == 401


def test_cookie_is_secure_behind_https(gateway: Gateway):
    response = login(gateway, {"key": ADMIN_KEY}, headers={"x-forwarded-proto": "https"})
    assert response.status_code == 200
    cookie = cookie_of(response)
    assert "secure" in cookie and "httponly" in cookie and cookie["samesite"] == "Strict"


def test_session_works_on_both_workers(gateway: Gateway):
    token, _ = session(gateway)
    assert all(statuses == {200} for statuses in per_worker(gateway, with_cookie(token)).values())


def test_bad_bodies_are_400(gateway: Gateway):
    for body in (b"not json", b"[]", b"{}", b'{"key": 5}', b'{"key": ""}'):
        response = httpx.post(gateway.url + "/api/login", content=body, timeout=10)
        assert response.status_code == 400, (body, response.text)
    both = login(gateway, {"key": ADMIN_KEY, "password": PASSWORD})
    assert both.status_code == 400


def test_a_stale_or_forged_cookie_is_401_and_a_key_is_checked_alone(gateway: Gateway):
    assert call(gateway, "GET", "/api/providers", with_cookie("forged")).status_code == 401
    token, _ = session(gateway)
    # the key shown decides: a client key next to a good cookie is refused
    headers = {**with_cookie(token), **CLIENT}
    assert call(gateway, "GET", "/api/providers", headers).status_code == 401
    headers = {**with_cookie("forged"), **ADMIN}
    assert call(gateway, "GET", "/api/providers", headers).status_code == 200


# ---- CSRF


def test_unsafe_methods_need_the_csrf_token(gateway: Gateway):
    token, csrf = session(gateway)
    refused = call(gateway, "POST", "/api/reload-config", with_cookie(token))
    assert refused.status_code == 403, refused.text
    assert "x-csrf-token" in refused.text
    wrong = call(gateway, "POST", "/api/reload-config", with_cookie(token, "nope"))
    assert wrong.status_code == 403
    _, other_csrf = session(gateway)  # another session's token does not do
    crossed = call(gateway, "POST", "/api/reload-config", with_cookie(token, other_csrf))
    assert crossed.status_code == 403
    done = call(gateway, "POST", "/api/reload-config", with_cookie(token, csrf))
    assert done.status_code == 200, done.text
    assert done.json()["reloaded"] is True
    # the admin key needs no CSRF token (no cookie, nothing a browser sends by itself)
    assert call(gateway, "POST", "/api/reload-config", ADMIN).status_code == 200


# ---- client keys


def test_client_key_opens_no_admin_endpoint_and_no_login(gateway: Gateway):
    for headers in (CLIENT, {"x-api-key": CLIENT_KEY}, {"x-goog-api-key": CLIENT_KEY}):
        assert call(gateway, "GET", "/api/providers", headers).status_code == 401
        assert call(gateway, "GET", "/api/session", headers).status_code == 401
        assert call(gateway, "POST", "/api/reload-config", headers).status_code == 401
    refused = login(gateway, {"key": CLIENT_KEY})
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers
    assert login(gateway, {"key": CLIENT_KEY}, headers=CLIENT).status_code == 401
    session(gateway)  # a success clears this address's failures for the tests after


# ---- logout


def test_logout_is_refused_by_every_worker_within_a_second(gateway: Gateway):
    token, csrf = session(gateway)
    before = per_worker(gateway, with_cookie(token))  # both workers now cache it
    assert all(statuses == {200} for statuses in before.values()), before
    assert call(gateway, "POST", "/api/logout", with_cookie(token)).status_code == 403
    response = call(gateway, "POST", "/api/logout", with_cookie(token, csrf))
    assert response.status_code == 200, response.text
    assert response.json() == {"logged_out": True}
    cleared = cookie_of(response)
    assert cleared["value"] == "" and cleared["max-age"] == "0"
    time.sleep(1.0)
    after = per_worker(gateway, with_cookie(token))
    assert all(statuses == {401} for statuses in after.values()), after


def test_logout_needs_a_session_or_the_admin_key(gateway: Gateway):
    assert call(gateway, "POST", "/api/logout", {}).status_code == 401
    assert call(gateway, "POST", "/api/logout", CLIENT).status_code == 401
    token, _ = session(gateway)
    response = call(gateway, "POST", "/api/logout", {**with_cookie(token), **ADMIN})
    assert response.status_code == 200
    time.sleep(1.0)
    assert call(gateway, "GET", "/api/providers", with_cookie(token)).status_code == 401


# ---- the admin password


def test_admin_password_change_needs_admin_auth(gateway: Gateway):
    body = {"password": PASSWORD}
    assert call(gateway, "POST", "/api/admin-password", {}, json=body).status_code == 401
    assert call(gateway, "POST", "/api/admin-password", CLIENT, json=body).status_code == 401
    token, csrf = session(gateway)
    no_csrf = call(gateway, "POST", "/api/admin-password", with_cookie(token), json=body)
    assert no_csrf.status_code == 403
    short = call(gateway, "POST", "/api/admin-password", ADMIN, json={"password": "short"})
    assert short.status_code == 400
    changed = call(gateway, "POST", "/api/admin-password", with_cookie(token, csrf), json=body)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"changed": True}


def test_password_login_and_the_hash_in_the_store(gateway: Gateway):
    response = call(gateway, "POST", "/api/admin-password", ADMIN, json={"password": PASSWORD})
    assert response.status_code == 200, response.text
    wrong = login(gateway, {"password": PASSWORD + "x"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    token, csrf = session(gateway, {"password": PASSWORD})
    assert call(gateway, "GET", "/api/providers", with_cookie(token)).status_code == 200
    done = call(gateway, "POST", "/api/reload-config", with_cookie(token, csrf))
    assert done.status_code == 200
    # the password never in clear in the database (nor its WAL), the token only hashed
    files = sorted(gateway.state_dir.glob("router.db*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert PASSWORD.encode() not in data, path.name
        assert token.encode() not in data, path.name
    connection = sqlite3.connect(f"file:{gateway.state_dir / 'router.db'}?mode=ro", uri=True)
    try:
        (stored,) = connection.execute(
            "SELECT value FROM settings WHERE name = 'admin_password'"
        ).fetchone()
        hashes = {row[0] for row in connection.execute("SELECT token_hash FROM sessions")}
    finally:
        connection.close()
    assert stored.startswith("$argon2")
    assert hashlib.sha256(token.encode()).hexdigest() in hashes


# ---- lockout, expiry, nothing to log in with


def test_five_failed_logins_lock_the_address_out(start, tmp_path: Path):
    gateway = start(tmp_path / "config", ENV, workers=2)
    for attempt in range(5):  # fresh connections: both workers count in the store
        response = login(gateway, {"key": f"wrong-{attempt}"})
        assert response.status_code == 401, (attempt, response.text)
    locked = login(gateway, {"key": ADMIN_KEY})  # even the right key
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 900
    assert "set-cookie" not in locked.headers
    for _ in range(4):
        assert login(gateway, {"key": ADMIN_KEY}).status_code == 429
    # the lockout is for logins: an admin key still opens the API
    assert call(gateway, "GET", "/api/providers", ADMIN).status_code == 200


def test_a_success_clears_the_failures(start, tmp_path: Path):
    gateway = start(tmp_path / "config", ENV)
    for _ in range(4):
        assert login(gateway, {"key": "wrong"}).status_code == 401
    session(gateway)
    for _ in range(4):
        assert login(gateway, {"key": "wrong"}).status_code == 401
    assert login(gateway, {"key": ADMIN_KEY}).status_code == 200


def test_idle_sessions_expire(start, tmp_path: Path):
    env = {**ENV, "ROUTER_SESSION_IDLE_SECONDS": "2"}
    gateway = start(tmp_path / "config", env, workers=2)
    response = login(gateway, {"key": ADMIN_KEY})
    assert response.json()["expires_in"] == 2
    token = cookie_of(response)["value"]
    # used more often than the timeout, on one worker (one connection): it lives on past
    # it, and the other worker knows (the store's `seen`)
    with httpx.Client(base_url=gateway.url, headers=with_cookie(token), timeout=10) as client:
        for _ in range(5):
            assert client.get("/api/providers").status_code == 200
            time.sleep(0.7)
    alive = per_worker(gateway, with_cookie(token))
    assert all(statuses == {200} for statuses in alive.values()), alive
    time.sleep(2.6)
    after = per_worker(gateway, with_cookie(token))
    assert all(statuses == {401} for statuses in after.values()), after


def test_no_admin_key_and_no_password_means_no_login(start, tmp_path: Path):
    gateway = start(tmp_path / "config", {"REQUIRED_API_KEY": CLIENT_KEY})
    response = login(gateway, {"key": CLIENT_KEY})
    assert response.status_code == 403
    assert "no admin key" in response.text and "no admin password" in response.text
    assert login(gateway, {"password": PASSWORD}).status_code == 403
    assert call(gateway, "GET", "/api/providers", with_cookie("anything")).status_code == 403
