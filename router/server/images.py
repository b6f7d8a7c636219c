"""Fetching http(s) image URLs for upstreams that only take inline images.

The gateway fetches on behalf of a client, so it must not become a way into the
operator's network: hosts that resolve to loopback, private, link-local, multicast or
reserved addresses are refused before any connection is made, redirects are followed
by hand and checked the same way, and the body is capped in size and time. The host is
resolved once: the connection goes to the address that was checked (with the URL's host
in the Host header and as the TLS server name), so a second lookup that answers
otherwise (DNS rebinding) is never made."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from router.protocols import ir
from router.providers.http import tls_context

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 10.0
MAX_REDIRECTS = 3

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressCheck = Callable[[Address], bool]
Resolver = Callable[[str, int], Awaitable[list[str]]]


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


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, as the system resolver answers."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@dataclass(frozen=True, slots=True)
class _Pinned:
    """A URL with its host replaced by the address that was checked."""

    url: str
    host_header: str
    server_name: str | None  # TLS SNI and certificate name (https)


async def _pin(url: str, allowed: AddressCheck, resolver: Resolver) -> _Pinned:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(url, "only http(s) URLs can be fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await resolver(parts.hostname, port)
    except OSError as exc:
        raise _refuse(url, f"host does not resolve ({exc.strerror or exc})") from None
    addresses = [ipaddress.ip_address(text.split("%")[0]) for text in found]
    if not addresses:
        raise _refuse(url, "host does not resolve")
    if not all(map(allowed, addresses)):
        raise _refuse(url, f"{parts.hostname} resolves to a non-public address")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rpartition("@")[2]  # never the userinfo
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    server_name = parts.hostname if parts.scheme == "https" else None
    return _Pinned(pinned, host_header, server_name)


async def fetch_image(
    url: str,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    timeout: float = FETCH_TIMEOUT,
    allowed: AddressCheck = public_address,
    resolver: Resolver = resolve,
) -> tuple[str, bytes]:
    """Return (media type, bytes) of the image at `url`, or raise a 400 ir.Error."""
    try:
        async with (
            asyncio.timeout(timeout),
            # httpcore's pool: it takes the TLS server name apart from the address
            httpx.AsyncClient(verify=tls_context(), trust_env=False) as client,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                target = await _pin(url, allowed, resolver)
                request = client.build_request(
                    "GET",
                    target.url,
                    headers={"host": target.host_header},
                    timeout=timeout,
                    extensions={"sni_hostname": target.server_name} if target.server_name else {},
                )
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await _image_of(url, response, max_bytes)
                finally:
                    await response.aclose()
            raise _refuse(url, "too many redirects")
    except TimeoutError:
        raise _refuse(url, f"timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise _refuse(url, f"{type(exc).__name__}") from None


async def _image_of(url: str, response: httpx.Response, max_bytes: int) -> tuple[str, bytes]:
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
