"""The fault suite (issue 14): each client protocol, through its official SDK, stream and
non-stream, against a fake upstream that fails in every way we know of, while a second
fake stands by healthy. For every cell the SDK gets the answer (after failover where a
healthy target is left) or raises its own protocol's error class with the right status;
nothing hangs; the gateway never answers 500 nor logs a traceback; and the worker's tasks
and upstream connections return to their baseline afterwards (`GET /api/system`).

Each `-pair` pool has the faulty fake first (the health book is reset before each cell,
so it is tried first) and the healthy one second; its `-alone` twin has only the faulty
one, to see the error a client gets when nothing healthy is left; `-big` has only the
faulty one too, with room in its timeouts for a 10 MB answer. Every client protocol meets
an upstream of its own protocol (pass-through) and, in the `-via-` cells, another one."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.fakes.replies import huge_text
from tests.gateway import Gateway

pytestmark = pytest.mark.timeout(30)

CLIENT_KEY = "faults-client-key"
ADMIN_KEY = "faults-admin-key"
PROMPT = "hello"
ANSWER = f"echo: {PROMPT}"
HUGE = 10 * 1024 * 1024
SDK_TIMEOUT = 15.0
TIMEOUT, FIRST_TOKEN_TIMEOUT = 2, 1  # seconds, the pools' own
PROTOCOLS = ("chat", "responses", "anthropic", "gemini")
POOL_TYPE = {
    "chat": "openai-custom",
    "responses": "openaiResponses-custom",
    "anthropic": "claude-custom",
    "gemini": "gemini-api",
}
UPSTREAM_MODEL = {
    "chat": "gpt-4o",
    "responses": "gpt-4o",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
}
BASE_PATH = {"chat": "/v1", "responses": "/v1", "anthropic": "", "gemini": "/v1beta"}
# index of the first event carrying content in the fake's streams: Chat's role chunk,
# Responses' created / in_progress / output_item.added / content_part.added and
# Anthropic's message_start / ping / content_block_start come before it
FIRST_CONTENT = {"chat": 1, "responses": 4, "anthropic": 3, "gemini": 0}
# the upstream protocol each client protocol is also translated to: each once
TRANSLATED_VIA = {
    "chat": "anthropic",
    "responses": "gemini",
    "anthropic": "chat",
    "gemini": "responses",
}
# the same protocol's 200 carrying an error, as some proxies answer
ERROR_BODY: dict[str, Any] = {
    "chat": {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}},
    "responses": {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    },
    "anthropic": {"type": "error", "error": {"type": "api_error", "message": "boom"}},
    "gemini": {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}},
}


# --- the faults ---------------------------------------------------------------------------

FAILOVER = "failover"  # the healthy instance answers; alone, the client gets `status`
REJECTED = "rejected"  # the upstream's refusal comes back with `status`, no failover
BROKEN = "broken"  # content reached the client, then the stream's own error (`status`)
UNFINISHED = "unfinished"  # the whole answer, or BROKEN: the client must not be fooled
WHOLE = "whole"  # a big answer arrives whole

Behaviour = Callable[[str], dict[str, Any] | None]  # upstream protocol -> script


@dataclass(frozen=True)
class Fault:
    name: str
    stream: Behaviour  # the script for a stream request (returning None: no such cell)
    plain: Behaviour  # ... for a non-stream one
    outcome: str
    status: int = 0
    # also run translated (another protocol upstream): False where the fault is met
    # before any byte is decoded, the same code whatever the protocols
    translated: bool = True


def same(behaviour: dict[str, Any]) -> Behaviour:
    return lambda upstream: behaviour


def none(upstream: str) -> None:
    return None


FAULTS = [
    Fault("status_500", same({"status": 500}), same({"status": 500}), FAILOVER, 502),
    Fault("status_502", same({"status": 502}), same({"status": 502}), FAILOVER, 502),
    Fault("status_503", same({"status": 503}), same({"status": 503}), FAILOVER, 503),
    Fault(
        "status_429_retry_after",
        same({"status": 429, "retry_after": 30}),
        same({"status": 429, "retry_after": 30}),
        FAILOVER,
        429,
    ),
    Fault("status_401", same({"status": 401}), same({"status": 401}), REJECTED, 401),
    Fault("status_400", same({"status": 400}), same({"status": 400}), REJECTED, 400),
    Fault("reset_before_headers", same({"reset": True}), same({"reset": True}), FAILOVER, 502),
    Fault(
        "reset_after_headers",
        same({"reset_after": 0}),
        same({"reset_after": 0}),  # half the announced body, then RST
        FAILOVER,
        502,
    ),
    Fault(
        "reset_after_content",
        lambda up: {"reset_after": FIRST_CONTENT[up] + 1},
        none,
        BROKEN,
        502,
    ),
    # past first_token_timeout (streams) or timeout (non-stream)
    Fault(
        "hang_before_headers",
        same({"hang": 30}),
        same({"hang": 30}),
        FAILOVER,
        504,
        translated=False,
    ),
    Fault(
        "hang_after_headers",
        same({"first_event_delay": 30}),
        same({"stall_after": 0}),  # half the body, then nothing
        FAILOVER,
        504,
        translated=False,
    ),
    Fault(
        "hang_after_first_event_before_content",
        lambda up: {"stall_after": FIRST_CONTENT[up]} if FIRST_CONTENT[up] else None,
        none,
        FAILOVER,
        504,
        translated=False,
    ),
    # past timeout, with content out already
    Fault(
        "hang_after_content",
        lambda up: {"stall_after": FIRST_CONTENT[up] + 1},
        none,
        BROKEN,
        504,
    ),
    Fault(
        "malformed_json",
        same({"malformed_json": True}),
        same({"malformed_json": True}),
        FAILOVER,
        502,
    ),
    Fault(
        "malformed_sse", same({"malformed_sse": True}), same({"malformed_sse": True}), FAILOVER, 502
    ),
    Fault("no_final_event", same({"no_final": True}), none, UNFINISHED, 502),
    Fault("error_event_before_content", same({"stream_error": True}), none, FAILOVER, 502),
    Fault(
        "error_body_with_200",
        lambda up: {"status": 200, "body": ERROR_BODY[up]},
        lambda up: {"status": 200, "body": ERROR_BODY[up]},
        FAILOVER,
        502,
    ),
    Fault("huge_answer", same({"huge": HUGE}), same({"huge": HUGE}), WHOLE),
    Fault(
        "cut_mid_chunk",
        lambda up: {"cut_chunked": FIRST_CONTENT[up]},  # inside the first content event
        same({"cut_chunked": 0}),
        FAILOVER,
        502,
    ),
]


def cells() -> list[Any]:
    return list(_cells())


def _cells() -> Iterator[Any]:
    """Each client protocol against an upstream of its own protocol (pass-through), then
    against another one (translated both ways)."""
    for via in (False, True):
        for protocol in PROTOCOLS:
            upstream = TRANSLATED_VIA[protocol] if via else protocol
            for stream in (False, True):
                for fault in FAULTS:
                    if via and not fault.translated:
                        continue
                    if (fault.stream if stream else fault.plain)(upstream) is None:
                        continue
                    mode = "stream" if stream else "plain"
                    name = f"{protocol}-via-{upstream}" if via else protocol
                    marks = [pytest.mark.timeout(90)] if fault.outcome == WHOLE else []
                    yield pytest.param(
                        Cell(protocol, upstream, stream, fault),
                        id=f"{name}-{mode}-{fault.name}",
                        marks=marks,
                    )


@dataclass(frozen=True)
class Cell:
    protocol: str  # the client's
    upstream: str  # the faulty upstream's
    stream: bool
    fault: Fault

    @property
    def behaviour(self) -> dict[str, Any] | None:
        return (self.fault.stream if self.stream else self.fault.plain)(self.upstream)

    def model(self, pool: str) -> str:
        """The model that routes to the upstream protocol's `pool` (pair, alone, big)."""
        return f"{self.upstream}-{pool}"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-faulty") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def healthy() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="key-healthy") as upstream:
        yield upstream


