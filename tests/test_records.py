"""The operator plane end to end, under `router serve --workers 2` with fake upstreams and
the official SDKs as callers: Prometheus metrics, the SQLite state store (request records
and daily usage), the usage API, the access log and the prompt log, all fed by the one
outcome record of each request (issue 15).

Records reach the database up to about a second after a request ends (the writer
batches), metrics within half a second: every read polls until a deadline."""

from __future__ import annotations

import base64
import functools
import json
import re
import sqlite3
import statistics
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

CLIENT_KEY = "rk-client-3f9b1c7e5a2d40680c"
ADMIN_KEY = "rk-admin-8e1d6a4f2c9b70359d"
KEY_A = "rk-upstream-alpha-61c0e2b94d5f"
KEY_B = "rk-upstream-bravo-a7f53d18e6c2"
SECRETS = (CLIENT_KEY, ADMIN_KEY, KEY_A, KEY_B)
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
SDK_TIMEOUT = 15.0
RECORD_WAIT = 10.0  # seconds a record may take to show (the writer batches every second)
PROTOCOLS = ("chat", "responses", "anthropic", "gemini")
MODEL_PREFIX = {"chat": "chat", "responses": "resp", "anthropic": "claude", "gemini": "gem"}
PROTOCOL_LABEL = {
    "chat": "openai-chat",
    "responses": "openai-responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
}
POOL = {"chat": "chat", "responses": "responses", "anthropic": "claude", "gemini": "gemini"}
LONG_REPLY = " ".join(f"word{i}" for i in range(60))
T = TypeVar("T")


def small_png() -> bytes:
    """A real 8x8 RGB PNG whose pixels vary, so its base64 is a distinctive string."""
    raw = b"".join(
        b"\x00" + bytes((x * 31 + y * 7) % 256 for x in range(8) for _ in range(3))
        for y in range(8)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


PNG_BASE64 = base64.b64encode(small_png()).decode()
PROMPT_SECRET = "sk-live-abcdef123456-prompt-log"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=KEY_A) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=KEY_B) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def config_dir(fake_a, fake_b, tmp_path_factory) -> Path:
    """A Chat pool with two instances (one on each fake), a Responses, an Anthropic and a
    Gemini pool, and echo; the model name's prefix picks the pool."""
    a, b = fake_a.url, fake_b.url
    return write_config(
        tmp_path_factory.mktemp("records-config"),
        {
            "providers.yaml": f"""
                providers:
                  echo: {{ type: echo }}
                  chat:
                    type: openai-custom
                    health: {{ max_errors: 100 }}
                    instances:
                      - {{ id: chat-1, base_url: {a}/v1, api_key: {KEY_A} }}
                      - {{ id: chat-2, base_url: {b}/v1, api_key: {KEY_B} }}
                  responses:
                    type: openaiResponses-custom
                    health: {{ max_errors: 100 }}
                    instances:
                      - {{ id: responses-1, base_url: {a}/v1, api_key: {KEY_A} }}
                  claude:
                    type: claude-custom
                    health: {{ max_errors: 100 }}
                    instances:
                      - {{ id: claude-1, base_url: {b}, api_key: {KEY_B} }}
                  gemini:
                    type: gemini-api
                    health: {{ max_errors: 100 }}
                    instances:
                      - {{ id: gemini-1, base_url: {a}/v1beta, api_key: {KEY_A} }}
            """,
            "routes.yaml": """
                default: echo
                routes:
                  - { name: chats, match: { model: "chat-*" }, to: chat }
                  - { name: responses, match: { model: "resp-*" }, to: responses }
                  - { name: claudes, match: { model: "claude-*" }, to: claude }
                  - { name: geminis, match: { model: "gem-*" }, to: gemini }
                  - { name: echoes, match: { model: "echo-*" }, to: echo }
            """,
        },
    )


