"""The fast path (router/server/fastpath.py) answers exactly as Litestar does for the same
request: Litestar still serves a path the fast path does not take (a trailing slash), so
the two can be compared over HTTP. Plus the body size limit, which the fast path enforces
itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes.process import FakeUpstream
from tests.gateway import Gateway

PROMPT = [{"role": "user", "content": "hello"}]
VOLATILE = {"date", "x-router-overhead-ms", "content-length"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    directory = write_config(
        tmp_path_factory.mktemp("fastpath"),
        {
            "providers.yaml": "providers:\n  echo:\n    type: echo\n",
            "routes.yaml": "default: echo\n",
        },
    )
    with Gateway(directory, env={"ROUTER_MAX_BODY_MB": "1"}) as gw:
        yield gw


def shape(response: httpx.Response) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers in order, without the values that change per response."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in VOLATILE]
    return response.status_code, headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": PROMPT}),
        ("/v1/chat/completions", {"model": "m", "messages": PROMPT, "stream": True}),
        ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": PROMPT, "stream": True}),
        ("/v1/messages", {"max_tokens": 5, "messages": PROMPT}),  # 400: no model
        ("/echo/v1/responses", {"model": "m", "input": "hi"}),
        ("/nope/v1/responses", {"model": "m", "input": "hi"}),  # 404: unknown provider
        ("/v1beta/models/m:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}),
    ],
)
def test_same_answer_as_litestar(gateway, path, body) -> None:
    fast = httpx.post(gateway.url + path, json=body, timeout=10)
    slow = httpx.post(gateway.url + path + "/", json=body, timeout=10)  # Litestar's
    assert shape(fast) == shape(slow)
    assert "x-router-overhead-ms" in fast.headers
    assert len(fast.content) == len(slow.content)  # echo answers differ only by id/time


def test_body_over_the_limit_is_a_413_in_the_clients_protocol(gateway) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    openai = httpx.post(gateway.url + "/v1/chat/completions", json=big, timeout=10)
    assert openai.status_code == 413
    assert openai.json()["error"]["code"] == "request_too_large"
    anthropic = httpx.post(gateway.url + "/v1/messages", json=big, timeout=10)
    assert anthropic.status_code == 413
    assert anthropic.json()["type"] == "error"


def test_a_chunked_body_over_the_limit_is_a_413_too(gateway) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit counts what arrives
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}]}'

    response = httpx.post(gateway.url + "/v1/chat/completions", content=chunks(), timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_client_leaving_mid_stream_is_no_error_on_either_front(tmp_path, fastpath) -> None:
    with FakeUpstream.start(api_key="key-a") as fake:
        directory = write_config(
            tmp_path,
            {
                "providers.yaml": f"""
                    providers:
                      slow:
                        type: openai-custom
                        instances:
                          - {{ id: slow-1, base_url: "{fake.url}/v1", api_key: key-a }}
                """,
                "routes.yaml": "default: slow\n",
            },
        )
        fake.script({"delay_between_events": 0.3, "reply": " ".join(["word"] * 40)})
        with Gateway(directory, env={"ROUTER_FASTPATH": fastpath}) as gateway:
            body = {"model": "m", "messages": PROMPT, "stream": True}
            url = gateway.url + "/v1/chat/completions"
            with httpx.stream("POST", url, json=body, timeout=10) as response:
                assert next(response.iter_raw()).startswith(b"data: ")
            entry = fake.wait_for(lambda log: log and log[0]["disconnected"] and log[0], 5)
            assert not entry["completed"]
            time.sleep(0.5)  # anything the gateway logs about it is written by now
            log = gateway.log()
    assert "Traceback" not in log
    assert " ERROR " not in log and "[ERROR]" not in log
