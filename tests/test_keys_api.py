"""Runtime client keys (`/api/keys`, router.console.keys_api and router.state.keys)
against a real `router serve --workers 2` on the shipped config (every model ends at the
built-in echo pool): a key made through the API works for the official `openai` SDK on
every worker, is shown once and stored as its sha256 only, is changed by PATCH and
refused (401) on every worker within a second of DELETE; bad input is a 400 that says
what is wrong, a name taken by a configured key a 409; it all works in read-only
(GitOps) mode; records and usage name the key.

Which worker answers is told by keep-alive clients of one connection each, pinned to a
worker (the `worker` field of `/provider_health`). Every wait is bounded."""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import copy_shipped_config
from tests.gateway import Gateway

openai = pytest.importorskip("openai")

ADMIN_KEY = "rk-keys-admin-5d1e8a7c20b4"
CLIENT_KEY = "rk-keys-client-9b3f6e1a47c8"  # REQUIRED_API_KEY: an unrestricted config key
CONFIG_KEY = "rk-keys-config-2c7d9f04e1a6"  # `team-config` in routes.yaml, by its digest
ENV = {"ADMIN_API_KEY": ADMIN_KEY, "REQUIRED_API_KEY": CLIENT_KEY, "ROUTER_WATCH": "0"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
KEY_FORMAT = re.compile(r"^sk-router-[A-Za-z0-9_-]{40}$")
SYNC = 1.0  # seconds every worker has to follow a key written through another
RECORD_WAIT = 10.0  # a request record reaches the state store about a second after the call
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)
T = TypeVar("T")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG_KEYS = f"""
auth:
  keys:
    - name: team-config
      key: "sha256:{digest(CONFIG_KEY)}"
      models: ["echo*"]
      limits: {{ rpm: 1000 }}
"""


def make_config(directory: Path, read_only: bool = False) -> Path:
    copy_shipped_config(directory)
    routes = directory / "routes.yaml"
    extra = CONFIG_KEYS + ("admin: { read_only: true }\n" if read_only else "")
    routes.write_text(routes.read_text() + extra)
    return directory


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = make_config(tmp_path_factory.mktemp("keys") / "config")
    with Gateway(directory, env=ENV, workers=2) as gateway:
        yield gateway


# --- helpers ------------------------------------------------------------------------------


def admin(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url + path, headers=ADMIN, timeout=15.0, **kwargs)


def create(url: str, **fields: Any) -> dict[str, Any]:
    answer = admin(url, "POST", "/api/keys", json=fields)
    assert answer.status_code == 201, answer.text
    return answer.json()


def sdk(url: str, key: str, http: httpx.Client | None = None) -> Any:
    http = http or httpx.Client(trust_env=False, timeout=20)
    return openai.OpenAI(base_url=url + "/v1", api_key=key, http_client=http, max_retries=0)


def ask(client: Any, model: str = "echo", text: str = "hi") -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    content = answer.choices[0].message.content
    assert content
    return content


def works(client: Any, model: str = "echo") -> bool:
    """The SDK call goes through; False while the worker does not know the key yet."""
    try:
        return bool(ask(client, model))
    except openai.AuthenticationError:
        return False


def chat(client: httpx.Client, key: str, model: str = "echo") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return client.post(CHAT, headers={"authorization": f"Bearer {key}"}, json=body)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every=0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)


