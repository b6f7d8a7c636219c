"""Hot reload against a running gateway with real file edits, SIGHUP and the admin API."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import write_config

PROVIDERS = """
providers:
  echo-a:
    type: echo
    models: [m]
  echo-b:
    type: echo
    models: [m]
"""
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def routes(default: str) -> str:
    return f"default: {default}\n"


def provider_of(gateway) -> str:
    response = httpx.post(gateway.url + "/v1/chat/completions", json=BODY, timeout=5)
    assert response.status_code == 200, response.text
    return response.headers["x-router-provider"]


def wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path, {"providers.yaml": PROVIDERS, "routes.yaml": routes("echo-a")})


def test_good_edit_takes_effect_within_2s(config, start_gateway):
    gateway = start_gateway(config)
    assert provider_of(gateway) == "echo-a"
    before = gateway.health()["generation"]
    (config / "routes.yaml").write_text(routes("echo-b"))
    wait_for(lambda: provider_of(gateway) == "echo-b", timeout=2.0)
    assert gateway.health()["generation"] != before


def test_broken_edit_keeps_old_plan_and_reports_it(config, start_gateway):
    gateway = start_gateway(config)
    generation = gateway.health()["generation"]
    (config / "routes.yaml").write_text("default: echo-b\nroutes:\n  - name: [unclosed\n")
    wait_for(lambda: gateway.health()["last_reload_error"] is not None, timeout=3.0)
    health = gateway.health()
    assert health["generation"] == generation
    assert any(
        re.match(r"routes\.yaml:\d+:\d+: error: YAML syntax error", d)
        for d in health["last_reload_error"]["diagnostics"]
    )
    assert provider_of(gateway) == "echo-a"
    # a dangling reference is a compile error too, not only YAML syntax
    (config / "routes.yaml").write_text("default: nowhere\n")
    wait_for(lambda: "nowhere" in str(gateway.health()["last_reload_error"]), timeout=3.0)
    assert provider_of(gateway) == "echo-a"
    (config / "routes.yaml").write_text(routes("echo-b"))
    wait_for(lambda: gateway.health()["last_reload_error"] is None, timeout=3.0)
    assert provider_of(gateway) == "echo-b"


def test_sighup_and_api_reload_without_watcher(config, start_gateway):
    gateway = start_gateway(config, env={"ROUTER_WATCH": "0", "ADMIN_API_KEY": "adm"})
    (config / "routes.yaml").write_text(routes("echo-b"))
    time.sleep(0.5)
    assert provider_of(gateway) == "echo-a", "with the watcher off, nothing reloads by itself"
    response = httpx.post(
        gateway.url + "/api/reload-config", headers={"authorization": "Bearer adm"}
    )
    assert response.status_code == 200 and response.json()["reloaded"] is True
    assert provider_of(gateway) == "echo-b"
    (config / "routes.yaml").write_text(routes("echo-a"))
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: provider_of(gateway) == "echo-a", timeout=3.0)


def test_workers_converge_on_one_generation(config, start_gateway):
    gateway = start_gateway(config, workers=2)
    (config / "routes.yaml").write_text(routes("echo-b"))
    time.sleep(1.5)
    seen = set()
    with httpx.Client(timeout=5) as client:
        for _ in range(40):
            # a new connection each time, so both workers are reached
            response = client.post(
                gateway.url + "/v1/chat/completions", json=BODY, headers={"connection": "close"}
            )
            seen.add(
                (response.headers["x-router-provider"], response.headers["x-router-generation"])
            )
    assert len(seen) == 1 and next(iter(seen))[0] == "echo-b"


def test_requests_keep_flowing_during_reloads(config, start_gateway):
    gateway = start_gateway(config)
    failures: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                response = client.post(gateway.url + "/v1/chat/completions", json=BODY)
                if response.status_code != 200:
                    failures.append(response.text)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for i in range(10):
            (config / "routes.yaml").write_text(routes("echo-b" if i % 2 else "echo-a"))
            time.sleep(0.15)
    finally:
        done.set()
        thread.join(10)
    assert failures == []


def test_a_stream_in_flight_finishes_across_a_reload(tmp_path, start_gateway):
    import openai

    from tests.fakes import FakeUpstream

    with FakeUpstream.start() as fake:
        providers = (
            PROVIDERS
            + f"""
  slow:
    type: openai-custom
    instances:
      - id: slow-1
        base_url: {fake.url}/v1
        api_key: k
"""
        )
        config = write_config(
            tmp_path, {"providers.yaml": providers, "routes.yaml": routes("slow")}
        )
        gateway = start_gateway(config)
        fake.script([{"delay_between_events": 0.15}])
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "a slow answer across a reload"}]
        ) as stream:
            first = next(iter(stream))
            assert first is not None
            (config / "routes.yaml").write_text(routes("echo-b"))
            wait_for(lambda: provider_of(gateway) == "echo-b", timeout=3.0)
            final = stream.get_final_completion()
        assert final.choices[0].message.content == "echo: a slow answer across a reload"
        assert fake.last_request()["completed"] is True
