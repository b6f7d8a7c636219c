"""Resilience (issue 14), against real `router serve` processes: clients that send a byte
a second, a worker killed with SIGKILL while requests are in flight, and config reloads
ten times a second under traffic. (The fuzzing of the endpoints is tests/test_fuzz.py.)"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import copy_shipped_config, write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway, clean_env, free_port

pytestmark = pytest.mark.timeout(120)

ROUTER = [sys.executable, "-m", "router.cli"]
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


# --- 1. slow clients -------------------------------------------------------------------

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLACK = 1.5  # scheduling on a busy machine; far below the byte-a-second client's pace


@dataclass
class Trickled:
    """What a client sending one byte a second got back."""

    answer: bytes = b""
    seconds: float = 0.0  # from its first slow byte to the answer or the close
    bytes_sent: int = 0
    cut: bool = False  # the server answered or closed before the client was done
    closed: float = 0.0  # seconds from the first slow byte to the server's close


def trickle(port: int, head: bytes, body: bytes, slow_head: bool, limit: float = 12.0) -> Trickled:
    """Send `head` (all at once, or a byte a second) and then `body` a byte a second, until
    the server answers or closes; read what it sends until it closes."""
    result = Trickled()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        if not slow_head:
            sock.sendall(head)
        slow = (head if slow_head else b"") + body
        started = time.monotonic()
        for byte in slow:
            try:
                sock.send(bytes([byte]))
            except OSError:  # closed by the server while we were waiting
                result.cut = True
                break
            result.bytes_sent += 1
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                result.cut = True
                break
            if time.monotonic() - started > limit:
                break
        result.seconds = time.monotonic() - started
        if result.cut:
            result.answer = _read_to_close(sock)
            result.closed = time.monotonic() - started
    return result


def _read_to_close(sock: socket.socket) -> bytes:
    sock.settimeout(5.0)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:  # a reset after the answer
        pass
    return b"".join(chunks)


def request_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def split_answer(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.fixture(scope="module")
def impatient_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"ROUTER_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "ROUTER_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    with Gateway(copy_shipped_config(tmp_path_factory.mktemp("slow")), env=env) as gateway:
        yield gateway


def latencies_meanwhile(gateway: Gateway, busy: Callable[[], bool]) -> list[float]:
    """Chat completions sent one after another while `busy()`: each one's seconds."""
    seconds = []
    with httpx.Client(base_url=gateway.url, timeout=10.0) as client:
        while busy() or not seconds:
            started = time.monotonic()
            response = client.post("/v1/chat/completions", json=CHAT)
            seconds.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
    return seconds


SlowClients = Callable[[list[Callable[[], Trickled]]], tuple[list[Trickled], list[float]]]


@pytest.fixture
def slow_clients(impatient_gateway: Gateway) -> SlowClients:
    """Run slow clients in threads; meanwhile time the requests of another client."""

    def run(jobs: list[Callable[[], Trickled]]) -> tuple[list[Trickled], list[float]]:
        results: list[Trickled] = []
        threads = [
            threading.Thread(target=lambda job=job: results.append(job()), daemon=True)
            for job in jobs
        ]
        for thread in threads:
            thread.start()
        seconds = latencies_meanwhile(
            impatient_gateway, lambda: any(thread.is_alive() for thread in threads)
        )
        for thread in threads:
            thread.join(20)
        assert len(results) == len(jobs)
        return results, seconds

    return run


def usual_latency(gateway: Gateway) -> float:
    with httpx.Client(base_url=gateway.url, timeout=10.0) as client:
        for _ in range(5):  # warm up
            client.post("/v1/chat/completions", json=CHAT)
        seconds = []
        for _ in range(20):
            started = time.monotonic()
            client.post("/v1/chat/completions", json=CHAT)
            seconds.append(time.monotonic() - started)
    return statistics.median(seconds)


def test_slow_headers_are_cut_off_and_delay_no_one(impatient_gateway, slow_clients) -> None:
    usual = usual_latency(impatient_gateway)
    head = request_head("/v1/chat/completions", len(json.dumps(CHAT)))
    port = impatient_gateway.port
    jobs = [lambda: trickle(port, head, b"", slow_head=True) for _ in range(4)]
    results, seconds = slow_clients(jobs)
    for result in results:
        assert result.cut, f"still connected after {result.seconds:.1f}s"
        assert result.answer == b""  # closed without an answer: the request never began
        assert result.seconds < HEADER_TIMEOUT + SLACK, result
        assert result.bytes_sent < len(head)
    assert max(seconds) < max(20 * usual, 1.0), (usual, max(seconds))


