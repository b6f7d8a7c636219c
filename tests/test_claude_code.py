"""The claudeCode-custom adapter.

Fast tests drive it with `tests/fakes/claude`, a fake CLI that records its argv,
environment and process ids. Tests marked `slow` run the real Claude Code CLI against the
loopback fake Anthropic API (`tests/fakes`), with no network. Every test checks that the
processes it started are gone."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from google import genai
from google.genai import types

from router.compiler.plan import Instance, Provider
from router.protocols import ir
from router.providers import claude_code_emulation as emulation
from router.providers.base import Call
from router.providers.claude_code import ClaudeCodeAdapter
from router.providers.registry import adapter_for
from tests.claude_cli import find_claude
from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

REPO = Path(__file__).resolve().parent.parent
FAKE_CLAUDE = REPO / "tests" / "fakes" / "claude"
ADAPTER = ClaudeCodeAdapter()
WEATHER = ir.Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# --- helpers -------------------------------------------------------------------------


class Harness:
    """Builds calls for one test: a private runtime dir and a fake-CLI record dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.runtime = tmp_path / "runtime"
        self.records_dir = tmp_path / "records"
        self.records_dir.mkdir()
        self.started: list[int] = []

    def call(
        self,
        request: ir.Request,
        *,
        stream: bool = False,
        command: str | Path = FAKE_CLAUDE,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
        instance_id: str = "cc-test",
        **options: Any,
    ) -> Call:
        declared = {"FAKE_CLAUDE_LOG": str(self.records_dir), **(env or {})}
        instance = Instance(
            id=instance_id, options={"command": str(command), "env": declared, **options}
        )
        provider = Provider(
            name="claudeCode-custom",
            type="claudeCode-custom",
            protocol="ir",
            instances=(instance,),
            timeout=timeout,
            options={"runtime_dir": str(self.runtime)},
        )
        return Call(provider=provider, instance=instance, model=request.model, stream=stream,
                    request=request)  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        entries = [json.loads(p.read_text()) for p in sorted(self.records_dir.glob("*.json"))]
        self.started += [pid for e in entries for pid in (e["pid"], *e["children"])]
        return entries

    def record(self) -> dict[str, Any]:
        entries = self.records()
        assert len(entries) == 1, entries
        return entries[0]

    async def wait_for_records(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(entries := self.records()) < count:
            assert time.monotonic() < deadline, "the fake claude never started"
            await asyncio.sleep(0.02)
        return entries


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.records()
    assert_gone(h.started)


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def assert_gone(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in pids if running(pid)], "processes left running"


def user(*parts: ir.Part) -> ir.Message:
    return ir.Message("user", list(parts))


def ask(text: str, **fields: Any) -> ir.Request:
    return ir.Request(model="sonnet", messages=[user(ir.Text(text))], **fields)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(stream: Any) -> list[ir.Event]:
    return [event async for event in stream]


def streamed_text(events: list[ir.Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ir.TextDelta))


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- command line and environment ----------------------------------------------------


def test_registered():
    provider = Provider(name="cc", type="claudeCode-custom", protocol="ir")
    assert isinstance(adapter_for(provider), ClaudeCodeAdapter)


def test_argv_carries_the_safety_flags(harness: Harness):
    run(ADAPTER.generate(harness.call(ask("hello"))))
    argv = harness.record()["argv"]
    for switch in ("-p", "--verbose", "--no-session-persistence", "--strict-mcp-config",
                   "--disable-slash-commands"):  # fmt: skip
        assert switch in argv
    assert flag(argv, "--output-format") == "stream-json"
    assert flag(argv, "--input-format") == "stream-json"
    assert flag(argv, "--model") == "sonnet"
    assert flag(argv, "--tools") == ""
    assert flag(argv, "--setting-sources") == ""
    assert flag(argv, "--permission-mode") == "dontAsk"
    assert flag(argv, "--max-turns") == "2"
    assert flag(argv, "--system-prompt") == ""  # replaces Claude Code's agent prompt
    assert flag(argv, "--thinking") == "disabled"
    assert "--json-schema" not in argv
    assert "--include-partial-messages" not in argv


def test_process_runs_privately(harness: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "must-not-leak")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "must-not-leak")
    call = harness.call(
        ask("hello", max_tokens=321), env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
        instance_id="private-1", max_turns=3,
    )  # fmt: skip
    run(ADAPTER.generate(call))
    entry = harness.record()
    env = entry["env"]
    assert set(env) == {"FAKE_CLAUDE_LOG", "ANTHROPIC_BASE_URL", "HOME", "TMPDIR", "PATH",
                        "CLAUDE_CODE_MAX_OUTPUT_TOKENS"}  # fmt: skip
    base = harness.runtime / "private-1"
    assert env["HOME"] == str(base / "home")
    assert env["TMPDIR"] == str(base / "tmp")
    assert env["PATH"].split(os.pathsep)[0] == str(FAKE_CLAUDE.parent)
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "321"
    assert entry["cwd"] == str(base / "work")
    assert (base / "home").stat().st_mode & 0o777 == 0o700
    assert entry["pgid"] == entry["pid"]  # its own process group
    assert flag(entry["argv"], "--max-turns") == "3"


