"""The records service (router.records.service) as a real process under `router serve
--workers 2`: killed, it is started again and the records sent while it was away arrive
all the same (the workers' relays keep them); it stops with the server, stopped or
killed; stopped (SIGSTOP), it fails no request and the records wait until it runs again.

Every wait is bounded, and every process a test touches is gone when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from router.records import relay
from router.records.outcome import Outcome
from tests.conftest import write_config
from tests.gateway import Gateway

CLIENT_KEY = "rk-client-5d2e9a1c7b3f40862e"
ADMIN_KEY = "rk-admin-0b7c4e2a9d1f63580a"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
RECORD_WAIT = 10.0  # seconds a record may take to show (the writer batches every second)
RESTART_WAIT = 10.0  # seconds the supervisor may take to start a killed service again
STOP_WAIT = 15.0  # seconds the service may outlive the server's stop
SERVICE = b"router.records.service"
T = TypeVar("T")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    """Only echo: every request answers, with no upstream to wait for."""
    return write_config(
        tmp_path_factory.mktemp("records-service-config"),
        {
            "providers.yaml": """
                providers:
                  echo: { type: echo }
            """,
            "routes.yaml": """
                default: echo
            """,
        },
    )


@pytest.fixture
def gateway(config_dir, tmp_path) -> Iterator[Gateway]:
    """`router serve --workers 2` with client and admin keys and a state dir of the test's
    own, once both workers have started (a SIGTERM while one is still starting can leave
    Granian waiting for it). On the way out: the gateway stopped, then whatever of its
    processes is left (a test may have stopped or killed some) continued and killed, each
    by its pid."""
    state = tmp_path / "state"
    state.mkdir()
    environment = {
        "REQUIRED_API_KEY": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ROUTER_STATE_DIR": str(state),
    }
    started = Gateway(config_dir, env=environment, workers=2)
    started.database = state / "router.db"  # type: ignore[attr-defined]
    seen: set[int] = set()
    started.seen = seen  # type: ignore[attr-defined]
    try:
        workers = poll(started.log, lambda text: text.count("Started worker-") >= 2, 20.0)
        assert workers.count("Started worker-") >= 2, workers
        seen.update(children_of(started.process.pid))
        yield started
    finally:
        if started.process.poll() is None:
            seen.update(children_of(started.process.pid))
        for pid in seen:
            _signal(pid, signal.SIGCONT)  # a stopped service would not take SIGTERM
        started.stop()
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline and not all(gone(pid) for pid in seen):
            time.sleep(0.1)
        for pid in seen:
            if not gone(pid) and b"router." in _cmdline(pid):  # still ours, not a reused pid
                _signal(pid, signal.SIGKILL)


# --- helpers -------------------------------------------------------------------------------


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = RECORD_WAIT) -> T:
    """`fetch()` until `done` says yes or the deadline passes; the last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_service(pid: int) -> bool:
    return SERVICE in _cmdline(pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def gone(pid: int) -> bool:
    """No such process, or only a zombie's entry: it runs no more."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def children_of(server: int) -> set[int]:
    """The live children of the server: its workers and its records service."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is not None and int(fields[1]) == server and fields[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


def services_of(server: int) -> set[int]:
    """The live records services of the server: its children running the module."""
    return {pid for pid in children_of(server) if _is_service(pid)}


def the_service(gateway: Gateway) -> int:
    found = poll(lambda: services_of(gateway.process.pid), lambda s: len(s) == 1, 5.0)
    assert len(found) == 1, (found, gateway.log())
    (pid,) = found
    gateway.seen.add(pid)  # type: ignore[attr-defined]
    return pid


def send(gateway: Gateway, model: str, count: int) -> list[int]:
    """`count` echo requests, each on a connection of its own (so both workers get some);
    the statuses."""
    statuses = []
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=10, limits=limits) as client:
        for number in range(count):
            response = client.post(
                gateway.url + "/v1/chat/completions",
                headers=CLIENT,
                json={"model": model, "messages": [{"role": "user", "content": f"n {number}"}]},
            )
            statuses.append(response.status_code)
    return statuses