def instance(name: str, fake: FakeUpstream, protocol: str) -> str:
    url = fake.url + BASE_PATH[protocol]
    return f"{{ id: {name}, base_url: '{url}', api_key: {fake.api_key} }}"


def providers_yaml(faulty: FakeUpstream, healthy: FakeUpstream) -> str:
    pools = ["providers:"]
    for protocol in PROTOCOLS:
        for suffix, timeout in (("pair", TIMEOUT), ("alone", TIMEOUT), ("big", 60)):
            members = [instance(f"{protocol}-{suffix}-faulty", faulty, protocol)]
            if suffix == "pair":
                members.append(instance(f"{protocol}-{suffix}-healthy", healthy, protocol))
            pools += [
                f"  {protocol}-{suffix}:",
                f"    type: {POOL_TYPE[protocol]}",
                f"    timeout: {timeout}s",
                f"    first_token_timeout: {FIRST_TOKEN_TIMEOUT if timeout == TIMEOUT else 30}s",
                "    health: { max_errors: 1000, recover_after: 60s }",
                f"    instances: [{', '.join(members)}]",
            ]
    return "\n".join(pools) + "\n"


def routes_yaml() -> str:
    routes = ["default: chat-pair", "routes:"]
    for protocol in PROTOCOLS:
        for suffix in ("pair", "alone", "big"):
            pool = f"{protocol}-{suffix}"
            routes.append(
                f"  - {{ name: {pool}, match: {{ model: {pool} }}, "
                f"to: {{ provider: {pool}, model: {UPSTREAM_MODEL[protocol]} }} }}"
            )
    return "\n".join(routes) + "\n"


