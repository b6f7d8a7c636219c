"""Fuzzing the client endpoints over HTTP (issue 14): hypothesis sends over 10,000
requests to one real gateway (the shipped config, answering from echo, with its OpenAI,
Anthropic and Gemini pools pointed at a fake upstream so that translation and
pass-through run too):

- each protocol's request shape with a random type in any field, deep nests, huge
  numbers, unicode, empty strings and nulls;
- a complete, valid body of each protocol with one value, at any depth, of another kind
  (the rest gets past the checks, so that value is the one that counts);
- junk bytes, truncated JSON, wrong content types, other methods, odd headers, query
  strings and provider prefixes, and the model lists.

No answer may be a 500 (nor a 5xx that no upstream explains), every error body must be
JSON in the endpoint's protocol, no request may hang, and the gateway must log no
traceback. The requests go out from a thread of their own, in order, while hypothesis
draws the next input, so that the two overlap (about a minute for the lot on the 2-core
machine); the price is no shrinking: a failure is reported with the exact request. What
the fuzzing found has a plain regression test at the end."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz_bodies as bodies
from tests import fuzz_shapes as shapes
from tests.conftest import copy_shipped_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

pytestmark = pytest.mark.timeout(240)

# 5xx an upstream explains: all attempts failed (502), a timeout (504), no usable instance
# or every one resting (503)
UPSTREAM_5XX = frozenset({502, 503, 504})
Headers = list[tuple[bytes, bytes]]


def fuzz(examples: int) -> Callable:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --- the oracle ------------------------------------------------------------------------


def _openai_shape(body: Any, status: int) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
    )


def _anthropic_shape(body: Any, status: int) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        body.get("type") == "error"
        and isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    )


def _gemini_shape(body: Any, status: int) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and error.get("code") == status
        and isinstance(error.get("message"), str)
        and isinstance(error.get("status"), str)
    )


SHAPES = {
    "openai-chat": _openai_shape,
    "openai-responses": _openai_shape,
    "anthropic": _anthropic_shape,
    "gemini": _gemini_shape,
}


def check(response: httpx.Response, protocol: str) -> None:
    """The fuzzing oracle: no 500, errors as JSON in `protocol`'s shape."""
    status = response.status_code
    where = f"{status}: {response.text[:300]!r}"
    assert status < 500 or status in UPSTREAM_5XX, where
    if status in (502, 504):  # an upstream's failure, so there was an upstream attempt
        assert int(response.headers.get("x-router-attempts", "0")) >= 1, where
    if status >= 400 and response.request.method != "HEAD":
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"error body is not JSON: {where}") from None
        assert SHAPES[protocol](body, status), f"not a {protocol} error: {where}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    protocol: str  # that of the errors expected
    content: bytes = b""
    headers: Headers | None = None
    query: bytes = b""

    def send(self, client: httpx.Client) -> httpx.Response:
        url = httpx.URL(client.base_url.join(self.path), query=self.query)
        return client.request(self.method, url, content=self.content or None, headers=self.headers)


