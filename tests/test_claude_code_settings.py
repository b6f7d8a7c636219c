"""claudeCode-custom settings through the real gateway and `router check`: `max_turns`,
`queue_timeout` and `runtime_dir` on an instance, with the pool's `options` as defaults.
The CLI is the fast fake `tests/fakes/claude`, which records its argv and environment."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write_config
from tests.gateway import Gateway
from tests.routercli import router

FAKE_CLAUDE = Path(__file__).resolve().parent / "fakes" / "claude"


ROUTES = """
    default: cc-defaults
    routes:
      - { name: strict, match: { model: strict-sonnet }, to: cc-defaults, strict: true }
"""


def providers_yaml(root: Path) -> str:
    return f"""
        x-pool-options: &pool-options
          command: "{FAKE_CLAUDE}"
          max_turns: 5
          queue_timeout: 20s
          runtime_dir: "{root / "pool-runtime"}"
        providers:
          cc-defaults:
            type: claudeCode-custom
            options: *pool-options
            instances:
              - id: cc-inherits
                env: {{ FAKE_CLAUDE_LOG: "{root / "records"}" }}
          cc-own:
            type: claudeCode-custom
            options: *pool-options
            instances:
              - id: cc-overrides
                max_turns: 3
                queue_timeout: 300ms
                runtime_dir: "{root / "own-runtime"}"
                max_concurrency: 1
                env: {{ FAKE_CLAUDE_LOG: "{root / "records"}" }}
    """


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cc-settings")
    (directory / "records").mkdir()
    write_config(
        directory / "config",
        {"providers.yaml": providers_yaml(directory), "routes.yaml": ROUTES},
    )
    return directory


@pytest.fixture(scope="module")
def gateway(root: Path) -> Iterator[Gateway]:
    with Gateway(root / "config") as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def no_records(root: Path) -> None:
    for path in (root / "records").glob("*.json"):
        path.unlink()


def records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json"))]


def ask(
    gateway: Gateway, pool: str, text: str, timeout: float = 10.0, **fields: Any
) -> httpx.Response:
    prefix = f"/{pool}" if pool else ""
    return httpx.post(
        f"{gateway.url}{prefix}/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": text}], **fields},
        timeout=timeout,
    )


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_an_instance_without_settings_takes_the_pools_options(gateway, root) -> None:
    response = ask(gateway, "cc-defaults", "hello")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello"
    [entry] = records(root)
    assert flag(entry["argv"], "--max-turns") == "5"
    assert entry["env"]["HOME"] == str(root / "pool-runtime" / "cc-inherits" / "home")
    assert entry["cwd"] == str(root / "pool-runtime" / "cc-inherits" / "work")


def test_instance_settings_override_the_pools_options(gateway, root) -> None:
    response = ask(gateway, "cc-own", "hello")
    assert response.status_code == 200
    [entry] = records(root)
    assert flag(entry["argv"], "--max-turns") == "3"
    assert entry["env"]["HOME"] == str(root / "own-runtime" / "cc-overrides" / "home")
    assert entry["env"]["TMPDIR"] == str(root / "own-runtime" / "cc-overrides" / "tmp")


def test_instance_queue_timeout_bounds_the_wait_for_a_slot(gateway, root) -> None:
    """max_concurrency 1 is taken by a long run: the next request waits the instance's
    300 ms (not the pool's 20 s) and gets 429; the gateway waits out the 1 s Retry-After
    once (nothing else to try) and then passes the 429 on."""
    outcome: list[BaseException] = []
    busy = threading.Thread(target=_hold_a_slot, args=(gateway, outcome), daemon=True)
    busy.start()
    deadline = time.monotonic() + 10
    while not records(root):
        assert time.monotonic() < deadline, "the long run never started"
        time.sleep(0.02)
    started = time.monotonic()
    response = ask(gateway, "cc-own", "hi")
    elapsed = time.monotonic() - started
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert "slots busy" in response.json()["error"]["message"]
    assert response.headers["x-router-instance"] == "cc-overrides"
    assert 0.3 <= elapsed < 4.0
    busy.join(10)
    assert [type(e) for e in outcome] == [httpx.ReadTimeout]
    assert len(records(root)) == 1  # the refused request never started a CLI


def _hold_a_slot(gateway: Gateway, outcome: list[BaseException]) -> None:
    """The client gives up after 3 s; the gateway then kills the run, freeing the slot."""
    try:
        ask(gateway, "cc-own", "sleep 30", timeout=3.0)
    except httpx.HTTPError as error:
        outcome.append(error)


def test_check_accepts_the_instance_settings_and_validates_them(root, tmp_path) -> None:
    clean = router("check", "--strict", "--config-dir", str(root / "config"))
    assert clean.code == 0, clean.output
    assert "no effect" not in clean.output

    text = providers_yaml(root).replace("queue_timeout: 300ms", "queue_timeout: soon")
    text = text.replace("max_turns: 5", "max_turns: 0", 1)
    broken = write_config(tmp_path, {"providers.yaml": text, "routes.yaml": "default: cc-own\n"})
    result = router("check", "--config-dir", str(broken))
    assert result.code == 1
    # a shared (anchored) value is reported where it is written, once per pool using it
    assert result.stdout.splitlines() == [
        "providers.yaml:3:14: error: providers.cc-defaults.options.max_turns: 0 must be at least 1",
        "providers.yaml:3:14: error: providers.cc-own.options.max_turns: 0 must be at least 1",
        "providers.yaml:19:24: error: providers.cc-own.instances[0].queue_timeout: 'soon' is "
        "not a duration (use e.g. 500ms, 60s, 5m, 1h, or a number of seconds)",
        "3 errors, 0 warnings",
    ]


def test_fields_the_cli_cannot_take_are_reported_or_refused_in_strict_mode(gateway, root):
    """The CLI has no temperature/top_p/stop: the gateway names them in x-router-dropped,
    and a strict route (or x-router-strict) refuses the request before starting the CLI."""
    answered = ask(gateway, "", "hi", temperature=0.2, stop=["x"])
    assert answered.status_code == 200
    assert answered.headers["x-router-dropped"] == "stop,temperature"
    assert len(records(root)) == 1

    refused = ask(gateway, "", "hi", temperature=0.2, model="strict-sonnet")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "strict mode: cannot carry temperature to provider cc-defaults"
    )
    header = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": "x"}], "top_p": 0.5},
        headers={"x-router-strict": "true"},
    )
    assert header.status_code == 400
    assert len(records(root)) == 1  # neither refused request started the CLI
