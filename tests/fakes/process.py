"""Start helper processes for tests and always clean them up.

with FakeUpstream.start(api_key="k") as fake:
    fake.script([{"status": 500}])
    ...                      # point a client at fake.url
    fake.requests()          # the request log

proc = spawn_process([...], ready_url="http://127.0.0.1:PORT/health")
proc.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .tls import TlsFiles

REPO_ROOT = Path(__file__).resolve().parents[2]
# never send the helpers' own loopback calls through a proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LIVE: set[ManagedProcess] = set()


def free_port() -> int:
    """A port that was free a moment ago (prefer --port-file where the program supports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
        self.popen = popen
        self.log_path = log_path
        self.name = name
        self.port: int | None = None
        self.url: str | None = None
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout)
        # workers left behind in the group (e.g. granian's) go too
        self._signal_group(signal.SIGKILL)
        _LIVE.discard(self)
        return self.popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} url={self.url}>"


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop(timeout=2.0)


def _http_ready(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except (OSError, ValueError):
        return False


def spawn_process(
    args: Sequence[str],
    *,
    ready_url: str | None = None,
    port_file: str | os.PathLike[str] | bool | None = None,
    ready: Callable[[ManagedProcess], bool] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 15.0,
    name: str | None = None,
) -> ManagedProcess:
    """Start `args` and wait until it is ready; on any failure, kill it and raise.

    Readiness: `port_file` (a path, or True for a fresh temp path substituted for the
    `{port_file}` placeholder in args) holds the port -> `.port`/`.url` are set from it;
    `ready_url` answers any HTTP response (`.url`/`.port` default to its origin);
    `ready(proc)` returns True. Use any mix.
    `env` is added to the current environment. Output goes to a log file: `.output()`.
    """
    workdir = Path(tempfile.mkdtemp(prefix="proc-"))
    log_path = workdir / "output.log"
    pf: Path | None = None
    if port_file is True:
        pf = workdir / "port"
    elif port_file:
        pf = Path(port_file)
        pf.unlink(missing_ok=True)  # never read a stale port
    argv = [str(a).replace("{port_file}", str(pf)) if pf else str(a) for a in args]
    full_env = {**os.environ, **(env or {})}
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    finally:
        log.close()
    proc = ManagedProcess(popen, log_path, name or Path(argv[0]).name)
    if ready_url:
        parsed = urlsplit(ready_url)
        proc.url, proc.port = f"{parsed.scheme}://{parsed.netloc}", parsed.port
    try:
        _wait_ready(proc, pf, ready_url, ready, timeout)
    except BaseException:
        proc.stop(timeout=2.0)
        raise
    return proc


def _wait_ready(
    proc: ManagedProcess,
    port_file: Path | None,
    ready_url: str | None,
    ready: Callable[[ManagedProcess], bool] | None,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    got_port = False
    while True:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before it was ready:\n"
                f"{proc.output()[-4000:]}"
            )
        if port_file is not None and not got_port:
            with contextlib.suppress(OSError, ValueError):
                proc.port = int(port_file.read_text().strip())
                proc.url = f"http://127.0.0.1:{proc.port}"
                got_port = True
        done = (
            (port_file is None or got_port)
            and (ready_url is None or _http_ready(ready_url))
            and (ready is None or ready(proc))
        )
        if done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} not ready after {timeout}s:\n{proc.output()[-4000:]}")
        time.sleep(0.02)


def start_python_module(
    module: str, extra: Sequence[str], name: str, timeout: float
) -> ManagedProcess:
    """`python -m module --port 0 --port-file F *extra` (a fake using bootstrap.py), ready."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    }
    args = [sys.executable, "-m", module, "--port", "0", "--port-file", "{port_file}", *extra]
    return spawn_process(args, port_file=True, env=env, cwd=REPO_ROOT, timeout=timeout, name=name)


class _Client:
    """Tiny JSON-over-HTTP client for the control endpoints (standard library only)."""

    url: str
    _opener: urllib.request.OpenerDirector = _OPENER

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with self._opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")


class FakeUpstream(_Client):
    """A running `python -m tests.fakes.upstream` (all four protocols + control API);
    with `tls` (tests/fakes/tls.py) it serves HTTPS only, control API included."""

    def __init__(self, proc: ManagedProcess, api_key: str | None, tls: TlsFiles | None) -> None:
        self.proc = proc
        self.api_key = api_key
        assert proc.url is not None and proc.port is not None
        self.port: int = proc.port
        self.url: str = f"https://127.0.0.1:{proc.port}" if tls else proc.url
        if tls:
            context = ssl.create_default_context(cafile=str(tls.ca))
            self._opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )

    @classmethod
    def start(
        cls,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        timeout: float = 10.0,
        tls: TlsFiles | None = None,
    ) -> FakeUpstream:
        extra = []
        if api_key:
            extra += ["--api-key", api_key]
        if models:
            extra += ["--models", ",".join(models)]
        if tls:
            extra += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        proc = start_python_module("tests.fakes.upstream", extra, "fake-upstream", timeout)
        return cls(proc, api_key, tls)

    def script(self, behaviours: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> int:
        """Queue behaviours for the next matching requests; returns the queue length."""
        if isinstance(behaviours, Mapping):
            behaviours = [behaviours]
        return int(self._call("POST", "/_control/next", list(map(dict, behaviours)))["queued"])

    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first (control requests are not logged)."""
        return list(self._call("GET", "/_control/requests"))

    def last_request(self) -> dict[str, Any]:
        log = self.requests()
        assert log, "the fake upstream received no request"
        return log[-1]

    def pending_script(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_control/script"))

    def reset(self) -> None:
        """Clear the request log and the script."""
        self._call("POST", "/_control/reset", {})

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float = 5.0,
        interval: float = 0.05,
    ) -> Any:
        """Poll the request log until `predicate(log)` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.requests()
            result = predicate(log)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; log: {log!r}"[:4000])
            time.sleep(interval)

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeProxy(_Client):
    """A running `python -m tests.fakes.proxy` (loopback HTTP forward proxy that logs)."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.proc = proc
        assert proc.url is not None and proc.port is not None
        self.url: str = proc.url
        self.port: int = proc.port

    @classmethod
    def start(cls, timeout: float = 10.0) -> FakeProxy:
        return cls(start_python_module("tests.fakes.proxy", [], "fake-proxy", timeout))

    def log(self) -> list[dict[str, Any]]:
        """What went through: [{"method", "target", "host", "port", ...}], oldest first."""
        return list(self._call("GET", "/_proxy/log"))

    def reset(self) -> None:
        self._call("POST", "/_proxy/reset", {})

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> FakeProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
