"""One pooled HTTP client per process and proxy setting, shared by every adapter, and the
header hygiene of every upstream request.

The client is httpx's API over aiohttp's pool (router/providers/transport.py);
ROUTER_UPSTREAM_TRANSPORT=httpx falls back to httpx's own pool (httpcore)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from functools import lru_cache

import httpx

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


def _transport() -> str:
    return os.environ.get("ROUTER_UPSTREAM_TRANSPORT", "aiohttp")


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
    for client in list(_clients.values()):
        await client.aclose()
    _clients.clear()
