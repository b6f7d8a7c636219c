"""The admin API for Google OAuth: upload credentials or start a sign-in from the UI;
either way the instance goes live without a restart."""

from __future__ import annotations

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
        __import__("time").sleep(0.1)
    assert status["status"] == "done", status
    assert instance_state(gateway)["configured"] is True
    assert ask(gateway, "after sign-in").status_code == 200
