"""In-process micro-benchmarks: route resolution among 10 vs 10,000 routes, the compile
time of 10,000 routes, and case (c)'s stream translation (the canned OpenAI Chat stream
decoded and re-encoded for an Anthropic client). Configs are generated into a temp dir.

python -m bench.micro [--json] [--quick]"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from router.compiler import compile_config
from router.compiler.glob import compile_glob
from router.compiler.plan import Plan
from router.protocols import anthropic, openai_chat

BENCH = Path(__file__).parent

PROVIDERS = """providers:
  p0: {type: openai-custom, instances: [{id: i0, base_url: "http://127.0.0.1:9/v1", api_key: k}]}
  p1: {type: claude-custom, instances: [{id: i1, base_url: "http://127.0.0.1:9", api_key: k}]}
  p2: {type: gemini-api, instances: [{id: i2, base_url: "http://127.0.0.1:9/v1beta", api_key: k}]}
"""
BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
HEADERS = {"content-type": "application/json", "authorization": "Bearer k"}


def routes_yaml(count: int) -> str:
    """`count` routes in blocks of ten: 6 exact-name lists, 2 prefix globs, 1 exact name
    with a protocol condition, 1 `?` glob; then a `when` rule. Route i's names contain i."""
    lines = ["default: p0", "routes:"]
    for i in range(count):
        kind = i % 10
        if kind < 6:
            match = f"{{model: [m{i}-a, m{i}-b]}}"
        elif kind < 8:
            match = f'{{model: "team{i}-*"}}'
        elif kind == 8:
            match = f"{{model: c{i}, protocol: anthropic}}"
        else:
            match = f'{{model: "fam{i}-v?-*"}}'
        lines.append(f"  - {{name: r{i}, match: {match}, to: p{i % 3}}}")
    lines.append("  - {name: tier, match: {when: \"body.metadata.tier == 'batch'\"}, to: p2}")
    return "\n".join(lines) + "\n"


def write_config(root: Path, count: int) -> Path:
    directory = root / f"routes-{count}"
    directory.mkdir()
    (directory / "providers.yaml").write_text(PROVIDERS)
    (directory / "routes.yaml").write_text(routes_yaml(count))
    return directory


def compiled(directory: Path) -> Plan:
    plan, diagnostics = compile_config(directory, env={})
    if plan is None:
        raise SystemExit("\n".join(str(d) for d in diagnostics))
    return plan


def scenarios(count: int) -> dict[str, tuple[str, str, str]]:
    """name -> (protocol, model, expected route name or 'default'), hitting the last block."""
    last = count - 10
    return {
        "exact, first route": ("openai-chat", "m0-a", "r0"),
        "exact, last block": ("openai-chat", f"m{last + 5}-b", f"r{last + 5}"),
        "glob, last block": ("openai-chat", f"team{last + 7}-x", f"r{last + 7}"),
        "exact+protocol": ("anthropic", f"c{last + 8}", f"r{last + 8}"),
        "?-glob, last block": ("openai-chat", f"fam{last + 9}-v2-pro", f"r{last + 9}"),
        "no match (default)": ("openai-chat", "unknown-model", "default"),
    }


def per_call_ns(
    calls: dict[str, Callable[[], object]], loops: int, repeat: int
) -> dict[str, float]:
    """Best ns/call of each callable; the callables take turns, so that load from other
    processes on the machine hits all of them alike."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            started = time.perf_counter_ns()
            for _ in range(loops):
                call()
            best[name] = min(best[name], (time.perf_counter_ns() - started) / loops)
    return best


def resolution(plans: dict[int, Plan], loops: int, repeat: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    names = scenarios(10).keys()
    for name in names:
        calls: dict[str, Callable[[], object]] = {}
        for count, plan in plans.items():
            protocol, model, expected = scenarios(count)[name]
            found = plan.resolve(protocol=protocol, model=model, headers=HEADERS, body=BODY)
            got = found.route.name if found.via == "route" else found.via
            if got != expected:
                raise SystemExit(f"{count} routes, {name}: resolved {got}, expected {expected}")
            calls[str(count)] = partial(
                plan.resolve, protocol=protocol, model=model, headers=HEADERS, body=BODY
            )
        results[name] = per_call_ns(calls, loops, repeat)
    return results


def compile_times(directory: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        compile_glob.cache_clear()  # a cold compile, as at start-up: no regex remembered
        started = time.perf_counter()
        compiled(directory)
        times.append(time.perf_counter() - started)
    return times


def translate_stream(request: object, chunks: list[bytes]) -> bytes:
    """What the gateway does to case (c)'s upstream bytes: decode, encode, join."""
    decoder = openai_chat.StreamDecoder()
    encoder = anthropic.StreamEncoder(request)  # type: ignore[arg-type]
    out = [b"".join([encoder.encode(event) for event in decoder.feed(c)]) for c in chunks]
    out.append(b"".join([encoder.encode(event) for event in decoder.close()]))
    return b"".join(out)


def stream_us(loops: int, repeat: int) -> dict[str, float]:
    """Best microseconds per stream, the upstream body in one piece and in 97-byte chunks."""
    body = (BENCH / "canned" / "openai_chat.sse").read_bytes()
    document = json.loads((BENCH / "requests" / "c_anthropic_stream.json").read_bytes())
    request = anthropic.parse_request(document)
    pieces = [body[i : i + 97] for i in range(0, len(body), 97)]
    calls: dict[str, Callable[[], object]] = {
        "whole": partial(translate_stream, request, [body]),
        "97-byte chunks": partial(translate_stream, request, pieces),
    }
    return {name: ns / 1000 for name, ns in per_call_ns(calls, loops, repeat).items()}


def run(quick: bool = False) -> dict[str, object]:
    loops, repeat = (10_000, 10) if quick else (20_000, 20)
    with tempfile.TemporaryDirectory(prefix="router-bench-micro-") as tmp:
        small, big = write_config(Path(tmp), 10), write_config(Path(tmp), 10_000)
        plans = {10: compiled(small), 10_000: compiled(big)}
        resolve = resolution(plans, loops, repeat)
        times = compile_times(big, 3 if quick else 5)
        small_times = compile_times(small, 3)
    stream = stream_us(200 if quick else 500, repeat)
    ratios = {name: ns["10000"] / ns["10"] for name, ns in resolve.items()}
    return {
        "resolve_ns": resolve,
        "resolve_ratio": ratios,
        "resolve_ratio_worst": max(ratios.values()),
        "compile_10k_s": {"min": min(times), "median": statistics.median(times)},
        "compile_10_s": {"min": min(small_times)},
        "stream_c_us": stream,
    }


def render(result: dict) -> str:
    out = ["route resolution (Plan.resolve, ns/call, best of interleaved runs)",
           f"  {'scenario':<22}{'10 routes':>11}{'10k routes':>12}{'ratio':>8}"]  # fmt: skip
    for name, ns in result["resolve_ns"].items():
        ratio = result["resolve_ratio"][name]
        out.append(f"  {name:<22}{ns['10']:>11.0f}{ns['10000']:>12.0f}{ratio:>8.2f}")
    c10k, c10 = result["compile_10k_s"], result["compile_10_s"]
    out.append(f"compile 10,000 routes: {c10k['min']:.3f} s min, {c10k['median']:.3f} s median")
    out.append(f"compile 10 routes:     {c10['min'] * 1000:.1f} ms min")
    for name, us in result["stream_c_us"].items():
        out.append(f"stream (c) translation, {name}: {us:.0f} us per stream")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--quick", action="store_true", help="fewer loops")
    args = parser.parse_args()
    result = run(args.quick)
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    main()