def worker_of(client: httpx.Client) -> int:
    response = client.get("/provider_health", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()["worker"]


@contextlib.contextmanager
def pinned_clients(
    gateway: Gateway, per_worker: int = 2
) -> Iterator[dict[int, list[httpx.Client]]]:
    """Clients of one keep-alive connection each, `per_worker` on each of the two workers."""
    kept: dict[int, list[httpx.Client]] = {}
    try:
        for _ in range(80):
            client = httpx.Client(
                base_url=gateway.url, timeout=15.0, limits=ONE_CONNECTION, trust_env=False
            )
            group = kept.setdefault(worker_of(client), [])
            if len(group) < per_worker:
                group.append(client)
            else:
                client.close()
            if len(kept) == 2 and all(len(g) == per_worker for g in kept.values()):
                break
        else:
            raise AssertionError(f"connections did not reach two workers: {sorted(kept)}")
        yield kept
    finally:
        for group in kept.values():
            for client in group:
                client.close()


def stored_bytes(gateway: Gateway) -> bytes:
    """Every byte of the state store's database (the WAL and its index included)."""
    return b"".join(path.read_bytes() for path in sorted(gateway.state_dir.glob("router.db*")))


def key_events(gateway: Gateway) -> list[str]:
    database = gateway.state_dir / "router.db"
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = connection.execute("SELECT data FROM events WHERE kind = 'key' ORDER BY id")
        return [data for (data,) in rows]
    finally:
        connection.close()


def listed(gateway: Gateway) -> dict[str, dict[str, Any]]:
    answer = admin(gateway.url, "GET", "/api/keys")
    assert answer.status_code == 200, answer.text
    return {key["name"]: key for key in answer.json()["keys"]}


# --- making a key ---------------------------------------------------------------------------


def test_a_new_key_works_with_the_openai_sdk_on_every_worker(gateway: Gateway):
    made = create(
        gateway.url,
        name="sdk-team",
        models=["echo*", "gpt-4o"],
        providers=["echo"],
        limits={"rpm": 1000, "daily_tokens": 1_000_000},
        expires="2099-01-01",
    )
    key = made["key"]
    assert KEY_FORMAT.match(key), key
    assert made["prefix"] == key[:14] and made["prefix"].startswith("sk-router-")
    assert made["origin"] == "runtime" and made["state"] == "active"
    assert made["models"] == ["echo*", "gpt-4o"] and made["providers"] == ["echo"]
    assert made["limits"] == {"rpm": 1000, "daily_tokens": 1_000_000}
    assert made["expires_at"] == "2099-01-01T00:00:00Z" and made["revoked"] is None
    assert "cannot be shown again" in made["note"]
    assert "digest" not in made
    with pinned_clients(gateway) as pinned:
        for clients in pinned.values():
            client = sdk(gateway.url, key, clients[0])
            wait_for(lambda c=client: works(c), SYNC, "the key works on this worker")
            # its scope: another model is refused, in the client's protocol
            with pytest.raises(openai.PermissionDeniedError) as refused:
                ask(client, model="claude-sonnet-4-5")
            assert "sdk-team" in str(refused.value)


def test_the_key_is_shown_once_and_stored_as_its_digest(gateway: Gateway):
    made = create(gateway.url, name="shown-once")
    key = made["key"]
    for path in ("/api/keys", "/api/keys/shown-once"):
        answer = admin(gateway.url, "GET", path)
        assert answer.status_code == 200, answer.text
        assert key not in answer.text
        assert digest(key) not in answer.text
        assert answer.headers["cache-control"] == "no-store"
    assert listed(gateway)["shown-once"]["prefix"] == key[:14]
    raw = stored_bytes(gateway)
    assert digest(key).encode() in raw, "the digest is what is stored"
    assert key.encode() not in raw and key[14:].encode() not in raw, "the key is in the store"
    events = [e for e in key_events(gateway) if '"shown-once"' in e]
    assert events and all(key not in e and digest(key) not in e for e in events)
    assert '"action":"create"' in events[0]


def test_every_key_is_listed_with_origin_scopes_limits_and_usage(gateway: Gateway):
    create(gateway.url, name="listed-runtime", limits={"concurrency": 2})
    keys = listed(gateway)
    config = keys["team-config"]
    assert config["origin"] == "config" and config["models"] == ["echo*"]
    assert config["limits"] == {"rpm": 1000} and config["state"] == "active"
    assert keys["REQUIRED_API_KEY"]["origin"] == "config"
    runtime = keys["listed-runtime"]
    assert runtime["origin"] == "runtime" and runtime["models"] is None
    assert runtime["providers"] is None and runtime["limits"] == {"concurrency": 2}
    assert runtime["usage"] == {
        "today": {"requests": 0, "tokens": 0},
        "month": {"requests": 0, "tokens": 0},
    }
    one = admin(gateway.url, "GET", "/api/keys/team-config")
    assert one.status_code == 200 and one.json()["origin"] == "config"
    assert (
        CONFIG_KEY not in one.text and CLIENT_KEY not in admin(gateway.url, "GET", "/api/keys").text
    )
    assert admin(gateway.url, "GET", "/api/keys/no-such-key").status_code == 404


def test_the_admin_api_needs_an_admin_key(gateway: Gateway):
    for headers in ({}, {"authorization": f"Bearer {CLIENT_KEY}"}):
        for method, path in (("GET", "/api/keys"), ("POST", "/api/keys")):
            answer = httpx.request(
                method, gateway.url + path, headers=headers, json={"name": "x"}, timeout=10
            )
            assert answer.status_code == 401, (method, headers, answer.text)


# --- changing and revoking -----------------------------------------------------------------


def test_patch_changes_scopes_limits_and_expiry(gateway: Gateway):
    made = create(gateway.url, name="patched", models=["echo*"], limits={"rpm": 100, "tpm": 5000})
    client = sdk(gateway.url, made["key"])
    wait_for(lambda: works(client, "echo-1"), SYNC, "the key works")
    answer = admin(
        gateway.url,
        "PATCH",
        "/api/keys/patched",
        json={
            "models": ["gpt-4o"],
            "limits": {"tpm": None, "concurrency": 3},
            "expires": 4102444800,
        },
    )
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    assert changed["models"] == ["gpt-4o"]
    assert changed["limits"] == {"rpm": 100, "concurrency": 3}  # merged; null removed tpm
    assert changed["expires_at"] == "2100-01-01T00:00:00Z"
    assert changed["changed"] > changed["created"]

    with pinned_clients(gateway, per_worker=1) as pinned:  # every worker, within a round
        for worker, [pinned_client] in pinned.items():
            wait_for(
                lambda c=pinned_client: chat(c, made["key"], "echo-1").status_code == 403,
                SYNC,
                f"worker {worker} refuses echo-1, no longer in the key's models",
            )
    assert ask(client, "gpt-4o")  # no credentials: the gpt route falls through to echo
    cleared = admin(gateway.url, "PATCH", "/api/keys/patched", json={"models": None})
    assert cleared.status_code == 200 and cleared.json()["models"] is None
    assert admin(gateway.url, "GET", "/api/keys/patched").json()["limits"] == {
        "rpm": 100,
        "concurrency": 3,
    }
    assert '"action":"update"' in "".join(e for e in key_events(gateway) if '"patched"' in e)


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        ("team-config", {"limits": {"rpm": 1}}, 409, "configured"),
        ("REQUIRED_API_KEY", {"limits": {"rpm": 1}}, 409, "configured"),
        ("nobody", {"limits": {"rpm": 1}}, 404, "no key named"),
        ("patch-errors", {}, 400, "nothing to change"),
        ("patch-errors", {"name": "renamed"}, 400, "unknown field `name`"),
        ("patch-errors", {"limits": {"rpm": -1}}, 400, "positive integer"),
    ],
)
def test_patch_refusals(gateway: Gateway, name: str, body: dict, status: int, says: str):
    if name == "patch-errors" and "patch-errors" not in listed(gateway):
        create(gateway.url, name="patch-errors")
    answer = admin(gateway.url, "PATCH", f"/api/keys/{name}", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]


