"""Runtime state shared by the workers of a server (router.state), against real `router
serve --workers 2` processes and fake upstreams: instance overrides (enable / disable /
back to the file's value) followed by every worker within a second, kept through reloads
and restarts and never written to the config files; the admin API's answers for unknown
names and missing keys, and in read-only mode; health checks and resets reaching every
worker (`/provider_health?per_worker=1`); and the console's live events (`GET
/api/events`) with `Last-Event-ID` resume.

Which worker answers is told by keep-alive clients of one connection each, pinned to a
worker (the `worker` field of `/provider_health`); which instance took a call, by the fake
upstream it reached (instance a on fake A, instance b on fake B). Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

CLIENT_KEY = "rk-runtime-client-4b8e19c2d07a"
ADMIN_KEY = "rk-runtime-admin-93f0a6d1c5e2"
ENV = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = "/v1/chat/completions"
SYNC = 1.0  # seconds every worker has to follow an override made through another
# health learned from another worker (a health check's results, a reset): the same second
HEALTH_SYNC = 1.0
RECORD_WAIT = 10.0  # a request record reaches the state store about a second after the call
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)
EVENT_ID = re.compile(r"^\d+\.\d+$")
T = TypeVar("T")


# --- config -------------------------------------------------------------------------------


def providers_text(a: str, b: str) -> str:
    """`duo`: instance a on fake A, b on fake B. `probe`: the same two upstreams, down
    after one failure and for long. `spare`: `main` (fake B) and `extra` (fake A, disabled in
    the file). The model name picks the pool."""
    return f"""
        # runtime-state test pools
        providers:
          duo:
            type: openai-custom
            models: [duo-model]
            health: {{ max_errors: 100 }}
            instances:
              - {{ id: a, base_url: {a}/v1, api_key: sk-duo-a }}
              - {{ id: b, base_url: {b}/v1, api_key: sk-duo-b }}
          probe:
            type: openai-custom
            models: [probe-model]
            health: {{ max_errors: 1, recover_after: 300s }}
            instances:
              - {{ id: pa, base_url: {a}/v1, api_key: sk-probe-a }}
              - {{ id: pb, base_url: {b}/v1, api_key: sk-probe-b }}
          spare:
            type: openai-custom
            models: [spare-model]
            health: {{ max_errors: 100 }}
            instances:
              - {{ id: main, base_url: {b}/v1, api_key: sk-spare-main }}
              - {{ id: extra, enabled: false, base_url: {a}/v1, api_key: sk-spare-extra }}
        """


def routes_text(read_only: bool = False) -> str:
    admin = "admin: { read_only: true }\n" if read_only else ""
    return (
        "default: duo\n"
        + admin
        + """routes:
  - name: probe
    match: { model: probe-model }
    to: probe
  - name: spare
    match: { model: spare-model }
    to: spare
"""
    )


def make_config(directory: Path, a: FakeUpstream, b: FakeUpstream, read_only=False) -> Path:
    return write_config(
        directory,
        {"providers.yaml": providers_text(a.url, b.url), "routes.yaml": routes_text(read_only)},
    )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture
def fakes(fake_a: FakeUpstream, fake_b: FakeUpstream) -> tuple[FakeUpstream, FakeUpstream]:
    fake_a.reset()
    fake_b.reset()
    return fake_a, fake_b


@pytest.fixture(scope="module")
def gateway(fake_a: FakeUpstream, fake_b: FakeUpstream, tmp_path_factory) -> Iterator[Gateway]:
    directory = make_config(tmp_path_factory.mktemp("runtime") / "config", fake_a, fake_b)
    with Gateway(directory, env=ENV, workers=2) as gateway:
        yield gateway


@pytest.fixture
def workers(gateway: Gateway) -> Iterator[dict[int, list[httpx.Client]]]:
    with pinned_clients(gateway) as pinned:
        yield pinned


@pytest.fixture
def no_overrides(gateway: Gateway) -> Iterator[None]:
    """The module's gateway is left with no override whatever a test did."""
    yield
    for pool, instance in (("duo", "a"), ("duo", "b"), ("spare", "extra")):
        admin(gateway.url, "DELETE", f"/api/providers/{pool}/{instance}/override")
    time.sleep(SYNC)


# --- helpers ------------------------------------------------------------------------------