def test_unsupported_sampling_fields_are_reported(harness: Harness):
    request = ask("hello", temperature=0.2, stop=["x"])
    run(ADAPTER.generate(harness.call(request)))
    assert set(request.dropped) == {"temperature", "stop"}


def test_unsafe_extra_args_are_refused(harness: Harness):
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(harness.call(ask("hi"), args=["--tools", "default"])))
    assert error.value.status == 500
    assert harness.records() == []


def test_missing_command_is_unavailable(harness: Harness):
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(harness.call(ask("hi"), command="/nonexistent/claude")))
    assert (error.value.status, error.value.kind) == (503, "unavailable")


# --- answers -------------------------------------------------------------------------


def test_text_answer_and_usage(harness: Harness):
    response = run(ADAPTER.generate(harness.call(ask("hello there"))))
    assert response.parts == [ir.Text("echo: hello there")]
    assert response.finish == "stop"
    assert response.model == "claude-sonnet-fake"
    assert response.id.startswith("msg_fake")
    stdin_tokens = -(-len(harness.record()["stdin"][0]) // 4)
    # Anthropic input excludes cache reads (3) and writes (2); ir input includes them
    assert response.usage == ir.Usage(
        input_tokens=stdin_tokens + 5, output_tokens=5, cached_tokens=3, cache_creation_tokens=2
    )


def test_system_prompt_is_passed(harness: Harness):
    request = ask("show system", system=["be brief", "and kind"])
    response = run(ADAPTER.generate(harness.call(request)))
    assert response.parts == [ir.Text("system: be brief\n\nand kind")]


def test_long_system_prompt_goes_through_a_file(harness: Harness):
    long = "x" * 150_000
    response = run(ADAPTER.generate(harness.call(ask("show system", system=[long]))))
    assert response.parts == [ir.Text("system: " + long)]
    argv = harness.record()["argv"]
    assert "--system-prompt" not in argv
    assert not Path(flag(argv, "--system-prompt-file")).exists()  # removed after the run


def test_stream_text(harness: Harness):
    events = run(collect(ADAPTER.stream(harness.call(ask("hello there"), stream=True))))
    assert isinstance(events[0], ir.Start) and events[0].usage.input_tokens > 0
    assert streamed_text(events) == "echo: hello there"
    assert isinstance(events[-1], ir.Finish) and events[-1].reason == "stop"
    assert events[-1].usage.output_tokens == 5
    assert "--include-partial-messages" in harness.record()["argv"]


def test_reasoning_streams_thinking(harness: Harness):
    request = ask("think", reasoning=ir.Reasoning(effort="high"))
    events = run(collect(ADAPTER.stream(harness.call(request, stream=True))))
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ThinkingDelta") < kinds.index("TextDelta")
    argv = harness.record()["argv"]
    assert flag(argv, "--thinking") == "enabled" and flag(argv, "--effort") == "high"
    response = run(ADAPTER.generate(harness.call(request)))
    assert response.parts[0] == ir.Thinking(text="thinking about: think")


def test_images_go_as_content_blocks(harness: Harness):
    request = ir.Request(
        model="sonnet", messages=[user(ir.Text("look"), ir.Image(media_type="image/png", data=PNG))]
    )
    response = run(ADAPTER.generate(harness.call(request)))
    assert response.parts == [ir.Text("echo: look [1 image]")]
    line = json.loads(harness.record()["stdin"][0])
    assert line["message"]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }  # fmt: skip


