"""Image URLs: passed on where the upstream takes URLs, fetched and inlined where it
does not, and never fetched from loopback, private or link-local addresses."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from router.protocols import ir
from router.server.images import fetch_image, public_address
from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.test_matrix import PNG

HOSTS_SEEN: list[str] = []


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        HOSTS_SEEN.append(self.headers.get("host", ""))
        if self.path == "/slow.png":
            time.sleep(3)
        if self.path == "/page.html":
            payload, kind = b"<html></html>", "text/html"
        elif self.path == "/big.png":
            payload, kind = b"\0" * 4096, "image/png"
        elif self.path == "/moved.png":
            self.send_response(302)
            self.send_header("location", "/img.png")
            self.end_headers()
            return
        else:
            payload, kind = PNG, "image/png"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def anywhere(_address) -> bool:
    return True


def test_the_connection_goes_to_the_address_that_was_checked(image_server):
    """One lookup per URL, by the checker; the client connects to its answer and never
    resolves the name itself (it could not: the name exists nowhere but here)."""
    port = int(image_server.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    HOSTS_SEEN.clear()
    url = f"http://images.rebind.invalid:{port}/moved.png"
    media_type, data = asyncio.run(fetch_image(url, allowed=anywhere, resolver=resolver))
    assert (media_type, data) == ("image/png", PNG)
    assert lookups == ["images.rebind.invalid", "images.rebind.invalid"]  # the redirect too
    seen = list(HOSTS_SEEN)
    assert seen == [f"images.rebind.invalid:{port}"] * 2


def test_a_name_that_resolves_to_a_private_address_after_a_public_one_is_refused():
    answers = iter([["93.184.216.34", "127.0.0.1"]])

    async def resolver(_host: str, _port: int) -> list[str]:
        return next(answers)

    with pytest.raises(ir.Error) as raised:
        asyncio.run(fetch_image("http://mixed.invalid/x.png", resolver=resolver))
    assert raised.value.status == 400 and "non-public" in raised.value.message


def test_fetch_inlines_and_follows_redirects(image_server):
    media_type, data = asyncio.run(fetch_image(image_server + "/moved.png", allowed=anywhere))
    assert (media_type, data) == ("image/png", PNG)


@pytest.mark.parametrize(
    ("path", "limits", "message"),
    [
        ("/big.png", {"max_bytes": 1024}, "larger than 1024 bytes"),
        ("/page.html", {}, "not an image"),
        ("/slow.png", {"timeout": 0.5}, "timed out"),
    ],
)
def test_fetch_refuses_what_it_must(image_server, path, limits, message):
    with pytest.raises(ir.Error) as info:
        asyncio.run(fetch_image(image_server + path, allowed=anywhere, **limits))
    assert info.value.status == 400 and message in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest",
        "http://[::1]/x.png",
    ],
)
def test_fetch_refuses_non_public_addresses_by_default(url):
    started = time.monotonic()
    with pytest.raises(ir.Error) as info:
        asyncio.run(fetch_image(url))
    assert info.value.status == 400 and "non-public address" in info.value.message
    assert time.monotonic() - started < 1.0, "refused before any connection attempt"
    assert not public_address(__import__("ipaddress").ip_address("192.168.1.1"))


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    from tests.gateway import Gateway

    directory = write_config(
        tmp_path_factory.mktemp("images"),
        {
            "providers.yaml": f"""
                providers:
                  up-gemini:
                    type: gemini-api
                    instances:
                      - {{ id: g1, base_url: "{fake.url}/v1beta", api_key: k }}
                  up-anthropic:
                    type: claude-custom
                    instances:
                      - {{ id: a1, base_url: "{fake.url}", api_key: k }}
            """,
            "routes.yaml": "default: up-gemini\n",
        },
    )
    gateway = Gateway(directory)
    yield gateway
    gateway.stop()


def chat_with_image(gateway, provider: str, url: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/{provider}/v1/chat/completions",
        json={
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        },
        timeout=10,
    )


def test_url_image_to_an_upstream_without_url_support_is_refused_when_private(
    gateway, fake, image_server
):
    fake.reset()
    response = chat_with_image(gateway, "up-gemini", image_server + "/img.png")
    assert response.status_code == 400
    assert "non-public address" in response.json()["error"]["message"]
    assert fake.requests() == []


def test_url_image_passes_as_url_where_the_upstream_takes_urls(gateway, fake):
    url = "https://images.example/cat.png"
    response = chat_with_image(gateway, "up-anthropic", url)
    assert response.status_code == 200, response.text
    assert (
        response.json()["choices"][0]["message"]["content"].splitlines()[-1] == f"image: url {url}"
    )
    blocks = fake.last_request()["body"]["messages"][0]["content"]
    assert {"type": "url", "url": url} in [b.get("source") for b in blocks]
