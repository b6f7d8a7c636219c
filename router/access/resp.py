"""A lean Redis channel for the request path: one connection per process, commands
pipelined on it, replies matched in order. The limit store makes one call per request
(and one more, unawaited, when it ends); through redis-py's pool and command machinery
that cost about 100 µs of the worker's CPU each, through this about a tenth of it.
Everything else that talks to Redis (the state bridge, sessions, OAuth) uses redis-py.

RESP2 only, which is what the limit scripts need: EVALSHA (falling back to EVAL once
after a restart forgot the script), PING, AUTH and SELECT from the URL. A call that has
no reply within `timeout` fails the connection, and every call waiting on it, with
ConnectionError; the next call connects again."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

Reply = bytes | int | list[Any] | None
STALL = 0.02  # seconds a timer may run late before this process counts as stalled


class RedisError(Exception):
    """An error reply (`-ERR ...`)."""


class NoScript(RedisError):
    pass


class Overdue(ConnectionError):
    """Redis did not answer in time: it is hung, or too far away."""


def bulks(args: tuple[str | bytes | int, ...]) -> bytes:
    """`args` as RESP bulk strings, without the array's header (for a caller that keeps
    parts of its commands encoded)."""
    parts = []
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    return b"*%d\r\n%s" % (len(args), bulks(args))


class _Incomplete(Exception):
    pass


def _parse(buffer: bytes, at: int) -> tuple[Reply | RedisError, int]:
    """One reply from `buffer` at `at`: (value, end). Raises _Incomplete."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[at : at + 1], buffer[at + 1 : end]
    at = end + 2
    if kind == b"+":
        return line, at
    if kind == b":":
        return int(line), at
    if kind == b"-":
        error = NoScript if line.startswith(b"NOSCRIPT") else RedisError
        return error(line.decode(errors="replace")), at
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, at
        if len(buffer) < at + size + 2:
            raise _Incomplete
        return buffer[at : at + size], at + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    raise ConnectionError(f"unexpected reply from Redis: {kind!r}")


