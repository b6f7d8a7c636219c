"""The `claudeCode-custom` provider: the local Claude Code CLI, one process per request.

Command line (checked against `claude --help` of Claude Code 2.1.197; `--max-turns` and
`--thinking` are accepted but hidden from the help):

    <command> -p --output-format stream-json --verbose --input-format stream-json
      --model <model> --tools "" --no-session-persistence --setting-sources ""
      --strict-mcp-config --disable-slash-commands --permission-mode dontAsk
      --max-turns <n> --system-prompt <text> | --system-prompt-file <file>
      --thinking disabled|enabled [--effort low|medium|high|xhigh|max]
      [--json-schema <schema>] [--include-partial-messages] [<args>...]

Safety: the model is never offered a built-in tool (`--tools ""`; with `--json-schema`
the CLI adds only its `StructuredOutput` tool, which runs nothing), no settings, hooks,
MCP servers or skills are loaded, nothing is saved, and `dontAsk` denies anything that
would need a permission. The process runs in a private, empty working directory with a
private HOME and TMPDIR per instance (`<runtime dir>/<instance id>/{home,tmp,work}`; the
runtime dir is the pool option `runtime_dir`, default `$TMPDIR/router-claude-code`), and
its environment is exactly the instance's declared `env` plus HOME, TMPDIR, PATH
(`<command's dir>:/usr/local/bin:/usr/bin:/bin`) and, when the client set `max_tokens`,
CLAUDE_CODE_MAX_OUTPUT_TOKENS; declared variables win over these. Extra `args` that would
undo the safety flags are refused. Stdin carries exactly one JSON-encoded `user` line
(the CLI also accepts control lines such as `bash_command`; client text can never form
one), and its text is defused against slash commands and `@file` mentions. As a last
guard, a run whose `init` line lists any tool besides `StructuredOutput`, or whose model
uses another tool, is killed.

Settings (instance keys; the pool's `options` give defaults for every instance, and an
instance's own value wins): `command` (default "claude", looked up on the server's PATH),
`args` (extra CLI arguments), `env`, `max_concurrency` (default 4), `max_turns` (default
2: the answer, plus one structured-output reminder turn the CLI itself may add),
`queue_timeout` (a duration, default 30s), `runtime_dir`, `model_aliases`.

Authentication is whatever the declared env gives the CLI: ANTHROPIC_API_KEY (with
ANTHROPIC_BASE_URL for a proxy or a test fake), CLAUDE_CODE_OAUTH_TOKEN (from `claude
setup-token`), or a login stored in the private HOME (`HOME=<runtime dir>/<id>/home
claude /login`). Recommended too: CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1,
DISABLE_AUTOUPDATER=1, DISABLE_TELEMETRY=1 and CLAUDE_CODE_MAX_RETRIES=0 (the gateway
fails over itself).

Conversation, system prompt, client tools and structured output: see
`router.providers.claude_code_emulation`. Reasoning: `--thinking enabled` (plus `--effort`)
only when the client asked for it, thinking text is returned without signatures.
Sampling fields the CLI cannot take (temperature, top_p, top_k, seed, stop) are added
to `request.dropped`.

Answers (read by `router.providers.claude_code_output`). Non-stream: text from the
`result` line (or its `structured_output`), thinking from the `assistant` lines, usage
from `result.usage` (input = input + cache read + cache write tokens). Stream:
`--include-partial-messages` `stream_event` lines (Anthropic stream events) become ir
events as they arrive; with tools or structured output the answer is JSON that only
means something whole, so it is buffered and sent at the end (thinking still streams
live). `Finish` carries the `result` line's usage.

Processes. Each instance allows `max_concurrency` runs at once (default 4; per server
worker process); more wait up to `queue_timeout` (pool or instance setting,
default 30, never past the request timeout) and then get 429 rate_limit. The provider's
`timeout` bounds the whole run. The CLI runs in its own process group; on timeout,
cancellation (client disconnect: the stream generator is closed or the task cancelled)
or any error the group gets SIGTERM, then SIGKILL, and the process is reaped.

Errors. An `is_error` result maps by `api_error_status` and the CLI's error tag: 401 /
authentication_failed -> 401 authentication, 403 / billing -> 403 permission, 429 /
rate_limit -> 429, 529 / overloaded -> 529, other upstream 4xx keep their status, the
rest 502 bad_gateway. A run that ends without a result maps its stderr the same way
(auth and rate-limit wording), else 502; a missing command is 503 unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from router.config.durations import parse_duration
from router.protocols import ir
from router.providers import claude_code_emulation as emulation
from router.providers.base import Call, IRAdapter
from router.providers.claude_code_emulation import Emulation
from router.providers.claude_code_output import AnswerReader

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_TURNS = 2  # one answer, plus the CLI's own structured-output reminder turn
DEFAULT_QUEUE_TIMEOUT = 30.0
KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL
SYSTEM_PROMPT_ARG_LIMIT = 100_000  # longer prompts go through --system-prompt-file
LINE_LIMIT = 1 << 26  # longest stdout line read (base64 images can be large)
STDERR_KEPT = 8192
BASE_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
DROPPED_FIELDS = ("temperature", "top_p", "top_k", "seed", "stop")
# flags that would undo the safety flags, refused in an instance's extra `args`
# fmt: off
UNSAFE_ARGS = frozenset({
    "--tools", "--allowedTools", "--allowed-tools", "--disallowedTools", "--disallowed-tools",
    "--dangerously-skip-permissions", "--allow-dangerously-skip-permissions",
    "--permission-mode", "--mcp-config", "--settings", "--setting-sources", "--add-dir",
    "--plugin-dir", "--plugin-url", "--agents", "--agent", "--resume", "-r", "--continue",
    "-c", "--session-id", "--fork-session", "--system-prompt", "--system-prompt-file",
    "--append-system-prompt", "--append-system-prompt-file", "--input-format",
    "--output-format", "--json-schema", "--max-turns", "--model", "--file", "--worktree",
    "-w", "--chrome", "--ide", "--remote-control", "--bg", "--background",
})
# fmt: on


class ClaudeCodeAdapter(IRAdapter):
    def note_dropped(self, request: ir.Request) -> None:
        note_dropped(request)

    async def generate(self, call: Call) -> ir.Response:
        job = Job.for_call(call, stream=False)
        reader = AnswerReader(job.emulation, job.model, job.live_text, job.want_thinking)
        async with admitted(call, job.deadline), CliRun.start(job) as run:
            async with contextlib.aclosing(run.lines()) as lines:
                async for line in lines:
                    reader.feed(line)
            reader.check_exit(run.returncode, run.stderr_text())
        return reader.response()

    async def stream(self, call: Call) -> AsyncIterator[ir.Event]:
        try:
            job = Job.for_call(call, stream=True)
        except ir.Error as error:
            yield error
            return
        reader = AnswerReader(job.emulation, job.model, job.live_text, job.want_thinking)
        try:
            async with (
                admitted(call, job.deadline),
                CliRun.start(job) as run,
                contextlib.aclosing(run.lines()) as lines,
            ):
                async for line in lines:
                    for event in reader.feed(line):
                        yield event
                reader.check_exit(run.returncode, run.stderr_text())
            for event in reader.final_events():
                yield event
        except ir.Error as error:
            yield error


# --- what to run ---------------------------------------------------------------------


@dataclass(slots=True)
class Job:
    """Everything needed to start one CLI run."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdin_line: bytes
    emulation: Emulation
    model: str
    live_text: bool  # stream text deltas as they come (plain-text streams)
    want_thinking: bool
    timeout: float
    deadline: float
    files: list[Path] = field(default_factory=list)  # removed after the run

    @classmethod
    def for_call(cls, call: Call, *, stream: bool) -> Job:
        request = call.request
        if request is None:
            raise ir.Error(500, "api_error", "claudeCode-custom needs an ir request")
        options = _options(call)
        command = resolve_command(str(options.get("command") or "claude"))
        dirs = instance_dirs(call)
        mode = emulation.emulation_for(request)
        model = _model(call, options)
        note_dropped(request)
        line = msgspec.json.encode(emulation.user_line(request)) + b"\n"
        extra = extra_args(options.get("args") or ())
        argv = [command, *base_flags(model, _max_turns(options))]
        argv += thinking_flags(request)
        if mode.schema is not None:
            argv += ["--json-schema", _json(mode.schema)]
        buffered = mode.mode != "text"
        if stream:
            argv.append("--include-partial-messages")
        files: list[Path] = []
        argv += system_prompt_flags(emulation.system_prompt(request, mode), dirs["tmp"], files)
        argv += extra
        timeout = float(call.provider.timeout)
        return cls(
            argv=argv,
            env=child_env(options.get("env") or {}, command, dirs, request.max_tokens),
            cwd=dirs["work"],
            stdin_line=line,
            emulation=mode,
            model=model,
            live_text=stream and not buffered,
            want_thinking=_wants_thinking(request),
            timeout=timeout,
            deadline=time.monotonic() + timeout,
            files=files,
        )


