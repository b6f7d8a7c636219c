"""The admin API for Google OAuth: upload credentials or start a sign-in from the UI;
either way the instance goes live without a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fakes.google import FakeGoogleProcess
from tests.test_gemini_oauth import follow_browser, write_config

ADMIN = "admin-key"


@pytest.fixture(scope="module")
def google():
    process = FakeGoogleProcess.start()
    yield process
    process.stop()


@pytest.fixture
def gateway(google, tmp_path, start_gateway):
    write_config(tmp_path, google, "gem-1")
    return start_gateway(tmp_path, env={"ADMIN_API_KEY": ADMIN})


def instance_state(gateway) -> dict:
    health = httpx.get(gateway.url + "/provider_health").json()
    return health["providers"]["gemini-cli-oauth"]["instances"][0]


def ask(gateway, text: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": text}]},
        timeout=20,
    )


def test_upload_credentials_brings_the_instance_live(gateway, google, tmp_path):
    assert instance_state(gateway)["configured"] is False
    token = google.sign_in()  # what an operator got elsewhere, e.g. from gemini-cli
    credentials = {
        "access_token": token["access_token"],
        "refresh_token": token["refresh_token"],
        "expiry_date": 4102444800000,
    }
    payload = {"provider": "gemini-cli-oauth", "credentials": credentials}
    assert httpx.post(gateway.url + "/api/upload-oauth-credentials", json=payload).status_code in (
        401,
        403,
    )
    response = httpx.post(
        gateway.url + "/api/upload-oauth-credentials",
        json=payload,
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    assert (
        token["refresh_token"] not in response.text and token["access_token"] not in response.text
    )
    assert instance_state(gateway)["configured"] is True
    answer = ask(gateway, "after upload")
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("echo: after upload")


def test_sign_in_from_the_admin_api(gateway):
    response = httpx.post(
        gateway.url + "/api/providers/gemini-cli-oauth/generate-auth-url",
        json={},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    started = response.json()
    assert (
        started["auth_url"].startswith("http://127.0.0.1")
        and "code_challenge" in started["auth_url"]
    )
    assert follow_browser(started["auth_url"]).status_code == 200
    status_url = gateway.url + f"/api/oauth/{started['state']}"
    for _ in range(50):
        status = httpx.get(status_url, headers={"authorization": f"Bearer {ADMIN}"}).json()
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert status["status"] == "done", status
    assert instance_state(gateway)["configured"] is True
    assert ask(gateway, "after sign-in").status_code == 200
    # the console's live events follow the sign-in: started, then done
    assert oauth_events(gateway, count=2) == [
        ("gemini-cli-oauth", "pending"),
        ("gemini-cli-oauth", "done"),
    ]


def oauth_events(gateway, count: int) -> list[tuple[str, str]]:
    """The first `count` `oauth` events of the console's event stream (from the start)."""
    found: list[tuple[str, str]] = []
    headers = {"authorization": f"Bearer {ADMIN}", "last-event-id": "0.0"}
    timeout = httpx.Timeout(10, read=5)
    with httpx.stream("GET", gateway.url + "/api/events", headers=headers, timeout=timeout) as s:
        kind = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "oauth":
                data = json.loads(line.removeprefix("data: "))
                found.append((data["provider"], data["status"]))
                if len(found) == count:
                    break
    return found


def test_credentials_written_while_the_gateway_runs_bring_the_instance_live(
    gateway, google, tmp_path
):
    """`router oauth` (a separate process, see test_gemini_oauth::test_cli_sign_in) only
    writes the credentials file; the running gateway notices it appear."""
    assert instance_state(gateway)["configured"] is False
    assert ask(gateway, "before").status_code == 503
    google.write_credentials(tmp_path / "configs/gemini/oauth_creds.json")
    wait_until(lambda: instance_state(gateway)["configured"], 5.0)
    answer = ask(gateway, "after the cli")
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("echo: after the cli")


def test_an_upload_reaches_every_worker(google, tmp_path, start_gateway):
    """Health and plans live per worker process; an upload lands on one worker, and the
    others follow because the credentials file appeared."""
    write_config(tmp_path, google, "gem-1")
    gateway = start_gateway(tmp_path, env={"ADMIN_API_KEY": ADMIN}, workers=2)
    configured: dict[int, bool] = {}

    def both_workers(configured_now: bool) -> Callable[[], bool]:
        def seen() -> bool:
            # a burst of fresh connections, so the kernel hands some to each worker
            with ThreadPoolExecutor(8) as pool:
                states = list(pool.map(lambda _: worker_state(gateway), range(8)))
            for worker, state in states:
                configured[worker] = state["configured"]
            return len(configured) == 2 and all(v is configured_now for v in configured.values())

        return seen

    wait_until(both_workers(False), 15.0, lambda: configured)  # both up, neither signed in
    response = httpx.post(
        gateway.url + "/api/upload-oauth-credentials",
        json={"provider": "gemini-cli-oauth", "credentials": google.sign_in()},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    wait_until(both_workers(True), 15.0, lambda: configured)


def worker_state(gateway) -> tuple[int, dict]:
    response = httpx.get(gateway.url + "/provider_health", headers={"connection": "close"})
    document = response.json()
    return document["worker"], document["providers"]["gemini-cli-oauth"]["instances"][0]


def wait_until(condition, timeout: float, seen=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met in time; seen: {seen()}"
        time.sleep(0.1)


def test_oauth_pools_without_models_advertise_the_adapters_lists(tmp_path, start_gateway):
    creds = tmp_path / "creds.json"
    creds.write_text('{"refresh_token": "r"}')
    (tmp_path / "providers.yaml").write_text(
        "providers:\n"
        "  cli: { type: gemini-cli-oauth, instances: [{ id: c1, credentials: creds.json }] }\n"
        "  ag: { type: gemini-antigravity, instances: [{ id: a1, credentials: creds.json }] }\n"
    )
    (tmp_path / "routes.yaml").write_text("default: cli\n")
    gateway = start_gateway(tmp_path)
    listed = httpx.get(gateway.url + "/v1/models").json()["data"]
    ids = {model["id"] for model in listed}
    assert {"gemini-2.5-flash-lite", "gemini-2.5-pro-preview-06-05", "gemini-3-pro-preview"} <= ids
    assert {"gemini-claude-opus-4-5-thinking", "gemini-2.5-computer-use-preview-10-2025"} <= ids
    only_cli = httpx.get(gateway.url + "/cli/v1/models").json()["data"]
    assert [m["id"] for m in only_cli] == [
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-2.5-pro-preview-06-05",
        "gemini-2.5-flash-preview-09-2025",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
    ]