def test_structured_output(harness: Harness):
    request = ask("a city", output=ir.OutputFormat("json_schema", CITY_SCHEMA))
    response = run(ADAPTER.generate(harness.call(request)))
    jsonschema.validate(json.loads(response.parts[0].text), CITY_SCHEMA)
    assert json.loads(flag(harness.records()[0]["argv"], "--json-schema")) == CITY_SCHEMA
    events = run(collect(ADAPTER.stream(harness.call(request, stream=True))))
    assert json.loads(streamed_text(events)) == json.loads(response.parts[0].text)


def test_structured_output_wraps_non_object_schemas(harness: Harness):
    schema = {"type": "array", "items": {"type": "integer"}}
    request = ask("numbers", output=ir.OutputFormat("json_schema", schema))
    response = run(ADAPTER.generate(harness.call(request)))
    assert json.loads(response.parts[0].text) == [1]
    sent = json.loads(flag(harness.record()["argv"], "--json-schema"))
    assert sent["properties"]["value"] == schema


# --- client tools --------------------------------------------------------------------


def test_tool_call_round_trip(harness: Harness):
    calls = {"type": "tool_calls", "text": "",
             "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}  # fmt: skip
    first = ask("weather in Paris?", tools=[WEATHER])
    env = {"FAKE_CLAUDE_OUTPUT": json.dumps(calls)}
    response = run(ADAPTER.generate(harness.call(first, env=env)))
    [call] = response.parts
    assert isinstance(call, ir.ToolCall) and response.finish == "tool_calls"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    argv = harness.record()["argv"]
    schema = json.loads(flag(argv, "--json-schema"))
    assert schema["properties"]["calls"]["items"]["properties"]["name"]["enum"] == ["get_weather"]
    assert "## get_weather" in flag(argv, "--system-prompt")

    second = ir.Request(
        model="sonnet",
        tools=[WEATHER],
        messages=[
            *first.messages,
            ir.Message("assistant", [call]),
            user(ir.ToolResult(call_id=call.id, content=[ir.Text("sunny")])),
        ],
    )
    answer = {"type": "text", "text": "It is sunny in Paris.", "calls": []}
    env = {"FAKE_CLAUDE_OUTPUT": json.dumps(answer)}
    response = run(ADAPTER.generate(harness.call(second, env=env)))
    assert response.parts == [ir.Text("It is sunny in Paris.")] and response.finish == "stop"
    text = json.loads(harness.records()[-1]["stdin"][0])["message"]["content"][0]["text"]
    assert "<conversation_history>" in text and "weather in Paris?" in text
    assert text.endswith(f"[tool result get_weather id={call.id}]\nsunny")


def test_tool_calls_stream_at_the_end(harness: Harness):
    calls = {"type": "tool_calls", "text": "Checking.",
             "calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                       {"name": "get_weather", "arguments": {"city": "Rome"}}]}  # fmt: skip
    call = harness.call(ask("weather?", tools=[WEATHER]), stream=True,
                        env={"FAKE_CLAUDE_OUTPUT": json.dumps(calls)})  # fmt: skip
    events = run(collect(ADAPTER.stream(call)))
    assert isinstance(events[0], ir.Start)
    starts = [e for e in events if isinstance(e, ir.ToolCallStart)]
    assert [s.name for s in starts] == ["get_weather", "get_weather"]
    assert starts[0].id != starts[1].id
    args = [json.loads(e.arguments) for e in events if isinstance(e, ir.ToolCallDelta)]
    assert args == [{"city": "Oslo"}, {"city": "Rome"}]
    assert streamed_text(events) == "Checking."
    assert events[-1] == ir.Finish("tool_calls", events[-1].usage)


def test_tool_choice_shapes_the_schema():
    other = ir.Tool(name="get_time", parameters={"type": "object", "properties": {}})
    auto = emulation.emulation_for(ask("x", tools=[WEATHER, other]))
    assert auto.schema["properties"]["type"]["enum"] == ["text", "tool_calls"]
    assert len(auto.schema["properties"]["calls"]["items"]["anyOf"]) == 2
    required = emulation.emulation_for(
        ask("x", tools=[WEATHER], tool_choice=ir.ToolChoice("required"), parallel_tool_calls=False)
    )
    assert required.schema["properties"]["type"]["enum"] == ["tool_calls"]
    assert required.schema["properties"]["calls"]["minItems"] == 1
    assert required.schema["properties"]["calls"]["maxItems"] == 1
    named = emulation.emulation_for(
        ask("x", tools=[WEATHER, other], tool_choice=ir.ToolChoice("tool", "get_time"))
    )
    assert named.tool_names == ("get_time",)
    none = emulation.emulation_for(ask("x", tools=[WEATHER], tool_choice=ir.ToolChoice("none")))
    assert none.mode == "text" and none.schema is None


def test_tool_schemas_with_refs_are_rehomed():
    tool = ir.Tool(
        name="plan",
        parameters={
            "type": "object",
            "properties": {"step": {"$ref": "#/$defs/step"}},
            "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        },
    )
    schema = emulation.emulation_for(ask("x", tools=[tool])).schema
    assert schema["properties"]["calls"]["items"]["properties"]["arguments"] == {
        "$ref": "#/$defs/plan"
    }
    assert schema["$defs"]["plan"]["properties"]["step"] == {"$ref": "#/$defs/plan__step"}
    jsonschema.Draft202012Validator.check_schema(schema)
    answer = {"type": "tool_calls", "text": "",
              "calls": [{"name": "plan", "arguments": {"step": {"n": 1}}}]}  # fmt: skip
    jsonschema.validate(answer, schema)


def test_unknown_tool_in_answer_is_an_error(harness: Harness):
    calls = {"type": "tool_calls", "text": "", "calls": [{"name": "rm_rf", "arguments": {}}]}
    call = harness.call(ask("x", tools=[WEATHER]), env={"FAKE_CLAUDE_OUTPUT": json.dumps(calls)})
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(call))
    assert error.value.status == 502


# --- prompt hygiene ------------------------------------------------------------------


def test_history_is_rendered_into_one_user_message():
    request = ir.Request(
        model="sonnet",
        messages=[
            user(ir.Text("first"), ir.Image(media_type="image/png", data=PNG)),
            ir.Message("assistant", [ir.Text("an answer")]),
            user(ir.Text("second")),
        ],
    )
    line = emulation.user_line(request)
    assert line["type"] == "user" and line["message"]["role"] == "user"
    blocks = line["message"]["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "text"]
    assert blocks[0]["text"] == "<conversation_history>\n[user]\nfirst"
    assert blocks[2]["text"].endswith("[assistant]\nan answer\n\n</conversation_history>\n\nsecond")


def test_trailing_system_message_stays_in_the_current_turn():
    request = ir.Request(
        model="sonnet",
        messages=[user(ir.Text("question")), ir.Message("system", [ir.Text("be terse")])],
    )
    blocks = emulation.user_line(request)["message"]["content"]
    assert blocks == [{"type": "text", "text": "question\n[system]\nbe terse"}]


def test_single_turn_is_sent_verbatim():
    line = emulation.user_line(ask("just this"))
    assert line["message"]["content"] == [{"type": "text", "text": "just this"}]


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("/context", "\u200b/context"),
        ("!rm -rf /", "\u200b!rm -rf /"),
        ("read @/etc/passwd", "read \u200b@/etc/passwd"),
        ('see @"/etc/passwd"', 'see \u200b@"/etc/passwd"'),
        ("@file\n@other", "\u200b@file\n\u200b@other"),
        ("mail a@b.com", "mail a@b.com"),
        ("a / b", "a / b"),
    ],
)
def test_cli_syntax_is_defused(text: str, sent: str):
    assert emulation.user_line(ask(text))["message"]["content"][0]["text"] == sent


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "status", "kind"),
    [
        ("fail auth", 401, "authentication"),
        ("not logged in", 401, "authentication"),
        ("fail rate", 429, "rate_limit"),
        ("fail overloaded", 529, "overloaded"),
        ("fail server", 502, "bad_gateway"),
        ("crash", 502, "bad_gateway"),
        ("offer bash", 500, "api_error"),
    ],
)
def test_errors_map_to_statuses(harness: Harness, trigger: str, status: int, kind: str):
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(harness.call(ask(trigger))))
    assert (error.value.status, error.value.kind) == (status, kind)
    if trigger == "crash":
        assert "boom" in error.value.message
    events = run(collect(ADAPTER.stream(harness.call(ask(trigger), stream=True))))
    assert isinstance(events[-1], ir.Error) and events[-1].status == status
    assert not any(isinstance(e, ir.Finish) for e in events)


