"""One pooled HTTP client per process and proxy setting, shared by every adapter."""

from __future__ import annotations

import httpx

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
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
    """None follows the system proxy variables, False ignores them, a URL forces one."""
    client = _clients.get(proxy)
    if client is None:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(600.0, connect=10.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            trust_env=proxy is None or proxy is True,
            proxy=proxy if isinstance(proxy, str) else None,
            follow_redirects=False,
        )
        _clients[proxy] = client
    return client


def is_hop_by_hop(name: str) -> bool:
    return name.lower() in _HOP_BY_HOP


async def close_all() -> None:
    for client in list(_clients.values()):
        await client.aclose()
    _clients.clear()
