"""Render one run's results (see bench/__main__.py) as the table and the target status."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from bench.load import Result
from bench.systems import Case

RATIO_AGAINST = ("direct", "floor", "floor-native", "litellm")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(a: float, b: float | None) -> str:
    return "-" if not b else f"{a / b:.2f}x"


def _get(matrix: dict[str, Any], case: str, system: str, run: str) -> Result | None:
    return matrix.get(case, {}).get(system, {}).get(run)


def load_table(matrix: dict[str, Any], order: Sequence[str], cases: Sequence[Case]) -> list[str]:
    against = [s for s in RATIO_AGAINST if s in order]
    head = f"  {'system':<14}{'rps@16':>8}{'rps@64':>8}{'p50@1':>8}{'p99@1':>8}"
    widths = [max(9, len(s) + 2) for s in against]
    head += f"{'p50@16':>8}{'p99@16':>8}{'+p50@1':>8}  "
    head += "".join(f"{'x' + s:>{w}}" for s, w in zip(against, widths, strict=True))
    lines = ["rps; latency in ms (wrk; total time for streams); +p50@1: over direct;",
             "x<system>: rps@16 relative to that system", ""]  # fmt: skip
    for case in cases:
        lines += [case.title, head]
        direct = _get(matrix, case.key, "direct", "c1")
        for system in order:
            c1, c16, c64 = (_get(matrix, case.key, system, r) for r in ("c1", "c16", "c64"))
            if c1 is None or c16 is None or c64 is None:
                continue
            added = c1.p50_ms - direct.p50_ms if direct else None
            line = f"  {system:<14}{c16.rps:>8.0f}{c64.rps:>8.0f}{c1.p50_ms:>8.2f}{c1.p99_ms:>8.2f}"
            line += f"{c16.p50_ms:>8.2f}{c16.p99_ms:>8.2f}{_ms(added):>8}  "
            for other, width in zip(against, widths, strict=True):
                base = _get(matrix, case.key, other, "c16")
                line += f"{_ratio(c16.rps, base.rps if base else None):>{width}}"
            errors = sum(r.errors for r in (c1, c16, c64))
            lines.append(line + (f"  ({errors} errors)" if errors else ""))
        if case.stream:
            lines.append("  time to first byte (asyncio client), ms")
            lines.append(
                f"  {'system':<14}{'p50@1':>8}{'p99@1':>8}{'p50@16':>8}{'p99@16':>8}{'+p50@1':>8}"
            )
            d1 = _get(matrix, case.key, "direct", "s1")
            for system in order:
                s1, s16 = (
                    _get(matrix, case.key, system, "s1"),
                    _get(matrix, case.key, system, "s16"),
                )
                if s1 is None or s16 is None:
                    continue
                added = s1.ttfb_p50_ms - d1.ttfb_p50_ms if d1 else None  # type: ignore[operator]
                lines.append(
                    f"  {system:<14}{_ms(s1.ttfb_p50_ms):>8}{_ms(s1.ttfb_p99_ms):>8}"
                    f"{_ms(s16.ttfb_p50_ms):>8}{_ms(s16.ttfb_p99_ms):>8}{_ms(added):>8}"
                )
        lines.append("")
    overheads = [
        f"{c.key} {_ms(r.overhead_p50_ms)}"
        for c in cases
        if (r := _get(matrix, c.key, "router", "s1")) is not None
    ]
    if overheads:
        lines.append("router's own x-router-overhead-ms, p50 at c=1: " + ", ".join(overheads))
    return lines


def other_tables(results: dict[str, Any]) -> list[str]:
    lines = []
    idle = results.get("rss_idle", {})
    if idle:
        lines.append("RSS (VmRSS, MiB): worker / Granian main process")
        for name, sample in idle.items():
            lines.append(f"  {name:<14} idle {sample['worker_mb']:6.1f} / {sample['main_mb']:.1f}")
    for key, label in (("rss_1k", "after"), ("rss_100k", "after")):
        if key in results:
            s = results[key]
            lines.append(
                f"  router {label} {s['requests']:>7} requests: {s['worker_mb']:6.1f} / "
                f"{s['main_mb']:.1f}"
            )
    if "rss_after_reload" in results:
        s = results["rss_after_reload"]
        lines.append(f"  router after the reload run:   {s['worker_mb']:6.1f} / {s['main_mb']:.1f}")
    if "reload" in results:
        r = results["reload"]
        res: Result = r["result"]
        lines += [
            "",
            f"reload under load: routes.yaml rewritten {r['writes']} times (10/s), "
            f"{r['reloads']} generations loaded by the worker",
            f"  case (a) c=16: {res.rps:.0f} rps, p50 {res.p50_ms:.2f} ms, "
            f"p99 {res.p99_ms:.2f} ms, {res.requests} requests, {res.errors} errors/non-2xx",
        ]
        base = _get(results.get("matrix", {}), "a", "router", "c16")
        if base:
            lines.append(
                f"  without reloads (table above): {base.rps:.0f} rps, p50 {base.p50_ms:.2f} ms, "
                f"p99 {base.p99_ms:.2f} ms"
            )
    micro = results.get("micro")
    if micro:
        lines += ["", "route resolution (Plan.resolve, ns/call, best of interleaved runs)"]
        lines.append(f"  {'scenario':<22}{'10 routes':>11}{'10k routes':>12}{'ratio':>8}")
        for name, ns in micro["resolve_ns"].items():
            ratio = micro["resolve_ratio"][name]
            lines.append(f"  {name:<22}{ns['10']:>11.0f}{ns['10000']:>12.0f}{ratio:>8.2f}")
        c = micro["compile_10k_s"]
        lines.append(f"compile 10,000 routes: {c['min']:.3f} s (min), {c['median']:.3f} s (median)")
        for name, us in micro.get("stream_c_us", {}).items():
            lines.append(f"stream (c) decode+encode in process, {name}: {us:.0f} us per stream")
    return lines


def turn_medians(results: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(system, "c16" | "c64" | "p50@1") -> the median over the rounds measured in turns,
    or the load table's figure when there were none."""
    found: dict[tuple[str, str], float] = {}
    turns = results.get("limits")
    for system in ("router", "router-bare", "router-limited", "router-limited-redis"):
        if turns and system in turns:
            runs = turns[system]
            for run in ("c16", "c64"):
                if runs.get(run):
                    found[(system, run)] = median(r.rps for r in runs[run])
            if runs.get("c1"):
                found[(system, "p50@1")] = median(r.p50_ms for r in runs["c1"])
            continue
        for run in ("c16", "c64"):
            r = _get(results.get("matrix", {}), "b", system, run)
            if r:
                found[(system, run)] = r.rps
        r = _get(results.get("matrix", {}), "b", system, "c1")
        if r:
            found[(system, "p50@1")] = r.p50_ms
    return found


