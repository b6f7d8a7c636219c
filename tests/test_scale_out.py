"""Two servers of two workers each, sharing a real redis-server: runtime keys, their
revocation, runtime overrides, events and limits travel between them; Redis killed under
load fails no request. Each server has its own state dir, as on two hosts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway
from tests.redis_server import RedisServer

ADMIN = "admin-key-0123456789"
CLIENT = "client-key-0123456789"
LIMITED = "sk-limited-0123456789"
CONCURRENT = "sk-concurrent-0123456789"
TOKENS = "sk-tokens-0123456789"
ONCE = "sk-once-0123456789"
PROMPT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def servers(
    redis: RedisServer, fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    instance = f'base_url: "{fake.url}/v1", api_key: k'
    config = write_config(
        tmp_path_factory.mktemp("scale-out"),
        {
            "providers.yaml": f"""
                providers:
                  echo: {{ type: echo }}
                  twin:
                    type: openai-custom
                    health: {{ max_errors: 1000 }}
                    instances:
                      - {{ id: twin-a, {instance} }}
                      - {{ id: twin-b, {instance} }}
            """,
            "routes.yaml": f"""
                default: echo
                routes:
                  - {{ name: twin, match: {{ model: "twin-*" }}, to: twin }}
                auth:
                  api_keys: ["{CLIENT}"]
                  admin_keys: ["{ADMIN}"]
                  keys:
                    - {{ name: limited, key: "{LIMITED}", limits: {{ rpm: 30 }} }}
                    - {{ name: concurrent, key: "{CONCURRENT}", limits: {{ concurrency: 3 }} }}
                    - {{ name: tokens, key: "{TOKENS}", limits: {{ daily_tokens: 100 }} }}
                    - {{ name: once, key: "{ONCE}", limits: {{ rpm: 1 }} }}
                state:
                  redis: ${{REDIS_URL}}
            """,
        },
    )
    env = {"REDIS_URL": redis.url}
    started = [Gateway(config, env=env, workers=2), Gateway(config, env=env, workers=2)]
    yield started
    for server in started:
        server.stop()


def admin(server: Gateway) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    )


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `check` until it holds; how long that took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def chat(server: Gateway, key: str, model: str = "gpt-4o") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": PROMPT},
        timeout=30,
    )


def on_every_worker(server: Gateway, key: str, status: int, tries: int = 8) -> bool:
    """Fresh connections (each may land on either worker) all answer `status`."""
    return all(chat(server, key).status_code == status for _ in range(tries))


def test_a_key_made_on_one_server_works_on_the_other_and_its_revocation_too(
    servers: list[Gateway],
) -> None:
    a, b = servers
    with admin(a) as api:
        made = api.post("/api/keys", json={"name": "travels"})
        assert made.status_code == 201, made.text
    key = made.json()["key"]
    wait_for(lambda: on_every_worker(b, key, 200), 5.0, "the new key works on the other server")
    client = openai.OpenAI(base_url=f"{b.url}/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o", messages=PROMPT).choices
    with admin(a) as api:
        assert api.delete("/api/keys/travels").status_code == 200
    took = wait_for(lambda: on_every_worker(b, key, 401, tries=4), 3.0, "revoked on the other")
    assert took < 1.5  # within a second of the revocation, give or take a poll
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=PROMPT)
    with admin(b) as api:
        listed = {key["name"]: key for key in api.get("/api/keys").json()["keys"]}
    assert listed["travels"]["revoked"] is not None


def test_an_instance_disabled_through_one_server_gets_no_traffic_from_the_other(
    servers: list[Gateway], fake: FakeUpstream
) -> None:
    a, b = servers
    with admin(a) as api:
        assert api.post("/api/providers/twin/twin-a/disable").status_code == 200

    def avoided() -> bool:
        used = {chat(b, CLIENT, "twin-1").headers.get("x-router-instance") for _ in range(8)}
        return used == {"twin-b"}

    wait_for(avoided, 5.0, "the other server stops using twin-a")
    for _ in range(20):
        assert chat(b, CLIENT, "twin-1").headers["x-router-instance"] == "twin-b"
    with admin(b) as api:
        assert api.delete("/api/providers/twin/twin-a/override").status_code == 200

    def both_used() -> bool:
        used = {chat(a, CLIENT, "twin-1").headers.get("x-router-instance") for _ in range(12)}
        return used == {"twin-a", "twin-b"}

    wait_for(both_used, 5.0, "the override removed on the other server is removed here")


def test_each_server_shows_every_worker_and_the_others_events(servers: list[Gateway]) -> None:
    a, b = servers

    def four_workers() -> bool:
        with admin(a) as api:
            workers = api.get("/api/system").json()["workers"]
        return len(workers) == 4 and len({w.get("server") for w in workers}) == 2

    wait_for(four_workers, 5.0, "server a lists the workers of both servers")
    with admin(a) as api:
        health = api.get("/provider_health", params={"per_worker": "1"}).json()
    assert len(health["workers"]) == 4  # health merged over both servers' workers
    (twin_a,) = [i for i in health["providers"]["twin"]["instances"] if i["id"] == "twin-a"]
    assert len(twin_a["workers"]) == 4
    assert twin_a["healthy_workers"] == "4/4"
    with admin(b) as api:
        assert api.post("/api/providers/twin/twin-b/disable").status_code == 200
        assert api.delete("/api/providers/twin/twin-b/override").status_code == 200

    def bridged(text: str) -> bool:
        """An `override` event of twin-b that came from another server (the bridge adds
        its `server`); request events naming twin-b do not count."""
        for block in text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if fields.get("event") == "override":
                data = json.loads(fields["data"])
                if data.get("instance") == "twin-b" and data.get("server"):
                    return True
        return False

    def override_event_on_a() -> bool:
        with (
            admin(a) as api,
            api.stream("GET", "/api/events", params={"last_event_id": "0.0"}, timeout=3) as events,
        ):
            text = ""
            deadline = time.monotonic() + 1.5
            for chunk in events.iter_text():
                text += chunk
                if bridged(text) or time.monotonic() > deadline:
                    break
        return bridged(text)

    wait_for(override_event_on_a, 10.0, "server a streams the override made on server b")


async def _spread(servers: list[Gateway], key: str, count: int, model: str = "gpt-4o") -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(index: int) -> int:
            server = servers[index % len(servers)]
            response = await client.post(
                f"{server.url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": model, "messages": PROMPT},
            )
            return response.status_code

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_rpm_is_exact_across_both_servers(servers: list[Gateway]) -> None:
    statuses = asyncio.run(_spread(servers, LIMITED, 100))
    assert statuses.count(200) == 30, statuses
    assert statuses.count(429) == 70


def test_concurrency_is_exact_across_both_servers(
    servers: list[Gateway], fake: FakeUpstream
) -> None:
    fake.reset()
    fake.script({"hang": 1.5, "times": 20})
    statuses = asyncio.run(_spread(servers, CONCURRENT, 12, model="twin-1"))
    fake.reset()
    assert statuses.count(200) == 3, statuses
    assert statuses.count(429) == 9


def test_a_token_budget_is_shared_by_both_servers(servers: list[Gateway]) -> None:
    spent, answered, turn = 0, 0, 0
    while True:
        response = chat(servers[turn % 2], TOKENS)
        turn += 1
        if response.status_code != 200:
            break
        answered += 1
        spent += response.json()["usage"]["total_tokens"]
        assert answered < 50
    assert response.status_code == 429
    assert spent >= 100
    assert spent - spent // answered < 100  # the last one admitted started under the budget


def test_over_its_limit_a_key_is_refused_before_anything_else_is_decided(
    servers: list[Gateway],
) -> None:
    """The admission goes to Redis as the request is read and is answered before the
    first upstream call; a request that fails meanwhile (an unknown provider in the
    path) still gets the refusal, as the limit comes first."""
    a, b = servers
    assert chat(a, ONCE).status_code == 200
    unknown = httpx.post(
        f"{b.url}/nope/v1/chat/completions",
        headers={"authorization": f"Bearer {ONCE}"},
        json={"model": "gpt-4o", "messages": PROMPT},
        timeout=30,
    )
    assert unknown.status_code == 429, unknown.text
    assert 0 < float(unknown.headers["retry-after"]) <= 60
    assert unknown.headers["x-ratelimit-remaining-requests"] == "0"
    assert unknown.json()["error"]["type"] == "rate_limit_error"
    known = httpx.post(
        f"{b.url}/nope/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT}"},
        json={"model": "gpt-4o", "messages": PROMPT},
        timeout=30,
    )
    assert known.status_code == 404, known.text  # the same request, not limited


def test_redis_killed_under_load_fails_no_request_and_limits_resume(
    servers: list[Gateway], redis: RedisServer, tmp_path: Path
) -> None:
    async def load(seconds: float) -> list[int]:
        statuses: list[int] = []
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=30) as client:

            async def worker(index: int) -> None:
                while time.monotonic() < deadline:
                    server = servers[index % 2]
                    response = await client.post(
                        f"{server.url}/v1/chat/completions",
                        headers={"authorization": f"Bearer {CLIENT}"},
                        json={"model": "gpt-4o", "messages": PROMPT},
                    )
                    statuses.append(response.status_code)

            await asyncio.gather(*(worker(i) for i in range(8)))
        return statuses

    async def kill_during_load() -> list[int]:
        task = asyncio.create_task(load(3.0))
        await asyncio.sleep(1.0)
        redis.kill()
        return await task

    statuses = asyncio.run(kill_during_load())
    assert statuses and set(statuses) == {200}
    # limited keys keep being served while Redis is away (counted locally, fail-open)
    assert chat(servers[0], CONCURRENT).status_code == 200
    redis.start()

    def limits_back_on_redis() -> bool:
        for server in servers:
            with admin(server) as api:
                text = api.get("/metrics").text
            up = [line for line in text.splitlines() if line.startswith("router_limits_remote_up")]
            if any(not line.endswith(" 1.0") for line in up):  # none: no guard yet
                return False
        return True

    # every worker's guard finds Redis again within its back-off (at most 10 s); the gauge
    # is set once a second, so first let it show what the outage left
    time.sleep(1.5)
    wait_for(limits_back_on_redis, 15.0, "the limit stores are back on Redis")
    # counting in Redis again (a fresh Redis: the window starts empty)
    statuses = asyncio.run(_spread(servers, LIMITED, 60))
    assert statuses.count(200) == 30, statuses
