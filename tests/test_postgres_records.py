"""Records and usage in PostgreSQL (`ROUTER_DATABASE_URL`), with a real PostgreSQL from
Debian's packages (tests/postgres_server.py) and the real gateway (`router serve --workers
2`, the shipped config: every request answers from echo): records land there and not in
the embedded store; the usage API, the console and `/api/events` read them there; two
servers sharing one database show the usage of both; PostgreSQL stopped under load fails
no request, the records wait (held, then spilled to the embedded store) and every one of
them is in PostgreSQL once it is back, counted once.

Records reach PostgreSQL about a second after a request ends (the writer batches): every
read polls until a deadline. Every wait is bounded; servers are stopped on the way out."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import psycopg
import pytest

from router.protocols import ir
from router.records import postgres, store
from router.records.outcome import Attempt, Outcome
from router.records.postgres_reader import PostgresRecords
from router.records.postgres_writer import PostgresRecordStore
from router.records.spill import Spill
from tests.conftest import copy_shipped_config
from tests.gateway import Gateway
from tests.postgres_server import PASSWORD, PostgresServer, free_port, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

CLIENT_KEY = "rk-client-pg-5a0c9e17d3b2"
ADMIN_KEY = "rk-admin-pg-e24b8f06a1c9"
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
RECORD_WAIT = 15.0  # seconds a record may take to reach PostgreSQL (batches every second)
REPLAY_WAIT = 40.0  # after PostgreSQL is back: the writer's back-off (10 s) and the replay
T = TypeVar("T")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer.started() as started:
        yield started


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_shipped_config(tmp_path_factory.mktemp("pg-config"))


@contextlib.contextmanager
def gateway(config_dir: Path, url: str, workers: int = 2) -> Iterator[Gateway]:
    """`router serve` with its records in PostgreSQL at `url`, once every worker started
    (a SIGTERM while one is still starting can leave Granian waiting for it)."""
    environment = {
        "REQUIRED_API_KEY": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ROUTER_DATABASE_URL": url,
    }
    started = Gateway(config_dir, env=environment, workers=workers)
    try:
        text = poll(started.log, lambda log: log.count("Started worker-") >= workers, 20.0)
        assert text.count("Started worker-") >= workers, text
        yield started
    finally:
        started.stop()


# --- helpers -------------------------------------------------------------------------------


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = RECORD_WAIT) -> T:
    """`fetch()` until `done` says yes or the deadline passes; the last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def count(url: str) -> int:
    """Rows in `requests`; -1 before the first writer or reader made the schema."""
    try:
        return query(url, "SELECT count(*) FROM requests")[0][0]
    except psycopg.errors.UndefinedTable:
        return -1


def usage_sums(url: str) -> tuple[int, int, int]:
    """(requests, input tokens, output tokens) of `usage_daily`."""
    [row] = query(
        url,
        "SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(input_tokens), 0)::bigint, "
        "coalesce(sum(output_tokens), 0)::bigint FROM usage_daily",
    )
    return row


def request_sums(url: str) -> tuple[int, int, int]:
    """(rows, input tokens, output tokens) of `requests`."""
    [row] = query(
        url,
        "SELECT count(*), coalesce(sum(input_tokens), 0)::bigint, "
        "coalesce(sum(output_tokens), 0)::bigint FROM requests",
    )
    return row


def embedded(gateway: Gateway, sql: str) -> Any:
    """One value from the gateway's embedded store."""
    path = store.database_path(gateway.state_dir)
    return store.read(path, lambda connection: connection.execute(sql).fetchone()[0])


def admin_get(gateway: Gateway, path: str, **params: str) -> Any:
    answer = httpx.get(gateway.url + path, headers=ADMIN, params=params, timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json()


def totals(gateway: Gateway) -> dict[str, Any]:
    return admin_get(gateway, "/api/usage")["totals"]


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15
    )