@pytest.mark.parametrize(
    ("path", "protocol_error"),
    [
        ("/v1/chat/completions", lambda body: body["error"]["code"] == "timeout"),  # fast path
        ("/v1/messages", lambda body: body["error"]["type"] == "timeout_error"),
        (  # Litestar serves the count endpoints
            "/v1/messages/count_tokens",
            lambda body: body["type"] == "error" and body["error"]["type"] == "timeout_error",
        ),
        (
            "/v1beta/models/echo:countTokens",
            lambda body: body["error"]["status"] == "DEADLINE_EXCEEDED",
        ),
        (
            "/v1beta/models/echo:generateContent",
            lambda body: body["error"]["code"] == 408,
        ),
    ],
)
def test_a_slow_body_gets_408_in_time_and_delays_no_one(
    impatient_gateway, slow_clients, path: str, protocol_error: Callable[[dict], bool]
) -> None:
    usual = usual_latency(impatient_gateway)
    body = json.dumps(CHAT).encode()
    head = request_head(path, len(body), "anthropic-version: 2023-06-01\r\n")
    port = impatient_gateway.port
    jobs = [lambda: trickle(port, head, body, slow_head=False) for _ in range(4)]
    results, seconds = slow_clients(jobs)
    for result in results:
        assert result.cut, f"no answer after {result.seconds:.1f}s"
        assert BODY_TIMEOUT - 0.2 < result.seconds < BODY_TIMEOUT + SLACK, result
        status, error = split_answer(result.answer)
        assert status == 408
        assert protocol_error(error), error
        assert result.closed < result.seconds + 1.0  # the client is let go, too
    assert max(seconds) < max(20 * usual, 1.0), (usual, max(seconds))


def test_a_chunked_body_sent_slowly_gets_408(impatient_gateway) -> None:
    body = json.dumps(CHAT).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    result = trickle(impatient_gateway.port, head, chunked, slow_head=False)
    assert result.cut and result.seconds < BODY_TIMEOUT + SLACK, result
    assert split_answer(result.answer)[0] == 408


def test_a_body_that_keeps_coming_is_cut_at_the_deadline(impatient_gateway) -> None:
    """The deadline is for the whole body, not between bytes: a byte every half second
    never pauses long, and is still cut."""
    body = json.dumps(CHAT).encode()
    head = request_head("/v1/chat/completions", len(body))
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for byte in body:
            sock.send(bytes([byte]))
            if select.select([sock], [], [], 0.5)[0]:
                break
        answer = _read_to_close(sock)
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK
    assert split_answer(answer)[0] == 408


