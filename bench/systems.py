"""The systems under test, each on its own loopback port in front of the canned upstream:
this gateway, the raw Python floor and the LiteLLM proxy. `direct` is nginx itself."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import procs

BENCH = Path(__file__).parent
REQUESTS = BENCH / "requests"
LITELLM_VENV = Path(
    os.environ.get(
        "BENCH_LITELLM_VENV",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "router-bench" / "litellm",
    )
)


@dataclass(frozen=True, slots=True)
class Call:
    """One case as one system sees it: where to POST what."""

    path: str
    body: Path
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    title: str
    stream: bool
    upstream: Call  # direct to nginx, and through the floor (no translation there)
    gateway: Call  # this gateway and LiteLLM: the client's protocol


OPENAI_AUTH = (("authorization", "Bearer sk-bench"),)
ANTHROPIC_AUTH = (("x-api-key", "sk-bench"), ("anthropic-version", "2023-06-01"))

CASES = (
    Case(
        "a",
        "(a) OpenAI -> OpenAI, pass-through",
        False,
        Call("/openai/v1/chat/completions", REQUESTS / "a_openai_chat.json", OPENAI_AUTH),
        Call("/v1/chat/completions", REQUESTS / "a_openai_chat.json", OPENAI_AUTH),
    ),
    Case(
        "b",
        "(b) OpenAI -> Claude, translated",
        False,
        Call("/anthropic/v1/messages", REQUESTS / "b_anthropic_messages.json", ANTHROPIC_AUTH),
        Call("/v1/chat/completions", REQUESTS / "b_openai_chat_to_claude.json", OPENAI_AUTH),
    ),
    Case(
        "c",
        "(c) Anthropic -> OpenAI, streaming",
        True,
        Call(
            "/openai-stream/v1/chat/completions",
            REQUESTS / "c_openai_chat_stream.json",
            OPENAI_AUTH,
        ),
        Call("/v1/messages", REQUESTS / "c_anthropic_stream.json", ANTHROPIC_AUTH),
    ),
)


# Not in the table: checks that the Gemini upstream and the gateway's Gemini path answer.
GEMINI = Case(
    "gemini",
    "Gemini -> Gemini",
    False,
    Call(
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent", REQUESTS / "gemini_generate.json"
    ),
    Call("/v1beta/models/gemini-2.5-flash:generateContent", REQUESTS / "gemini_generate.json"),
)


@dataclass(slots=True)
class System:
    name: str
    url: str
    proc: procs.Proc | None  # None for direct (nginx is started separately)
    gateway: bool  # speaks the client protocols (router, litellm) vs. forwards paths
    ready: str = ""  # URL that answers once the system is up

    def wait(self, timeout: float = 120.0) -> None:
        if self.proc is not None:
            procs.wait_http(self.proc, self.ready, timeout)

    def workers(self) -> list[int]:
        """Worker pids: Granian's children but the router's records service, or the
        process itself (uvicorn, 1 worker)."""
        if self.proc is None:
            return []
        children = procs.children(self.proc.pid)
        workers = [pid for pid in children if "router.records.service" not in procs.cmdline(pid)]
        return workers or [self.proc.pid]

    def call(self, case: Case) -> Call:
        return case.gateway if self.gateway else case.upstream


def copy_config(workdir: Path) -> Path:
    """The bench config, copied so that the reload benchmark can rewrite routes.yaml."""
    target = workdir / "router-config"
    shutil.copytree(BENCH / "config", target)
    return target


# the key the bench's requests already send (OPENAI_AUTH), with limits nothing reaches:
# every request is counted and admitted, as a key with limits is in production
LIMITED_KEY = """
auth:
  keys:
    - name: bench
      key: sk-bench
      limits: { rpm: 1000000, tpm: 1000000000000, concurrency: 100000 }