def chat(client: httpx.Client, text: str) -> tuple[int, int]:
    """One chat completion through `client`; the (input, output) tokens it reported."""
    answer = client.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": text}]},
    )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def outcome(number: int, tokens: int) -> Outcome:
    return Outcome(
        id=f"request-{number}",
        time=time.time(),
        protocol="openai-chat",
        endpoint="/v1/chat/completions",
        path="/v1/chat/completions",
        client="127.0.0.1",
        key="team-a",
        model="demo",
        route=None,
        attempts=(Attempt("echo", "echo", "ir", "demo", 200, None, None, 0.001),),
        status=200,
        error=None,
        stream=False,
        ttfb=0.002,
        duration=0.003 * (number + 1),
        overhead=0.0005,
        usage=ir.Usage(input_tokens=tokens, output_tokens=2 * tokens),
        dropped=(),
        request_bytes=100,
        response_bytes=200,
    )


class Load:
    """Threads sending chat completions until stopped, each on a client of its own;
    what they got is counted (answers, failures, tokens)."""

    def __init__(self, gateway: Gateway, threads: int = 4) -> None:
        self.gateway = gateway
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.answered = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.gateway.url, headers=CLIENT, timeout=15) as client:
            sent = 0
            while not self.stopping.is_set():
                sent += 1
                try:
                    tokens = chat(client, f"load {number} {sent} " + "word " * (sent % 7))
                except (AssertionError, httpx.HTTPError) as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
                    continue
                with self.lock:
                    self.answered += 1
                    self.input_tokens += tokens[0]
                    self.output_tokens += tokens[1]
                time.sleep(0.005)


# --- tests ---------------------------------------------------------------------------------


def test_records_land_in_postgres_and_are_read_there(server, config_dir):
    url = server.create_database("records")
    with gateway(config_dir, url) as gw:
        client = sdk(gw)
        tokens_in = tokens_out = 0
        for n in range(5):
            answer = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": f"hello {n}"}]
            )
            assert answer.usage is not None
            tokens_in += answer.usage.prompt_tokens
            tokens_out += answer.usage.completion_tokens
        stream = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "a stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                tokens_in += chunk.usage.prompt_tokens
                tokens_out += chunk.usage.completion_tokens
        with httpx.Client(base_url=gw.url, headers=CLIENT, timeout=15) as http:
            answer_in, answer_out = chat(http, "over httpx")
            tokens_in, tokens_out = tokens_in + answer_in, tokens_out + answer_out

        assert poll(lambda: count(url), lambda n: n >= 7) == 7
        rows = query(url, "SELECT protocol, status, stream, key, pool, model FROM requests")
        assert {row[:2] for row in rows} == {("openai-chat", 200)}
        assert sorted(row[2] for row in rows) == [0] * 6 + [1]
        assert {row[3:] for row in rows} == {("REQUIRED_API_KEY", "echo", "demo")}
        assert usage_sums(url) == (7, tokens_in, tokens_out)
        assert query(url, "SELECT version FROM router_schema") == [(len(postgres.MIGRATIONS),)]
        # the embedded store has none of them: it holds runtime state and the spill only
        assert embedded(gw, "SELECT count(*) FROM requests") == 0
        assert embedded(gw, "SELECT count(*) FROM records_spill") == 0

        # the usage API answers from PostgreSQL...
        found = totals(gw)
        assert (found["requests"], found["input_tokens"]) == (7, tokens_in)
        assert found["output_tokens"] == tokens_out
        newest = admin_get(gw, "/api/requests", limit="3")
        ids = [row[0] for row in query(url, "SELECT id FROM requests ORDER BY id DESC LIMIT 3")]
        assert [record["id"] for record in newest["requests"]] == ids
        assert newest["requests"][0]["attempts"][0]["provider"] == "echo"
        # ...so what another server wrote there shows here too
        query(
            url,
            "INSERT INTO usage_daily (day, key, pool, instance, model, protocol, requests, "
            "input_tokens) VALUES (%s, 'elsewhere', 'far', '', 'far-model', 'anthropic', 5, 11)",
            (today(),),
        )
        by_key = {row["key"]: row for row in admin_get(gw, "/api/usage", group_by="key")["rows"]}
        assert by_key["elsewhere"]["requests"] == 5
        assert by_key["REQUIRED_API_KEY"]["requests"] == 7
        assert admin_get(gw, "/api/usage/far")["totals"]["input_tokens"] == 11
        page = httpx.get(gw.url + "/ui/usage?group_by=key", headers=ADMIN, timeout=15)
        assert page.status_code == 200 and "elsewhere" in page.text, page.text[:2000]
        for path in ("/ui/", "/ui/logs"):  # the dashboard's figures, the newest records
            page = httpx.get(gw.url + path, headers=ADMIN, timeout=15)
            assert page.status_code == 200, page.text[:2000]
            assert 'class="problem"' not in page.text, page.text[:4000]

        # the console's live events carry the records read there
        with httpx.Client(base_url=gw.url, headers=ADMIN, timeout=15) as events:
            opened = events.stream("GET", "/api/events")
            with opened as response:
                assert response.status_code == 200
                with httpx.Client(base_url=gw.url, headers=CLIENT, timeout=15) as http:
                    chat(http, "an event")
                [event] = [e for e in _events(response, 1) if e[0] == "request"]
        newest_id = query(url, "SELECT max(id) FROM requests")[0][0]
        assert event[1].startswith(f"{newest_id}.")

        assert PASSWORD not in gw.log()
        assert "router:***@127.0.0.1" in gw.log()  # the URL as the log shows it