def _options(call: Call) -> dict[str, Any]:
    """Pool options, overridden by the instance's options."""
    return {**dict(call.provider.options), **dict(call.instance.options)}


def _model(call: Call, options: Mapping[str, Any]) -> str:
    aliases = options.get("model_aliases") or {}
    model = call.model or (call.request.model if call.request else "")
    return str(aliases.get(model, model)) or "sonnet"


def _max_turns(options: Mapping[str, Any]) -> int:
    return max(1, int(options.get("max_turns") or DEFAULT_MAX_TURNS))


def base_flags(model: str, max_turns: int) -> list[str]:
    return [
        "-p",
        "--output-format", "stream-json",
        "--verbose",
        "--input-format", "stream-json",
        "--model", model,
        "--tools", "",
        "--no-session-persistence",
        "--setting-sources", "",
        "--strict-mcp-config",
        "--disable-slash-commands",
        "--permission-mode", "dontAsk",
        "--max-turns", str(max_turns),
    ]  # fmt: skip


def thinking_flags(request: ir.Request) -> list[str]:
    reasoning = request.reasoning
    if reasoning is None or not reasoning.enabled:
        return ["--thinking", "disabled"]
    flags = ["--thinking", "enabled"]
    effort = _effort(reasoning)
    if effort:
        flags += ["--effort", effort]
    return flags