@pytest.fixture(scope="module")
def gateway(faulty, healthy, tmp_path_factory) -> Iterator[Gateway]:
    directory = write_config(
        tmp_path_factory.mktemp("faults"),
        {"providers.yaml": providers_yaml(faulty, healthy), "routes.yaml": routes_yaml()},
    )
    env = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
    # one worker: the figures of /api/system come from the worker that served the faults
    with Gateway(directory, env=env, workers=1) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def clients(gateway) -> Iterator[Clients]:
    made = Clients(gateway)
    yield made
    made.close()


@pytest.fixture(scope="module")
def baseline(gateway, clients, faulty, healthy) -> dict[str, Any]:
    """The worker's figures once every protocol made a request both ways."""
    for protocol in PROTOCOLS:
        for stream in (False, True):
            outcome = clients.call(protocol, stream, f"{protocol}-pair")
            assert outcome.text == ANSWER, outcome
    time.sleep(0.2)
    return system(gateway)


@pytest.fixture(autouse=True)
def fresh(gateway, faulty, healthy, baseline) -> None:
    """Empty fake logs and scripts; a clean health book, so each pool tries its faulty
    instance first."""
    faulty.reset()
    healthy.reset()
    for pool_type in POOL_TYPE.values():
        admin(gateway, "POST", f"/api/providers/{pool_type}/reset-health")


@functools.cache
def http() -> httpx.Client:
    return httpx.Client(timeout=10)


