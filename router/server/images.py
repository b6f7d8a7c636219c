"""Fetching http(s) image URLs for upstreams that only take inline images.

The gateway fetches on behalf of a client, so it must not become a way into the
operator's network: hosts that resolve to loopback, private, link-local, multicast or
reserved addresses are refused before any connection is made, redirects are followed
by hand and checked the same way, and the body is capped in size and time."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from router.protocols import ir
from router.providers.http import client_for

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 10.0
MAX_REDIRECTS = 3

AddressCheck = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


def public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _refuse(url: str, why: str) -> ir.Error:
    return ir.Error(400, "invalid_request", f"cannot fetch image {url}: {why}")


async def _check_host(url: str, allowed: AddressCheck) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(url, "only http(s) URLs can be fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise _refuse(url, f"host does not resolve ({exc.strerror or exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not allowed(address):
            raise _refuse(url, f"{parts.hostname} resolves to a non-public address")


async def fetch_image(
    url: str,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    timeout: float = FETCH_TIMEOUT,
    allowed: AddressCheck = public_address,
) -> tuple[str, bytes]:
    """Return (media type, bytes) of the image at `url`, or raise a 400 ir.Error."""
    client = client_for(False)
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                await _check_host(url, allowed)
                async with client.stream("GET", url, timeout=timeout) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise _refuse(url, f"HTTP {response.status_code}")
                    media_type = response.headers.get("content-type", "").split(";")[0].strip()
                    if not media_type.startswith("image/"):
                        raise _refuse(url, f"not an image ({media_type or 'no content type'})")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise _refuse(url, f"larger than {max_bytes} bytes")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            raise _refuse(url, f"larger than {max_bytes} bytes")
                    return media_type, bytes(data)
            raise _refuse(url, "too many redirects")
    except TimeoutError:
        raise _refuse(url, f"timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise _refuse(url, f"{type(exc).__name__}") from None


async def inline_image_urls(request: ir.Request) -> None:
    """Replace every http(s) image URL in the request by its inline data."""
    images = [
        part
        for message in request.messages
        for outer in message.parts
        for part in (outer.content if isinstance(outer, ir.ToolResult) else [outer])
        if isinstance(part, ir.Image) and part.url and part.data is None
    ]
    for image in images:
        assert image.url is not None
        if image.url.startswith("data:"):
            continue
        media_type, data = await fetch_image(image.url)
        image.media_type = media_type
        image.data = base64.b64encode(data).decode()
        image.url = None