"""


def start_router(
    workdir: Path,
    logdir: Path,
    upstream: str,
    workers: int = 1,
    records: bool = True,
    limits: str | None = None,
) -> System:
    """The gateway with its defaults (records, metrics and the access log on), or
    `records=False`: `router-bare`, the same build with ROUTER_RECORDS=0. `limits`:
    the requests' key has limits, counted in the embedded store (`"embedded"`:
    `router-limited`) or in Redis at that URL (`router-limited-redis`)."""
    name = "router" if records else "router-bare"
    if limits is not None:
        name = "router-limited" if limits == "embedded" else "router-limited-redis"
    config = copy_config(workdir / name)
    if limits is not None:
        routes = config / "routes.yaml"
        extra = LIMITED_KEY
        if limits != "embedded":
            extra += f"state: {{ redis: {limits} }}\n"
        routes.write_text(routes.read_text() + extra)
        (config / "routes.alt.yaml").write_text((config / "routes.alt.yaml").read_text() + extra)
    port = procs.free_port()
    argv = [sys.executable, "-m", "router", "serve", "--config-dir", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--state-dir", str(workdir / name / "state")]
    env = {"BENCH_UPSTREAM": upstream, "BENCH_UPSTREAM_KEY": "sk-bench"}
    if not records:
        env["ROUTER_RECORDS"] = "0"
    proc = procs.start(name, argv, logdir, env=env)
    url = f"http://127.0.0.1:{port}"
    system = System(name, url, proc, gateway=True, ready=url + "/health")
    system.wait(60)
    return system


def start_redis(workdir: Path, logdir: Path) -> tuple[procs.Proc, str]:
    """Debian's redis-server on a loopback port, no persistence: the shared limit store
    of `router-limited-redis`."""
    port = procs.free_port()
    directory = workdir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(directory)]
    proc = procs.start("redis", argv, logdir)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_floor(logdir: Path, upstream: str, client: str = "aiohttp") -> System:
    """The floor on the stack's client, httpx over aiohttp; `client="httpx"` puts it on
    httpx's own pool, `"native"` on the gateway's own pool."""
    port = procs.free_port()
    argv = [sys.executable, str(BENCH / "floor.py"), str(port)]
    env = {"FLOOR_UPSTREAM": upstream, "FLOOR_CLIENT": client}
    name = "floor" if client == "aiohttp" else f"floor-{client}"
    proc = procs.start(name, argv, logdir, env=env)
    url = f"http://127.0.0.1:{port}"
    system = System(name, url, proc, gateway=False, ready=url + "/")
    system.wait(30)
    return system


def litellm_config(upstream: str) -> str:
    def model(name: str, target: str, api_base: str) -> str:
        return (
            f"  - model_name: {name}\n"
            f"    litellm_params: {{model: {target}, api_base: '{upstream}{api_base}', "
            "api_key: sk-bench}\n"
        )

    return (
        "model_list:\n"
        + model("gpt-4o", "openai/gpt-4o", "/openai/v1")
        + model("claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", "/anthropic")
        + model("gpt-4o-mini", "openai/gpt-4o-mini", "/openai-stream/v1")
        + "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
        + "general_settings:\n  disable_spend_logs: true\n"
    )


def start_litellm(workdir: Path, logdir: Path, upstream: str, wait: bool = True) -> System:
    """Start the LiteLLM proxy; it takes ~20 s to boot, so `wait=False` lets the caller
    start the others meanwhile and call `System.wait` later."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        raise RuntimeError(f"{litellm} missing: run bench/run (it installs LiteLLM there)")
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    port = procs.free_port()
    argv = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        # case (c): /v1/messages to an OpenAI model via chat/completions, like the router
        "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "True",
        # no client auth, like the router here (loopback, no keys): the cheapest path
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    proc = procs.start("litellm", argv, logdir, env=env)
    url = f"http://127.0.0.1:{port}"
    system = System("litellm", url, proc, gateway=True, ready=url + "/health/liveliness")
    if wait:
        system.wait()
    return system