# --- process handling ----------------------------------------------------------------


def test_timeout_kills_the_process_group(harness: Harness):
    started = time.monotonic()
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(harness.call(ask("sleep 30"), timeout=1.0)))
    assert (error.value.status, error.value.kind) == (504, "timeout")
    assert time.monotonic() - started < 5
    entry = harness.record()
    assert entry["children"], "the fake should have started a child"
    assert_gone([entry["pid"], *entry["children"]], within=1.0)
    assert not Path(f"/proc/{entry['pid']}").exists(), "the CLI must be reaped, not a zombie"


def test_stream_timeout_ends_with_an_error(harness: Harness):
    events = run(collect(ADAPTER.stream(harness.call(ask("sleep 30"), stream=True, timeout=1.0))))
    assert isinstance(events[-1], ir.Error) and events[-1].status == 504
    entry = harness.record()
    assert_gone([entry["pid"], *entry["children"]], within=1.0)


def test_cancelling_generate_kills_the_process(harness: Harness):
    async def scenario() -> dict[str, Any]:
        task = asyncio.create_task(ADAPTER.generate(harness.call(ask("sleep 30"))))
        [entry] = await harness.wait_for_records(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return entry

    entry = run(scenario())
    assert_gone([entry["pid"], *entry["children"]], within=1.0)


def test_closing_the_stream_kills_the_process(harness: Harness):
    async def scenario() -> tuple[list[ir.Event], dict[str, Any]]:
        stream = ADAPTER.stream(harness.call(ask("sleep 30"), stream=True))
        seen = []
        async for event in stream:
            seen.append(event)
            if isinstance(event, ir.TextDelta):
                break  # the client went away mid-answer
        await stream.aclose()
        return seen, harness.record()

    seen, entry = run(scenario())
    assert isinstance(seen[0], ir.Start)
    assert_gone([entry["pid"], *entry["children"]], within=1.0)


def test_concurrency_limit_answers_429_when_full(harness: Harness):
    async def scenario() -> None:
        busy = asyncio.create_task(
            ADAPTER.generate(harness.call(ask("sleep 30"), max_concurrency=1, queue_timeout=0.3))
        )
        await harness.wait_for_records(1)
        started = time.monotonic()
        with pytest.raises(ir.Error) as error:
            await ADAPTER.generate(harness.call(ask("hi"), max_concurrency=1, queue_timeout=0.3))
        assert (error.value.status, error.value.kind) == (429, "rate_limit")
        assert 0.25 < time.monotonic() - started < 2
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
        # the slot is free again
        response = await ADAPTER.generate(harness.call(ask("hi"), max_concurrency=1))
        assert response.parts == [ir.Text("echo: hi")]

    run(scenario())
    assert len(harness.records()) == 2


def test_concurrency_limit_queues_within_the_wait(harness: Harness):
    async def scenario() -> list[ir.Response]:
        calls = [harness.call(ask(f"sleep 0.5 #{i}"), max_concurrency=2) for i in range(3)]
        return await asyncio.gather(*(ADAPTER.generate(c) for c in calls))

    started = time.monotonic()
    responses = run(scenario())
    assert [r.parts[0].text for r in responses] == [f"echo: sleep 0.5 #{i}" for i in range(3)]
    assert time.monotonic() - started >= 1.0  # the third waited for a slot
    assert len(harness.records()) == 3


# --- the real Claude Code CLI against the fake Anthropic API --------------------------


CLAUDE = find_claude()  # ROUTER_TEST_CLAUDE, .venv/node, /tmp/cc, PATH
real_cli = pytest.mark.skipif(
    CLAUDE is None,
    reason="Claude Code CLI not installed (set ROUTER_TEST_CLAUDE, or npm install --prefix "
    ".venv/node @anthropic-ai/claude-code)",
)


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key="fake-key") as fake:
        yield fake


