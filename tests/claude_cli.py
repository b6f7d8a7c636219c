"""Where the real Claude Code CLI is: ROUTER_TEST_CLAUDE, the README's install location
(.venv/node), or PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = (
    REPO / ".venv/node/node_modules/.bin/claude",
    Path("/tmp/cc/node_modules/.bin/claude"),
)


def find_claude() -> str | None:
    explicit = os.environ.get("ROUTER_TEST_CLAUDE")
    if explicit:
        return explicit
    for candidate in CANDIDATES:
        if candidate.exists():
            return str(candidate)
    return shutil.which("claude")


def isolated_env(home: str, base_url: str, **extra: str) -> dict[str, str]:
    """The CLI's environment: loopback only, no retries, no telemetry or updates."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-gateway-test",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        **extra,
    }