class Sender:
    """Sends the requests handed to it one at a time, in order, from its own thread, and
    keeps the first failures with the request that caused each."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.sent = 0
        self.failures: list[tuple[Request, str]] = []
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="fuzz-sender", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        if not self.failures:  # after one, the verdict is known: the test ends quickly
            self._queue.put(request, timeout=60)

    def drain(self) -> list[tuple[Request, str]]:
        """Wait for what was submitted; the failures so far (and forget them)."""
        self._queue.join()
        failures, self.failures = self.failures, []
        return failures

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        while (request := self._queue.get()) is not None:
            try:
                check(request.send(self.client), request.protocol)
            except (AssertionError, httpx.HTTPError) as exc:
                if len(self.failures) < 10:
                    self.failures.append((request, f"{type(exc).__name__}: {exc}"))
            finally:
                self.sent += 1
                self._queue.task_done()
        self._queue.task_done()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {
        "OPENAI_API_KEY": "k",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "CLAUDE_API_KEY": "k",
        "CLAUDE_BASE_URL": fake.url,
        "GEMINI_API_KEY": "k",
        "GEMINI_API_BASE_URL": fake.url + "/v1beta",
        "CLAUDE_CODE_COMMAND": "/nonexistent/claude",  # never a real CLI run
    }
    config = copy_shipped_config(tmp_path_factory.mktemp("fuzz"))
    # the fake closes the connection on some inputs the real APIs refuse with a 400: that
    # must not take its pools out of rotation for the rest of the run
    providers = yaml.safe_load((config / "providers.yaml").read_text())
    for pool in providers["providers"].values():
        pool["health"] = {"max_errors": 1_000_000}
    (config / "providers.yaml").write_text(yaml.safe_dump(providers))
    with Gateway(config, env=env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def sender(gateway: Gateway) -> Iterator[Sender]:
    with httpx.Client(base_url=gateway.url, timeout=15.0) as client:
        sender = Sender(client)
        yield sender
        sender.close()


@pytest.fixture
def fuzzed(gateway: Gateway, fake: FakeUpstream, sender: Sender) -> Callable[..., None]:
    """Run a fuzzer of `examples` requests; then the verdict on them and the log."""
    fake.reset()  # the fake's request log would grow with every translated request
    logged = len(gateway.log())

    def run(fuzzer: Callable[[Sender], None], examples: int, upstream: bool = False) -> None:
        before = sender.sent
        fuzzer(sender)
        failures = sender.drain()
        assert not failures, "\n\n".join(f"{request!r}\n-> {why}" for request, why in failures)
        assert sender.sent - before >= examples
        if upstream:  # translation and pass-through ran too, not only the gateway's checks
            assert len(fake.requests()) >= 10
        log = gateway.log()[logged:]
        assert "Traceback" not in log, log[max(log.index("Traceback") - 1000, 0) :][:5000]

    return run


def query_bytes(pairs: list[tuple[str, str]]) -> bytes:
    return str(httpx.QueryParams(pairs)).encode()


def list_protocol(path: str, headers: Headers, query: bytes) -> str:
    """What a model list answers in: Gemini for its path or its kind of key, Anthropic
    with an anthropic-version header, else OpenAI (README, Client endpoints)."""
    names = {name.lower() for name, _ in headers}
    keys = {key for key, _ in httpx.QueryParams(query.decode("latin-1")).multi_items()}
    if "/v1beta/" in path or b"x-goog-api-key" in names or "key" in keys:
        return "gemini"
    if b"anthropic-version" in names:
        return "anthropic"
    return "openai-chat"


# --- the endpoints ---------------------------------------------------------------------

JSON = [(b"content-type", b"application/json")]
GEMINI_ROOTS = ["/v1beta/models/", "/v1/models/"]
GEMINI_ACTIONS = [":generateContent", ":streamGenerateContent", ":countTokens"]
GEMINI_MODEL = shapes.MODEL | st.sampled_from(["", "a/b", "..", "x:y", "%", " "])

# (path, protocol, body strategy) of every POST endpoint
POSTS = [
    ("/v1/chat/completions", "openai-chat", shapes.CHAT),
    ("/v1/responses", "openai-responses", shapes.RESPONSES),
    ("/v1/messages", "anthropic", shapes.ANTHROPIC),
    ("/v1/messages/count_tokens", "anthropic", shapes.ANTHROPIC_COUNT),
    ("/v1beta/models/echo:generateContent", "gemini", shapes.GEMINI),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini", shapes.GEMINI),
    ("/v1beta/models/echo:countTokens", "gemini", shapes.GEMINI_COUNT),
    ("/v1/models/gemini-2.5-pro:generateContent", "gemini", shapes.GEMINI),
]

# --- 1. valid-ish bodies, one protocol at a time ---------------------------------------

CHAT_EXAMPLES = 1300


@fuzz(CHAT_EXAMPLES)
@given(body=shapes.CHAT, headers=shapes.HEADERS)
def _chat(sender: Sender, body: Any, headers: Headers) -> None:
    content = shapes.encoded(body)
    sender.submit(Request("POST", "/v1/chat/completions", "openai-chat", content, JSON + headers))


def test_chat_completions_bodies(fuzzed: Callable) -> None:
    fuzzed(_chat, CHAT_EXAMPLES, upstream=True)


RESPONSES_EXAMPLES = 1100


@fuzz(RESPONSES_EXAMPLES)
@given(body=shapes.RESPONSES, headers=shapes.HEADERS)
def _responses(sender: Sender, body: Any, headers: Headers) -> None:
    content = shapes.encoded(body)
    sender.submit(Request("POST", "/v1/responses", "openai-responses", content, JSON + headers))


def test_responses_bodies(fuzzed: Callable) -> None:
    fuzzed(_responses, RESPONSES_EXAMPLES, upstream=True)


ANTHROPIC_EXAMPLES = 1300


@fuzz(ANTHROPIC_EXAMPLES)
@given(
    data=st.data(),
    path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]),
    headers=shapes.HEADERS,
)
def _anthropic(sender: Sender, data: st.DataObject, path: str, headers: Headers) -> None:
    body = data.draw(shapes.ANTHROPIC if path == "/v1/messages" else shapes.ANTHROPIC_COUNT)
    headers = [(b"anthropic-version", b"2023-06-01"), *JSON, *headers]
    sender.submit(Request("POST", path, "anthropic", shapes.encoded(body), headers))


def test_anthropic_bodies(fuzzed: Callable) -> None:
    fuzzed(_anthropic, ANTHROPIC_EXAMPLES, upstream=True)


GEMINI_EXAMPLES = 1300


@fuzz(GEMINI_EXAMPLES)
@given(
    data=st.data(),
    root=st.sampled_from(GEMINI_ROOTS),
    model=GEMINI_MODEL,
    action=st.sampled_from(GEMINI_ACTIONS),
    query=shapes.QUERY,
)
def _gemini(
    sender: Sender, data: st.DataObject, root: str, model: str, action: str, query: list
) -> None:
    body = data.draw(shapes.GEMINI_COUNT if action == ":countTokens" else shapes.GEMINI)
    path = root + quote(model, safe="") + action
    content = shapes.encoded(body)
    sender.submit(Request("POST", path, "gemini", content, JSON, query_bytes(query)))


def test_gemini_bodies(fuzzed: Callable) -> None:
    fuzzed(_gemini, GEMINI_EXAMPLES, upstream=True)


# (path, protocol, a body answered 200 as it is), to the echo and to each upstream protocol
FULL = [
    *(
        (path, protocol, {**body, "model": model})
        for path, protocol, body in [
            ("/v1/chat/completions", "openai-chat", bodies.FULL_CHAT),
            ("/v1/responses", "openai-responses", bodies.FULL_RESPONSES),
            ("/v1/messages", "anthropic", bodies.FULL_ANTHROPIC),
            ("/v1/messages/count_tokens", "anthropic", bodies.FULL_ANTHROPIC_COUNT),
        ]
        for model in ("echo", "o3", "claude-sonnet-4-5", "gemini-2.5-flash")
    ),
    *(
        (f"/v1beta/models/{model}{action}", "gemini", body)
        for model in ("echo", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash")
        for action, body in [
            (":generateContent", bodies.FULL_GEMINI),
            (":streamGenerateContent", bodies.FULL_GEMINI),
            (":countTokens", bodies.FULL_GEMINI_COUNT),
        ]
    ),
]
MUTATION_EXAMPLES = 2500


@fuzz(MUTATION_EXAMPLES)
@given(data=st.data())
def _mutations(sender: Sender, data: st.DataObject) -> None:
    path, protocol, body = data.draw(st.sampled_from(FULL))
    content = shapes.encoded(data.draw(bodies.one_bad_field(body, into_schemas=True)))
    headers = [(b"anthropic-version", b"2023-06-01"), *JSON]
    sender.submit(Request("POST", path, protocol, content, headers))


def test_one_bad_field_at_a_time(fuzzed: Callable) -> None:
    fuzzed(_mutations, MUTATION_EXAMPLES, upstream=True)


@pytest.mark.parametrize(("path", "protocol", "body"), FULL, ids=lambda v: str(v)[:40])
def test_the_full_bodies_are_answered(gateway: Gateway, path: str, protocol: str, body: dict):
    """What the one-bad-field fuzzing starts from is right: a 200 (the fake upstream
    validates like the real APIs)."""
    response = httpx.post(
        gateway.url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=15
    )
    assert response.status_code == 200, response.text


# --- 2. junk: bytes, truncated JSON, wrong content types, other methods ----------------

JUNK_EXAMPLES = 1300


@fuzz(JUNK_EXAMPLES)
@given(data=st.data(), content_type=shapes.CONTENT_TYPE, query=shapes.RAW_QUERY)
def _junk(sender: Sender, data: st.DataObject, content_type: str, query: bytes) -> None:
    path, protocol, shape = data.draw(st.sampled_from(POSTS))
    raw = data.draw(shapes.junk_body(shape))
    headers = [(b"content-type", content_type.encode())] if content_type else []
    sender.submit(Request("POST", path, protocol, raw, headers, query))


def test_junk_bodies(fuzzed: Callable) -> None:
    fuzzed(_junk, JUNK_EXAMPLES)


METHOD_EXAMPLES = 400


@fuzz(METHOD_EXAMPLES)
@given(
    data=st.data(),
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    headers=shapes.HEADERS,
)
def _methods(sender: Sender, data: st.DataObject, method: str, headers: Headers) -> None:
    path, protocol, shape = data.draw(st.sampled_from(POSTS))
    sender.submit(Request(method, path, protocol, shapes.encoded(data.draw(shape)), headers))


def test_other_methods_on_the_post_endpoints(fuzzed: Callable) -> None:
    fuzzed(_methods, METHOD_EXAMPLES)


# --- 3. provider prefixes, model lists, headers and query strings ----------------------

PREFIXED_EXAMPLES = 800


@fuzz(PREFIXED_EXAMPLES)
@given(data=st.data(), provider=shapes.PROVIDER, headers=shapes.HEADERS, query=shapes.QUERY)
def _prefixed(
    sender: Sender, data: st.DataObject, provider: str, headers: Headers, query: list
) -> None:
    path, protocol, shape = data.draw(st.sampled_from(POSTS))
    content = shapes.encoded(data.draw(shape))
    sender.submit(
        Request("POST", f"/{provider}{path}", protocol, content, JSON + headers, query_bytes(query))
    )


def test_provider_prefixed_endpoints(fuzzed: Callable) -> None:
    fuzzed(_prefixed, PREFIXED_EXAMPLES)


LIST_EXAMPLES = 600
# A prefix named like the first segment of another route (/v1/..., /v1beta/..., /api/...,
# the console's /ui/...)
# never reaches the model lists: Litestar answers "no such endpoint" in the shape the
# path suggests, not the one Gemini-style auth asks for (reported, not fixed here).
SHADOWED_PREFIXES = frozenset({"v1", "v1beta", "api", "ui"})


@fuzz(LIST_EXAMPLES)
@given(
    path=st.sampled_from(["/v1/models", "/v1beta/models"]),
    provider=st.none() | shapes.PROVIDER.filter(lambda name: name not in SHADOWED_PREFIXES),
    headers=shapes.HEADERS,
    query=shapes.QUERY,
)
def _lists(sender: Sender, path: str, provider: str | None, headers: Headers, query: list) -> None:
    full = path if provider is None else f"/{provider}{path}"
    raw = query_bytes(query)
    sender.submit(Request("GET", full, list_protocol(full, headers, raw), b"", headers, raw))


def test_model_lists(fuzzed: Callable) -> None:
    fuzzed(_lists, LIST_EXAMPLES)


# --- what the fuzzing found --------------------------------------------------------------

CHAT_HI = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "dropped"),
    [
        (  # a tool type with a line break: the header would have ended early
            "/v1/chat/completions",
            {**CHAT_HI, "tools": [{"type": "\n", "function": {"name": "f"}}]},
            "tools.%0A",
        ),
        (  # outside Latin-1: the header could not be encoded at all
            "/v1/chat/completions",
            {**CHAT_HI, "tools": [{"type": "ʴ", "function": {"name": "f"}}]},
            "tools.%CA%B4",
        ),
        (  # an unknown top-level field, named with a NUL and an emoji
            "/v1/responses",
            {"model": "echo", "input": "hi", "\u0000💥": 1},
            "%00%F0%9F%92%A5",
        ),
        (
            "/v1/messages",
            {
                "model": "echo",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": [{"type": "\u0000"}]}],
            },
            "content.%00",
        ),
    ],
)
def test_a_dropped_field_named_with_any_character_is_a_200(
    gateway: Gateway, path: str, body: dict, dropped: str
) -> None:
    """x-router-dropped names what the client wrote; a control or non-Latin-1 character in
    it made the answer fail after it was made (a bare 500 from Granian, a traceback)."""
    response = httpx.post(
        gateway.url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert dropped in response.headers["x-router-dropped"].split(",")


GEMINI_HI = [{"parts": [{"text": "hi"}]}]


@pytest.mark.parametrize(
    ("path", "body", "protocol"),
    [
        (  # request_in: `function` was read as an object
            "/v1/chat/completions",
            {**CHAT_HI, "tool_choice": {"type": "function", "function": "f"}},
            "openai-chat",
        ),
        (  # a description that is no string reached the token estimate
            "/v1/chat/completions",
            {
                **CHAT_HI,
                "tools": [{"type": "function", "function": {"name": "f", "description": 5}}],
            },
            "openai-chat",
        ),
        (
            "/v1/messages",
            {
                "model": "echo",
                "max_tokens": 16,
                "messages": CHAT_HI["messages"],
                "tools": [{"name": "f", "description": True, "input_schema": {}}],
            },
            "anthropic",
        ),
        (  # reasoning item: `summary` was iterated
            "/v1/responses",
            {"model": "echo", "input": [{"type": "reasoning", "summary": 5}]},
            "openai-responses",
        ),
        (
            "/v1/responses",
            {"model": "echo", "input": "hi", "tool_choice": {"type": "allowed_tools", "tools": 5}},
            "openai-responses",
        ),
        (  # Gemini: lists that were iterated
            "/v1beta/models/echo:generateContent",
            {"contents": GEMINI_HI, "tools": [{"functionDeclarations": 5}]},
            "gemini",
        ),
        (
            "/v1beta/models/echo:generateContent",
            {"contents": [{"parts": [{"functionResponse": {"name": "f", "parts": 5}}]}]},
            "gemini",
        ),
        (  # was silently read as "", and passed through as it was to a Gemini upstream
            "/v1beta/models/echo:generateContent",
            {"contents": [{"parts": [{"text": [1]}]}]},
            "gemini",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_a_400(
    gateway: Gateway, path: str, body: dict, protocol: str
) -> None:
    response = httpx.post(
        gateway.url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10
    )
    assert response.status_code == 400, response.text
    check(response, protocol)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": 1024},
        {"enum": {"a": 1}},
        {"allOf": [1]},
        {"type": "object", "properties": [1]},
        {"type": "array", "minItems": "x"},
        {"type": "object", "required": 5, "properties": {}},
    ],
)
def test_echo_answers_any_output_schema(gateway: Gateway, schema: dict) -> None:
    body = {
        **CHAT_HI,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("count", [1e308, 100_000, 10**9])
def test_echo_bounds_what_a_schema_asks_for(gateway: Gateway, count: float) -> None:
    """minItems / minLength from a client once made echo build gigabytes or spin for ever."""
    schema = {
        "type": "array",
        "minItems": count,
        "items": {
            "type": "array",
            "minItems": count,
            "items": {"type": "string", "minLength": count},
        },
    }
    body = {
        **CHAT_HI,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    started = time.monotonic()
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 2 and len(response.content) < 2_000_000


@pytest.mark.parametrize("required", [[[]], [{}]])
def test_a_schema_for_gemini_with_a_strange_required_list(gateway: Gateway, required) -> None:
    parameters = {"type": "object", "properties": {"a": {"type": "string"}}, "required": required}
    body = {
        "model": "gemini-2.5-flash",
        "messages": CHAT_HI["messages"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
    }
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code < 500, response.text


def test_a_latin_1_header_passed_on_upstream(gateway: Gateway) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": CHAT_HI["messages"]}
    headers = [(b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"caf\xe9")]
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens", json=body, headers=headers, timeout=10
    )
    assert response.status_code < 500, response.text