@pytest.fixture
def real(anthropic_fake: FakeUpstream, harness: Harness) -> Iterator[RealCli]:
    anthropic_fake.reset()
    cli = RealCli(anthropic_fake, harness)
    yield cli
    cli.assert_no_tools_ran()
    assert_gone(cli.pids())


class RealCli:
    def __init__(self, fake: FakeUpstream, harness: Harness) -> None:
        self.fake = fake
        self.harness = harness

    def call(self, request: ir.Request, stream: bool = False, **options: Any) -> Call:
        env = {
            "ANTHROPIC_BASE_URL": self.fake.url,
            "ANTHROPIC_API_KEY": "fake-key",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
        }
        options.setdefault("instance_id", "real-cli")
        return self.harness.call(request, stream=stream, command=str(CLAUDE), env=env, **options)

    def messages(self) -> list[dict[str, Any]]:
        return [r for r in self.fake.requests() if r["path"] == "/v1/messages"]

    def assert_no_tools_ran(self) -> None:
        assert_no_tools_ran(self.fake)

    def pids(self) -> list[int]:
        return pids_in(self.harness.runtime)


def assert_no_tools_ran(fake: FakeUpstream) -> None:
    """The model saw no tool but the emulation's StructuredOutput, and no tool result ever
    went back to it: nothing was executed."""
    for entry in fake.requests():
        if entry["path"] != "/v1/messages":
            continue
        body = entry["body"]
        assert {t.get("name") for t in body.get("tools") or []} <= {"StructuredOutput"}
        for message in body["messages"]:
            content = message["content"]
            blocks = content if isinstance(content, list) else []
            assert not [b for b in blocks if b.get("type") in ("tool_result", "tool_use")]