def recent(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        gateway.url + "/api/requests", params={"limit": 1000, **params}, headers=ADMIN, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["requests"]


# --- tests ---------------------------------------------------------------------------------


def test_the_records_service_is_restarted_and_loses_nothing_sent_while_away(
    gateway: Gateway,
) -> None:
    first = the_service(gateway)
    # a few records first: each worker that served one holds a connection to the service
    assert send(gateway, "echo-before", 6) == [200] * 6
    before = poll(lambda: recent(gateway, model="echo-before"), lambda rs: len(rs) >= 6)
    assert len(before) == 6, before

    os.kill(first, signal.SIGKILL)
    killed_at = time.time()
    killed = time.monotonic()
    # a dead service fails no request: the workers keep the records
    assert send(gateway, "echo-away", 10) == [200] * 10
    away_took = time.monotonic() - killed

    def replaced() -> set[int]:
        return services_of(gateway.process.pid) - {first}

    new = poll(replaced, bool, RESTART_WAIT)
    assert len(new) == 1, (new, gateway.log())
    (second,) = new
    gateway.seen.add(second)  # type: ignore[attr-defined]
    assert gone(first)
    assert send(gateway, "echo-back", 10) == [200] * 10

    after = poll(
        lambda: [r for r in recent(gateway) if r["time"] > killed_at],
        lambda rs: len(rs) >= 20,
    )
    models = sorted(r["model"] for r in after)
    assert models == ["echo-away"] * 10 + ["echo-back"] * 10, (models, away_took, gateway.log())
    assert all(r["status"] == 200 for r in after), after
    assert len(recent(gateway, model="echo-before")) == 6  # nothing written twice

    log = gateway.log()
    assert "records service exited (-9); starting it again" in log, log
    # a relay found the service gone and kept its records for the next one
    assert "records service unreachable" in log, log
    assert "records service did not start" not in log, log


def test_the_records_service_stops_with_the_server(gateway: Gateway) -> None:
    service = the_service(gateway)
    assert send(gateway, "echo-stop", 3) == [200] * 3
    gateway.stop()  # SIGTERM; SIGKILL only after 10 s
    assert gateway.process.returncode == 0, gateway.process.returncode  # stopped, not killed
    poll(lambda: gone(service), bool, STOP_WAIT)
    assert gone(service), f"the records service {service} outlived the server"


def test_the_records_service_stops_when_the_server_is_killed(gateway: Gateway) -> None:
    """The server and its workers SIGKILLed (the service, in a session of its own, is
    spared): no SIGTERM to pass on, so the service sees its parent gone, finds every
    worker hung up and stops by itself, at once rather than after its drain's deadline."""
    service = the_service(gateway)
    assert send(gateway, "echo-killed", 3) == [200] * 3
    time.sleep(0.5)  # the workers' relays have connected and sent
    workers = children_of(gateway.process.pid) - {service}
    assert len(workers) == 2, workers
    os.kill(gateway.process.pid, signal.SIGKILL)
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    gateway.process.wait(5)
    killed = time.monotonic()
    poll(lambda: gone(service), bool, 5.0)
    assert gone(service), f"the records service {service} outlived the killed server"
    assert time.monotonic() - killed < 5.0
    # what it had taken it wrote before it went
    with contextlib.closing(sqlite3.connect(gateway.database)) as database:  # type: ignore[attr-defined]
        rows = database.execute("SELECT status FROM requests WHERE model = 'echo-killed'")
        assert [status for (status,) in rows] == [200] * 3


def test_without_the_service_records_wait_in_the_worker(gateway: Gateway) -> None:
    service = the_service(gateway)
    assert send(gateway, "echo-warm", 2) == [200] * 2
    warm = poll(lambda: recent(gateway, model="echo-warm"), lambda rs: len(rs) >= 2)
    assert len(warm) == 2, warm

    os.kill(service, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        assert send(gateway, "echo-held", 10) == [200] * 10
        sent_in = time.monotonic() - stopped
        assert sent_in < 3.0, sent_in  # nothing waited for the service
        # the writer would have written them within about a second: held back instead
        time.sleep(max(0.0, 2.5 - (time.monotonic() - stopped)))
        held = recent(gateway, model="echo-held")
        # a stopped service has not exited: the supervisor leaves it be
        assert services_of(gateway.process.pid) == {service}
    finally:
        os.kill(service, signal.SIGCONT)
    assert held == []

    arrived = poll(lambda: recent(gateway, model="echo-held"), lambda rs: len(rs) >= 10)
    assert len(arrived) == 10, arrived
    assert all(r["status"] == 200 for r in arrived), arrived
    assert services_of(gateway.process.pid) == {service}
    assert "records service exited" not in gateway.log()


def test_the_relay_sends_more_than_the_socket_buffer_at_once(tmp_path: Path) -> None:
    """A busy second of records is larger than a Unix socket's buffer: the relay sends the
    rest as soon as the reader has taken what went before, not one buffer per round
    (which once made a busy worker's backlog, and its memory, grow without end)."""
    path = str(tmp_path / "records.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    received: list[Outcome] = []
    decode = relay.decoder().decode

    def read() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as stream:
            while header := stream.read(relay.HEADER.size):
                (size,) = relay.HEADER.unpack(header)
                received.extend(decode(stream.read(size))[1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    record = Outcome(
        "id", 0.0, "openai-chat", "/v1/chat/completions", "/v1/chat/completions", "127.0.0.1",
        "key", "m" * 200, "route", (), 200, None, False, None, 0.1, 0.001, None, (), 10, 10,
    )  # fmt: skip
    count = 20_000  # about 9 MB: some forty times a socket's buffer

    async def burst() -> float:
        sink = relay.Relay(path, lambda: None)
        sink.start()
        started = time.monotonic()
        for _ in range(count):
            sink(record)
        sink.flush()
        while len(received) < count and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        sink.close()
        return elapsed

    try:
        elapsed = asyncio.run(burst())
    finally:
        listener.close()
    assert len(received) == count
    assert received[-1] == record
    # one buffer per 0.2 s round would have taken some eight seconds
    assert elapsed < 2.0, elapsed
