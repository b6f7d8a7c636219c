"""The outcome record: what became of one client request, whatever its ending (an answer,
a stream's end, a client that went away, an error before or after routing).

A request carries a mutable `Trace` while it runs; the stages that learn something write
it there (dispatch: the route and each attempt; respond: the usage, the first byte). When
the last byte has gone out, the front calls `Trace.finish`, which freezes the trace into
an `Outcome` and publishes it to the subscribed sinks. Nothing here does I/O: sinks take
it from there."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from router.protocols import ir

log = logging.getLogger("router.records")
_now = time.perf_counter


class Attempt(msgspec.Struct, frozen=True):
    """One upstream call of a request."""

    provider: str
    instance: str
    protocol: str  # spoken upstream ("ir" for in-process adapters)
    model: str  # the upstream model
    status: int  # the upstream's status, or the gateway's for a failure before an answer
    error: str | None  # ir error kind; None when the attempt answered
    message: str | None  # the error as the gateway logs it
    duration: float  # seconds, until the answer (a stream: until it was primed)


@dataclass(slots=True)
class Exchange:
    """The bodies of one request, kept only while a sink wants them (the prompt log):
    the client's request, what went upstream (the last attempt's body) and the answer."""

    request: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # the client's, lower-case
    upstream: bytes = b""
    answer: list[bytes] = field(default_factory=list)  # the body, or a stream's chunks


class Outcome(msgspec.Struct, frozen=True):
    """Immutable; a msgspec Struct because it is made once per request and sent to the
    records service, and a Struct is cheaper than a dataclass at both."""

    id: str  # unique per request (the prompt log and /api/requests name it)
    time: float  # unix time the request arrived
    protocol: str  # the client's
    endpoint: str  # the endpoint's path as in router.protocols.paths
    path: str  # as the client called it
    client: str | None  # the client's address
    key: str | None  # the client key's name, never the key
    model: str | None  # as the client asked
    route: str | None
    attempts: tuple[Attempt, ...]
    status: int  # what the client got (499: it went away first)
    error: str | None  # ir error kind of the final error
    stream: bool
    ttfb: float | None  # seconds to the first byte of the answer (None: none was sent)
    duration: float  # seconds, to the last byte
    overhead: float  # seconds spent in the gateway, upstream waits excluded
    usage: ir.Usage | None  # as the upstream reported it; None when it reported none
    dropped: tuple[str, ...]  # fields the upstream's protocol could not carry
    request_bytes: int  # the client's body
    response_bytes: int  # the answer's body (a stream: every chunk)
    exchange: Exchange | None = None  # the bodies, when a sink asked for them


BYTES_PER_TOKEN = 4


def usage_or_estimate(
    usage: ir.Usage | None, status: int, attempted: bool, request_bytes: int, response_bytes: int
) -> tuple[ir.Usage, bool]:
    """The usage the upstream reported; for an answer without one, an estimate from the
    bytes exchanged (flagged True). Usage records and token limits both count this."""
    if usage is not None:
        return usage, False
    if status != 200 or not attempted:
        return ir.Usage(), False
    estimate = ir.Usage(
        input_tokens=request_bytes // BYTES_PER_TOKEN,
        output_tokens=response_bytes // BYTES_PER_TOKEN,
    )
    return estimate, True


# Set by a sink that reads `Outcome.exchange` (the prompt log): requests keep their bodies.
KEEP_BODIES = False


def _request_id() -> str:
    return secrets.token_hex(8)


class Settles(Protocol):
    def settle(self, usage: ir.Usage | None) -> None: ...


@dataclass(slots=True)
class Trace:
    """A request's outcome as it is being learned."""

    protocol: str
    endpoint: str
    path: str = ""
    client: str | None = None
    started: float = field(default_factory=_now)  # perf_counter
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=_request_id)
    key: str | None = None
    model: str | None = None
    stream: bool = False
    route: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: int = 0
    error: str | None = None
    first_byte: float | None = None  # perf_counter
    overhead: float = 0.0
    usage: ir.Usage | None = None
    dropped: tuple[str, ...] = ()
    request_bytes: int = 0
    response_bytes: int = 0
    exchange: Exchange | None = field(default_factory=lambda: Exchange() if KEEP_BODIES else None)
    finished: bool = False
    ticket: Settles | None = None  # a limited key's admission, settled at the finish

    def attempt(
        self,
        provider: str,
        instance: str,
        protocol: str,
        model: str,
        started: float,
        error: ir.Error | None = None,
    ) -> None:
        duration = _now() - started
        if error is None:
            attempt = Attempt(provider, instance, protocol, model, 200, None, None, duration)
        else:
            attempt = Attempt(
                provider, instance, protocol, model, error.status, error.kind, str(error), duration
            )
        self.attempts.append(attempt)

    def failed(self, error: ir.Error) -> None:
        """The client gets `error` (a mid-stream error keeps the 200 already sent)."""
        if not self.status:
            self.status = error.status
        self.error = error.kind

    def sent(self, chunk: bytes) -> None:
        """A piece of the answer went out."""
        if self.first_byte is None:
            self.first_byte = _now()
        self.response_bytes += len(chunk)
        if self.exchange is not None:
            self.exchange.answer.append(chunk)

    def finish(self, status: int | None = None) -> None:
        """The last byte went out (or the client went away: status 499). Once."""
        if self.finished:
            return
        self.finished = True
        if status is not None:
            self.status = status
        if self.ticket is not None:
            used, _ = usage_or_estimate(
                self.usage,
                self.status,
                bool(self.attempts),
                self.request_bytes,
                self.response_bytes,
            )
            self.ticket.settle(used)
        if not SINKS:
            return
        end = _now()
        outcome = Outcome(
            self.id,
            self.at,
            self.protocol,
            self.endpoint,
            self.path,
            self.client,
            self.key,
            self.model,
            self.route,
            tuple(self.attempts),
            self.status,
            self.error,
            self.stream,
            None if self.first_byte is None else self.first_byte - self.started,
            end - self.started,
            self.overhead,
            self.usage,
            self.dropped,
            self.request_bytes,
            self.response_bytes,
            self.exchange,
        )
        publish(outcome)


# --- sinks ------------------------------------------------------------------------------
# A sink is a callable taking one Outcome; it runs on the event loop right after the
# request's last byte, so it must not block: one that does I/O queues the record and does
# the work elsewhere. A sink that raises is logged and skipped.

Sink = Callable[[Outcome], None]
SINKS: list[Sink] = []


def subscribe(sink: Sink) -> None:
    if sink not in SINKS:
        SINKS.append(sink)


def unsubscribe(sink: Sink) -> None:
    if sink in SINKS:
        SINKS.remove(sink)


def publish(outcome: Outcome) -> None:
    for sink in SINKS:
        try:
            sink(outcome)
        except Exception:
            log.exception("outcome sink %r failed", sink)
