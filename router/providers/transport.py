"""The upstream transport: httpx's client API over aiohttp's connection pool, through
httpx-aiohttp. On the benchmark it forwards about three times the requests per second of
httpx's own pool (httpcore + anyio); see bench/README.md.

What this adds to httpx-aiohttp's transport:
* the aiohttp session keeps no cookies (it has a jar of its own, besides httpx's), so one
  upstream's Set-Cookie never rides along on another client's request;
* aiohttp's errors become the httpx exception that says what happened. The library maps
  every aiohttp connection error, a refused connection or a server hanging up mid-body
  included, to `ConnectTimeout`; the gateway tells a timeout (504) from an unreachable or
  broken upstream (502), so the mapping has to be right.
* the response body is read as it arrives (`iter_any`), so a stream's first event is
  relayed at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _LibraryTransport

_running = asyncio.get_running_loop
_EMPTY_TIMEOUT: dict[str, float | None] = {}
# The server hung up, sent a short body or an invalid response.
_PROTOCOL_ERRORS = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
)


def _httpx_error_class(exc: Exception) -> type[httpx.TransportError]:
    """The httpx exception for an aiohttp one, most specific class first."""
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError
    if isinstance(exc, _PROTOCOL_ERRORS):
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError
    if isinstance(exc, aiohttp.NonHttpUrlClientError | aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol
    return httpx.TransportError


@contextlib.contextmanager
def _mapped_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        error = _httpx_error_class(exc)(str(exc) or type(exc).__name__, request=request)
        raise error from exc


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_request", "_response")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # An unfinished body closes the connection (aiohttp does not reuse it): that
        # is what tells the upstream to stop generating when the client went away.
        self._response.release()


class AiohttpTransport(_LibraryTransport):
    """httpx-aiohttp's transport (its TLS context, proxy and limits handling), with a
    cookie-less session and exact error mapping."""

    _loop: asyncio.AbstractEventLoop | None = None

    def get_client(self) -> aiohttp.ClientSession:
        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes content-encoding itself
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.client
        # An aiohttp session belongs to the loop it was made on: a process that runs more
        # than one loop (tests, scripts calling asyncio.run twice) gets one per loop.
        if not isinstance(session, aiohttp.ClientSession) or self._loop is not _running():
            session = self.client = self.get_client()
        timeout = request.extensions.get("timeout", _EMPTY_TIMEOUT)
        proxy = self.proxy
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed request body
            data = request.stream
        url = request.url
        if url.userinfo:  # httpx made it the authorization header; aiohttp refuses both
            url = url.copy_with(userinfo=b"")
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                str(url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
                proxy_headers=proxy.headers if proxy else None,
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )


class _NoCookies(httpx.Cookies):
    """A jar that never takes a cookie from a response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """An httpx.AsyncClient that keeps no cookies. It is shared by every gateway client,
    so a cookie one upstream response set must never ride along on someone else's
    request; and not parsing Set-Cookie saves a tenth of the client's time per call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: Any) -> None:
        raise AttributeError("the shared upstream client keeps no cookies")


class AiohttpClient(CookielessClient):
    """A cookie-less httpx.AsyncClient whose every transport (direct, and one per system
    proxy) is the aiohttp one."""

    async def send(  # type: ignore[override]
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """httpx's send, minus the layers a request of the gateway never uses: an auth
        flow (none set, no userinfo in the URL), redirects (never followed), event hooks
        (none) and cookies (none kept). About a tenth of a translated call's CPU. Any
        request that would use one of them, or an httpx without `_transport_for_url`,
        takes httpx's own path. Not set on a response sent this way: `elapsed`, and
        `next_request` of a redirect."""
        transport_for = getattr(self, "_transport_for_url", None)
        if (
            transport_for is not None
            and auth is httpx.USE_CLIENT_DEFAULT
            and follow_redirects is not True
            and not self.follow_redirects
            and self.auth is None
            and not request.url.userinfo
            and not self.event_hooks["request"]
            and not self.event_hooks["response"]
        ):
            request.extensions.setdefault("timeout", self.timeout.as_dict())
            response = await transport_for(request.url).handle_async_request(request)
            response.default_encoding = self._default_encoding
            if not stream:
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            return response
        return await super().send(
            request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )

    def _init_transport(self, **kwargs: Any) -> httpx.AsyncBaseTransport:  # type: ignore[override]
        if kwargs.get("transport") is not None:
            return kwargs["transport"]
        return _transport(**kwargs)

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: httpx.Proxy, **kwargs: Any
    ) -> httpx.AsyncBaseTransport:
        return _transport(proxy=proxy, **kwargs)


def _transport(**kwargs: Any) -> AiohttpTransport:
    kwargs.pop("transport", None)
    return AiohttpTransport(**kwargs)