def pids_in(runtime: Path) -> list[int]:
    """Processes whose working directory is one of the private ones under `runtime`."""
    work = {str(p) for p in runtime.glob("*/work")}
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd") in work:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@real_cli
@pytest.mark.slow
def test_real_text(real: RealCli):
    response = run(ADAPTER.generate(real.call(ask("hello there", system=["be brief"]))))
    [text] = response.parts
    assert text.text.startswith("echo: ") and text.text.endswith("hello there")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    [entry] = real.messages()
    body = entry["body"]
    assert body["tools"] == [] and body["thinking"] == {"type": "disabled"}
    assert body["system"][-1]["text"] == "be brief"
    assert entry["headers"]["x-api-key"] == "fake-key"


@real_cli
@pytest.mark.slow
def test_real_stream(real: RealCli):
    events = run(collect(ADAPTER.stream(real.call(ask("stream this"), stream=True))))
    assert isinstance(events[0], ir.Start)
    assert streamed_text(events).endswith("stream this")
    assert sum(isinstance(e, ir.TextDelta) for e in events) > 1
    assert isinstance(events[-1], ir.Finish) and events[-1].usage.output_tokens > 0


@real_cli
@pytest.mark.slow
def test_real_image(real: RealCli):
    request = ir.Request(
        model="haiku",
        messages=[user(ir.Text("what is this?"), ir.Image(media_type="image/png", data=PNG))],
    )
    response = run(ADAPTER.generate(real.call(request)))
    size = len(base64.b64decode(PNG))
    assert response.parts[0].text.endswith(f"what is this?\nimage: image/png {size} bytes")


