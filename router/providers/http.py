"""The upstream clients, shared by every adapter, and the header hygiene of every upstream
request.

Model calls (`post`) go over the gateway's own keep-alive pool
(router/providers/connections.py) when they connect directly, and over httpx when a proxy
is in the way. Everything else (token counting, image fetches, OAuth) uses `client_for`:
httpx's API over aiohttp's pool (router/providers/transport.py).
ROUTER_UPSTREAM_TRANSPORT picks the model calls' client: `native` (the default),
`aiohttp` (httpx over aiohttp for everything) or `httpx` (httpx's own pool, httpcore)."""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import certifi
import httpx
import msgspec

from router.compiler.plan import Instance
from router.protocols import ir
from router.providers import connections
from router.providers.transport import AiohttpClient, CookielessClient

# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx derives from the request itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

UpstreamResponse = httpx.Response | connections.Response
_encode = msgspec.json.Encoder().encode

_clients: dict[str | bool | None, httpx.AsyncClient] = {}


def client_for(proxy: str | bool | None) -> httpx.AsyncClient:
    """None (or True) follows the system proxy variables (HTTPS_PROXY, NO_PROXY...),
    False ignores them, a URL sends everything through that proxy."""
    if proxy is True:
        proxy = None
    client = _clients.get(proxy)
    if client is None:
        factory = CookielessClient if _transport() == "httpx" else AiohttpClient
        client = factory(
            timeout=httpx.Timeout(600.0, connect=10.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            trust_env=proxy is None,
            verify=_verify(),
            proxy=proxy if isinstance(proxy, str) else None,
            follow_redirects=False,
        )
        _clients[proxy] = client
    return client


@lru_cache(maxsize=1024)
def parsed_url(url: str) -> httpx.URL:
    """An upstream URL, parsed once (httpx.URL is immutable; parsing is a twentieth of
    a call's cost). Bounded: URLs are per instance and model, not per request."""
    return httpx.URL(url)


def _verify() -> ssl.SSLContext | bool:
    """Upstream TLS trusts SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi (httpx's
    default). httpx reads those variables only with trust_env, which `proxy: false`
    turns off; a private CA must not depend on the proxy setting."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return True


@lru_cache(maxsize=1)
def _transport() -> str:
    return os.environ.get("ROUTER_UPSTREAM_TRANSPORT", "native")


async def post(
    proxy: str | bool | None,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
    connect_timeout: float,
) -> UpstreamResponse:
    """A model call, answered once the response head arrives; read the body from the
    result, then `aclose` it. Both kinds of response offer `status_code`, `headers.get`,
    `aread`, `aiter_bytes` (decoded) and `aclose`; errors are httpx's."""
    if _direct(proxy, url):
        pool = connections.pool_for(tls_context())
        return await pool.post(url, headers, body, connect_timeout)
    client = client_for(proxy)
    request = client.build_request(
        "POST",
        parsed_url(url),
        content=body,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
    )
    return await client.send(request, stream=True)


def _direct(proxy: str | bool | None, url: str) -> bool:
    """Whether a call to `url` connects straight to it over the native pool."""
    if _transport() != "native" or isinstance(proxy, str):
        return False
    if proxy is False:
        return True
    where = connections.target(url)
    return not _system_proxy_applies(where.origin[0], where.origin[1])


@lru_cache(maxsize=1024)
def _system_proxy_applies(scheme: str, host: str) -> bool:
    """HTTP(S)_PROXY / ALL_PROXY minus NO_PROXY, read like httpx reads them (once: the
    httpx client also reads them when it is made)."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(host, proxies)


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    verify = _verify()
    context = (
        verify
        if isinstance(verify, ssl.SSLContext)
        else ssl.create_default_context(cafile=certifi.where())
    )
    context.set_alpn_protocols(["http/1.1"])
    return context


async def post_json(
    instance: Instance,
    url: str,
    body: Any,
    headers: dict[str, str],
    parse_error: Callable[[int, bytes], ir.Error],
    timeout: float,
) -> Any:
    """A small JSON call (token counts): the decoded answer, or the upstream's error as
    `parse_error` reads it. Raises httpx.HTTPError when the upstream cannot be reached."""
    response = await client_for(instance.proxy).post(
        url, content=_encode(body), headers={**headers, **instance.headers}, timeout=timeout
    )
    if response.status_code != 200:
        raise parse_error(response.status_code, response.content)
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        raise ir.Error(
            502, "bad_gateway", "the count endpoint answered with invalid JSON"
        ) from None


def is_hop_by_hop(name: str) -> bool:
    return name.lower() in _HOP_BY_HOP


def upstream_headers(
    auth: Mapping[str, str],
    instance: Mapping[str, str],
    extra: Mapping[str, str],
    stream: bool,
) -> dict[str, str]:
    """The headers of one upstream request, later sources winning: the adapter's auth,
    the instance's `headers`, then the per-request ones (forwarded anthropic-* headers,
    the pipeline's `headers` stage). Names are lower-cased so an override replaces
    rather than duplicates; hop-by-hop headers are dropped. Nothing of the client's
    own request reaches here except what `extra` names, so its gateway key never does."""
    headers = {"content-type": "application/json"}
    for source in (auth, instance, extra):
        for name, value in source.items():
            key = name.lower()
            if key not in _HOP_BY_HOP:
                headers[key] = str(value)
    if stream:
        headers["accept"] = "text/event-stream"
    return headers


async def close_all() -> None:
    connections.close_all()
    for client in list(_clients.values()):
        await client.aclose()
    _clients.clear()