def admin(gateway: Gateway, method: str, path: str) -> Any:
    response = http().request(
        method, gateway.url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def system(gateway: Gateway) -> dict[str, Any]:
    return admin(gateway, "GET", "/api/system")


# --- the callers ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a client saw: the text that arrived, whether the answer was complete, and the
    error its SDK raised (`status`: the HTTP status, or for an error inside a stream the
    status its code stands for)."""

    text: str = ""
    complete: bool = False
    error: Exception | None = None
    status: int | None = None
    mid_stream: bool = False
    retry_after: str | None = None
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)


# the code of an error inside a stream -> the status it stands for
STREAM_ERROR_STATUS = {
    "timeout": 504,
    "timeout_error": 504,
    "bad_gateway": 502,
    "api_error": 502,
}


class Clients:
    """The four official SDKs, pointed at the gateway: no retries, bounded in time."""

    def __init__(self, gateway: Gateway) -> None:
        self.openai = openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=SDK_TIMEOUT
        )
        self.anthropic = anthropic.Anthropic(
            base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=SDK_TIMEOUT
        )
        options = genai_types.HttpOptions(
            base_url=gateway.url,
            timeout=int(SDK_TIMEOUT * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        )
        self.genai = genai.Client(api_key=CLIENT_KEY, http_options=options)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()
        self.genai.close()

    def call(self, protocol: str, stream: bool, model: str, limit: int | None = None) -> Outcome:
        """One request; `limit`: the answer's token limit, when it must be a big one (the
        fakes cut a reply at 4 characters per token of it)."""
        outcome = Outcome()
        started = time.monotonic()
        call = getattr(self, f"_{protocol}")
        try:
            call(outcome, stream, model, limit)
        except (openai.APIConnectionError, anthropic.APIConnectionError):
            raise  # a dropped connection or a client timeout: no answer, no error
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            outcome.error = exc
            if exc.status_code == 200:  # Anthropic's `event: error` inside a stream
                outcome.mid_stream = True
                outcome.status = STREAM_ERROR_STATUS.get(error_type(exc.body))
            else:
                outcome.status = exc.status_code
                outcome.retry_after = exc.response.headers.get("retry-after")
        except openai.APIError as exc:  # Chat's `data: {"error": ...}` inside a stream
            outcome.error, outcome.mid_stream = exc, True
            outcome.status = STREAM_ERROR_STATUS.get(str(exc.code))
        except genai_errors.APIError as exc:
            outcome.error, outcome.status = exc, exc.code
            outcome.mid_stream = stream and bool(outcome.events)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _chat(self, outcome: Outcome, stream: bool, model: str, limit: int | None) -> None:
        request: Any = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
        if limit:
            request["max_completion_tokens"] = limit
        if not stream:
            completion = self.openai.chat.completions.create(**request)
            outcome.text = completion.choices[0].message.content or ""
            outcome.complete = completion.choices[0].finish_reason == "stop"
            return
        for chunk in self.openai.chat.completions.create(**request, stream=True):
            outcome.events.append("chunk")
            for choice in chunk.choices:
                outcome.text += choice.delta.content or ""
                outcome.complete = outcome.complete or choice.finish_reason == "stop"

    def _responses(self, outcome: Outcome, stream: bool, model: str, limit: int | None) -> None:
        request: Any = {"model": model, "input": PROMPT}
        if limit:
            request["max_output_tokens"] = limit
        if not stream:
            response = self.openai.responses.create(**request)
            outcome.text = response.output_text
            outcome.complete = response.status == "completed"
            return
        for event in self.openai.responses.create(**request, stream=True):
            outcome.events.append(event.type)
            if event.type == "response.output_text.delta":
                outcome.text += event.delta
            elif event.type == "response.completed":
                outcome.complete = True
            elif event.type == "error" and outcome.error is None:  # an event, to the SDK
                outcome.mid_stream = True
                outcome.error = RuntimeError(f"error event: {event.code}: {event.message}")
                outcome.status = STREAM_ERROR_STATUS.get(str(event.code))
            elif event.type == "response.failed" and outcome.error is None:
                error = event.response.error
                outcome.mid_stream = True
                outcome.error = RuntimeError(f"response.failed: {error}")
                outcome.status = STREAM_ERROR_STATUS.get(str(error.code if error else None))

    def _anthropic(self, outcome: Outcome, stream: bool, model: str, limit: int | None) -> None:
        request: Any = {
            "model": model,
            "max_tokens": limit or 1024,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if not stream:
            message = self.anthropic.messages.create(**request)
            outcome.text = "".join(b.text for b in message.content if b.type == "text")
            outcome.complete = message.stop_reason == "end_turn"
            return
        for event in self.anthropic.messages.create(**request, stream=True):
            outcome.events.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                outcome.text += event.delta.text
            elif event.type == "message_delta":  # the stream's end is known from here on
                outcome.complete = event.delta.stop_reason == "end_turn"

    def _gemini(self, outcome: Outcome, stream: bool, model: str, limit: int | None) -> None:
        config = genai_types.GenerateContentConfig(max_output_tokens=limit) if limit else None
        request: Any = {"model": model, "contents": PROMPT, "config": config}
        if not stream:
            response = self.genai.models.generate_content(**request)
            outcome.text = response.text or ""
            outcome.complete = finish_reason(response) == "STOP"
            return
        for chunk in self.genai.models.generate_content_stream(**request):
            outcome.events.append("chunk")
            outcome.text += chunk.text or ""
            outcome.complete = outcome.complete or finish_reason(chunk) == "STOP"


def finish_reason(response: genai_types.GenerateContentResponse) -> str | None:
    candidates = response.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    return reason.value if reason is not None else None


def error_type(body: object) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


# --- what each outcome must look like -----------------------------------------------------

STATUS_CLASSES: dict[str, dict[int, type]] = {
    "openai": {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        429: openai.RateLimitError,
        502: openai.InternalServerError,
        503: openai.InternalServerError,
        504: openai.InternalServerError,
    },
    "anthropic": {
        400: anthropic.BadRequestError,
        401: anthropic.AuthenticationError,
        429: anthropic.RateLimitError,
        502: anthropic.InternalServerError,
        503: anthropic.ServiceUnavailableError,
        504: anthropic.GatewayTimeoutError,
    },
}
SDK_OF = {"chat": "openai", "responses": "openai", "anthropic": "anthropic"}


def assert_error(protocol: str, outcome: Outcome, status: int) -> None:
    """The SDK raised its protocol's error class for `status`, before any content."""
    assert not outcome.mid_stream, outcome
    assert outcome.status == status, outcome
    if protocol == "gemini":
        expected: type = genai_errors.ClientError if status < 500 else genai_errors.ServerError
    else:
        expected = STATUS_CLASSES[SDK_OF[protocol]][status]
    assert isinstance(outcome.error, expected), outcome
    assert "Traceback" not in str(outcome.error)


def assert_broken(outcome: Outcome, status: int) -> None:
    """Content went out, then the stream ended with the protocol's own error event."""
    assert outcome.mid_stream and outcome.error is not None, outcome
    assert outcome.status == status, outcome
    assert outcome.text and ANSWER.startswith(outcome.text), outcome
    assert not outcome.complete, outcome