@real_cli
@pytest.mark.slow
def test_real_structured_output(real: RealCli):
    # the fake Anthropic API calls a tool (here: StructuredOutput) when asked to "call tool"
    request = ask("a city please, call tool", output=ir.OutputFormat("json_schema", CITY_SCHEMA))
    response = run(ADAPTER.generate(real.call(request)))
    document = json.loads(response.parts[0].text)
    jsonschema.validate(document, CITY_SCHEMA)
    events = run(collect(ADAPTER.stream(real.call(request, stream=True))))
    assert json.loads(streamed_text(events)) == document
    tools = [t["name"] for e in real.messages() for t in e["body"]["tools"]]
    assert tools == ["StructuredOutput", "StructuredOutput"]


@real_cli
@pytest.mark.slow
def test_real_tool_call_round_trip(real: RealCli):
    first = ask("weather in Paris? call tool", tools=[WEATHER],
                tool_choice=ir.ToolChoice("required"))  # fmt: skip
    response = run(ADAPTER.generate(real.call(first)))
    call = response.parts[-1]
    assert isinstance(call, ir.ToolCall) and response.finish == "tool_calls"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "sample city"}

    second = ir.Request(
        model="sonnet",
        tools=[WEATHER],
        messages=[
            *first.messages,
            ir.Message("assistant", response.parts),
            user(ir.ToolResult(call_id=call.id, content=[ir.Text("sunny, 21C")])),
        ],
    )
    events = run(collect(ADAPTER.stream(real.call(second, stream=True))))
    assert isinstance(events[-1], ir.Finish) and events[-1].reason == "stop"
    assert streamed_text(events)
    last = real.messages()[-1]["body"]["messages"][-1]["content"][-1]["text"]
    assert f"[tool result get_weather id={call.id}]\nsunny, 21C" in last


@real_cli
@pytest.mark.slow
def test_real_timeout_kills_the_cli(real: RealCli):
    real.fake.script({"path": "/v1/messages", "hang": 30})
    started = time.monotonic()
    with pytest.raises(ir.Error) as error:
        run(ADAPTER.generate(real.call(ask("hello"), timeout=3.0)))
    assert error.value.status == 504 and time.monotonic() - started < 8
    assert_gone(real.pids(), within=2.0)
    real.fake.wait_for(lambda log: any(r.get("disconnected") for r in log), timeout=5)


@real_cli
@pytest.mark.slow
def test_real_concurrency_limit(real: RealCli):
    real.fake.script({"path": "/v1/messages", "hang": 30})

    async def scenario() -> None:
        limits = {"max_concurrency": 1, "queue_timeout": 0.5}
        busy = asyncio.create_task(ADAPTER.generate(real.call(ask("slow"), **limits)))
        while not real.messages():  # the first CLI reached the API and hangs there
            await asyncio.sleep(0.05)
        assert real.pids(), "the CLI should be running"
        with pytest.raises(ir.Error) as error:
            await ADAPTER.generate(real.call(ask("next"), **limits))
        assert error.value.status == 429
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy

    run(scenario())
    assert_gone(real.pids(), within=2.0)


# --- through the gateway, with the official SDKs --------------------------------------

WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER.parameters,
    },
}


