"""The worker's end of the records service (router.records.service): outcome records are
sent, msgpack-encoded, over the server's Unix socket. The store, the metrics fold and the
access log then run in the service's process, so their work costs the worker's
interpreter nothing but the encoding.

No thread: a thread of its own, however idle, makes the worker's interpreter switch
between it and the event loop, and that costs more than the encoding. The event loop
gathers the records and, once per `interval`, encodes them as one frame and hands it to a
non-blocking socket; what the socket does not take at once waits for the next round.

A frame is a 4-byte big-endian length and `(generation, [Outcome, ...])`: the config
generation the worker serves, so the service prices the records with the same config.
When the service cannot be reached, records wait (bounded: what overflows is dropped and
counted) and the connection is tried again next round."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable

import msgspec

from router.compiler.plan import Plan
from router.records.outcome import Outcome
from router.records.threaded import DropReport

log = logging.getLogger("router.records")
HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
SOCKET_ENV = "ROUTER_RECORDS_SOCKET"
Frame = tuple[str, list[Outcome]]


def encoder() -> msgspec.msgpack.Encoder:
    return msgspec.msgpack.Encoder()


def decoder() -> msgspec.msgpack.Decoder[Frame]:
    return msgspec.msgpack.Decoder(Frame)


class Relay:
    name = "relay"
    interval = 0.2  # seconds between frames
    capacity = 100_000  # records held at most while the service is away
    backlog = 32 * 1024 * 1024  # bytes of encoded frames held at most

    def __init__(self, path: str, plan: Callable[[], Plan | None]) -> None:
        self.path = path
        self.plan = plan
        self.dropped = 0
        # records encoded as they come: bytes are not tracked by the garbage collector,
        # while records kept as objects for a round are traversed by every collection
        self._records: list[bytes] = []
        self._pending = bytearray()  # frames not yet taken by the socket
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writing = False  # the loop sends the rest when the socket can take it
        self._encode = encoder().encode
        self._unreachable_said = False
        self._say_drops = DropReport(self.name)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def __call__(self, outcome: Outcome) -> None:
        if len(self._records) >= self.capacity:
            self.dropped += 1
            return
        if outcome.exchange is not None:  # the bodies are the prompt log's, not the service's
            outcome = msgspec.structs.replace(outcome, exchange=None)
        self._records.append(self._encode(outcome))
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Frame what has gathered and send as much as the socket takes now."""
        self._timer = None
        self._frame()
        if self._pending and not self._writing:
            self._send()
            if self._pending and self._socket is not None and self._loop is not None:
                # the rest goes as soon as the service has read what went before: the
                # socket's buffer is smaller than a busy worker's second of records
                self._loop.add_writer(self._socket, self._send_more)
                self._writing = True
        if self._pending and self._socket is None and self._loop is not None:
            self._timer = self._loop.call_later(self.interval, self.flush)  # reconnect then
        self._say_drops(self.dropped)

    def _send_more(self) -> None:
        self._send()
        if not self._pending and self._writing:
            self._stop_writing()
        if self._pending and self._socket is None and self._timer is None and self._loop:
            self._timer = self._loop.call_later(self.interval, self.flush)  # reconnect then

    def close(self, timeout: float = 10.0) -> None:
        """Send what is left, waiting for the socket at most `timeout` seconds."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_writing()
        self._frame()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            if not self._send():
                time.sleep(0.05)
        if self._pending:
            log.warning("records service unreachable: records of the last moments lost")
        self._disconnect()

    def _frame(self) -> None:
        """The gathered records as one frame: the msgpack of `(generation, [records])`,
        written around the records already encoded."""
        records = self._records
        if not records:
            return
        self._records = []
        plan = self.plan()
        head = self._encode(plan.generation if plan is not None else "")
        count = len(records)
        payload = b"".join((b"\x92", head, _array_header(count), *records))
        if len(self._pending) + len(payload) > self.backlog:
            self.dropped += count
            return
        self._pending += HEADER.pack(len(payload))
        self._pending += payload

    def _send(self) -> bool:
        """Send what the socket takes without waiting; False when it took nothing."""
        try:
            connection = self._connect()
            sent = connection.send(self._pending)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._disconnect()
            if not self._unreachable_said:
                log.warning("records service unreachable (%s); records wait", exc)
                self._unreachable_said = True
            return False
        self._unreachable_said = False
        del self._pending[:sent]
        return sent > 0

    def _connect(self) -> socket.socket:
        if self._socket is None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(self.path)  # a local socket: at once, or refused
            except OSError:
                connection.close()
                raise
            connection.setblocking(False)
            self._socket = connection
        return self._socket

    def _stop_writing(self) -> None:
        if self._writing and self._socket is not None and self._loop is not None:
            self._loop.remove_writer(self._socket)
        self._writing = False

    def _disconnect(self) -> None:
        self._stop_writing()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _array_header(length: int) -> bytes:
    """msgpack's header of an array of `length` items."""
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")
