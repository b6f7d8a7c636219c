"""Pools through the real gateway: least-recently-used selection, per-instance model
filters, the circuit breaker and its half-open probe, the health endpoints (with secrets
redacted), health across a config reload, and the per-instance proxy setting."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeProxy, FakeUpstream
from tests.gateway import Gateway

ADMIN_KEY = "admin-key"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
SECRETS = ("secret-key-1", "secret-key-2", "gem-secret-key", "header-secret-value", "pass-word-1")


def providers_yaml(url: str, third: str = "trio-3", extra: str = "") -> str:
    return f"""
        providers:
          trio:
            type: openai-custom
            instances:
              - {{ id: trio-1, base_url: "{url}/v1", api_key: secret-key-1 }}
              - {{ id: trio-2, base_url: "{url}/v1", api_key: secret-key-2 }}
              - {{ id: {third}, base_url: "{url}/v1", api_key: secret-key-3 }}
          picky:
            type: openai-custom
            instances:
              - id: picky-gpt
                base_url: {url}/v1
                models: ["gpt-*"]
                exclude_models: ["gpt-4*"]
              - id: picky-any
                base_url: {url}/v1
                exclude_models: ["gpt-3*"]
          flaky:
            type: openai-custom
            health: {{ max_errors: 2, recover_after: 1s }}
            instances:
              - {{ id: flaky-1, base_url: "{url}/v1" }}
          checked:
            type: openai-custom
            instances:
              - {{ id: chk-1, base_url: "{url}/v1", models: [model-one] }}
              - {{ id: chk-2, base_url: "{url}/v1", models: [model-two] }}
              - {{ id: chk-off, base_url: "{url}/v1", models: [model-one], enabled: false }}
          claude-pool:
            type: claude-custom
            models: [claude-haiku]
            instances:
              - {{ id: claude-a, base_url: "{url}" }}
          secretive:
            type: gemini-api
            instances:
              - id: secret-1
                base_url: http://someone:pass-word-1@{url.removeprefix("http://")}/v1beta
                api_key: gem-secret-key
                headers: {{ x-api-token: header-secret-value, x-team: platform }}
          {extra}
    """


ROUTES = """
    default: trio
    routes:
      - { name: picky, match: { model: "gpt-*" }, to: picky }
      - { name: flaky, match: { model: "flaky-*" }, to: flaky }
      - { name: secretive, match: { model: "gemini-*" }, to: secretive }
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def config_dir(fake, tmp_path_factory) -> Path:
    return write_config(
        tmp_path_factory.mktemp("pool"),
        {"providers.yaml": providers_yaml(fake.url), "routes.yaml": ROUTES},
    )


@pytest.fixture(scope="module")
def gateway(config_dir) -> Iterator[Gateway]:
    with Gateway(config_dir, env={"ADMIN_API_KEY": ADMIN_KEY}) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh(request, fake) -> None:
    fake.reset()
    if "gateway" in request.fixturenames:
        gateway = request.getfixturevalue("gateway")
        for name in ("openai-custom", "claude-custom", "gemini-api"):  # by type: every pool
            url = f"{gateway.url}/api/providers/{name}/reset-health"
            assert http().post(url, headers=ADMIN).status_code == 200


@functools.cache
def http() -> httpx.Client:
    return httpx.Client(timeout=10)


def ask(gateway: Gateway, model: str = "m") -> httpx.Response:
    return http().post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def states(gateway: Gateway, provider: str) -> dict[str, dict]:
    document = http().get(gateway.url + "/provider_health").json()
    return {i["id"]: i for i in document["providers"][provider]["instances"]}


# --- selection ---------------------------------------------------------------------------


def test_lru_rotates_evenly_across_three_healthy_instances(gateway, fake) -> None:
    picked = [ask(gateway).headers["x-router-instance"] for _ in range(30)]
    assert Counter(picked) == {"trio-1": 10, "trio-2": 10, "trio-3": 10}
    assert picked[:3] == ["trio-1", "trio-2", "trio-3"]  # never used: config order
    assert picked[3:6] == picked[:3]
    keys = Counter(r["headers"]["authorization"] for r in fake.requests())
    assert keys == {f"Bearer secret-key-{n}": 10 for n in (1, 2, 3)}


def test_models_and_exclude_models_choose_the_instances(gateway) -> None:
    assert ask(gateway, "gpt-4o").headers["x-router-instance"] == "picky-any"
    assert ask(gateway, "gpt-4o").headers["x-router-instance"] == "picky-any"
    assert ask(gateway, "gpt-3.5").headers["x-router-instance"] == "picky-gpt"
    assert {ask(gateway, "gpt-5").headers["x-router-instance"] for _ in range(2)} == {
        "picky-gpt",
        "picky-any",
    }


