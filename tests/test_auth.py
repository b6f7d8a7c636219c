"""Client keys in all four forms, a wrong key, and the separate admin credential."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.conftest import write_config

KEY = "client-secret-123"
ADMIN = "admin-secret-456"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.gateway import Gateway

    directory = write_config(
        tmp_path_factory.mktemp("auth"),
        {
            "providers.yaml": """
                providers:
                  echo:
                    type: echo
                    models: [m]
            """,
            "routes.yaml": """
                default: echo
                auth:
                  api_keys: ["${EXTRA_CLIENT_KEY}"]
            """,
        },
    )
    gateway = Gateway(
        directory,
        env={"REQUIRED_API_KEY": KEY, "ADMIN_API_KEY": ADMIN, "EXTRA_CLIENT_KEY": "declared-key"},
    )
    yield gateway
    gateway.stop()


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"authorization": f"Bearer {KEY}"}, {}),
        ({"x-api-key": KEY}, {}),
        ({"x-goog-api-key": KEY}, {}),
        ({}, {"key": KEY}),
        ({"authorization": "Bearer declared-key"}, {}),
    ],
    ids=["bearer", "x-api-key", "x-goog-api-key", "query", "declared-in-config"],
)
def test_each_key_form_is_accepted(gateway, headers, params):
    response = httpx.post(
        gateway.url + "/v1/chat/completions", json=BODY, headers=headers, params=params
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", lambda b: b["error"]["type"] == "authentication_error"),
        ("/v1/responses", lambda b: b["error"]["type"] == "authentication_error"),
        (
            "/v1/messages",
            lambda b: b["type"] == "error" and b["error"]["type"] == "authentication_error",
        ),
        (
            "/v1beta/models/m:generateContent",
            lambda b: (
                b["error"]
                == {"code": 401, "message": b["error"]["message"], "status": "UNAUTHENTICATED"}
            ),
        ),
    ],
)
def test_wrong_key_is_401_in_protocol_shape(gateway, path, expected):
    response = httpx.post(gateway.url + path, json=BODY, headers={"x-api-key": "wrong"})
    assert response.status_code == 401
    assert expected(response.json()), response.text


def test_missing_key_is_401(gateway):
    assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY).status_code == 401


def test_sdks_authenticate(gateway):
    oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    assert oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a"}]
    ).choices
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    assert claude.messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}]
    ).content
    gem = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=gateway.url))
    assert gem.models.generate_content(model="m", contents="a").text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=gateway.url + "/v1", api_key="bad", max_retries=0
        ).chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="bad", max_retries=0).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}]
        )
    bad = genai.Client(api_key="bad", http_options=types.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError) as info:
        bad.models.generate_content(model="m", contents="a")
    assert info.value.code == 401


def test_admin_api_needs_admin_key_not_client_key(gateway):
    url = gateway.url + "/api/reload-config"
    assert httpx.post(url, headers={"authorization": f"Bearer {KEY}"}).status_code == 401
    assert httpx.post(url).status_code == 401
    response = httpx.post(url, headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    assert response.json()["reloaded"] is True


def test_provider_health_takes_a_client_or_admin_key_once_client_keys_exist(gateway):
    url = gateway.url + "/provider_health"
    refused = httpx.get(url)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    for key in (KEY, ADMIN):
        response = httpx.get(url, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert "echo" in response.json()["providers"]
    assert httpx.get(gateway.url + "/health").status_code == 200  # liveness stays open


def test_non_loopback_bind_refused_without_keys(tmp_path):
    import subprocess
    import sys

    from tests.gateway import clean_env

    directory = write_config(
        tmp_path,
        {
            "providers.yaml": "providers:\n  echo:\n    type: echo\n",
            "routes.yaml": "default: echo\n",
        },
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "router.cli",
            "serve",
            "--config-dir",
            str(directory),
            "--host",
            "0.0.0.0",
            "--port",
            "1",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