def _events(response: httpx.Response, wanted: int, timeout: float = RECORD_WAIT) -> list:
    """(event, id) of the first `wanted` request events of an open `/api/events`."""
    found: list[tuple[str, str]] = []
    kind = ident = ""
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("id: "):
            ident = line.removeprefix("id: ")
        elif line == "" and kind:
            found.append((kind, ident))
            if sum(1 for e in found if e[0] == "request") >= wanted:
                break
            kind = ident = ""
        if time.monotonic() > deadline:
            break
    return found


def test_two_servers_share_usage(server, config_dir):
    url = server.create_database("shared")
    with gateway(config_dir, url) as first, gateway(config_dir, url) as second:
        sent = {first.url: 30, second.url: 20}

        def send(base: str, number: int) -> tuple[int, int]:
            with httpx.Client(base_url=base, headers=CLIENT, timeout=15) as http:
                return chat(http, f"shared {number} " + "x " * (number % 5))

        jobs = [(base, n) for base, times in sent.items() for n in range(times)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda job: send(*job), jobs))
        tokens_in = sum(a[0] for a in answers)
        tokens_out = sum(a[1] for a in answers)

        assert poll(lambda: count(url), lambda n: n >= 50) == 50
        for gw in (first, second):
            found = poll(lambda gw=gw: totals(gw), lambda t: t["requests"] >= 50)
            assert found["requests"] == 50
            assert (found["input_tokens"], found["output_tokens"]) == (tokens_in, tokens_out)
            listed = admin_get(gw, "/api/requests", limit="1000")["requests"]
            assert len(listed) == 50
            csv = httpx.get(gw.url + "/ui/usage.csv?group_by=key", headers=ADMIN, timeout=15)
            assert csv.status_code == 200, csv.text
            [header, row] = csv.text.strip().splitlines()
            assert dict(zip(header.split(","), row.split(","), strict=True))["requests"] == "50"
        assert usage_sums(url) == (50, tokens_in, tokens_out)
        # each server wrote its own records: two writers, one table
        writers = query(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'router-records'",
        )
        assert writers == [(2,)]


