"""Load generators: wrk (throughput, total latency) and a small asyncio HTTP/1.1 client
that also sees the time to the first body byte, which wrk cannot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA = Path(__file__).parent / "wrk" / "post.lua"


@dataclass(frozen=True, slots=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + timeouts + status >= 400
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    overhead_p50_ms: float | None = None  # the gateway's own x-router-overhead-ms header


def wrk(
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> Result:
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_HEADERS": "|".join(f"{k}: {v}" for k, v in (headers or {}).items()),
    }
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(LUA), url,
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    s = json.loads(line[6:])
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return Result(
        rps=s["requests"] / (s["duration_us"] / 1e6),
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        requests=s["requests"],
        errors=errors,
    )


class _Conn:
    """One keep-alive HTTP/1.1 connection. `post` returns (status, ttfb s, total s);
    `overhead` holds the last x-router-overhead-ms header seen, if any."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.overhead: float | None = None

    async def post(self, path: str, head: bytes, body: bytes) -> tuple[int, float, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        started = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
            elif name == "x-router-overhead-ms":
                self.overhead = float(value)
        ttfb = None
        if chunked:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
                ttfb = ttfb or time.perf_counter() - started
            await reader.readuntil(b"\r\n")  # no trailers expected
        elif length is not None:
            first = await reader.read(min(length, 65536)) if length else b""
            ttfb = time.perf_counter() - started
            await reader.readexactly(length - len(first))
        else:  # read to close
            await reader.read(1)
            ttfb = time.perf_counter() - started
            while await reader.read(65536):
                pass
            close = True
        total = time.perf_counter() - started
        if close:
            writer.close()
            self.reader = self.writer = None
        return status, ttfb if ttfb is not None else total, total


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def _stream_load(
    url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float, limit: int
) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    ttfbs: list[float] = []
    totals: list[float] = []
    overheads: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = _Conn(host, port)
        while time.perf_counter() < deadline and len(totals) < limit:
            try:
                status, ttfb, total = await conn.post(parts.path, head, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn = _Conn(host, port)
                continue
            if status >= 400:
                errors += 1
            ttfbs.append(ttfb)
            totals.append(total)
            if conn.overhead is not None:
                overheads.append(conn.overhead)
        if conn.writer is not None:
            conn.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if not totals:
        return Result(0.0, 0.0, 0.0, 0, errors)
    return Result(
        rps=len(totals) / elapsed,
        p50_ms=_percentile(totals, 50) * 1000,
        p99_ms=_percentile(totals, 99) * 1000,
        requests=len(totals),
        errors=errors,
        ttfb_p50_ms=_percentile(ttfbs, 50) * 1000,
        ttfb_p99_ms=_percentile(ttfbs, 99) * 1000,
        overhead_p50_ms=_percentile(overheads, 50) if overheads else None,
    )


def stream(
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    limit: int = 1_000_000,
) -> Result:
    """Time to first body byte and total time, per request, over keep-alive connections."""
    return asyncio.run(
        _stream_load(url, body.read_bytes(), headers or {}, connections, seconds, limit)
    )