class _Connection(asyncio.Protocol):
    """A command written while none is on its way goes out at once (so an admission is
    sent while its request is still being translated); those written while replies are
    awaited go out together once the last of them has come, one send (and one read) for
    many: under load a round trip costs a worker far more than the commands in it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []  # written, held until the replies on the way came
        self.sent = 0  # commands sent whose replies have not come
        self.waiting: collections.deque[tuple[asyncio.Future[Reply] | None, float]] = (
            collections.deque()
        )
        self.buffer = b""
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def write(self, command: bytes) -> None:
        if self.sent or self.outgoing:
            self.outgoing.append(command)
        elif self.transport is not None and self.lost is None:
            self.transport.write(command)
            self.sent = 1

    def flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(outgoing))
            self.sent += len(outgoing)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        at = 0
        try:
            while at < len(buffer):
                value, at = _parse(buffer, at)
                self.sent -= 1
                future, _ = self.waiting.popleft()
                if future is not None and not future.done():
                    if isinstance(value, RedisError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError, IndexError) as exc:
            self.fail(ConnectionError(f"Redis protocol error: {exc}"))
            return
        self.buffer = buffer[at:]
        if not self.sent and self.outgoing:
            self.flush()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.fail(exc or ConnectionError("Redis closed the connection"))

    def fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc if isinstance(exc, ConnectionError) else ConnectionError(str(exc))
        else:
            return
        while self.waiting:
            future, _ = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(self.lost)
        if self.transport is not None:
            self.transport.abort()


class Channel:
    def __init__(self, url: str, timeout: float = 0.25) -> None:
        self.url = url
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_due = 0.0
        self._scripts: dict[bytes, bytes] = {}  # sha -> script
        self._later: set[asyncio.Task[None]] = set()  # sends waiting for a connection

    async def call(self, *args: str | bytes | int) -> Reply:
        return await self._call_encoded(_encode(args))

    async def _call_encoded(self, command: bytes) -> Reply:
        connection = self._connection
        if connection is None or connection.lost is not None:
            await self._connect()
        return await self.start_encoded(command)

    def start_encoded(self, command: bytes) -> asyncio.Future[Reply]:
        """`command` (encoded already) sent now, or once connected when not yet, and
        its reply to come."""
        connection = self._connection
        if connection is None or connection.lost is not None or connection.transport is None:
            return asyncio.ensure_future(self._call_encoded(command))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        connection.write(command)
        connection.waiting.append((future, loop.time() + self.timeout))
        self._watch(loop)
        return future

    def send(self, *args: str | bytes | int) -> None:
        """Without waiting for the reply (it is read and dropped). Not connected: it is
        sent once connected, or dropped when Redis cannot be reached."""
        connection = self._connection
        if connection is None or connection.lost is not None or connection.transport is None:
            task = asyncio.get_running_loop().create_task(self._send_connected(args))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
            return
        loop = asyncio.get_running_loop()
        connection.write(_encode(args))
        connection.waiting.append((None, loop.time() + self.timeout))
        self._watch(loop)

    async def _send_connected(self, args: tuple[str | bytes | int, ...]) -> None:
        try:
            await self._connect()
        except ConnectionError:
            return
        self.send(*args)

    def script(self, source: str) -> bytes:
        body = source.encode()
        sha = hashlib.sha1(body).hexdigest().encode()
        self._scripts[sha] = body
        return sha

    async def evalsha(self, sha: bytes, keys: tuple[str, ...], args: tuple[Any, ...]) -> Reply:
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except NoScript:
            return await self.call(b"EVAL", self._scripts[sha], len(keys), *keys, *args)

    def evalsha_later(self, sha: bytes, keys: tuple[str, ...], args: tuple[Any, ...]) -> None:
        """EVALSHA without waiting; the script is loaded on the first call of a connection."""
        self.send(b"EVALSHA", sha, len(keys), *keys, *args)

    async def _connect(self) -> _Connection:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            connection = await asyncio.wait_for(self._open(), self.timeout)
        except BaseException as exc:
            error = exc if isinstance(exc, ConnectionError) else ConnectionError(repr(exc))
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            raise error from exc
        self._connection = connection
        self._connecting.set_result(connection)
        self._connecting = None
        return connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            _, connection = await loop.create_unix_connection(_Connection, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            host, port = parts.hostname or "127.0.0.1", parts.port or 6379
            _, connection = await loop.create_connection(_Connection, host, port, ssl=context)
        try:
            await self._handshake(connection, parts)
        except BaseException:
            connection.fail(ConnectionError("Redis handshake failed"))
            raise
        return connection

    async def _handshake(self, connection: _Connection, parts: SplitResult) -> None:
        """AUTH and SELECT from the URL (the user info and path, or as redis-py reads
        them, `?username=`, `?password=` and `?db=`); the scripts loaded for unawaited
        EVALSHAs. Other query options (timeouts, pools) are redis-py's and ignored here."""
        loop = asyncio.get_running_loop()
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        handshake: list[tuple[str | bytes, ...]] = []
        password = unquote(parts.password) if parts.password is not None else None
        password = password if password is not None else query.get("password")
        if password is not None:
            user = unquote(parts.username) if parts.username else query.get("username")
            handshake.append(("AUTH", user, password) if user else ("AUTH", password))
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        database = database or query.get("db", "")
        if database and database != "0":
            handshake.append(("SELECT", database))
        for command in handshake:
            future: asyncio.Future[Reply] = loop.create_future()
            connection.write(_encode(command))
            connection.waiting.append((future, loop.time() + self.timeout))
            await future
        for body in self._scripts.values():  # so unawaited EVALSHAs find them
            connection.write(_encode((b"SCRIPT", b"LOAD", body)))
            connection.waiting.append((None, loop.time() + self.timeout))

    def _watch(self, loop: asyncio.AbstractEventLoop, delay: float | None = None) -> None:
        if self._watchdog is None:
            delay = self.timeout if delay is None else delay
            self._watchdog_due = loop.time() + delay
            self._watchdog = loop.call_later(delay, self._check)

    def _check(self) -> None:
        """Fail the connection when its oldest call is overdue (Redis hung). A check that
        itself runs late means this process was not running (a busy machine): replies may
        be waiting unread, and uvloop runs timers before it reads sockets, so look again
        once the socket has been read."""
        self._watchdog = None
        connection = self._connection
        if connection is None or not connection.waiting:
            return
        loop = asyncio.get_running_loop()
        overdue_by = loop.time() - connection.waiting[0][1]
        if loop.time() - self._watchdog_due > STALL and overdue_by < 3 * self.timeout:
            self._watch(loop, STALL)  # look again once the socket was read, within limits
            return
        if overdue_by > 0:
            connection.fail(Overdue("Redis did not answer in time"))
            return
        self._watch(loop)

    async def drain(self) -> None:
        """Return once every command sent so far has its reply (replies come in order)."""
        while self._later:
            await asyncio.gather(*self._later, return_exceptions=True)
        if self._connection is not None and self._connection.lost is None:
            await self.call(b"PING")

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connection is not None:
            self._connection.fail(ConnectionError("closed"))
            self._connection = None