def start(config_dir: Path, state_dir: Path, **env: str) -> Gateway:
    """`router serve --workers 2` with the client and admin keys and a state dir of the
    test's own (so the database outlives the gateway's stop)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    environment = {
        "REQUIRED_API_KEY": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ROUTER_STATE_DIR": str(state_dir),
        **env,
    }
    gateway = Gateway(config_dir, env=environment, workers=2)
    gateway.database = state_dir / "router.db"  # type: ignore[attr-defined]
    return gateway


@pytest.fixture(scope="module")
def main(config_dir, tmp_path_factory) -> Iterator[Gateway]:
    """The shared gateway: text access log, prompt log to a file, admin-only /metrics."""
    root = tmp_path_factory.mktemp("records-main")
    prompts = root / "logs" / "prompts.log"
    gateway = start(
        config_dir,
        root / "state",
        PROMPT_LOG_MODE="file",
        PROMPT_LOG_FILENAME=str(prompts),
    )
    gateway.prompts = prompts  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def json_public(config_dir, tmp_path_factory) -> Iterator[Gateway]:
    """JSON access log, /metrics open without a key."""
    root = tmp_path_factory.mktemp("records-json")
    gateway = start(config_dir, root / "state", ROUTER_LOG_FORMAT="json", ROUTER_METRICS_PUBLIC="1")
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh_fakes(fake_a, fake_b) -> None:
    fake_a.reset()
    fake_b.reset()


# --- helpers -------------------------------------------------------------------------------


@functools.cache
def http() -> httpx.Client:
    return httpx.Client(timeout=10)


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = RECORD_WAIT) -> T:
    """`fetch()` until `done` says yes or the deadline passes; the last value either way
    (the caller asserts on it, so a timeout shows what was there)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def api(gateway: Gateway, path: str, **params: Any) -> Any:
    response = http().get(gateway.url + path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def recent(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    return api(gateway, "/api/requests", limit=1000, **params)["requests"]


def records_of(gateway: Gateway, model: str, count: int) -> list[dict[str, Any]]:
    """The records of `model` (as the client named it), once `count` have arrived."""
    found = poll(
        lambda: [r for r in recent(gateway) if r["model"] == model],
        lambda rs: len(rs) >= count,
    )
    assert len(found) == count, found
    return found


def metrics_text(gateway: Gateway) -> str:
    response = http().get(gateway.url + "/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(text: str, name: str) -> float:
    return sum(value for _, value in samples(text, name))


def bad_json(gateway: Gateway, path: str = "/v1/chat/completions") -> httpx.Response:
    """A body that is not JSON: refused with 400 before any routing."""
    headers = {**CLIENT, "content-type": "application/json"}
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
    return http().post(gateway.url + path, headers=headers, content=b'{"model": "x", "messages": [')


@dataclass(frozen=True)
class Usage:
    input: int
    output: int


@dataclass
class Clients:
    """The four official SDKs pointed at one gateway: no retries, bounded in time."""

    gateway: Gateway
    openai: openai.OpenAI = field(init=False)
    anthropic: anthropic.Anthropic = field(init=False)
    genai: genai.Client = field(init=False)

    def __post_init__(self) -> None:
        url = self.gateway.url
        self.openai = openai.OpenAI(
            base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=SDK_TIMEOUT
        )
        self.anthropic = anthropic.Anthropic(
            base_url=url, api_key=CLIENT_KEY, max_retries=0, timeout=SDK_TIMEOUT
        )
        options = genai_types.HttpOptions(
            base_url=url,
            timeout=int(SDK_TIMEOUT * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        )
        self.genai = genai.Client(api_key=CLIENT_KEY, http_options=options)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()
        self.genai.close()

    def call(self, protocol: str, stream: bool, model: str, text: str) -> Usage:
        """One request; the usage as the SDK reported it (a stream: its final usage)."""
        usage, answer = getattr(self, f"_{protocol}")(stream, model, text)
        assert answer.startswith("echo: "), answer  # the fake's reply came through
        return usage

    def _chat(self, stream: bool, model: str, text: str) -> tuple[Usage, str]:
        messages = [{"role": "user", "content": text}]
        if not stream:
            answer = self.openai.chat.completions.create(model=model, messages=messages)
            assert answer.usage is not None
            usage = Usage(answer.usage.prompt_tokens, answer.usage.completion_tokens)
            return usage, answer.choices[0].message.content or ""
        chunks = list(
            self.openai.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        [final] = [c.usage for c in chunks if c.usage is not None]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return Usage(final.prompt_tokens, final.completion_tokens), content

    def _responses(self, stream: bool, model: str, text: str) -> tuple[Usage, str]:
        if not stream:
            answer = self.openai.responses.create(model=model, input=text)
            assert answer.usage is not None
            return Usage(answer.usage.input_tokens, answer.usage.output_tokens), answer.output_text
        events = list(self.openai.responses.create(model=model, input=text, stream=True))
        [done] = [e for e in events if e.type == "response.completed"]
        assert done.response.usage is not None
        usage = done.response.usage
        return Usage(usage.input_tokens, usage.output_tokens), done.response.output_text

    def _anthropic(self, stream: bool, model: str, text: str) -> tuple[Usage, str]:
        messages = [{"role": "user", "content": text}]
        if not stream:
            answer = self.anthropic.messages.create(model=model, max_tokens=512, messages=messages)
            content = "".join(b.text for b in answer.content if b.type == "text")
            return Usage(answer.usage.input_tokens, answer.usage.output_tokens), content
        events = list(
            self.anthropic.messages.create(
                model=model, max_tokens=512, messages=messages, stream=True
            )
        )
        [start] = [e for e in events if e.type == "message_start"]
        [delta] = [e for e in events if e.type == "message_delta"]
        content = "".join(
            e.delta.text
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        tokens_in = delta.usage.input_tokens
        if tokens_in is None:
            tokens_in = start.message.usage.input_tokens
        return Usage(tokens_in, delta.usage.output_tokens), content

    def _gemini(self, stream: bool, model: str, text: str) -> tuple[Usage, str]:
        if not stream:
            answer = self.genai.models.generate_content(model=model, contents=text)
            meta = answer.usage_metadata
            assert meta is not None
            usage = Usage(meta.prompt_token_count or 0, meta.candidates_token_count or 0)
            return usage, answer.text or ""
        chunks = list(self.genai.models.generate_content_stream(model=model, contents=text))
        metas = [c.usage_metadata for c in chunks if c.usage_metadata is not None]
        assert metas, chunks
        usage = Usage(metas[-1].prompt_token_count or 0, metas[-1].candidates_token_count or 0)
        return usage, "".join(c.text or "" for c in chunks)


def kind_model(protocol: str, stream: bool) -> str:
    return f"{MODEL_PREFIX[protocol]}-{'stream' if stream else 'plain'}"


# --- 1. forty mixed requests ---------------------------------------------------------------


@dataclass
class Mixed:
    gateway: Gateway
    usage: dict[str, list[Usage]] = field(default_factory=dict)  # by model, successes only
    statuses: Counter[str] = field(default_factory=Counter)
    by_protocol: Counter[str] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


@pytest.fixture(scope="module")
def mixed(config_dir, fake_a, fake_b, tmp_path_factory) -> Iterator[Mixed]:
    """A gateway of its own that gets exactly 40 requests: the four client protocols,
    each streamed and not, on four pools; one failover (chat-1 answers 500), one invalid
    JSON body (400), one client that leaves mid-stream (499)."""
    gateway = start(config_dir, tmp_path_factory.mktemp("records-mixed") / "state")
    clients: Clients | None = None
    mixed = Mixed(gateway)
    try:
        clients = Clients(gateway)
        fake_a.reset()
        fake_b.reset()
        # the first Chat request of either worker goes to chat-1 (never-used instances go
        # in config order): it fails with 500 and moves on to chat-2
        fake_a.script({"status": 500, "model": "chat-failover"})
        raw = clients.openai.chat.completions.with_raw_response.create(
            model="chat-failover", messages=[{"role": "user", "content": "fail me over"}]
        )
        assert raw.headers.get("x-router-attempts") == "2", dict(raw.headers)
        answer = raw.parse()
        assert answer.usage is not None
        mixed.usage["chat-failover"] = [
            Usage(answer.usage.prompt_tokens, answer.usage.completion_tokens)
        ]
        mixed.statuses["200"] += 1
        mixed.by_protocol["openai-chat"] += 1

        # a client that reads the first chunk of a slow stream and goes away
        slow = {"delay_between_events": 0.3, "reply": LONG_REPLY, "model": "chat-gone"}
        fake_a.script(slow)
        fake_b.script(slow)
        stream = clients.openai.chat.completions.create(
            model="chat-gone",
            messages=[{"role": "user", "content": "a long one please"}],
            stream=True,
        )
        next(iter(stream))
        stream.close()
        mixed.statuses["499"] += 1
        mixed.by_protocol["openai-chat"] += 1

        response = bad_json(gateway)
        assert response.status_code == 400, response.text
        mixed.statuses["400"] += 1
        mixed.by_protocol["openai-chat"] += 1

        kinds = [(p, s) for p in PROTOCOLS for s in (False, True)]
        sdks = clients

        def one(number: int) -> tuple[str, str, Usage]:
            protocol, stream_it = kinds[number % len(kinds)]
            model = kind_model(protocol, stream_it)
            text = f"request {number} " + "more words " * number
            return protocol, model, sdks.call(protocol, stream_it, model, text)

        # four at a time: concurrent connections are what spreads them over both workers
        with ThreadPoolExecutor(4) as pool:
            for protocol, model, usage in pool.map(one, range(37)):
                mixed.usage.setdefault(model, []).append(usage)
                mixed.statuses["200"] += 1
                mixed.by_protocol[PROTOCOL_LABEL[protocol]] += 1
        assert mixed.sent == 40
        yield mixed
    finally:
        if clients is not None:
            clients.close()
        gateway.stop()


def test_metrics_count_every_request_once(mixed: Mixed) -> None:
    gateway = mixed.gateway
    text = poll(
        lambda: metrics_text(gateway),
        lambda t: total(t, "router_requests_total") >= mixed.sent,
    )
    requests = samples(text, "router_requests_total")
    assert sum(value for _, value in requests) == 40
    by_status: Counter[str] = Counter()
    by_protocol: Counter[str] = Counter()
    for labels, value in requests:
        by_status[labels["status"]] += int(value)
        by_protocol[labels["protocol"]] += int(value)
    assert by_status == Counter({"200": 38, "400": 1, "499": 1})
    assert by_status == mixed.statuses
    assert by_protocol == mixed.by_protocol
    # the invalid body never reached a route or an upstream
    [(labels, value)] = [(labels, v) for labels, v in requests if labels["status"] == "400"]
    assert (labels["route"], labels["provider"], value) == ("none", "none", 1)

    attempts = samples(text, "router_upstream_attempts_total")
    failed = {
        (labels["provider"], labels["instance"], labels["outcome"]): value
        for labels, value in attempts
        if labels["outcome"] != "ok"
    }
    assert failed == {("chat", "chat-1", "api_error"): 1}
    # every answered request had one good attempt (the client that left too); the
    # invalid body had none
    assert sum(v for labels, v in attempts if labels["outcome"] == "ok") == 39
    assert total(text, "router_records_dropped_total") == 0


def test_usage_totals_are_what_the_sdks_reported(mixed: Mixed) -> None:
    every = [u for usages in mixed.usage.values() for u in usages]
    assert len(every) == 38
    document = poll(
        lambda: api(mixed.gateway, "/api/usage"),
        lambda d: d["totals"]["requests"] >= mixed.sent,
    )
    totals = document["totals"]
    assert totals["requests"] == 40
    assert totals["input_tokens"] == sum(u.input for u in every) > 0
    assert totals["output_tokens"] == sum(u.output for u in every) > 0
    assert totals["errors"] == {"4xx": 1, "5xx": 0, "cancelled": 1}
    assert totals["estimated_requests"] == 0  # every upstream reported its usage
    # and model by model
    rows = api(mixed.gateway, "/api/usage", group_by="model")["rows"]
    by_model = {row["model"]: row for row in rows}
    for model, usages in mixed.usage.items():
        row = by_model[model]
        assert row["requests"] == len(usages), model
        assert row["input_tokens"] == sum(u.input for u in usages), model
        assert row["output_tokens"] == sum(u.output for u in usages), model


def test_requests_list_every_record(mixed: Mixed) -> None:
    records = poll(lambda: recent(mixed.gateway), lambda rs: len(rs) >= mixed.sent)
    assert len(records) == 40
    assert Counter(str(r["status"]) for r in records) == mixed.statuses
    assert all(r["key"] == "REQUIRED_API_KEY" for r in records)

    [failover] = [r for r in records if r["model"] == "chat-failover"]
    first, second = failover["attempts"]
    assert (first["instance"], first["status"], first["error"]) == ("chat-1", 500, "api_error")
    assert (second["instance"], second["status"], second["error"]) == ("chat-2", 200, None)
    assert (failover["status"], failover["pool"], failover["instance"]) == (200, "chat", "chat-2")

    [gone] = [r for r in records if r["model"] == "chat-gone"]
    assert gone["status"] == 499 and gone["stream"] is True
    assert (gone["input_tokens"], gone["output_tokens"]) == (0, 0)

    [bad] = [r for r in records if r["status"] == 400]
    assert bad["model"] is None and bad["route"] is None and bad["attempts"] == []
    assert bad["protocol"] == "openai-chat"

    for model, usages in mixed.usage.items():
        mine = [r for r in records if r["model"] == model]
        assert len(mine) == len(usages), model
        assert sorted((r["input_tokens"], r["output_tokens"]) for r in mine) == sorted(
            (u.input, u.output) for u in usages
        )
        protocol = next(p for p in PROTOCOLS if model.startswith(MODEL_PREFIX[p] + "-"))
        for record in mine:
            assert record["protocol"] == PROTOCOL_LABEL[protocol]
            assert record["pool"] == POOL[protocol]
            assert record["stream"] is model.endswith("-stream")
            assert record["estimated"] is False


# --- 2. SIGTERM flushes --------------------------------------------------------------------


def test_sigterm_flushes_the_records(config_dir, tmp_path) -> None:
    """Records still in the sinks' buffers when SIGTERM comes are written before the
    workers exit (the writer batches only once a second)."""
    state = tmp_path / "state"
    gateway = start(config_dir, state)
    models = [f"echo-sigterm-{n}" if n % 2 else f"chat-sigterm-{n}" for n in range(8)]

    def one(number: int) -> None:
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers=CLIENT,
            json={
                "model": models[number],
                "messages": [{"role": "user", "content": f"flush {number}"}],
                "stream": number % 3 == 0,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text

    try:
        # concurrent connections, so both workers take some
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(len(models))))
        last_answer = time.monotonic()
    finally:
        stopping = time.monotonic()
        gateway.stop()  # SIGTERM to the process group, then wait for the exit
    assert stopping - last_answer < 1.0
    assert gateway.process.returncode is not None
    database = state / "router.db"
    assert database.exists()
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute("SELECT model, status FROM requests").fetchall()
    finally:
        connection.close()
    assert sorted(rows) == sorted((model, 200) for model in models)


# --- 3. a locked database delays nothing ---------------------------------------------------


def echo_latencies(gateway: Gateway, model: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=10) as client:
        for number in range(count):
            started = time.monotonic()
            response = client.post(
                gateway.url + "/v1/chat/completions",
                headers=CLIENT,
                json={"model": model, "messages": [{"role": "user", "content": f"n {number}"}]},
            )
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
    return latencies


def test_a_locked_database_delays_no_request(main: Gateway) -> None:
    baseline = echo_latencies(main, "echo-lock-baseline", 20)
    dropped_before = total(metrics_text(main), "router_records_dropped_total")
    lock = sqlite3.connect(main.database, timeout=5, isolation_level=None)  # type: ignore[attr-defined]
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock: the writer's batches must wait
        locked_at = time.monotonic()
        latencies = echo_latencies(main, "echo-locked", 20)
        assert time.monotonic() - locked_at < 1.5  # all sent while the lock was held
        time.sleep(max(0.0, 2.5 - (time.monotonic() - locked_at)))
        # the writer has had a round or two since: held back, while reads still work
        held_back = recent(main, model="echo-locked")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - locked_at)))
        lock.execute("ROLLBACK")
    finally:
        lock.close()
    assert held_back == []
    slowest = max(latencies)
    assert slowest < 0.5 + max(baseline), (latencies, baseline)
    assert statistics.median(latencies) < 3 * statistics.median(baseline) + 0.05, (
        latencies,
        baseline,
    )
    # once the lock is gone the records arrive (or, at worst, are counted as dropped)
    arrived = poll(
        lambda: recent(main, model="echo-locked"),
        lambda rs: len(rs) >= 20,
    )
    dropped = total(metrics_text(main), "router_records_dropped_total") - dropped_before
    assert len(arrived) + dropped == 20, (len(arrived), dropped)
    assert len(arrived) == 20  # a 3 s lock is within what the writer waits for


# --- 4. the prompt log ---------------------------------------------------------------------


def prompt_lines(gateway: Gateway) -> list[dict[str, Any]]:
    path: Path = gateway.prompts  # type: ignore[attr-defined]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_prompt_log_keeps_bodies_without_media_or_secrets(main: Gateway) -> None:
    clients = Clients(main)
    try:
        content = [
            {"type": "text", "text": "what is in this picture"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
        ]
        messages = [{"role": "user", "content": content}]
        metadata = {"api_key": PROMPT_SECRET}
        answer = clients.openai.chat.completions.create(
            model="chat-prompt-plain", messages=messages, metadata=metadata
        )
        assert "image: image/png" in (answer.choices[0].message.content or "")
        chunks = list(
            clients.openai.chat.completions.create(
                model="chat-prompt-stream",
                messages=messages,
                metadata=metadata,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "image: image/png" in streamed
    finally:
        clients.close()

    def mine(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in lines if e["model"] in ("chat-prompt-plain", "chat-prompt-stream")]

    entries = mine(poll(lambda: prompt_lines(main), lambda ls: len(mine(ls)) >= 2))
    assert sorted(e["model"] for e in entries) == ["chat-prompt-plain", "chat-prompt-stream"]
    for entry in entries:
        assert entry["status"] == 200 and entry["protocol"] == "openai-chat"
        request, upstream = entry["request"], entry["upstream"]
        assert request["model"] == entry["model"]
        assert request["messages"][0]["content"][0]["text"] == "what is in this picture"
        assert upstream is not None and upstream["model"] == entry["model"]
        assert request["metadata"]["api_key"] == "***"
        image = request["messages"][0]["content"][1]["image_url"]["url"]
        assert image.startswith("<image/png") and PNG_BASE64 not in image
        assert "authorization" not in entry["headers"]
    [plain] = [e for e in entries if e["model"] == "chat-prompt-plain"]
    [streamed_entry] = [e for e in entries if e["model"] == "chat-prompt-stream"]
    assert plain["answer"]["choices"][0]["message"]["content"] == answer.choices[0].message.content
    assert streamed_entry["answer"]["text"] == streamed
    text = main.prompts.read_text()  # type: ignore[attr-defined]
    assert PNG_BASE64 not in text
    assert PNG_BASE64[:40] not in text  # not even a piece of it
    assert PROMPT_SECRET not in text
    for secret in SECRETS:
        assert secret not in text


LOGIN_SCHEMA = {
    "type": "object",
    "properties": {"user": {"type": "string"}, "password": {"type": "string"}},
    "required": ["user", "password"],
}


def tool_history(clients: Clients, protocol: str, model: str, secret: str) -> str:
    """A conversation in which the model called `login` with a `password` argument and
    the client sends the result back; the answer's text."""
    arguments = {"user": "bob", "password": secret}
    if protocol == "chat":
        answer = clients.openai.chat.completions.create(
            model=model,
            messages=[
                {"role": "user", "content": "log in"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "login", "arguments": json.dumps(arguments)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ],
            tools=[{"type": "function", "function": {"name": "login", "parameters": LOGIN_SCHEMA}}],
        )
        return answer.choices[0].message.content or ""
    if protocol == "responses":
        response = clients.openai.responses.create(
            model=model,
            input=[
                {"role": "user", "content": "log in"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "login",
                    "arguments": json.dumps(arguments),
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
            ],
            tools=[{"type": "function", "name": "login", "parameters": LOGIN_SCHEMA}],
        )
        return response.output_text
    if protocol == "anthropic":
        message = clients.anthropic.messages.create(
            model=model,
            max_tokens=256,
            messages=[
                {"role": "user", "content": "log in"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "login", "input": arguments}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
                },
            ],
            tools=[{"name": "login", "input_schema": LOGIN_SCHEMA}],
        )
        return "".join(b.text for b in message.content if b.type == "text")
    answer = clients.genai.models.generate_content(
        model=model,
        contents=[
            {"role": "user", "parts": [{"text": "log in"}]},
            {"role": "model", "parts": [{"function_call": {"name": "login", "args": arguments}}]},
            {
                "role": "user",
                "parts": [{"function_response": {"name": "login", "response": {"result": "ok"}}}],
            },
        ],
        config={
            "tools": [{"function_declarations": [{"name": "login", "parameters": LOGIN_SCHEMA}]}]
        },
    )
    return answer.text or ""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_prompt_log_hides_a_password_tool_argument(main: Gateway, protocol: str) -> None:
    """A tool call's `password` argument is a secret-looking key's value too, whether the
    protocol carries the arguments as an object (Anthropic, Gemini) or as a JSON string
    (Chat, Responses)."""
    model = f"{MODEL_PREFIX[protocol]}-prompt-tool"
    secret = f"hunter2-{protocol}-b41f7c"
    clients = Clients(main)
    try:
        answer = tool_history(clients, protocol, model, secret)
    finally:
        clients.close()
    assert answer.startswith("tool results: login=ok"), answer  # the history was taken
    entries = poll(lambda: [e for e in prompt_lines(main) if e["model"] == model], bool, timeout=5)
    assert len(entries) == 1, entries
    assert entries[0]["request"] is not None and entries[0]["upstream"] is not None
    text = main.prompts.read_text()  # type: ignore[attr-defined]
    assert secret not in text


# --- 5. no secret anywhere -----------------------------------------------------------------


def test_no_key_reaches_the_store_the_metrics_the_log_or_the_api(main: Gateway, fake_a, fake_b):
    clients = Clients(main)
    try:
        for protocol in PROTOCOLS:
            for stream in (False, True):
                clients.call(protocol, stream, f"{MODEL_PREFIX[protocol]}-secret", "no secrets")
        # failures: their upstream error messages go to the log and the attempts
        failing = {"status": 500, "model": "chat-secret-fails"}
        fake_a.script(failing)
        fake_b.script(failing)
        with pytest.raises(openai.InternalServerError):
            clients.openai.chat.completions.create(
                model="chat-secret-fails", messages=[{"role": "user", "content": "fail"}]
            )
        fake_b.script({"status": 401, "model": "claude-secret-denied"})
        with pytest.raises(anthropic.APIStatusError):
            clients.anthropic.messages.create(
                model="claude-secret-denied",
                max_tokens=64,
                messages=[{"role": "user", "content": "denied"}],
            )
    finally:
        clients.close()
    assert bad_json(main).status_code == 400
    unauthorised = http().post(
        main.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}-wrong"},
        json={"model": "echo-secret-wrong-key", "messages": [{"role": "user", "content": "x"}]},
    )
    assert unauthorised.status_code == 401
    records_of(main, "chat-secret-fails", 1)
    records_of(main, "claude-secret-denied", 1)
    records_of(main, "gem-secret", 2)

    listing = http().get(main.url + "/api/requests", params={"limit": 1000}, headers=ADMIN)
    assert listing.status_code == 200
    assert "chat-secret-fails" in listing.text

    def claude_failed(text: str) -> bool:
        return any(
            labels["instance"] == "claude-1" and labels["outcome"] != "ok"
            for labels, _ in samples(text, "router_upstream_attempts_total")
        )

    metrics = poll(lambda: metrics_text(main), claude_failed, timeout=5)
    assert claude_failed(metrics)  # the failures are in these metrics
    log = poll(main.log, lambda text: "chat-secret-fails" in text, timeout=5)
    assert "chat-secret-fails" in log  # the access log wrote it
    database: Path = main.database  # type: ignore[attr-defined]

    def stored_bytes() -> bytes:
        # a checkpoint between the two reads can move the newest pages out of the WAL
        # before the file is read: read again until the records are seen
        return b"".join(
            path.read_bytes()
            for path in (database, database.with_name("router.db-wal"))
            if path.exists()
        )

    stored = poll(stored_bytes, lambda data: b"chat-secret-fails" in data, timeout=5)
    assert b"chat-secret-fails" in stored  # the records are in these bytes
    prompts = main.prompts.read_text()  # type: ignore[attr-defined]
    for secret in SECRETS:
        assert secret not in listing.text, secret
        assert secret not in metrics, secret
        assert secret not in log, secret
        assert secret.encode() not in stored, secret
        assert secret not in prompts, secret


# --- 6. the access log ---------------------------------------------------------------------


def access_lines(gateway: Gateway, request_id: str) -> list[str]:
    return [line for line in gateway.log().splitlines() if request_id in line]


def test_the_access_log_has_one_line_per_request(main: Gateway) -> None:
    clients = Clients(main)
    try:
        usage = clients.call("chat", True, "chat-access-text", "log me")
        clients.call("anthropic", False, "claude-access-text", "log me too")
    finally:
        clients.close()
    refused_before = len(recent(main, status=400, protocol="anthropic"))
    assert bad_json(main, "/v1/messages").status_code == 400
    [chat] = records_of(main, "chat-access-text", 1)
    [claude] = records_of(main, "claude-access-text", 1)
    line_of = {}
    for record in (chat, claude):
        lines = poll(lambda r=record: access_lines(main, r["request_id"]), bool, timeout=5)
        assert len(lines) == 1, lines
        line_of[record["request_id"]] = lines[0]
    pattern = re.compile(
        r"^\S+Z (?P<client>\S+) (?P<key>\S+) \"POST (?P<path>\S+)\" (?P<protocol>\S+) "
        r"model=(?P<model>\S+) route=(?P<route>\S+) upstream=(?P<upstream>\S+) "
        r"attempts=(?P<attempts>\d+) status=(?P<status>\d+) (?P<duration>[\d.]+)ms "
        r"tokens=(?P<tokens>\S+) id=(?P<id>\w+)$"
    )
    found = pattern.match(line_of[chat["request_id"]])
    assert found, line_of[chat["request_id"]]
    assert found.group("client") == "127.0.0.1"
    assert found.group("key") == "REQUIRED_API_KEY"
    assert found.group("path") == "/v1/chat/completions"
    assert found.group("protocol") == "openai-chat"
    assert found.group("model") == "chat-access-text"
    assert found.group("route") == "chats"
    assert found.group("upstream") == f"chat/{chat['instance']}"
    assert found.group("attempts") == "1" and found.group("status") == "200"
    assert float(found.group("duration")) >= 0
    assert found.group("tokens") == f"{usage.input}/{usage.output}"
    found = pattern.match(line_of[claude["request_id"]])
    assert found, line_of[claude["request_id"]]
    assert (found.group("path"), found.group("upstream")) == ("/v1/messages", "claude/claude-1")
    # the refused body: no model, route or upstream yet
    refused = poll(
        lambda: recent(main, status=400, protocol="anthropic"),
        lambda rs: len(rs) > refused_before,
    )
    assert len(refused) == refused_before + 1
    newest = refused[0]
    [line] = poll(lambda: access_lines(main, newest["request_id"]), bool, timeout=5)
    found = pattern.match(line)
    assert found, line
    assert (found.group("model"), found.group("route"), found.group("upstream")) == ("-", "-", "-")
    assert (found.group("status"), found.group("attempts"), found.group("tokens")) == (
        "400",
        "0",
        "-",
    )


def test_the_access_log_in_json(json_public: Gateway) -> None:
    clients = Clients(json_public)
    try:
        usages = {
            protocol: clients.call(protocol, False, f"{MODEL_PREFIX[protocol]}-json", "as json")
            for protocol in PROTOCOLS
        }
    finally:
        clients.close()
    for protocol, usage in usages.items():
        [record] = records_of(json_public, f"{MODEL_PREFIX[protocol]}-json", 1)
        lines = poll(lambda r=record: access_lines(json_public, r["request_id"]), bool, timeout=5)
        assert len(lines) == 1, lines
        entry = json.loads(lines[0])
        assert entry["id"] == record["request_id"]
        assert entry["client"] == "127.0.0.1"
        assert entry["key"] == "REQUIRED_API_KEY"
        assert entry["path"] == record["path"]
        assert entry["protocol"] == PROTOCOL_LABEL[protocol]
        assert entry["model"] == f"{MODEL_PREFIX[protocol]}-json"
        assert entry["route"] == record["route"]
        assert (entry["provider"], entry["instance"]) == (POOL[protocol], record["instance"])
        assert entry["attempts"] == 1 and entry["status"] == 200
        assert entry["duration_ms"] >= 0
        assert (entry["input_tokens"], entry["output_tokens"]) == (usage.input, usage.output)
    # every access line of this gateway is JSON, one for each request it recorded

    def logged_and_recorded() -> tuple[list[str], list[str]]:
        lines = [line for line in json_public.log().splitlines() if '"protocol"' in line]
        logged = [json.loads(line)["id"] for line in lines]
        return sorted(logged), sorted(r["request_id"] for r in recent(json_public))

    logged, recorded = poll(logged_and_recorded, lambda v: v[0] == v[1], timeout=5)
    assert len(logged) >= 4
    assert logged == recorded


def test_no_access_log_when_turned_off(config_dir, tmp_path) -> None:
    gateway = start(config_dir, tmp_path / "state", ROUTER_ACCESS_LOG="0")
    try:
        clients = Clients(gateway)
        try:
            clients.call("chat", False, "chat-quiet", "say nothing")
            clients.call("gemini", True, "gem-quiet", "say nothing")
        finally:
            clients.close()
        records = records_of(gateway, "chat-quiet", 1) + records_of(gateway, "gem-quiet", 1)
        time.sleep(0.5)  # the access log would have written long since (every 0.1 s)
        log = gateway.log()
        for record in records:
            assert record["request_id"] not in log
        assert "chat-quiet" not in log and "gem-quiet" not in log
    finally:
        gateway.stop()


# --- 7. the usage and requests API ---------------------------------------------------------


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    return error


def test_usage_grouped_and_by_pool(main: Gateway) -> None:
    clients = Clients(main)
    sent: dict[str, Usage] = {}
    try:
        for protocol in PROTOCOLS:
            model = f"{MODEL_PREFIX[protocol]}-usage"
            one = clients.call(protocol, False, model, "count me")
            two = clients.call(protocol, True, model, "count me again please")
            sent[protocol] = Usage(one.input + two.input, one.output + two.output)
    finally:
        clients.close()
    for protocol in PROTOCOLS:
        records_of(main, f"{MODEL_PREFIX[protocol]}-usage", 2)

    def row_for(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
        [row] = [r for r in rows if all(r.get(k) == v for k, v in keys.items())]
        return row

    today = datetime.now(UTC).date()
    for group in ("day", "key", "pool", "model", "protocol"):
        document = api(main, "/api/usage", group_by=group)
        assert document["group_by"] == [group]
        rows = document["rows"]
        assert rows and all(
            set(r) & {"day", "key", "pool", "instance", "model", "protocol"} == {group}
            for r in rows
        )
        assert sum(r["requests"] for r in rows) == document["totals"]["requests"]
        assert len({r[group] for r in rows}) == len(rows)
    by_key = api(main, "/api/usage", group_by="key")["rows"]
    # the key's name, never the key; None for requests no key let in (a wrong key)
    assert "REQUIRED_API_KEY" in {r["key"] for r in by_key}
    assert {r["key"] for r in by_key} <= {"REQUIRED_API_KEY", None}
    by_day = api(main, "/api/usage", group_by="day")["rows"]
    assert {r["day"] for r in by_day} <= {today.isoformat(), (today - timedelta(1)).isoformat()}
    by_protocol = api(main, "/api/usage", group_by="protocol")["rows"]
    assert {r["protocol"] for r in by_protocol} >= set(PROTOCOL_LABEL.values())

    everything = api(main, "/api/usage", group_by="day,key,pool,model,protocol")
    assert everything["group_by"] == ["day", "key", "pool", "model", "protocol"]
    for protocol in PROTOCOLS:
        model = f"{MODEL_PREFIX[protocol]}-usage"
        row = row_for(everything["rows"], model=model)
        assert row["key"] == "REQUIRED_API_KEY" and row["pool"] == POOL[protocol]
        assert row["protocol"] == PROTOCOL_LABEL[protocol]
        assert row["requests"] == 2
        assert (row["input_tokens"], row["output_tokens"]) == (
            sent[protocol].input,
            sent[protocol].output,
        )

    # /api/usage/{pool} counts that pool only, the same as its group_by=pool row
    def pool_views() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return (
            api(main, "/api/usage", group_by="pool"),
            api(main, "/api/usage/claude"),
            api(main, "/api/usage/claude", group_by="pool,model"),
        )

    overall, claude, claude_models = poll(
        pool_views,
        lambda v: row_for(v[0]["rows"], pool="claude")["requests"] == v[1]["totals"]["requests"],
        timeout=5,
    )
    claude_row = row_for(overall["rows"], pool="claude")
    for name in ("requests", "input_tokens", "output_tokens", "errors"):
        assert claude["totals"][name] == claude_row[name], name
    assert claude["totals"]["requests"] < overall["totals"]["requests"]
    assert {r["pool"] for r in claude_models["rows"]} == {"claude"}
    assert row_for(claude_models["rows"], model="claude-usage")["requests"] == 2
    assert not [r for r in claude_models["rows"] if r["model"] == "chat-usage"]


def test_usage_dates(main: Gateway) -> None:
    clients = Clients(main)
    try:
        clients.call("chat", False, "chat-dates", "when")
    finally:
        clients.close()
    records_of(main, "chat-dates", 1)
    today = datetime.now(UTC).date()
    day = timedelta(days=1)
    yesterday, tomorrow = (today - day).isoformat(), (today + day).isoformat()

    def requests_between(**params: str) -> int:
        rows = api(main, "/api/usage", group_by="model", **params)["rows"]
        return sum(r["requests"] for r in rows if r["model"] == "chat-dates")

    assert requests_between(**{"from": yesterday, "to": tomorrow}) == 1
    assert requests_between(**{"from": yesterday}) == 1  # to: today
    assert requests_between(to=(today - 2 * day).isoformat()) == 0
    assert requests_between(**{"from": tomorrow, "to": (today + 2 * day).isoformat()}) == 0
    # RFC 3339 times stand for their UTC day
    assert (
        requests_between(**{"from": f"{yesterday}T00:00:00Z", "to": f"{tomorrow}T23:59:59+00:00"})
        == 1
    )
    assert requests_between(to=f"{(today - 2 * day).isoformat()}T12:00:00Z") == 0
    document = api(
        main,
        "/api/usage",
        **{"from": "2026-01-01T23:30:00-05:00", "to": "2026-01-03T01:00:00+02:00"},
    )
    assert (document["from"], document["to"]) == ("2026-01-02", "2026-01-02")
    document = api(main, "/api/usage", **{"from": "2026-02-01", "to": "2026-02-03"})
    assert (document["from"], document["to"]) == ("2026-02-01", "2026-02-03")

    def get(path: str, **params: str) -> httpx.Response:
        return http().get(main.url + path, params=params, headers=ADMIN)

    assert error_of(get("/api/usage", group_by="pool,colour"))["param"] == "group_by"
    assert error_of(get("/api/usage/claude", group_by="nonsense"))["param"] == "group_by"
    assert error_of(get("/api/usage", **{"from": "2026-13-40"}))["param"] == "from"
    assert error_of(get("/api/usage", to="yesterday"))["param"] == "to"
    assert error_of(get("/api/usage", to="2026-01-01T10:00:00"))["param"] == "to"  # no zone
    assert error_of(get("/api/usage", **{"from": tomorrow, "to": yesterday}))["param"] == "from"


def test_the_operator_endpoints_take_the_admin_key(main: Gateway, json_public: Gateway) -> None:
    for path in ("/metrics", "/api/usage", "/api/usage/chat", "/api/requests"):
        anonymous = http().get(main.url + path)
        assert anonymous.status_code in (401, 403), (path, anonymous.text)
        error_of(anonymous, anonymous.status_code)
        client = http().get(main.url + path, headers=CLIENT)
        assert client.status_code in (401, 403), (path, client.text)
        assert http().get(main.url + path, headers=ADMIN).status_code == 200, path
    # ROUTER_METRICS_PUBLIC=1 opens /metrics, and only it
    clients = Clients(json_public)
    try:
        clients.call("gemini", False, "gem-public", "count me")
    finally:
        clients.close()
    text = poll(
        lambda: http().get(json_public.url + "/metrics").text,
        lambda t: any(
            labels["route"] == "geminis" for labels, _ in samples(t, "router_requests_total")
        ),
    )
    response = http().get(json_public.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert total(text, "router_requests_total") >= 1
    assert http().get(json_public.url + "/api/usage").status_code in (401, 403)


def test_requests_paging_and_filters(main: Gateway) -> None:
    clients = Clients(main)
    try:
        for number in range(5):
            clients.call("anthropic", number % 2 == 1, "claude-paging", f"page {number}")
        clients.call("chat", False, "chat-paging", "other pool")
    finally:
        clients.close()
    assert bad_json(main, "/v1/messages").status_code == 400
    records_of(main, "claude-paging", 5)
    records_of(main, "chat-paging", 1)

    def page(**params: Any) -> dict[str, Any]:
        return api(main, "/api/requests", **params)

    first = page(limit=3)
    assert len(first["requests"]) == 3
    assert first["next"] == first["requests"][-1]["id"]
    second = page(limit=3, before=first["next"])
    assert len(second["requests"]) == 3
    assert all(r["id"] < first["next"] for r in second["requests"])
    ids = [r["id"] for r in first["requests"] + second["requests"]]
    # the two pages are the six newest as of the first (later records get higher ids)
    six = page(limit=6, before=ids[0] + 1)["requests"]
    assert ids == sorted(ids, reverse=True) == [r["id"] for r in six]

    # the model filter is the upstream model (the same name here)
    mine = page(model="claude-paging")
    assert [r["model"] for r in mine["requests"]] == ["claude-paging"] * 5
    assert mine["next"] is None  # fewer than the limit: no further page
    streamed = page(model="claude-paging", limit=2)
    assert len(streamed["requests"]) == 2 and streamed["next"] is not None
    rest = page(model="claude-paging", limit=10, before=streamed["next"])
    assert len(rest["requests"]) == 3 and rest["next"] is None
    assert {r["id"] for r in streamed["requests"]} | {r["id"] for r in rest["requests"]} == {
        r["id"] for r in mine["requests"]
    }

    claude = page(pool="claude")["requests"]
    assert claude and all(r["pool"] == "claude" for r in claude)
    assert sum(r["model"] == "claude-paging" for r in claude) == 5
    assert not [r for r in claude if r["model"] == "chat-paging"]
    refused = page(status=400, protocol="anthropic")["requests"]
    assert refused and all(r["status"] == 400 for r in refused)
    assert all(r["protocol"] == "anthropic" and r["pool"] is None for r in refused)
    ok = page(status=200, pool="chat")["requests"]
    assert ok and all((r["status"], r["pool"]) == (200, "chat") for r in ok)
    assert any(r["model"] == "chat-paging" for r in ok)
    assert page(status=200, pool="claude", model="chat-paging")["requests"] == []

    def get(**params: str) -> httpx.Response:
        return http().get(main.url + "/api/requests", params=params, headers=ADMIN)

    assert error_of(get(limit="0"))["param"] == "limit"
    assert error_of(get(limit="1001"))["param"] == "limit"
    assert error_of(get(before="latest"))
    assert error_of(get(status="ok"))["param"] == "status"
