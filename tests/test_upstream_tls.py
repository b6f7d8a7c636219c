"""HTTPS upstreams: the gateway verifies them against the system's CA settings
(SSL_CERT_FILE), whatever the instance's proxy setting, and a certificate it cannot
verify is a 502 in the client's protocol, not a hang or a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.fakes.tls import TlsFiles, make_tls_files
from tests.gateway import Gateway


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def fake(tls) -> Iterator[FakeUpstream]:
    with FakeUpstream.start(tls=tls) as upstream:
        yield upstream


def _config(directory: Path, fake: FakeUpstream) -> Path:
    return write_config(
        directory,
        {
            "providers.yaml": f"""
                providers:
                  system-proxy:
                    type: openai-custom
                    instances: [{{ id: sys-1, base_url: "{fake.url}/v1" }}]
                  no-proxy:
                    type: claude-custom
                    proxy: false
                    instances: [{{ id: direct-1, base_url: "{fake.url}", api_key: k }}]
            """,
            "routes.yaml": """
                default: system-proxy
                routes:
                  - { name: claude, match: { model: "claude-*" }, to: no-proxy }
            """,
        },
    )


@pytest.fixture(scope="module")
def trusting(tls, fake, tmp_path_factory) -> Iterator[Gateway]:
    directory = _config(tmp_path_factory.mktemp("trusting"), fake)
    with Gateway(directory, env={"SSL_CERT_FILE": str(tls.ca)}) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def distrusting(fake, tmp_path_factory) -> Iterator[Gateway]:
    directory = _config(tmp_path_factory.mktemp("distrusting"), fake)
    with Gateway(directory, env={"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}) as gateway:
        yield gateway


def test_https_upstream_through_the_system_proxy_settings(trusting, fake) -> None:
    fake.reset()
    client = openai.OpenAI(base_url=trusting.url + "/v1", api_key="k", max_retries=0)
    with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "over tls"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: over tls"
    assert fake.last_request()["path"] == "/v1/chat/completions"
    assert fake.last_request()["headers"]["user-agent"].startswith("router/")  # native pool


def test_https_upstream_with_proxy_off_still_trusts_ssl_cert_file(trusting, fake) -> None:
    fake.reset()
    client = anthropic.Anthropic(base_url=trusting.url, api_key="k", max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=32,
        messages=[{"role": "user", "content": "no proxy, private CA"}],
    )
    assert message.content[0].text == "echo: no proxy, private CA"
    assert fake.last_request()["path"] == "/v1/messages"
    assert fake.last_request()["headers"]["user-agent"].startswith("router/")  # native pool


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_an_unverifiable_certificate_is_a_502_in_the_clients_protocol(
    distrusting, fake, model
) -> None:
    fake.reset()
    client = openai.OpenAI(base_url=distrusting.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "who are you?"}], timeout=20
        )
    assert caught.value.status_code == 502
    error = caught.value.body  # the SDK's view of {"error": {...}}
    assert isinstance(error, dict), error
    assert "certificate verify failed" in error["message"], error
    assert (error["type"], error["code"]) == ("server_error", "bad_gateway"), error
    assert fake.requests() == []  # the handshake failed before any request was sent