def _effort(reasoning: ir.Reasoning) -> str | None:
    effort = (reasoning.effort or "").lower()
    if effort in EFFORTS:
        return effort
    if effort in ("minimal", "none"):
        return "low"
    budget = reasoning.budget_tokens
    if budget:
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return None


def _wants_thinking(request: ir.Request) -> bool:
    reasoning = request.reasoning
    return bool(reasoning and reasoning.enabled and reasoning.include_thoughts)


def system_prompt_flags(text: str, tmp: Path, files: list[Path]) -> list[str]:
    """`--system-prompt` always (an empty one replaces Claude Code's own agent prompt);
    a file for prompts too long for one argv entry."""
    if len(text.encode()) <= SYSTEM_PROMPT_ARG_LIMIT:
        return ["--system-prompt", text]
    handle, name = tempfile.mkstemp(prefix="system-", suffix=".txt", dir=tmp)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    files.append(Path(name))
    return ["--system-prompt-file", name]


def extra_args(args: Any) -> list[str]:
    out = [str(a) for a in args]
    for arg in out:
        if arg.split("=", 1)[0] in UNSAFE_ARGS:
            raise ir.Error(500, "api_error", f"claudeCode-custom: args may not contain {arg!r}")
    return out


def note_dropped(request: ir.Request) -> None:
    present = {
        "temperature": request.temperature is not None,
        "top_p": request.top_p is not None,
        "top_k": request.top_k is not None,
        "seed": request.seed is not None,
        "stop": bool(request.stop),
    }
    for name in DROPPED_FIELDS:
        if present[name] and name not in request.dropped:
            request.dropped.append(name)


def resolve_command(command: str) -> str:
    if os.sep in command:
        path = Path(command).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    else:
        found = shutil.which(command)
        if found:
            return found
    raise ir.Error(503, "unavailable", f"claudeCode-custom: command {command!r} not found")


def runtime_root(options: Mapping[str, Any]) -> Path:
    configured = options.get("runtime_dir")
    if configured:
        return Path(str(configured)).expanduser()
    return Path(tempfile.gettempdir()) / "router-claude-code"


def instance_dirs(call: Call) -> dict[str, Path]:
    """The instance's private home, tmp and (empty) working directory, mode 0700."""
    root = runtime_root(_options(call))
    base = root / re.sub(r"[^A-Za-z0-9._-]", "_", call.instance.id)
    dirs = {name: base / name for name in ("home", "tmp", "work")}
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (base, *dirs.values()):
        path.mkdir(mode=0o700, exist_ok=True)
    for path in (root, base, *dirs.values()):
        if path.is_symlink() or path.stat().st_uid != os.getuid():
            raise ir.Error(500, "api_error", f"claudeCode-custom: {path} is not ours")
        path.chmod(0o700)
    return dirs


def child_env(
    declared: Mapping[str, str], command: str, dirs: Mapping[str, Path], max_tokens: int | None
) -> dict[str, str]:
    path = [str(Path(command).parent), *BASE_PATH]
    env = {
        "HOME": str(dirs["home"]),
        "TMPDIR": str(dirs["tmp"]),
        "PATH": os.pathsep.join(dict.fromkeys(path)),
    }
    if max_tokens:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_tokens)
    env.update({str(k): str(v) for k, v in declared.items()})
    return env


# --- concurrency ---------------------------------------------------------------------


