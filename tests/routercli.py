"""Run the `router` CLI as a real subprocess with a clean, explicit environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "configs"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """What a snapshot shows: the exit status, then stdout, then stderr if any."""
        text = f"exit {self.code}\n{self.stdout}"
        if self.stderr:
            text += f"--- stderr\n{self.stderr}"
        return text


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Only what a Python process needs; never the developer's API keys."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    env.update(extra or {})
    return env


def router(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "router", *args],
        env=clean_env(env),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def copy_shipped(directory: Path) -> Path:
    """The shipped config (repo root) in a directory of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("providers.yaml", "routes.yaml", "routes.test.yaml"):
        shutil.copy(REPO / name, directory / name)
    shutil.copytree(REPO / "pipelines", directory / "pipelines")
    return directory
