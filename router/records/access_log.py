"""The access log, a sink of outcome records: one line per request to stderr, written by
the sink's thread. Text by default; `ROUTER_LOG_FORMAT=json` for one JSON object a line.
On unless `ROUTER_ACCESS_LOG=0`.

A text line: time, client address, key name, method and path, protocol, model, route,
provider/instance, attempts, status, duration, tokens in/out as the upstream reported
them (`-` when it reported none), and the request's id."""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

import msgspec

from router.records.outcome import Outcome
from router.records.threaded import ThreadedSink

_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _iso(unix: float) -> str:
    """2026-12-04T14:03:11.040Z (the second's text is kept: lines come in runs)."""
    second = int(unix)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((unix - second) * 1000):03d}Z"


def fields(outcome: Outcome) -> dict[str, Any]:
    last = outcome.attempts[-1] if outcome.attempts else None
    usage = outcome.usage
    return {
        "time": _iso(outcome.time),
        "id": outcome.id,
        "client": outcome.client,
        "key": outcome.key,
        "method": "POST",
        "path": outcome.path,
        "protocol": outcome.protocol,
        "model": outcome.model,
        "route": outcome.route,
        "provider": last.provider if last else None,
        "instance": last.instance if last else None,
        "attempts": len(outcome.attempts),
        "status": outcome.status,
        "duration_ms": round(outcome.duration * 1000, 1),
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
    }


def text_line(outcome: Outcome) -> str:
    f = fields(outcome)
    upstream = f"{f['provider']}/{f['instance']}" if f["provider"] else "-"
    tokens = f"{f['input_tokens']}/{f['output_tokens']}" if outcome.usage else "-"
    return (
        f'{f["time"]} {f["client"] or "-"} {f["key"] or "-"} "POST {f["path"]}" '
        f"{f['protocol']} model={f['model'] or '-'} route={f['route'] or '-'} "
        f"upstream={upstream} attempts={f['attempts']} status={f['status']} "
        f"{f['duration_ms']}ms tokens={tokens} id={f['id']}\n"
    )


class AccessLog(ThreadedSink):
    name = "access"
    interval = 0.1

    def __init__(self, out: IO[str] | None = None, json: bool = False) -> None:
        super().__init__()
        self.out = out or sys.stderr
        self.json = json
        self._encode = msgspec.json.Encoder().encode

    def handle(self, batch: list[Outcome]) -> None:
        if self.json:
            text = "".join(self._encode(fields(o)).decode() + "\n" for o in batch)
        else:
            text = "".join(map(text_line, batch))
        self.out.write(text)
        self.out.flush()


def from_environment() -> AccessLog | None:
    if os.environ.get("ROUTER_ACCESS_LOG", "1") == "0":
        return None
    return AccessLog(json=os.environ.get("ROUTER_LOG_FORMAT", "text") == "json")
