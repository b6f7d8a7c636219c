"""Start the real gateway (`router serve`, i.e. Granian) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CLEAN_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "CLAUDE_", "GOOGLE_", "MODEL_PROVIDER")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(CLEAN_ENV_PREFIXES)
        and k
        not in (
            "REQUIRED_API_KEY",
            "ADMIN_API_KEY",
            "ROUTER_DATABASE_URL",  # a developer's database: a test names its own
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "https_proxy",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        )
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


class Gateway:
    def __init__(self, config_dir: Path, env: dict[str, str] | None = None, workers: int = 1):
        self.config_dir = Path(config_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="gateway-", suffix=".log")  # noqa: SIM115
        self.log_path = Path(self._log.name)
        # operator state of its own, never the checkout's ./.router
        self._state = tempfile.TemporaryDirectory(prefix="gateway-state-")
        self.state_dir = Path(self._state.name)
        env = {"ROUTER_STATE_DIR": str(self.state_dir), **(env or {})}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.cli",
                "serve",
                "--config-dir",
                str(self.config_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=clean_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.state_dir,  # not the checkout: a developer's .env there stays out
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5.0).json()

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        self._state.cleanup()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
