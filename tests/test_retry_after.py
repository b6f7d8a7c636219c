"""Retry-After in both of its forms (RFC 9110 10.2.3): delay-seconds and an HTTP-date."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest

from router.providers.upstream import retry_after_seconds
from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

PROMPT = [{"role": "user", "content": "hello"}]


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def test_both_forms_are_read() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after_seconds("Sun, 06 Nov 1994 08:49:37 GMT", now) == 0.0  # past: now
    for unreadable in (None, "", "soon", "inf", "nan"):
        assert retry_after_seconds(unreadable, now) is None


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[Gateway]:
    instance = f'base_url: "{fake.url}/v1", api_key: k'
    directory = write_config(
        tmp_path_factory.mktemp("retry-after"),
        {
            "providers.yaml": f"""
                providers:
                  near:
                    type: openai-custom
                    health: {{ max_errors: 100 }}
                    instances: [{{ id: near-1, {instance} }}]
                  far:
                    type: openai-custom
                    health: {{ max_errors: 100 }}
                    instances: [{{ id: far-1, {instance} }}]
            """,
            "routes.yaml": """
                default: near
                routes:
                  - { name: far, match: { model: far }, to: far }
            """,
        },
    )
    with Gateway(directory) as gw:
        yield gw


def chat(gateway: Gateway, model: str) -> httpx.Response:
    body = {"model": model, "messages": PROMPT}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=15)


def test_a_near_http_date_is_waited_out(gateway, fake) -> None:
    fake.script([{"status": 429, "headers": {"retry-after": http_date(2)}}, {}])
    started = time.monotonic()
    response = chat(gateway, "near")
    assert response.status_code == 200
    assert response.headers["x-router-attempts"] == "2"
    assert time.monotonic() - started >= 0.9  # the date has one-second resolution


def test_a_far_http_date_goes_back_to_the_client_in_seconds(gateway, fake) -> None:
    fake.script({"status": 429, "headers": {"retry-after": http_date(120)}})
    response = chat(gateway, "far")
    assert response.status_code == 429
    assert 100 <= int(response.headers["retry-after"]) <= 121