def test_a_revoked_key_is_refused_on_every_worker_within_a_second(gateway: Gateway):
    made = create(gateway.url, name="revoked-soon")
    key = made["key"]
    with pinned_clients(gateway) as pinned:
        for clients in pinned.values():
            for client in clients:
                wait_for(lambda c=client: chat(c, key).status_code == 200, SYNC, "the key works")
        through = next(iter(pinned.values()))[0]
        answer = through.delete("/api/keys/revoked-soon", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        revoked_at = time.monotonic()
        assert answer.json()["state"] == "revoked" and answer.json()["revoked"]
        # the worker that took it: at once
        refused = chat(through, key)
        assert refused.status_code == 401, refused.text
        assert "revoked" in refused.json()["error"]["message"]
        for worker, clients in pinned.items():
            for client in clients:
                left = max(SYNC - (time.monotonic() - revoked_at), 0.05)
                wait_for(
                    lambda c=client: chat(c, key).status_code == 401,
                    left,
                    f"worker {worker} refuses the revoked key",
                )
    with pytest.raises(openai.AuthenticationError):
        ask(sdk(gateway.url, key))
    # the row stays, revoked; revoking again changes nothing
    again = admin(gateway.url, "DELETE", "/api/keys/revoked-soon")
    assert again.status_code == 200 and again.json()["revoked"] == answer.json()["revoked"]
    assert listed(gateway)["revoked-soon"]["state"] == "revoked"
    change = admin(gateway.url, "PATCH", "/api/keys/revoked-soon", json={"models": ["x"]})
    assert change.status_code == 409 and "revoked" in change.text
    # the name stays with it
    reuse = admin(gateway.url, "POST", "/api/keys", json={"name": "revoked-soon"})
    assert reuse.status_code == 409 and "revoked" in reuse.json()["error"]["message"]
    actions = [e for e in key_events(gateway) if '"revoked-soon"' in e]
    assert sum('"action":"revoke"' in e for e in actions) == 1


def test_config_keys_are_not_revoked_here(gateway: Gateway):
    for name in ("team-config", "REQUIRED_API_KEY"):
        answer = admin(gateway.url, "DELETE", f"/api/keys/{name}")
        assert answer.status_code == 409, answer.text
        assert "routes.yaml" in answer.json()["error"]["message"]
    assert admin(gateway.url, "DELETE", "/api/keys/nobody").status_code == 404


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({}, "name", "`name` is required"),
        ({"name": ""}, "name", "1 to 64 characters"),
        ({"name": "has space"}, "name", "1 to 64 characters"),
        ({"name": "x" * 65}, "name", "1 to 64 characters"),
        ({"name": "ok", "models": []}, "models", "non-empty list"),
        ({"name": "ok", "models": "gpt-*"}, "models", "non-empty list"),
        ({"name": "ok", "models": [""]}, "models", "non-empty strings"),
        ({"name": "ok", "models": ["gpt-[4"]}, "models", "unbalanced '['"),
        ({"name": "ok", "providers": ["nowhere"]}, "providers", "no provider named 'nowhere'"),
        ({"name": "ok", "limits": {"rpm": 0}}, "limits", "positive integer"),
        ({"name": "ok", "limits": {"rpm": 1.5}}, "limits", "positive integer"),
        ({"name": "ok", "limits": {"rpm": "10"}}, "limits", "positive integer"),
        ({"name": "ok", "limits": {"rpm": True}}, "limits", "positive integer"),
        ({"name": "ok", "limits": {"rph": 10}}, "limits", "unknown limit 'rph'"),
        ({"name": "ok", "limits": [1]}, "limits", "must be an object"),
        ({"name": "ok", "expires": "soon"}, "expires", "ISO date"),
        ({"name": "ok", "expires": "2001-01-01"}, "expires", "in the past"),
        ({"name": "ok", "expires": 1}, "expires", "in the past"),
        ({"name": "ok", "key": "mine"}, "key", "unknown field `key`"),
    ],
)
def test_bad_input_is_400_saying_what_is_wrong(gateway: Gateway, body: dict, param: str, says: str):
    answer = admin(gateway.url, "POST", "/api/keys", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert says in error["message"], error
    assert error["param"] == param


def test_a_body_that_is_not_an_object_is_400(gateway: Gateway):
    for content in (b"[1]", b"not json", b""):
        answer = httpx.post(
            gateway.url + "/api/keys",
            headers={**ADMIN, "content-type": "application/json"},
            content=content,
            timeout=10,
        )
        assert answer.status_code == 400, answer.text
        assert "JSON object" in answer.json()["error"]["message"]


@pytest.mark.parametrize("name", ["team-config", "REQUIRED_API_KEY", "taken-twice"])
def test_a_name_in_use_is_409(gateway: Gateway, name: str):
    if name == "taken-twice":
        create(gateway.url, name=name)
    answer = admin(gateway.url, "POST", "/api/keys", json={"name": name})
    assert answer.status_code == 409, answer.text
    assert name in answer.json()["error"]["message"]


# --- records, usage, read-only mode -----------------------------------------------------------


def test_records_and_usage_show_the_key_name(gateway: Gateway):
    made = create(gateway.url, name="counted")
    client = sdk(gateway.url, made["key"])
    wait_for(lambda: works(client), SYNC, "the key works")
    for turn in range(3):
        ask(client, text=f"turn {turn}")

    def recorded() -> list[dict[str, Any]] | None:
        answer = admin(gateway.url, "GET", "/api/requests?key=counted&limit=20")
        assert answer.status_code == 200, answer.text
        rows = answer.json()["requests"]
        return rows if len(rows) >= 4 else None

    rows = wait_for(recorded, RECORD_WAIT, "4 records of the key", every=0.2)
    assert {row["key"] for row in rows} == {"counted"}
    assert made["key"] not in str(rows)

    def counted() -> dict[str, Any] | None:
        usage = admin(gateway.url, "GET", "/api/keys/counted").json()["usage"]
        return usage if usage["today"]["requests"] >= 4 else None

    usage = wait_for(counted, RECORD_WAIT, "usage of the key", every=0.2)
    assert usage["today"]["tokens"] > 0
    assert usage["month"]["requests"] >= usage["today"]["requests"]
    assert listed(gateway)["counted"]["usage"] == usage
    by_key = admin(gateway.url, "GET", "/api/usage?group_by=key").json()["rows"]
    assert any(row["key"] == "counted" and row["requests"] >= 4 for row in by_key)


def test_keys_are_made_changed_and_revoked_in_read_only_mode(tmp_path: Path):
    directory = make_config(tmp_path / "config", read_only=True)
    with Gateway(directory, env=ENV) as gateway:
        config = admin(gateway.url, "GET", "/api/config")
        assert config.status_code == 200 and config.json()["read_only"] is True
        made = create(gateway.url, name="gitops")
        client = sdk(gateway.url, made["key"])
        assert ask(client)
        changed = admin(gateway.url, "PATCH", "/api/keys/gitops", json={"limits": {"rpm": 9}})
        assert changed.status_code == 200 and changed.json()["limits"] == {"rpm": 9}
        assert admin(gateway.url, "DELETE", "/api/keys/gitops").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            ask(client)


def test_keys_outlive_a_restart(tmp_path: Path):
    """Keys live in the state store: a server started again on it knows them, and their
    revocation, from its first request."""
    directory = make_config(tmp_path / "config")
    env = {**ENV, "ROUTER_STATE_DIR": str(tmp_path / "state")}
    with Gateway(directory, env=env) as first:
        kept = create(first.url, name="kept", models=["echo*"])
        gone = create(first.url, name="gone")
        assert admin(first.url, "DELETE", "/api/keys/gone").status_code == 200
    with Gateway(directory, env=env) as second:
        assert ask(sdk(second.url, kept["key"]))
        with pytest.raises(openai.AuthenticationError):
            ask(sdk(second.url, gone["key"]))
        keys = listed(second)
        assert keys["kept"]["models"] == ["echo*"] and keys["gone"]["state"] == "revoked"


# --- without a server -------------------------------------------------------------------------


def test_a_worker_never_goes_back_to_older_keys(tmp_path: Path):
    """An exchange that read the keys before a write, applied after the writer's worker
    applied the write itself, is ignored: a revoked key cannot come back for a round."""
    from router.records import store
    from router.server.state import PlanHolder
    from router.server.worker_sync import WorkerSync
    from router.state import keys

    database = store.prepare(tmp_path)
    sync = WorkerSync(PlanHolder(str(tmp_path)), database)
    connection = store.connect(database)
    try:
        keys.create(connection, keys.new_key(), {"name": "a"})
        older = keys.fingerprint(connection), keys.read_all(connection)
        keys.revoke(connection, "a")
        newer = keys.fingerprint(connection), keys.read_all(connection)
    finally:
        connection.close()
    assert newer[0] != older[0]
    sync.apply_keys(*newer)
    sync.apply_keys(*older)
    [key] = sync.holder.runtime_keys.values()
    assert key.revoked and key.name == "a" and key.runtime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2099-01-01", 4070908800.0),
        ("2099-01-01T12:00:00Z", 4070952000.0),
        ("2099-01-01T12:00", 4070952000.0),  # no zone: UTC
        ("2099-01-01T14:00:00+02:00", 4070952000.0),
        (4070908800, 4070908800.0),
        (None, None),
    ],
)
def test_expiry_forms(value: Any, expected: float | None):
    from router.state import keys

    assert keys.parse_expires(value, now=0.0) == expected