_TURNS_COLUMNS = (("c16", "rps", "{:.0f}"), ("c64", "rps", "{:.0f}"), ("c1", "p50_ms", "{:.3f}"))


def turns_table(results: dict[str, Any]) -> list[str]:
    """The rounds measured in turns, each figure's values and their median."""
    turns = results.get("limits")
    if not turns:
        return []
    lines = ["the gateway's variants, (b), measured in turns (median of the rounds; targets)"]
    lines.append(f"  {'system':<22}{'rps@16':>24}{'rps@64':>24}{'p50@1 ms':>26}")
    for system, runs in turns.items():
        cells = []
        for run, value, fmt in _TURNS_COLUMNS:
            values = [getattr(r, value) for r in runs.get(run, [])]
            each = "/".join(fmt.format(v) for v in values)
            cells.append(f"{fmt.format(median(values)) if values else '-'} ({each})")
        lines.append(f"  {system:<22}" + "".join(f"{cell:>24}" for cell in cells))
    return lines


def _check(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def targets(results: dict[str, Any]) -> list[str]:
    m = results.get("matrix", {})
    rows: list[tuple[bool | None, str]] = []

    def rps(case: str, system: str, run: str) -> float | None:
        r = _get(m, case, system, run)
        return r.rps if r else None

    for run in ("c16", "c64"):
        router, litellm = rps("b", "router", run), rps("b", "litellm", run)
        # the stack's client on the faster of its two pools, when both were measured
        floor = max((r for s in ("floor", "floor-httpx") if (r := rps("b", s, run))), default=0)
        if router and litellm:
            rows.append(
                (
                    router / litellm >= 30,
                    f"(b) rps@{run[1:]} vs LiteLLM: {router / litellm:.1f}x (>= 30x)",
                )
            )
        if router and floor:
            rows.append(
                (
                    router / floor >= 1.0,
                    f"(b) rps@{run[1:]} vs floor: {router / floor:.2f}x (>= 1.0x)",
                )
            )
    for case in ("a", "b", "c"):
        r, d = _get(m, case, "router", "c1"), _get(m, case, "direct", "c1")
        if r and d:
            added = r.p50_ms - d.p50_ms
            rows.append(
                (added <= 1.0, f"({case}) added p50 over direct at c=1: {added:.2f} ms (<= 1.0)")
            )
    r, d = _get(m, "c", "router", "s1"), _get(m, "c", "direct", "s1")
    if r and d and r.ttfb_p50_ms is not None and d.ttfb_p50_ms is not None:
        added = r.ttfb_p50_ms - d.ttfb_p50_ms
        rows.append(
            (added <= 1.0, f"(c) added TTFB p50 over direct at c=1: {added:.2f} ms (<= 1.0)")
        )
    micro = results.get("micro")
    if micro:
        worst = micro["resolve_ratio_worst"]
        rows.append(
            (worst <= 1.2, f"resolution 10k/10 routes, worst scenario: {worst:.2f}x (<= 1.2)")
        )
        best = micro["compile_10k_s"]["min"]
        rows.append((best <= 1.0, f"compile 10,000 routes: {best:.2f} s (<= 1 s)"))
    idle = results.get("rss_idle", {}).get("router")
    if idle:
        rows.append(
            (idle["worker_mb"] <= 90, f"idle RSS per worker: {idle['worker_mb']:.1f} MiB (<= 90)")
        )
    if "rss_1k" in results and "rss_100k" in results:
        a, b = results["rss_1k"], results["rss_100k"]
        ratio = b["worker_mb"] / a["worker_mb"]
        text = f"RSS after {b['requests']} / after {a['requests']} requests: {ratio:.3f} (<= 1.1)"
        rows.append((ratio <= 1.1 if b["requests"] >= 100_000 else None, text))
    if "reload" in results:
        res: Result = results["reload"]["result"]
        rows.append((res.errors == 0, f"errors during 10/s reloads: {res.errors} (0)"))
    turns = turn_medians(results)
    for run in ("c16", "c64"):
        router, bare = turns.get(("router", run)), turns.get(("router-bare", run))
        if router and bare:
            ratio = router / bare
            text = f"(b) rps@{run[1:]} records on vs off (router-bare): {ratio:.2f}x (>= 0.95x)"
            rows.append((router / bare >= 0.95, text))
    for system in ("router-limited", "router-limited-redis"):
        for run in ("c16", "c64"):
            limited, router = turns.get((system, run)), turns.get(("router", run))
            if limited and router:
                ratio = limited / router
                text = f"(b) rps@{run[1:]} {system} vs no limits: {ratio:.2f}x (>= 0.85x)"
                rows.append((ratio >= 0.85, text))
        r, plain = turns.get((system, "p50@1")), turns.get(("router", "p50@1"))
        if r is not None and plain is not None:
            added = r - plain
            text = f"(b) {system} added p50 over no limits at c=1: {added:.3f} ms (<= 0.15)"
            rows.append((added <= 0.15, text))
    lines = ["targets (issues 6, 15, 17)"] + [f"  [{_check(ok)}] {text}" for ok, text in rows]
    for run in ("c16", "c64"):
        router, other = rps("b", "router", run), rps("b", "floor-native", run)
        if router and other:  # the pass-through on the gateway's own pool: a subset of its work
            lines.append(f"  [info] (b) rps@{run[1:]} vs floor-native: {router / other:.2f}x")
    return lines


def render(results: dict[str, Any], order: Sequence[str], cases: Sequence[Case]) -> str:
    before = "/".join(f"{x:.2f}" for x in results["load_before"])
    after = "/".join(f"{x:.2f}" for x in results.get("load_after", results["load_before"]))
    lines = [
        f"router benchmark {results['when']}: {results['cpus']} CPUs, "
        f"{results['workers']} gateway worker(s), {results['seconds']:.0f} s per run, "
        f"runtime {results.get('runtime_s', 0):.0f} s",
        f"load average before {before}, after {after}",
        "",
    ]
    lines += load_table(results.get("matrix", {}), order, cases)
    lines += ["", *other_tables(results)]
    if results.get("limits"):
        lines += ["", *turns_table(results)]
    if "profile" in results:
        case = results.get("profile_case", "b")
        lines += ["", f"py-spy, gateway worker, case ({case}) at c=16", results["profile"]]
    lines += ["", *targets(results)]
    return "\n".join(lines)