class Slots:
    """A counting limit with a bounded FIFO wait, bound to one event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, wait: float) -> bool:
        """Take a slot, waiting at most `wait` seconds; False when none came free."""
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(0.0, wait))
            return True
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, but the request is gone
            raise
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.busy -= 1


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Slots]] = (
    weakref.WeakKeyDictionary()
)


def slots_for(call: Call) -> Slots:
    options = _options(call)
    limit = max(1, int(options.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY))
    per_loop = _SLOTS.setdefault(asyncio.get_running_loop(), {})
    slots = per_loop.get(call.instance.id)
    if slots is None:
        slots = per_loop[call.instance.id] = Slots(limit)
    slots.limit = limit  # a reload may change it
    return slots


@contextlib.asynccontextmanager
async def admitted(call: Call, deadline: float) -> AsyncIterator[None]:
    """Hold one of the instance's slots, or raise 429 after the bounded wait."""
    options = _options(call)
    queue_timeout = parse_duration(options.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT))
    wait = min(queue_timeout, deadline - time.monotonic())
    slots = slots_for(call)
    if not await slots.acquire(wait):
        raise ir.Error(
            429,
            "rate_limit",
            f"claudeCode-custom instance {call.instance.id}: all {slots.limit} slots busy",
            retry_after=1.0,
        )
    try:
        yield
    finally:
        slots.release()


# --- one process ---------------------------------------------------------------------


class CliRun:
    """A running CLI: feeds stdin, yields stdout JSON lines, keeps stderr's tail, and
    always ends with the whole process group gone and the process reaped."""

    def __init__(self, job: Job, process: asyncio.subprocess.Process) -> None:
        self.job = job
        self.process = process
        self.stderr = bytearray()
        self._tasks = [
            asyncio.create_task(self._feed_stdin()),
            asyncio.create_task(self._drain_stderr()),
        ]

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, job: Job) -> AsyncIterator[CliRun]:
        try:
            process = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=job.env,
                cwd=job.cwd,
                start_new_session=True,
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            _remove(job.files)
            raise _spawn_error(job, exc) from None
        run = cls(job, process)
        finished = False
        try:
            yield run
            finished = True
        finally:
            await run.close(graceful=finished)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace").strip()

    async def lines(self) -> AsyncIterator[dict[str, Any]]:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            remaining = self.job.deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(stdout.readline(), max(0.0, remaining))
            except TimeoutError:
                raise ir.Error(
                    504, "timeout", f"claude did not finish within {self.job.timeout:g}s"
                ) from None
            except ValueError:  # a line beyond LINE_LIMIT
                raise ir.Error(502, "bad_gateway", "claude wrote an oversized line") from None
            if not raw:
                break
            line = _parse_line(raw)
            if line is not None:
                yield line
        await self._wait_exit()

    async def _wait_exit(self) -> None:
        remaining = max(0.1, self.job.deadline - time.monotonic())
        try:
            await asyncio.wait_for(self.process.wait(), remaining)
        except TimeoutError:
            raise ir.Error(504, "timeout", "claude did not exit after its answer") from None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 1.0)

    async def _feed_stdin(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        with contextlib.suppress(ConnectionError, RuntimeError):
            stdin.write(self.job.stdin_line)
            await stdin.drain()
        with contextlib.suppress(ConnectionError, RuntimeError):
            stdin.close()

    async def _drain_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        while chunk := await stderr.read(4096):
            self.stderr += chunk
            del self.stderr[:-STDERR_KEPT]

    async def close(self, graceful: bool) -> None:
        """Kill the group unless it already ended cleanly; always reap and clean up."""
        try:
            if not graceful or self.process.returncode is None:
                await self._kill_group()
            _signal_group(self.process.pid, signal.SIGKILL)  # stragglers left in the group
        finally:
            for task in self._tasks:
                task.cancel()
            _remove(self.job.files)

    async def _kill_group(self) -> None:
        pid = self.process.pid
        _signal_group(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), KILL_GRACE)
        except TimeoutError:
            pass
        finally:
            _signal_group(pid, signal.SIGKILL)  # even if cancelled again meanwhile
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), 5.0)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _remove(files: list[Path]) -> None:
    for path in files:
        path.unlink(missing_ok=True)


def _spawn_error(job: Job, exc: OSError) -> ir.Error:
    if exc.errno == errno.E2BIG:
        return ir.Error(413, "request_too_large", "the request is too large for the claude CLI")
    return ir.Error(503, "unavailable", f"cannot start {job.argv[0]}: {exc.strerror or exc}")


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None  # not a protocol line (e.g. a stray log line)
    return value if isinstance(value, dict) else None


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
