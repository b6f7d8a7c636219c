"""What an adapter is: how one kind of upstream is called.

Two kinds exist. A `WireAdapter` speaks one of the four wire protocols over HTTP and
returns the raw upstream response; translation is the dispatcher's job. An `IRAdapter`
(echo, the Claude Code CLI) consumes the intermediate form directly."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from router.compiler.plan import Instance, Provider
from router.protocols import ir


@dataclass(slots=True)
class Call:
    provider: Provider
    instance: Instance
    model: str  # the upstream model name
    stream: bool
    request: ir.Request | None = None  # IR adapters
    body: bytes = b""  # wire adapters: the encoded upstream body
    headers: Mapping[str, str] = field(default_factory=dict)  # extra upstream headers
    query: str = ""  # extra query string forwarded upstream (e.g. "beta=true")
    state: dict[str, Any] = field(default_factory=dict)  # the adapter's scratch space


@dataclass(slots=True)
class CountCall:
    """A token count asked of one instance (the count endpoints)."""

    provider: Provider
    instance: Instance
    model: str  # the upstream model name
    request: ir.Request  # the client's request in ir, model set, images inlined as needed
    client_protocol: str
    client_body: Mapping[str, Any]  # as the client sent it
    client_headers: Mapping[str, str]  # lower-case names


class StreamTransformer(Protocol):
    """Rewrites a byte stream incrementally (e.g. unwraps Code Assist SSE events)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class WireAdapter(ABC):
    protocol: str
    default_models: tuple[str, ...] = ()  # advertised when the pool lists none
    probe_model: str | None = None  # what a health check asks for when the pool lists none

    @abstractmethod
    def url(self, call: Call) -> str: ...

    @abstractmethod
    def auth_headers(self, instance: Instance) -> dict[str, str]: ...

    async def prepare(self, call: Call) -> None:  # noqa: B027 - optional hook
        """Refresh credentials or discover settings before the call (OAuth adapters)."""

    def wrap_body(self, call: Call) -> bytes:
        """The body as sent; envelope-wrapping adapters (Code Assist) override this."""
        return call.body

    def unwrap_body(self, body: bytes) -> bytes:
        """A complete (non-stream, 2xx) upstream body as the protocol module expects it."""
        return body

    def unwrap_stream(self) -> StreamTransformer | None:
        """A fresh per-call transformer for the upstream's stream bytes, or None."""
        return None

    counts_tokens: bool = False  # True: `count_tokens` asks the upstream

    async def count_tokens(self, call: CountCall) -> int:
        """The upstream's token count for `call.request`. Raises ir.Error (the upstream's
        error) or httpx.HTTPError; only called when `counts_tokens`."""
        raise NotImplementedError

    async def retry(self, call: Call, status: int | None) -> bool:
        """Called after a failed send: `status` is the upstream's HTTP status (>= 400),
        None for a network error. True sends the call again to the same instance, with
        `url`/`auth_headers` asked anew (refresh once on a 401; next base URL on 429)."""
        return False


class IRAdapter(ABC):
    default_models: tuple[str, ...] = ()  # advertised when the pool lists none
    probe_model: str | None = None  # what a health check asks for when the pool lists none

    def note_dropped(self, request: ir.Request) -> None:  # noqa: B027 - optional hook
        """Add the request fields this adapter cannot carry to `request.dropped`. Called
        while the request is prepared, before any attempt, so strict mode can refuse it."""

    @abstractmethod
    async def generate(self, call: Call) -> ir.Response: ...

    @abstractmethod
    def stream(self, call: Call) -> AsyncIterator[ir.Event]: ...


UpstreamResponse = httpx.Response
