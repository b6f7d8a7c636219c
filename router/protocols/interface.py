"""What every protocol package is: the one interface the server, the providers and the
compiler use to speak a wire protocol. `router.protocols.module_for(name)` returns a
package that satisfies `WireProtocol`; `tests/test_protocol_interface.py` checks each of
the four against it, member by member and signature by signature.

Each package is laid out the same way, one module per section, in this order:

    common.py       NAME and the protocol's constant facts (below), shared helpers
    signatures.py   reasoning signatures of other protocols, carried through this one
    request_in.py   client body -> ir.Request, and how a client asks for stream framing
    request_out.py  ir.Request -> upstream body
    response.py     upstream body -> ir.Response -> client body, usage
    stream_in.py    upstream stream bytes -> ir events (StreamDecoder)
    stream_out.py   ir events -> client stream bytes (StreamEncoder)
    errors.py       upstream error -> ir.Error -> client error body or stream event
    counting.py     the token-count endpoint's bodies (COUNTING; None without one)
    models.py       the model-list shape

A package may add a module for a concern only it has (gemini/schema.py: Gemini's
dialect of JSON Schema). A package knows only itself, `ir`, the shared `sse` helpers and
this interface (and `ratelimit`, the shared formatting of rate-limit values)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from router.protocols import ir


class StreamDecoding(Protocol):
    """Upstream stream bytes, in any chunking, -> ir events."""

    def feed(self, chunk: bytes) -> list[ir.Event]: ...

    def close(self) -> list[ir.Event]:
        """At the upstream's EOF: what is left, with an ir.Error if it ended unfinished."""
        ...


class StreamEncoding(Protocol):
    """ir events -> the client's stream bytes."""

    content_type: str

    def encode(self, event: ir.Event) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TokenCounting:
    """The bodies of a protocol's token-count endpoint (Anthropic's
    `/v1/messages/count_tokens`, Gemini's `:countTokens`)."""

    parse_request: Callable[[dict[str, Any]], ir.Request]  # client body -> ir
    build_request: Callable[[ir.Request], dict[str, Any]]  # ir -> upstream body
    count_from: Callable[[Any], int]  # upstream answer -> tokens
    answer: Callable[[int], dict[str, Any]]  # tokens -> client body


@runtime_checkable
class WireProtocol(Protocol):
    # --- common: constant facts the server asks instead of comparing names -------------
    NAME: str  # one of ir.PROTOCOLS
    ACCEPTS_IMAGE_URLS: bool  # False: http(s) images are fetched and inlined first
    MODEL_IN_BODY: bool  # False: the model is named by the URL, not the body (Gemini)
    SIGNS_TOOL_CALLS: bool  # upstream tool calls carry signatures a later turn must replay
    FORWARDED_HEADERS: tuple[str, ...]  # client headers passed on when both ends speak it

    # --- signatures ----------------------------------------------------------------------
    def wrap_signature(
        self, value: str | None, origin: str | None, redacted: bool = False
    ) -> str | None:
        """Another protocol's reasoning signature (or redacted data) in the form this
        protocol's clients carry back; None when it has no place for one."""
        ...

    def unwrap_signature(self, value: Any) -> tuple[str | None, str | None, bool]:
        """(signature, origin protocol, redacted) from what a client carried back."""
        ...

    # --- request_in / request_out ----------------------------------------------------------
    def parse_request(self, body: dict[str, Any]) -> ir.Request:
        """Client body -> ir; raises ir.Error (400). Without MODEL_IN_BODY, `model` and
        `stream` are left for the caller, who has them from the URL."""
        ...

    def sse_requested(self, query: Mapping[str, str]) -> bool:
        """Whether a streaming client wants SSE (else one JSON array, Gemini without
        alt=sse). Upstreams are always asked for SSE."""
        ...

    def build_request(self, req: ir.Request) -> dict[str, Any]:
        """ir -> upstream body; appends what it cannot carry to `req.dropped`."""
        ...

    # --- response --------------------------------------------------------------------------
    def parse_response(self, body: dict[str, Any]) -> ir.Response: ...

    def build_response(self, resp: ir.Response, req: ir.Request) -> dict[str, Any]: ...

    def usage_of(self, body: dict[str, Any]) -> ir.Usage | None:
        """The usage an answer body reports (relayed answers are not parsed whole)."""
        ...

    # --- stream_in / stream_out ----------------------------------------------------------
    StreamDecoder: Callable[[], StreamDecoding]
    StreamEncoder: Callable[..., StreamEncoding]  # (req: ir.Request, *, sse: bool = True)

    def stream_media_type(self, sse: bool) -> str:
        """The content type of a client stream in the framing `sse` says."""
        ...

    # --- errors ----------------------------------------------------------------------------
    def parse_error(self, status: int, body: bytes) -> ir.Error: ...

    def error_body(self, err: ir.Error) -> dict[str, Any]:
        """The client error body; its HTTP status is `err.status`."""
        ...

    def rate_limit_headers(self, rates: ir.RateLimits) -> dict[str, str]:
        """The protocol's own rate-limit headers for a client key's limits ({} when it
        has none); sent with answers and with the 429 of a spent limit."""
        ...

    def stream_error(self, err: ir.Error, sequence: int = 0) -> bytes:
        """The mid-stream error event on its own, after `sequence` events already sent
        (a relayed upstream stream ends with it)."""
        ...

    # --- counting / models -------------------------------------------------------------------
    COUNTING: TokenCounting | None

    def model_list(self, models: list[str]) -> dict[str, Any]: ...