# --- circuit breaker ---------------------------------------------------------------------


def break_flaky(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.script({"status": 500, "model": "flaky-*", "times": 2})
    for _ in range(2):
        response = ask(gateway, "flaky-m")
        assert response.status_code == 502
        assert response.headers["x-router-instance"] == "flaky-1"


def test_instance_is_out_after_max_errors_and_back_after_a_half_open_probe(gateway, fake) -> None:
    break_flaky(gateway, fake)
    state = states(gateway, "flaky")["flaky-1"]
    assert state["healthy"] is False
    assert state["consecutive_errors"] == 2
    assert state["last_error"]["status"] == 500
    assert state["recovers_at"] == pytest.approx(state["down_since"] + 1.0)

    refused = ask(gateway, "flaky-m")  # the circuit is open: no upstream call at all
    assert refused.status_code == 503
    assert refused.headers["x-router-provider"] == "flaky"
    assert refused.headers["x-router-attempts"] == "0"
    assert len(fake.requests()) == 2

    time.sleep(max(0.0, state["recovers_at"] - time.time()) + 0.05)
    probe = ask(gateway, "flaky-m")
    assert probe.status_code == 200
    state = states(gateway, "flaky")["flaky-1"]
    assert (state["healthy"], state["consecutive_errors"], state["successes"]) == (True, 0, 1)


def test_a_failed_probe_opens_the_circuit_again_at_once(gateway, fake) -> None:
    break_flaky(gateway, fake)
    time.sleep(1.05)
    fake.script({"status": 500, "model": "flaky-*"})
    assert ask(gateway, "flaky-m").status_code == 502  # the probe
    assert ask(gateway, "flaky-m").status_code == 503  # out again after one failure
    assert len(fake.requests()) == 3
    assert states(gateway, "flaky")["flaky-1"]["consecutive_errors"] == 3


def test_reset_health_needs_the_admin_key_and_clears_the_state(gateway, fake) -> None:
    break_flaky(gateway, fake)
    url = f"{gateway.url}/api/providers/flaky/reset-health"
    assert http().post(url).status_code == 401
    assert http().post(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    response = http().post(url, headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"reset": ["flaky"]}
    state = states(gateway, "flaky")["flaky-1"]
    assert (state["healthy"], state["consecutive_errors"], state["last_error"]) == (True, 0, None)
    assert ask(gateway, "flaky-m").status_code == 200
    unknown = http().post(f"{gateway.url}/api/providers/nope/reset-health", headers=ADMIN)
    assert unknown.status_code == 404


# --- health endpoints --------------------------------------------------------------------


def test_health_check_probes_every_instance_and_records_the_results(gateway, fake) -> None:
    url = f"{gateway.url}/api/providers/checked/health-check"
    assert http().post(url).status_code == 401
    fake.script({"status": 503, "model": "model-two"})
    response = http().post(url, headers=ADMIN)
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False
    results = {r["id"]: r for r in report["providers"]["checked"]["instances"]}
    assert results["chk-1"]["ok"] is True and results["chk-1"]["model"] == "model-one"
    assert (results["chk-2"]["ok"], results["chk-2"]["status"]) == (False, 503)
    assert results["chk-off"] == {"id": "chk-off", "skipped": "disabled"}
    probes = fake.requests()
    assert sorted(p["model"] for p in probes) == ["model-one", "model-two"]
    assert all(p["body"]["messages"] == [{"role": "user", "content": "ping"}] for p in probes)
    state = states(gateway, "checked")
    assert state["chk-1"]["successes"] == 1
    assert state["chk-2"]["consecutive_errors"] == 1


def test_health_check_by_adapter_type(gateway, fake) -> None:
    response = http().post(f"{gateway.url}/api/providers/claude-custom/health-check", headers=ADMIN)
    report = response.json()
    assert report["ok"] is True
    assert list(report["providers"]) == ["claude-pool"]
    [probe] = fake.requests()
    assert (probe["protocol"], probe["model"]) == ("anthropic", "claude-haiku")
    assert (
        http().post(f"{gateway.url}/api/providers/nope/health-check", headers=ADMIN).status_code
        == 404
    )


def test_provider_health_redacts_secrets(gateway, fake) -> None:
    fake.script({"status": 401, "error_message": "API key gem-secret-key is not valid"})
    rejected = ask(gateway, "gemini-2.5-flash")
    assert rejected.status_code == 401  # not retried, the upstream's status
    assert rejected.headers["x-router-instance"] == "secret-1"
    text = http().get(gateway.url + "/provider_health").text
    for secret in SECRETS:
        assert secret not in text
    state = states(gateway, "secretive")["secret-1"]
    assert state["headers"] == {"x-api-token": "***", "x-team": "platform"}
    assert state["base_url"].startswith("http://someone:***@127.0.0.1:")
    assert state["last_error"]["message"] == "API key *** is not valid"
    assert state["consecutive_errors"] == 1  # a 401 says the instance's key is broken


def test_health_survives_a_config_reload(gateway, fake, config_dir) -> None:
    for _ in range(3):
        assert ask(gateway).status_code == 200
    break_flaky(gateway, fake)
    before = http().get(gateway.url + "/provider_health").json()
    providers = config_dir / "providers.yaml"
    original = providers.read_text()
    try:
        write_config(
            config_dir,
            {
                "providers.yaml": providers_yaml(
                    fake.url, third="trio-3b", extra="added: { type: echo }"
                )
            },
        )
        reloaded = http().post(gateway.url + "/api/reload-config", headers=ADMIN).json()
        assert reloaded["reloaded"] is True
        assert reloaded["generation"] != before["generation"]
        trio = states(gateway, "trio")
        assert trio["trio-1"]["successes"] == trio["trio-2"]["successes"] == 1
        assert trio["trio-3b"]["successes"] == 0  # a new id starts afresh
        assert states(gateway, "flaky")["flaky-1"]["healthy"] is False
    finally:
        providers.write_text(original)
        assert http().post(gateway.url + "/api/reload-config", headers=ADMIN).status_code == 200


# --- proxy -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxies() -> Iterator[tuple[FakeProxy, FakeProxy]]:
    with FakeProxy.start() as system, FakeProxy.start() as explicit:
        yield system, explicit


@pytest.fixture(scope="module")
def proxied_gateway(fake, proxies, tmp_path_factory) -> Iterator[Gateway]:
    system, explicit = proxies
    directory = write_config(
        tmp_path_factory.mktemp("proxied"),
        {
            "providers.yaml": f"""
                providers:
                  via-system:
                    type: openai-custom
                    instances: [{{ id: sys-1, base_url: "{fake.url}/v1" }}]
                  via-explicit:
                    type: openai-custom
                    instances:
                      - {{ id: exp-1, base_url: "{fake.url}/v1", proxy: "{explicit.url}" }}
                  direct:
                    type: openai-custom
                    instances: [{{ id: direct-1, base_url: "{fake.url}/v1", proxy: false }}]
                  pool-explicit:
                    type: openai-custom
                    proxy: "{explicit.url}"
                    instances: [{{ id: pool-1, base_url: "{fake.url}/v1" }}]
                  pool-explicit-but-direct:
                    type: openai-custom
                    proxy: "{explicit.url}"
                    instances: [{{ id: own-1, base_url: "{fake.url}/v1", proxy: false }}]
            """,
            "routes.yaml": """
                default: via-system
                routes:
                  - { name: explicit, match: { model: explicit }, to: via-explicit }
                  - { name: direct, match: { model: direct }, to: direct }
                  - { name: pool, match: { model: pool }, to: pool-explicit }
                  - { name: own, match: { model: own }, to: pool-explicit-but-direct }
            """,
        },
    )
    env = {"HTTP_PROXY": system.url, "NO_PROXY": ""}  # the system proxy, loopback included
    with Gateway(directory, env=env) as gateway:
        yield gateway


@pytest.mark.parametrize(
    ("model", "through"),
    [
        ("system", "system"),
        ("explicit", "explicit"),
        ("direct", None),
        ("pool", "explicit"),  # the pool's proxy is its instances' default
        ("own", None),  # an instance's own setting wins over the pool's
    ],
)
def test_proxy_setting_per_instance_and_pool(
    proxied_gateway, proxies, fake, model, through
) -> None:
    system, explicit = proxies
    system.reset()
    explicit.reset()
    response = ask(proxied_gateway, model)
    assert response.status_code == 200
    assert len(fake.requests()) == 1
    target = fake.url + "/v1/chat/completions"
    seen = {"system": system.log(), "explicit": explicit.log()}
    for name, log in seen.items():
        assert [e["target"] for e in log] == ([target] if name == through else [])
    # direct calls go over the native pool, proxied ones over httpx (which knows proxies)
    agent = fake.requests()[0]["headers"]["user-agent"]
    assert agent.startswith("python-httpx/" if through else "router/"), agent
