"""The canned upstream: nginx answering every call at once with a fixed, realistic body.

It runs from its own prefix directory (config, pid, logs, temp paths) on a loopback
port, as the current user, and touches no global nginx configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import procs

CANNED = Path(__file__).parent / "canned"

# path (exact, or ~regex) -> (canned file, content type)
LOCATIONS: dict[str, tuple[str, str]] = {
    "= /openai/v1/chat/completions": ("openai_chat.json", "application/json"),
    "= /openai-stream/v1/chat/completions": ("openai_chat.sse", "text/event-stream"),
    "= /anthropic/v1/messages": ("anthropic_messages.json", "application/json"),
    "= /anthropic-stream/v1/messages": ("anthropic_messages.sse", "text/event-stream"),
    "~ ^/gemini/v1beta/models/[^/]+:generateContent$": ("gemini_generate.json", "application/json"),
}

MAX_TOKEN = 3500  # bytes of one quoted string; nginx's limit is 4096


def _quote(text: str) -> str:
    """An nginx single-quoted string. `$` would start a variable: the bodies have none."""
    if "$" in text:
        raise ValueError("canned bodies must not contain '$'")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _return(body: str, name: str) -> str:
    """`return 200 '...'` directives. nginx caps one config token at 4 KB, so a longer
    body is set in parts (split at line ends) and returned as their concatenation."""
    parts, current = [], ""
    for line in body.splitlines(keepends=True):
        if current and len(current) + len(line) > MAX_TOKEN:
            parts.append(current)
            current = ""
        current += line
    parts.append(current)
    if len(parts) == 1:
        return f"return 200 {_quote(body)};"
    names = [f"$canned_{name}_{i}" for i in range(len(parts))]
    sets = "".join(f"set {n} {_quote(part)};\n      " for n, part in zip(names, parts, strict=True))
    return f'{sets}return 200 "{"".join(names)}";'


def config(prefix: Path, port: int) -> str:
    locations = []
    for where, (name, content_type) in LOCATIONS.items():
        body = (CANNED / name).read_text().strip("\n")
        if content_type == "text/event-stream":
            body += "\n\n"  # SSE: every event ends with a blank line
        locations.append(
            f"    location {where} {{\n"
            f"      default_type {content_type};\n"
            f"      {_return(body, name.replace('.', '_'))}\n"
            "    }"
        )
    temp = prefix / "tmp"
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  client_body_buffer_size 64k;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{chr(10).join(locations)}
    location / {{
      default_type application/json;
      return 404 '{{"error":{{"message":"no canned answer for this path","type":"not_found"}}}}';
    }}
  }}
}}
"""


def start(workdir: Path, logdir: Path) -> tuple[procs.Proc, str]:
    """Start nginx; return it and its base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, port))
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = procs.start("nginx", argv, logdir)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(proc, url + "/", timeout=10)
    return proc, url