def worker_of(client: httpx.Client) -> int:
    response = client.get("/provider_health", headers=CLIENT)
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
            client = httpx.Client(base_url=gateway.url, timeout=15.0, limits=ONE_CONNECTION)
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


def chat(client: httpx.Client, model: str, text: str = "hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return client.post(CHAT, headers=CLIENT, json=body)


def send_everywhere(pinned: dict[int, list[httpx.Client]], model: str, each: int) -> None:
    """`each` generating requests on every pinned client (so on both workers), all 200,
    each client still on its worker afterwards."""
    for worker, clients in pinned.items():
        for client in clients:
            for _ in range(each):
                response = chat(client, model)
                assert response.status_code == 200, response.text
            assert worker_of(client) == worker, "a pinned connection moved to another worker"


def hits(fake: FakeUpstream, model: str) -> int:
    return sum(1 for r in fake.requests() if r["path"] == CHAT and r["model"] == model)


def admin(client: httpx.Client | str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    if isinstance(client, str):
        return httpx.request(method, client + path, headers=ADMIN, timeout=15.0, **kwargs)
    return client.request(method, path, headers=ADMIN, **kwargs)


def instance_in(document: dict[str, Any], pool: str, instance: str) -> dict[str, Any]:
    [view] = [i for i in document["providers"][pool]["instances"] if i["id"] == instance]
    return view


def views(client: httpx.Client, pool: str, instance: str) -> list[dict[str, Any]]:
    """The instance as `/provider_health` and as `/api/providers/{pool}` show it."""
    health = client.get("/provider_health", headers=CLIENT)
    console = admin(client, "GET", f"/api/providers/{pool}")
    assert health.status_code == 200 and console.status_code == 200, (health.text, console.text)
    return [instance_in(health.json(), pool, instance), instance_in(console.json(), pool, instance)]


def assert_state(
    pinned: dict[int, list[httpx.Client]],
    pool: str,
    instance: str,
    enabled: bool,
    override: bool | None,
    in_file: bool,
) -> None:
    """Every worker shows the instance so, in both views."""
    for worker, clients in pinned.items():
        for view in views(clients[0], pool, instance):
            shown = (view["enabled"], view["override"], view["enabled_in_file"])
            assert shown == (enabled, override, in_file), f"worker {worker}: {view}"


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every=0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)


def set_override(url: str, pool: str, instance: str, action: str) -> dict[str, Any]:
    method, path = ("DELETE", "override") if action == "clear" else ("POST", action)
    response = admin(url, method, f"/api/providers/{pool}/{instance}/{path}")
    assert response.status_code == 200, response.text
    return response.json()


def generation(gateway: Gateway) -> str:
    return gateway.health()["generation"]


# --- 1. disable / enable across workers ---------------------------------------------------


def test_disable_and_clear_reach_every_worker(gateway: Gateway, workers, fakes, no_overrides):
    fake_a, fake_b = fakes
    before = generation(gateway)
    send_everywhere(workers, "duo-model", 2)  # both instances take traffic as configured
    assert hits(fake_a, "duo-model") > 0 and hits(fake_b, "duo-model") > 0

    # disabled through one worker's connection
    [first, *_] = next(iter(workers.values()))
    answer = admin(first, "POST", "/api/providers/duo/a/disable")
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["pool"] == "duo" and shown["id"] == "a"
    assert (shown["enabled"], shown["override"], shown["enabled_in_file"]) == (False, False, True)
    try:
        # the worker that took the request routes by it at once
        for view in views(first, "duo", "a"):
            assert (view["enabled"], view["override"]) == (False, False), view
        time.sleep(SYNC)
        fake_a.reset()
        fake_b.reset()
        send_everywhere(workers, "duo-model", 5)  # 2 workers x 2 clients x 5 = 20
        assert hits(fake_a, "duo-model") == 0
        assert hits(fake_b, "duo-model") == 20
        assert_state(workers, "duo", "a", enabled=False, override=False, in_file=True)
        assert_state(workers, "duo", "b", enabled=True, override=None, in_file=True)
        # the override is runtime state: the config's generation is the file's
        assert generation(gateway) == before
    finally:
        cleared = set_override(gateway.url, "duo", "a", "clear")
    assert (cleared["enabled"], cleared["override"]) == (True, None)

    time.sleep(SYNC)
    fake_a.reset()
    fake_b.reset()
    # a was left unused the longest, so each worker's next call goes to it
    for worker, clients in workers.items():
        before_a = hits(fake_a, "duo-model")
        for client in clients:
            assert chat(client, "duo-model").status_code == 200
        assert hits(fake_a, "duo-model") > before_a, f"worker {worker} did not route to a"
    assert_state(workers, "duo", "a", enabled=True, override=None, in_file=True)


# --- 2. an instance disabled in the file, enabled by override ----------------------------


def test_enable_an_instance_disabled_in_the_file(gateway: Gateway, workers, fakes, no_overrides):
    fake_a, fake_b = fakes
    assert_state(workers, "spare", "extra", enabled=False, override=None, in_file=False)
    send_everywhere(workers, "spare-model", 2)
    assert hits(fake_a, "spare-model") == 0  # extra takes nothing

    shown = set_override(gateway.url, "spare", "extra", "enable")
    assert (shown["enabled"], shown["override"], shown["enabled_in_file"]) == (True, True, False)
    try:
        time.sleep(SYNC)
        fake_a.reset()
        fake_b.reset()
        for worker, clients in workers.items():
            before_a = hits(fake_a, "spare-model")
            for client in clients:
                for _ in range(2):
                    assert chat(client, "spare-model").status_code == 200
            assert hits(fake_a, "spare-model") > before_a, f"worker {worker}: extra took nothing"
        assert hits(fake_a, "spare-model") + hits(fake_b, "spare-model") == 8
        assert_state(workers, "spare", "extra", enabled=True, override=True, in_file=False)
    finally:
        set_override(gateway.url, "spare", "extra", "clear")

    time.sleep(SYNC)
    fake_a.reset()
    send_everywhere(workers, "spare-model", 2)
    assert hits(fake_a, "spare-model") == 0
    assert_state(workers, "spare", "extra", enabled=False, override=None, in_file=False)


# --- 3. kept through reloads and a restart; the files untouched --------------------------


def loaded_at(pinned: dict[int, list[httpx.Client]]) -> dict[int, float]:
    return {w: clients[0].get("/health").json()["loaded_at"] for w, clients in pinned.items()}


def only_b(pinned: dict[int, list[httpx.Client]], fake_a, fake_b) -> None:
    fake_a.reset()
    fake_b.reset()
    send_everywhere(pinned, "duo-model", 3)
    assert hits(fake_a, "duo-model") == 0
    assert hits(fake_b, "duo-model") == 12


def test_override_survives_reload_and_restart(fakes, tmp_path: Path):
    fake_a, fake_b = fakes
    config = make_config(tmp_path / "config", fake_a, fake_b)
    state = tmp_path / "state"  # outlives the first gateway (which removes its own state dir)
    env = {**ENV, "ROUTER_STATE_DIR": str(state)}
    providers_bytes = (config / "providers.yaml").read_bytes()
    routes_bytes = (config / "routes.yaml").read_bytes()
    files = sorted(p.relative_to(config) for p in config.rglob("*"))

    with Gateway(config, env=env, workers=2) as first, pinned_clients(first) as pinned:
        set_override(first.url, "duo", "a", "disable")
        time.sleep(SYNC)
        only_b(pinned, fake_a, fake_b)
        assert (config / "providers.yaml").read_bytes() == providers_bytes
        assert (config / "routes.yaml").read_bytes() == routes_bytes

        # a reload through the API (every worker follows through the trigger)
        stamps = loaded_at(pinned)
        reloaded = admin(first.url, "POST", "/api/reload-config")
        assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is True
        wait_for(
            lambda: all(loaded_at(pinned)[w] > stamps[w] for w in stamps),
            10,
            "both workers reloading after POST /api/reload-config",
        )
        assert_state(pinned, "duo", "a", enabled=False, override=False, in_file=True)
        only_b(pinned, fake_a, fake_b)

        # a reload because routes.yaml changed on disk (the watcher)
        stamps = loaded_at(pinned)
        routes_bytes += b"# touched by the test\n"
        (config / "routes.yaml").write_bytes(routes_bytes)
        wait_for(
            lambda: all(loaded_at(pinned)[w] > stamps[w] for w in stamps),
            10,
            "both workers reloading after routes.yaml changed",
        )
        assert_state(pinned, "duo", "a", enabled=False, override=False, in_file=True)
        only_b(pinned, fake_a, fake_b)

    assert state.is_dir(), "the state dir went with the first gateway"
    with Gateway(config, env=env, workers=2) as second, pinned_clients(second) as pinned:
        assert_state(pinned, "duo", "a", enabled=False, override=False, in_file=True)
        # the first gateway's workers left the store when they stopped
        merged = admin(second.url, "GET", "/provider_health?per_worker=1").json()
        assert merged["workers"] == sorted(pinned)
        assert instance_in(merged, "duo", "a")["healthy_workers"] == "2/2"
        only_b(pinned, fake_a, fake_b)
        set_override(second.url, "duo", "a", "clear")
        time.sleep(SYNC)
        assert_state(pinned, "duo", "a", enabled=True, override=None, in_file=True)

    assert (config / "providers.yaml").read_bytes() == providers_bytes
    assert (config / "routes.yaml").read_bytes() == routes_bytes
    assert sorted(p.relative_to(config) for p in config.rglob("*")) == files


# --- 4. unknown names, keys, read-only mode -----------------------------------------------

ACTIONS = (
    ("POST", "enable"),
    ("POST", "disable"),
    ("DELETE", "override"),
)


def assert_admin_error(response: httpx.Response, status: int, *mentioned: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["type"], body
    for text in mentioned:
        assert text in body["error"]["message"], body


@pytest.mark.parametrize(("method", "action"), ACTIONS)
def test_unknown_pool_or_instance_is_404(gateway: Gateway, method: str, action: str):
    missing_pool = admin(gateway.url, method, f"/api/providers/nopool/a/{action}")
    assert_admin_error(missing_pool, 404, "nopool")
    missing_instance = admin(gateway.url, method, f"/api/providers/duo/zz-none/{action}")
    assert_admin_error(missing_instance, 404, "zz-none", "duo")


@pytest.mark.parametrize(("method", "action"), ACTIONS)
def test_override_needs_the_admin_key(gateway: Gateway, method: str, action: str):
    url = f"{gateway.url}/api/providers/duo/a/{action}"
    assert_admin_error(httpx.request(method, url, timeout=10), 401)
    refused = httpx.request(method, url, headers=CLIENT, timeout=10)
    assert refused.status_code in (401, 403), refused.text
    assert_admin_error(refused, refused.status_code)
    wrong = httpx.request(method, url, headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code in (401, 403), wrong.text
    # nothing changed
    document = admin(gateway.url, "GET", "/api/providers/duo").json()
    assert instance_in(document, "duo", "a")["override"] is None
    assert instance_in(document, "duo", "a")["enabled"] is True


def test_events_need_the_admin_key(gateway: Gateway):
    assert_admin_error(httpx.get(gateway.url + "/api/events", timeout=10), 401)
    refused = httpx.get(gateway.url + "/api/events", headers=CLIENT, timeout=10)
    assert refused.status_code in (401, 403), refused.text


def test_read_only_mode_allows_overrides(fakes, tmp_path: Path):
    fake_a, fake_b = fakes
    config = make_config(tmp_path / "config", fake_a, fake_b, read_only=True)
    providers_bytes = (config / "providers.yaml").read_bytes()
    with Gateway(config, env=ENV) as gateway:
        shown = admin(gateway.url, "GET", "/api/config").json()
        assert shown["read_only"] is True
        # config writes are refused...
        write = admin(gateway.url, "POST", "/api/config", json={"files": {}})
        assert write.status_code == 409, write.text
        # ...runtime state is not
        disabled = set_override(gateway.url, "duo", "a", "disable")
        assert (disabled["enabled"], disabled["override"]) == (False, False)
        enabled = set_override(gateway.url, "spare", "extra", "enable")
        assert (enabled["enabled"], enabled["override"]) == (True, True)
        fake_a.reset()
        with httpx.Client(base_url=gateway.url, timeout=15) as client:
            for _ in range(4):
                assert chat(client, "duo-model").status_code == 200
                assert chat(client, "spare-model").status_code == 200
        assert hits(fake_a, "duo-model") == 0
        assert hits(fake_a, "spare-model") >= 1
        cleared = set_override(gateway.url, "duo", "a", "clear")
        assert (cleared["enabled"], cleared["override"]) == (True, None)
    assert (config / "providers.yaml").read_bytes() == providers_bytes


# --- 5. health across workers -------------------------------------------------------------


def per_worker(client: httpx.Client, pool: str, instance: str) -> dict[str, Any]:
    response = client.get("/provider_health?per_worker=1", headers=CLIENT)
    assert response.status_code == 200, response.text
    return instance_in(response.json(), pool, instance)


def everywhere(
    pinned: dict[int, list[httpx.Client]], pool: str, instance: str, healthy: bool
) -> bool:
    """Asked through each worker, the instance is `healthy` in both workers' books."""
    for clients in pinned.values():
        view = per_worker(clients[0], pool, instance)
        states = view.get("workers") or {}
        if {int(pid) for pid in states} != set(pinned):
            return False
        if any(state["healthy"] is not healthy for state in states.values()):
            return False
        if view["healthy"] is not healthy:
            return False
        if view["healthy_workers"] != ("2/2" if healthy else "0/2"):
            return False
    return True


def test_health_check_and_reset_reach_every_worker(gateway: Gateway, workers, fakes):
    fake_a, _ = fakes
    assert everywhere(workers, "probe", "pa", healthy=True)
    fake_a.script({"status": 500, "model": "probe-model", "times": 50})
    [first, *_] = next(iter(workers.values()))
    try:
        checked = admin(first, "POST", "/api/providers/probe/health-check")
        assert checked.status_code == 200, checked.text
        result = checked.json()
        assert result["ok"] is False
        outcome = {i["id"]: i for i in result["providers"]["probe"]["instances"]}
        assert outcome["pa"]["ok"] is False and outcome["pa"]["status"] == 500
        assert outcome["pb"]["ok"] is True
        wait_for(
            lambda: everywhere(workers, "probe", "pa", healthy=False),
            HEALTH_SYNC,
            "pa unhealthy on both workers after a health check through one",
        )
        view = per_worker(first, "probe", "pa")
        assert view["failures"] == 2  # one per worker: the check's, and the one learned
        assert all(s["last_error"]["status"] == 500 for s in view["workers"].values())
        assert per_worker(first, "probe", "pb")["healthy_workers"] == "2/2"
        for clients in workers.values():  # the console's provider rows merge the same way
            rows = admin(clients[0], "GET", "/api/providers/probe").json()
            listed = {i["id"]: i for i in rows["providers"]["probe"]["instances"]}
            assert (listed["pa"]["healthy"], listed["pa"]["healthy_workers"]) == (False, "0/2")
            assert listed["pa"]["failures"] == 2
    finally:
        fake_a.reset()  # a answers again

    reset = admin(first, "POST", "/api/providers/probe/reset-health")
    assert reset.status_code == 200 and reset.json() == {"reset": ["probe"]}
    wait_for(
        lambda: everywhere(workers, "probe", "pa", healthy=True),
        HEALTH_SYNC,
        "pa healthy on both workers after a reset through one",
    )


def test_neutral_health_check_result_is_neutral_everywhere(gateway: Gateway, workers, fakes):
    """An upstream that rejects the probe itself (404: no such model) says nothing about the
    instance: the worker that ran the check keeps it healthy, and so must the others."""
    fake_a, _ = fakes
    [first, *_] = next(iter(workers.values()))
    fake_a.script({"status": 404, "model": "probe-model", "times": 50})
    try:
        checked = admin(first, "POST", "/api/providers/probe/health-check")
        assert checked.status_code == 200, checked.text
        outcome = {i["id"]: i for i in checked.json()["providers"]["probe"]["instances"]}
        assert outcome["pa"]["ok"] is False and outcome["pa"]["status"] == 404
        time.sleep(HEALTH_SYNC)  # every worker has learned the results by now
        view = per_worker(first, "probe", "pa")
        states = {int(pid): state for pid, state in view["workers"].items()}
        assert set(states) == set(workers)
        assert states[worker_of(first)]["healthy"] is True  # the checking worker: neutral
        assert [(s["healthy"], s["failures"]) for s in states.values()] == [(True, 0)] * 2, states
        assert view["healthy_workers"] == "2/2"
    finally:
        fake_a.reset()
        admin(first, "POST", "/api/providers/probe/reset-health")
        time.sleep(HEALTH_SYNC)


# --- 6. live events -----------------------------------------------------------------------


class Events:
    """The events of one open `GET /api/events`, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self.lines = response.iter_lines()
        self.seen: list[dict[str, Any]] = []

    def _next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if "event" in fields or "data" in fields:
                    return {
                        "id": fields.get("id"),
                        "event": fields.get("event", "message"),
                        "data": json.loads(fields.get("data", "null")),
                    }
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError("the event stream ended")

    def until(self, wanted: Callable[[dict[str, Any]], bool], timeout: float, what: str):
        """Read events (each kept in `seen`) until one is `wanted`; that one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._next()  # each read waits at most the client's read timeout
            self.seen.append(event)
            if wanted(event):
                return event
        raise AssertionError(f"no {what} within {timeout}s; got {self.seen}")


def stream_events(gateway: Gateway, last_event_id: str | None = None):
    headers = dict(ADMIN)
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    timeout = httpx.Timeout(10.0, read=5.0)
    return httpx.stream("GET", gateway.url + "/api/events", headers=headers, timeout=timeout)


def key(event: dict[str, Any]) -> tuple:
    data = event["data"]
    return (event["event"], data.get("time"), data.get("id"), data.get("worker"))


def cursor(event: dict[str, Any]) -> tuple[int, int]:
    request, _, other = event["id"].partition(".")
    return int(request), int(other)


def is_override(pool: str, instance: str, enabled: bool | None):
    def wanted(event: dict[str, Any]) -> bool:
        data = event["data"]
        return event["event"] == "override" and (
            data.get("pool"),
            data.get("instance"),
            data.get("enabled", "absent"),
        ) == (pool, instance, enabled)

    return wanted


def test_events_and_resume(gateway: Gateway, fakes, no_overrides):
    with stream_events(gateway) as response:
        live = Events(response)
        set_override(gateway.url, "duo", "a", "disable")
        disabled = live.until(is_override("duo", "a", False), 5, "override event (disable)")
        set_override(gateway.url, "duo", "a", "clear")
        cleared = live.until(is_override("duo", "a", None), 5, "override event (clear)")

        with httpx.Client(base_url=gateway.url, timeout=15) as client:
            answered = chat(client, "duo-model", "event me")
        assert answered.status_code == 200, answered.text
        request = live.until(
            lambda e: e["event"] == "request" and e["data"].get("pool") == "duo",
            RECORD_WAIT,
            "request event",
        )
    assert request["data"]["status"] == 200
    assert request["data"]["instance"] in ("a", "b")
    assert request["data"]["model"] == "duo-model"
    assert request["data"]["protocol"] == "openai-chat"
    for event in live.seen:
        assert event["id"] and EVENT_ID.match(event["id"]), event
    ids = [cursor(e) for e in live.seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids  # each id moves on
    assert disabled["data"]["time"] <= cleared["data"]["time"]

    # resume right after the first override: what followed it, once; nothing before it
    start = live.seen.index(disabled)
    after = [key(e) for e in live.seen[start + 1 :]]
    with stream_events(gateway, last_event_id=disabled["id"]) as response:
        replay = Events(response)
        replay.until(
            lambda _: set(after) <= {key(e) for e in replay.seen},
            5,
            "every event that followed the first override again",
        )
    replayed = [key(e) for e in replay.seen]
    assert key(disabled) not in replayed
    assert all(key(e) not in replayed for e in live.seen[: start + 1])
    assert set(after) <= set(replayed), (after, replayed)  # the merge may order them anew
    assert len(set(replayed)) == len(replayed), replayed
    floor = cursor(disabled)
    for event in replay.seen:
        here = cursor(event)
        assert here[0] >= floor[0] and here[1] >= floor[1] and here != floor, (floor, event)
    assert key(cleared) in replayed

    # resume from the last id: nothing old comes again
    with stream_events(gateway, last_event_id=live.seen[-1]["id"]) as response:
        tail = Events(response)
        set_override(gateway.url, "duo", "b", "disable")
        try:
            fresh = tail.until(is_override("duo", "b", False), 5, "a new override event")
        finally:
            set_override(gateway.url, "duo", "b", "clear")
    old = {key(e) for e in live.seen}
    assert not [e for e in tail.seen if key(e) in old], tail.seen
    assert cursor(fresh) > cursor(live.seen[-1])