def test_postgres_stopped_under_load_loses_nothing(config_dir):
    with PostgresServer.started() as own, gateway(config_dir, own.create_database("faults")) as gw:
        url = own.url("faults")
        with Load(gw) as load:
            poll(lambda: load.answered, lambda n: n >= 50, 10.0)
            own.stop()
            stopped_at = load.answered
            # past the writer's hold (5 s) the records go to the embedded store's spill
            spilled = poll(
                lambda: embedded(gw, "SELECT coalesce(sum(records), 0) FROM records_spill"),
                lambda n: n > 0,
                20.0,
            )
            assert spilled > 0, gw.log()[-3000:]
            # reads fail cleanly while it is away: 503, never a hang
            away = httpx.get(gw.url + "/api/usage", headers=ADMIN, timeout=30)
            assert away.status_code == 503, away.text
            own.start()
            restarted_at = load.answered
            poll(lambda: load.answered, lambda n: n >= restarted_at + 50, 10.0)
        assert load.failures == []
        assert load.answered > restarted_at > stopped_at
        made = load.answered

        assert poll(lambda: count(url), lambda n: n >= made, REPLAY_WAIT) == made
        assert request_sums(url) == (made, load.input_tokens, load.output_tokens)
        assert usage_sums(url) == (made, load.input_tokens, load.output_tokens)
        distinct = query(url, "SELECT count(DISTINCT request_id) FROM requests")
        assert distinct == [(made,)]
        assert (
            poll(lambda: embedded(gw, "SELECT count(*) FROM records_spill"), lambda n: n == 0) == 0
        )
        found = totals(gw)
        assert (found["requests"], found["input_tokens"]) == (made, load.input_tokens)
        log = gw.log()
        warnings = [line for line in log.splitlines() if "unavailable (" in line]
        assert len(warnings) == 1, log[-3000:]  # one a minute at most
        assert "records: PostgreSQL at postgresql://router:***@" in warnings[0]
        assert PASSWORD not in log


def test_spill_outlives_the_writer_and_counts_once(server, tmp_path):
    """In process: a writer stopped while PostgreSQL is away leaves its records in the
    spill; the next one replays them; a batch replayed again is not counted again."""
    url = server.create_database("spill")
    database = store.prepare(tmp_path / "state")
    nowhere = f"postgresql://router:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    away = PostgresRecordStore(nowhere, lambda: None, database)
    away.interval = 0.1
    away.start()
    for number in range(40):
        away(outcome(number, tokens=number + 1))
    time.sleep(0.5)
    away.close()
    spill = Spill(database)
    kept = spill.oldest(100)
    assert sum(len(batch.rows) for _, batch in kept) == spill.records() == 40

    def replay() -> None:
        writer = PostgresRecordStore(url, lambda: None, database)
        writer.interval = 0.1
        writer.start()
        try:
            assert poll(spill.records, lambda n: n == 0) == 0
        finally:
            writer.close()

    replay()
    tokens = sum(range(1, 41))
    assert usage_sums(url) == (40, tokens, 2 * tokens)
    durations = query(url, "SELECT sum(duration) FROM usage_daily")[0][0]
    assert durations == pytest.approx(sum(0.003 * (n + 1) for n in range(40)))
    spill.put([batch for _, batch in kept])  # as after a crash between commit and delete
    replay()
    assert usage_sums(url) == (40, tokens, 2 * tokens)
    assert count(url) == 40
    spill.close()


def test_reads_need_no_writer_first(server):
    """A worker may read before any record was written: the schema is made then."""
    url = server.create_database(f"fresh_{uuid.uuid4().hex[:8]}")
    reader = PostgresRecords(url)
    try:
        found = reader.usage(today(), today(), ("pool",))
        assert found["rows"] == [] and found["totals"]["requests"] == 0
        assert reader.latest_request() == 0
        assert reader.requests(10, None, {}) == {"requests": [], "next": None}
    finally:
        reader.close()