def test_a_body_in_time_is_answered(impatient_gateway) -> None:
    """Sent in pieces well inside the deadline: a normal answer."""
    body = json.dumps(CHAT).encode()
    head = request_head("/v1/chat/completions", len(body), "Connection: close\r\n")
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=10) as sock:
        sock.sendall(head)
        for piece in (body[:10], body[10:30], body[30:]):
            time.sleep(0.3)
            sock.sendall(piece)
        answer = _read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROUTER_BODY_TIMEOUT", "0"),
        ("ROUTER_BODY_TIMEOUT", "soon"),
        ("ROUTER_HEADER_TIMEOUT", "-3"),
        ("ROUTER_HEADER_TIMEOUT", "61"),  # Granian's limit is a minute
    ],
)
def test_serve_refuses_a_bad_timeout(tmp_path, name: str, value: str) -> None:
    config = copy_shipped_config(tmp_path)
    serve = subprocess.run(
        [*ROUTER, "serve", "--config-dir", str(config), "--port", str(free_port())],
        env=clean_env({name: value}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert serve.returncode == 2
    assert f"router: {name} must be" in serve.stderr
    assert "Traceback" not in serve.stderr


# --- 2. a worker killed ----------------------------------------------------------------

IN_FLIGHT = 0.4  # seconds the fake upstream holds each request


def workers_of(pid: int) -> set[int]:
    """Granian's workers: the children of its main process but the records service."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return {child for child in found if b"router.records.service" not in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


@dataclass
class Pinned:
    """A client with one keep-alive connection, and the worker that owns it."""

    client: httpx.Client
    worker: int = 0
    outcomes: list[tuple[float, float, int, bool]] = field(default_factory=list)

    def learn_worker(self) -> int:
        self.worker = self.client.get("/provider_health").json()["worker"]
        return self.worker


def pinned_clients(gateway: Gateway, per_worker: int) -> list[Pinned]:
    """Clients whose connections land on each of the two workers, `per_worker` each."""
    kept: dict[int, list[Pinned]] = {}
    for _ in range(60):
        pinned = Pinned(httpx.Client(base_url=gateway.url, timeout=10.0, limits=_ONE))
        group = kept.setdefault(pinned.learn_worker(), [])
        if len(group) < per_worker:
            group.append(pinned)
        else:
            pinned.client.close()
        if len(kept) == 2 and all(len(g) == per_worker for g in kept.values()):
            return [pinned for group in kept.values() for pinned in group]
    raise AssertionError(f"connections did not reach both workers: {sorted(kept)}")


_ONE = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def keep_sending(pinned: Pinned, body: dict, stop: threading.Event) -> None:
    """Requests one after another; after a failure, a new connection (and its worker)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            ok = pinned.client.post("/v1/chat/completions", json=body).status_code == 200
        except httpx.HTTPError:
            ok = False
        pinned.outcomes.append((started, time.monotonic(), pinned.worker, ok))
        if not ok:
            reconnect(pinned, stop)


def reconnect(pinned: Pinned, stop: threading.Event) -> None:
    """Learn the worker of a new connection, trying until one can be made."""
    while not stop.is_set():
        try:
            pinned.learn_worker()
            return
        except httpx.HTTPError:
            time.sleep(0.05)


@pytest.fixture
def slow_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as fake:
        fake.script({"hang": IN_FLIGHT, "times": 100_000})
        yield fake


def test_a_killed_worker_fails_only_its_requests_and_is_replaced(
    slow_fake: FakeUpstream, start_gateway, tmp_path
) -> None:
    """`--workers 2`, six clients each on a keep-alive connection whose worker it knows,
    every request held IN_FLIGHT seconds upstream; one worker gets SIGKILL."""
    config = write_config(
        tmp_path,
        {
            "providers.yaml": f"""
                providers:
                  slow:
                    type: openai-custom
                    instances: [{{ id: slow-1, base_url: "{slow_fake.url}/v1", api_key: k }}]
            """,
            "routes.yaml": "default: slow\n",
        },
    )
    gateway = start_gateway(config, workers=2)
    pinned = pinned_clients(gateway, per_worker=3)
    workers = {p.worker for p in pinned}
    assert workers == workers_of(gateway.process.pid)
    victim = min(workers)
    (survivor,) = workers - {victim}

    stop = threading.Event()
    threads = [
        threading.Thread(target=keep_sending, args=(p, CHAT, stop), daemon=True) for p in pinned
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2 * IN_FLIGHT + 0.3)  # every client has a request in flight now
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: dead(victim), 5, "the killed worker exiting")
        died = time.monotonic()
        replaced = wait_for(
            lambda: (workers_of(gateway.process.pid) - workers) or None, 5, "a new worker"
        )
        time.sleep(2.0)  # traffic on, with the new worker
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    for p in pinned:
        p.client.close()

    outcomes = [outcome for p in pinned for outcome in p.outcomes]
    for p in pinned:  # each client had one request in flight: only the killed worker's fail
        failed = [(start, worker) for start, _, worker, ok in p.outcomes if not ok]
        assert len(failed) <= 1, failed
        assert all(worker == victim and start < died for start, worker in failed), failed
    # the other worker's in-flight requests went on, and so did everyone after the death
    assert any(
        ok and worker == survivor and start < died < end for start, end, worker, ok in outcomes
    )
    assert all(ok for start, _, _, ok in outcomes if start > died)

    (new,) = replaced
    assert workers_of(gateway.process.pid) == {survivor, new}
    answering: set[int] = set()
    wait_for(
        lambda: answering.update(answering_workers(gateway)) or answering == {survivor, new},
        5,
        "the new and the surviving worker answering",
    )


def answering_workers(gateway: Gateway, connections: int = 10) -> set[int]:
    """The workers that answer `connections` fresh connections."""
    seen = set()
    for _ in range(connections):
        with httpx.Client(base_url=gateway.url, timeout=5.0) as client:
            seen.add(client.get("/provider_health").json()["worker"])
    return seen


# --- 3. a reload storm -----------------------------------------------------------------

PROVIDERS = """
providers:
  echo-a: { type: echo, models: [m] }
  echo-b: { type: echo, models: [m] }
"""


STORM_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def routes(default: str) -> str:
    return f"default: {default}\nroutes:\n  - {{ name: x, match: {{ model: x }}, to: echo-a }}\n"


def replace_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_a_reload_storm_fails_no_request_and_converges(start_gateway, tmp_path) -> None:
    """routes.yaml replaced ten times a second for 3 s, between two valid versions, while
    three clients keep sending: every request answered, and the last version wins."""
    config = write_config(tmp_path, {"providers.yaml": PROVIDERS, "routes.yaml": routes("echo-b")})
    gateway = start_gateway(config)
    generation_b = gateway.health()["generation"]
    replace_atomically(config / "routes.yaml", routes("echo-a"))
    generation_a = wait_for(
        lambda: (g := gateway.health()["generation"]) != generation_b and g, 5, "first reload"
    )

    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[str]] = []  # each client's generations, in order

    def client() -> None:
        generations: list[str] = []
        seen.append(generations)
        with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
            while not stop.is_set():
                try:
                    response = http.post("/v1/chat/completions", json=STORM_BODY)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                generations.append(response.headers.get("x-router-generation", ""))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(30):  # 10 a second for 3 s, ending on echo-b
            replace_atomically(config / "routes.yaml", routes("echo-b" if i % 2 else "echo-a"))
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == []
    assert sum(map(len, seen)) > 30
    changes = sum(a != b for generations in seen for a, b in itertools.pairwise(generations))
    assert changes >= 5  # the requests did meet the reloads
    wait_for(lambda: gateway.health()["generation"] == generation_b, 5, "the last generation")
    response = httpx.post(gateway.url + "/v1/chat/completions", json=STORM_BODY)
    assert response.headers["x-router-provider"] == "echo-b"
    assert response.headers["x-router-generation"] == generation_b != generation_a
    assert "Traceback" not in gateway.log()