# --- the cells ----------------------------------------------------------------------------


def test_system_takes_the_admin_key_only(gateway, baseline) -> None:
    for key in (None, CLIENT_KEY):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = http().get(gateway.url + "/api/system", headers=headers)
        assert response.status_code in (401, 403), response.text
        assert response.json()["error"]["message"]
    figures = system(gateway)
    assert figures["pid"] == baseline["pid"] and figures["uptime_s"] > 0
    assert isinstance(figures["python"], str) and isinstance(figures["version"], str)
    assert figures["tasks"] >= 1 and figures["open_fds"] > 0 and figures["rss_bytes"] > 0
    assert figures["connections"] >= 0 and figures["idle_connections"] >= 0


@pytest.mark.parametrize("cell", cells())
def test_fault(gateway, clients, faulty, healthy, cell: Cell) -> None:
    protocol, stream, fault, behaviour = cell.protocol, cell.stream, cell.fault, cell.behaviour
    assert behaviour is not None
    faulty.script(behaviour)
    if fault.outcome == WHOLE:
        outcome = clients.call(protocol, stream, cell.model("big"), limit=HUGE // 2)
        assert outcome.error is None, outcome.error
        assert outcome.complete and len(outcome.text) == HUGE
        assert outcome.text == huge_text(HUGE)
        return
    outcome = clients.call(protocol, stream, cell.model("pair"))
    [first] = faulty.requests()
    assert first["behaviour"] == behaviour
    if fault.outcome == FAILOVER:
        assert (outcome.text, outcome.complete, outcome.error) == (ANSWER, True, None), outcome
        assert len(healthy.requests()) == 1
        assert_abandoned(faulty)
        alone(clients, faulty, cell, behaviour)
        return
    assert healthy.requests() == [], "no failover once the client has content or a refusal"
    if fault.outcome == REJECTED:
        assert_error(protocol, outcome, fault.status)
    elif fault.outcome == BROKEN:
        assert_broken(outcome, fault.status)
        assert_abandoned(faulty)
    else:  # UNFINISHED: the whole answer, or an error; never a cut answer passed as whole
        if outcome.error is None:
            assert (outcome.text, outcome.complete) == (ANSWER, True), outcome
        else:
            assert_broken(outcome, fault.status)


def alone(clients: Clients, faulty: FakeUpstream, cell: Cell, behaviour: dict[str, Any]) -> None:
    """The same fault with nothing healthy left: the client's own error, right status."""
    faulty.reset()
    faulty.script(behaviour)
    outcome = clients.call(cell.protocol, cell.stream, cell.model("alone"))
    status = cell.fault.status
    assert_error(cell.protocol, outcome, status)
    if status == 429 and cell.protocol != "gemini":
        assert outcome.retry_after is not None and int(outcome.retry_after) > 2, outcome
    if status == 504:  # the pool's timeout, not the client's
        limit = FIRST_TOKEN_TIMEOUT if cell.stream else TIMEOUT
        assert limit <= outcome.seconds < limit + 1.5, outcome
    assert_abandoned(faulty)


def assert_abandoned(faulty: FakeUpstream) -> None:
    """The gateway is done with the faulty upstream: a request it gave up on was closed,
    not left hanging on the upstream's side."""
    log = faulty.requests()
    if any(
        entry["behaviour"].keys() & {"hang", "stall_after", "first_event_delay"} for entry in log
    ):
        faulty.wait_for(lambda entries: all(e["disconnected"] for e in entries), timeout=3)


# --- after all cells --------------------------------------------------------------------


def settled(baseline: dict[str, Any], now: dict[str, Any]) -> bool:
    return now["tasks"] <= baseline["tasks"] and now["connections"] <= baseline["connections"]


def test_no_leak_and_no_traceback(gateway, baseline) -> None:
    """Runs last (file order): the worker's tasks and upstream connections are back to
    their baseline, and its log has no traceback. No allowance for connections: the
    cells run one at a time, so each upstream keeps at most the one idle connection the
    warm-up left it (an upstream connection given up on, and not closed, shows here)."""
    deadline = time.monotonic() + 8
    now = system(gateway)
    while not settled(baseline, now) and time.monotonic() < deadline:
        time.sleep(0.25)
        now = system(gateway)
    assert now["pid"] == baseline["pid"], "the worker was replaced"
    assert now["tasks"] <= baseline["tasks"], (baseline, now)
    assert now["connections"] <= baseline["connections"], (baseline, now)
    log = gateway.log()
    assert "Traceback" not in log, log[-4000:]
    assert "unhandled error" not in log, log[-4000:]