@pytest.fixture(scope="module")
def cc_gateway(anthropic_fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):
    if CLAUDE is None:
        pytest.skip("Claude Code CLI not installed")
    directory = tmp_path_factory.mktemp("cc-gateway")
    runtime = directory / "runtime"
    config = write_config(
        directory / "config",
        {
            "providers.yaml": f"""
                providers:
                  claudeCode-custom:
                    type: claudeCode-custom
                    models: [opus, sonnet, haiku]
                    options: {{ runtime_dir: "{runtime}" }}
                    instances:
                      - id: cc-gateway
                        command: "{CLAUDE}"
                        max_concurrency: 4
                        env:
                          ANTHROPIC_BASE_URL: "{anthropic_fake.url}"
                          ANTHROPIC_API_KEY: fake-key
                          CLAUDE_CODE_MAX_RETRIES: "0"
                          CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1"
                          DISABLE_AUTOUPDATER: "1"
                          DISABLE_TELEMETRY: "1"
                    timeout: 60s
                  echo:
                    type: echo
            """,
            "routes.yaml": """
                default: echo
                routes:
                  - name: claude-code
                    match: { model: [opus, sonnet, haiku] }
                    to: claudeCode-custom
            """,
        },
    )
    gateway = Gateway(config)
    yield gateway
    gateway.stop()
    assert_gone(pids_in(runtime))


@pytest.fixture
def gw(cc_gateway: Gateway, anthropic_fake: FakeUpstream) -> Iterator[Gateway]:
    anthropic_fake.reset()
    yield cc_gateway
    assert_no_tools_ran(anthropic_fake)


@pytest.mark.slow
def test_gateway_openai_chat(gw: Gateway):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hello chat"}]
    )
    assert completion.choices[0].message.content.endswith("hello chat")
    assert completion.usage.prompt_tokens > 0
    with client.chat.completions.stream(
        model="sonnet",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]}],
    ) as stream:  # fmt: skip
        final = stream.get_final_completion()
    assert final.choices[0].message.content.endswith("describe\nimage: image/png 70 bytes")

    messages: list[Any] = [{"role": "user", "content": "weather in Paris? call tool"}]
    first = client.chat.completions.create(
        model="sonnet", messages=messages, tools=[WEATHER_FUNCTION], tool_choice="required"
    )
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "sample city"},
    )  # fmt: skip
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(
        model="sonnet", messages=messages, tools=[WEATHER_FUNCTION]
    )
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


@pytest.mark.slow
def test_gateway_openai_responses(gw: Gateway):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    response = client.responses.create(model="haiku", input="hello responses")
    assert response.output_text.endswith("hello responses")
    with client.responses.stream(model="haiku", input="stream responses") as stream:
        final = stream.get_final_response()
    assert final.output_text.endswith("stream responses") and final.usage.output_tokens > 0
    structured = client.responses.create(
        model="haiku",
        input="a city, call tool",
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA}},
    )
    jsonschema.validate(json.loads(structured.output_text), CITY_SCHEMA)


@pytest.mark.slow
def test_gateway_anthropic(gw: Gateway):
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="opus", max_tokens=200, messages=[{"role": "user", "content": "hello messages"}]
    )
    assert message.content[-1].text.endswith("hello messages")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    with client.messages.stream(
        model="opus", max_tokens=200,
        messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}],
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert final.content[-1].text.endswith("see\nimage: image/png 70 bytes")

    tool = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER.parameters}
    asked = [{"role": "user", "content": "weather in Oslo? call tool"}]
    first = client.messages.create(
        model="opus", max_tokens=200, messages=asked, tools=[tool], tool_choice={"type": "any"}
    )
    use = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.input == {"city": "sample city"}
    followup = [
        *asked,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "snowing"},
        ]},
    ]  # fmt: skip
    second = client.messages.create(model="opus", max_tokens=200, messages=followup, tools=[tool])
    assert second.stop_reason == "end_turn" and second.content[-1].text


@pytest.mark.slow
def test_gateway_gemini(gw: Gateway):
    client = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=gw.url))
    reply = client.models.generate_content(model="sonnet", contents="hello gemini")
    assert reply.text.endswith("hello gemini")
    chunks = client.models.generate_content_stream(model="sonnet", contents="stream gemini")
    assert "".join(chunk.text or "" for chunk in chunks).endswith("stream gemini")
    structured = client.models.generate_content(
        model="sonnet",
        contents="a city, call tool",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=CITY_SCHEMA
        ),
    )
    jsonschema.validate(json.loads(structured.text), CITY_SCHEMA)
