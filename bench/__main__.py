"""The benchmark harness: one run starts nginx (canned upstream), the raw Python floor,
this gateway and the LiteLLM proxy, drives them with wrk and a streaming client, runs
the micro-benchmarks and prints one table. Use `bench/run`, which installs what is
missing first; `python -m bench --help` for options."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

from bench import load, procs, report, systems, upstream
from bench.profile import record, summarise
from bench.systems import CASES, Case, System

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s runs instead of 10 s")
    parser.add_argument("--seconds", type=float, help="length of each wrk run (default 10)")
    parser.add_argument(
        "--systems",
        default="direct,floor,floor-native,router,router-bare,router-limited,"
        "router-limited-redis,litellm",
        help="comma-separated: direct, floor, floor-native, floor-httpx, router, router-bare "
        "(records, metrics and access log off), router-limited (a key with limits, the "
        "embedded store), router-limited-redis (the same on a loopback redis-server), litellm",
    )
    parser.add_argument("--cases", default="a,b,c", help="comma-separated: a, b, c")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (router serve)")
    parser.add_argument("--skip-micro", action="store_true", help="no in-process benchmarks")
    parser.add_argument("--skip-rss", action="store_true", help="no RSS / reload benchmarks")
    parser.add_argument(
        "--rss-requests", type=int, default=100_000, help="requests before the last RSS sample"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway worker during case (b)"
    )
    parser.add_argument(
        "--profile-case", default="b", choices=("a", "b", "c"), help="the case --profile drives"
    )
    parser.add_argument(
        "--profile-system", default="router", help="the gateway --profile samples (router, ...)"
    )
    parser.add_argument(
        "--limit-rounds",
        type=int,
        default=3,
        help="rounds of the gateway's variants (records off, limits) measured in turns with "
        "router, for their targets (0: none, the load table's figures)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args()
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    return args


def smoke(system: System, case: Case) -> None:
    """One request; fail loudly if the system does not answer the case properly."""
    call = system.call(case)
    headers = {"content-type": "application/json", **dict(call.headers)}
    request = urllib.request.Request(system.url + call.path, call.body.read_bytes(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
    except urllib.error.HTTPError as exc:
        answer = exc.read()[:300]
        raise RuntimeError(f"{system.name} {case.key}: HTTP {exc.code}: {answer!r}") from None
    expected = ("message_stop" if system.gateway else "[DONE]") if case.stream else "Paris"
    if expected not in body:
        raise RuntimeError(f"{system.name} {case.key}: unexpected answer: {body[:300]}")


def probe(system: System, case: Case) -> float:
    started = time.perf_counter()
    smoke(system, case)
    return time.perf_counter() - started


def drain(system: System, case: Case, limit: float = 60.0) -> None:
    """Wait until requests left over from the last run are done. wrk hangs up at the
    end of a run, but a slow system still works through what it had accepted (LiteLLM
    at c=64: seconds of backlog), which would land on the next run. Probe until a
    probe is no slower than twice the best one before it."""
    deadline = time.monotonic() + limit
    best = probe(system, case)
    while time.monotonic() < deadline:
        latest = probe(system, case)
        if latest <= 2 * best:
            return
        best = min(best, latest)


def measure(system: System, case: Case, seconds: float, log: list[str]) -> dict[str, object]:
    """rps at c=16 and c=64, latency at c=1 and c=16 (wrk); for streams also TTFB."""
    call = system.call(case)
    url, headers = system.url + call.path, dict(call.headers)
    short = max(2.0, seconds / 2)
    load.wrk(url, call.body, 16, min(2.0, seconds), headers)  # warm-up, not recorded
    row: dict[str, object] = {}
    for key, run in (
        ("c1", lambda: load.wrk(url, call.body, 1, short, headers)),
        ("c16", lambda: load.wrk(url, call.body, 16, seconds, headers)),
        ("c64", lambda: load.wrk(url, call.body, 64, seconds, headers)),
        # the asyncio client sees the first body byte (and the overhead header)
        ("s1", lambda: load.stream(url, call.body, 1, short, headers)),
        ("s16", lambda: load.stream(url, call.body, 16, short, headers)),
    ):
        if key == "s1" and not (case.stream or system.name.startswith("router")):
            continue
        if key == "s16" and not case.stream:
            continue
        drain(system, case)
        row[key] = run()
    errors = sum(r.errors for r in row.values() if isinstance(r, load.Result))
    c16 = row["c16"]
    assert isinstance(c16, load.Result)
    log.append(f"  {case.key} {system.name:<14} {c16.rps:9.0f} rps@16  errors {errors}")
    print(log[-1], flush=True)
    return row


# the gateway's variants whose targets compare them with `router` (records off, limits)
TURNS_SYSTEMS = ("router", "router-bare", "router-limited", "router-limited-redis")


def turns(
    systems_: list[System], case: Case, seconds: float, rounds: int
) -> dict[str, dict[str, list[load.Result]]]:
    """The gateway's variants measured in turns: each round runs c=1, c=16 and c=64 on
    every one of them one after the other, so a machine that slows down for a while slows
    all of them, not one; the report takes each figure's median for their targets."""
    short, long = max(2.0, seconds / 3), max(3.0, seconds / 2)
    found: dict[str, dict[str, list[load.Result]]] = {s.name: {} for s in systems_}
    for _ in range(rounds):
        for key, connections, duration in (("c1", 1, short), ("c16", 16, long), ("c64", 64, long)):
            for system in systems_:
                call = system.call(case)
                drain(system, case)
                result = load.wrk(
                    system.url + call.path, call.body, connections, duration, dict(call.headers)
                )
                found[system.name].setdefault(key, []).append(result)
    return found


def rss(system: System) -> dict[str, float]:
    worker_rss = [procs.rss_mb(pid) for pid in system.workers()]
    main_rss = procs.rss_mb(system.proc.pid) if system.proc else 0.0
    return {"worker_mb": max(worker_rss), "workers_mb": worker_rss, "main_mb": main_rss}


def drive_requests(system: System, total: int, deadline: float) -> int:
    """Send `total` requests (exactly, give or take the connection count) spread over the
    three cases at c=16, with the asyncio client; stop at `deadline`."""
    sent = 0
    for case in CASES:
        call = system.call(case)
        seconds = deadline - time.monotonic()
        if seconds <= 0:
            break
        result = load.stream(
            system.url + call.path, call.body, 16, seconds, dict(call.headers),
            limit=total // len(CASES),
        )  # fmt: skip
        sent += result.requests
    return sent


def top_up(system: System, total: int, deadline: float) -> int:
    """Send about `total` more requests with wrk, cases in turn, in runs of <= 10 s,
    until done or `deadline`."""
    sent, turn = 0, 0
    while sent < total and (left := deadline - time.monotonic()) > 1:
        call = system.call(CASES[turn % len(CASES)])
        turn += 1
        result = load.wrk(
            system.url + call.path, call.body, 16, min(10.0, left), dict(call.headers)
        )
        sent += result.requests
    print(f"  sent {sent} more requests to {system.name}", flush=True)
    return sent


class Reloader(threading.Thread):
    """Swap routes.yaml between two valid versions `rate` times a second (atomic rename)."""

    def __init__(self, config: Path, rate: float) -> None:
        super().__init__(daemon=True)
        self.routes = config / "routes.yaml"
        self.versions = [self.routes.read_text(), (config / "routes.alt.yaml").read_text()]
        self.interval = 1.0 / rate
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.writes += 1
            temp = self.routes.with_name(".routes.yaml.tmp")
            temp.write_text(self.versions[self.writes % 2])
            os.replace(temp, self.routes)
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        self.routes.write_text(self.versions[0])


def reload_under_load(system: System, config: Path, seconds: float) -> dict[str, object]:
    assert system.proc is not None
    loaded = re.compile(r"config generation \w+ loaded")
    before = len(loaded.findall(system.proc.log.read_text(errors="replace")))
    reloader = Reloader(config, rate=10.0)
    case = CASES[0]
    call = system.call(case)
    reloader.start()
    try:
        result = load.wrk(system.url + call.path, call.body, 16, seconds, dict(call.headers))
    finally:
        reloader.stop.set()
        reloader.join()
    time.sleep(1.5)  # let the watcher settle on the restored file
    after = len(loaded.findall(system.proc.log.read_text(errors="replace")))
    return {"result": result, "writes": reloader.writes, "reloads": after - before}


def profile_case(system: System, case: Case, seconds: float, outdir: Path) -> str:
    pid = system.workers()[0]
    out = outdir / f"router-case-{case.key}.pyspy.txt"
    spy = record(pid, seconds, out)
    if spy is None:
        return "py-spy not installed (pip install py-spy into the project venv)"
    call = system.call(case)
    load.wrk(system.url + call.path, call.body, 16, seconds + 1, dict(call.headers))
    spy.wait(timeout=seconds + 30)
    if not out.exists():
        return "py-spy wrote nothing (ptrace not permitted?)"
    return summarise(out, top=20, cumulative_only="router/")


def micro(quick: bool) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.micro", "--json"] + (["--quick"] if quick else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> int:
    args = parse_args()
    wanted = args.systems.split(",")
    cases = [c for c in CASES if c.key in args.cases.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = RESULTS / stamp
    outdir.mkdir(parents=True)
    workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    logdir = outdir / "logs"
    logdir.mkdir()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.monotonic()
    results: dict[str, object] = {
        "when": stamp,
        "seconds": args.seconds,
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
    }
    log: list[str] = []
    try:
        _nginx, base = upstream.start(workdir, logdir)
        print(f"nginx canned upstream at {base}", flush=True)
        running: dict[str, System] = {"direct": System("direct", base, None, gateway=False)}
        if "litellm" in wanted:
            running["litellm"] = systems.start_litellm(workdir, logdir, base, wait=False)
        if "floor" in wanted:
            running["floor"] = systems.start_floor(logdir, base)
        for client in ("native", "httpx"):
            if f"floor-{client}" in wanted:
                running[f"floor-{client}"] = systems.start_floor(logdir, base, client)
        router = systems.start_router(workdir, logdir, base, args.workers)
        running["router"] = router
        if "router-bare" in wanted:
            bare = systems.start_router(workdir, logdir, base, args.workers, records=False)
            running["router-bare"] = bare
        if "router-limited" in wanted:
            running["router-limited"] = systems.start_router(
                workdir, logdir, base, args.workers, limits="embedded"
            )
        if "router-limited-redis" in wanted:
            _redis, redis_url = systems.start_redis(workdir, logdir)
            running["router-limited-redis"] = systems.start_router(
                workdir, logdir, base, args.workers, limits=redis_url
            )
        time.sleep(1.0)
        rss_idle = rss(router)
        if "litellm" in running:
            running["litellm"].wait()
        known = ("direct", "floor", "floor-native", "floor-httpx", "router", "router-bare")
        known += ("router-limited", "router-limited-redis")
        known += ("litellm",)
        order = [name for name in known if name in wanted]
        for name in order:
            for case in cases:
                smoke(running[name], case)
        smoke(running["direct"], systems.GEMINI)
        smoke(router, systems.GEMINI)
        print(f"all systems up and answering ({time.monotonic() - started:.0f} s)", flush=True)
        results["rss_idle"] = {name: rss(running[name]) for name in order if name != "direct"}

        if not args.skip_rss:
            sent = drive_requests(router, 1000, time.monotonic() + 60)
            time.sleep(0.5)
            results["rss_1k"] = {**rss(router), "requests": sent}

        matrix: dict[str, dict[str, dict[str, object]]] = {}
        print(f"load: {args.seconds:.0f} s per run", flush=True)
        for case in cases:
            for name in order:
                matrix.setdefault(case.key, {})[name] = measure(
                    running[name], case, args.seconds, log
                )
        results["matrix"] = matrix

        variants = [running[name] for name in TURNS_SYSTEMS if name in running]
        case_b = next((c for c in cases if c.key == "b"), None)
        if len(variants) > 1 and case_b is not None and args.limit_rounds > 0:
            print("the gateway's variants, case (b), in turns ...", flush=True)
            results["limits"] = turns(variants, case_b, args.seconds, args.limit_rounds)

        if args.profile:
            case = next(c for c in CASES if c.key == args.profile_case)
            results["profile_case"] = case.key
            system = running[args.profile_system]
            results["profile"] = profile_case(system, case, max(5.0, args.seconds), outdir)

        if not args.skip_rss:
            total = sum(
                r.requests
                for rows in matrix.values()
                for r in rows.get("router", {}).values()
                if isinstance(r, load.Result)
            )
            total += results["rss_1k"]["requests"]  # type: ignore[index]
            budget = 45.0 if args.quick else 100.0
            if total < args.rss_requests:
                total += top_up(router, args.rss_requests - total, time.monotonic() + budget)
            time.sleep(0.5)
            results["rss_100k"] = {**rss(router), "requests": total}
            config = workdir / "router" / "router-config"
            results["reload"] = reload_under_load(router, config, args.seconds)
            results["rss_after_reload"] = rss(router)
        results["rss_idle"]["router"] = rss_idle  # type: ignore[index]
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    if not args.skip_micro:
        print("micro-benchmarks (in-process) ...", flush=True)
        results["micro"] = micro(args.quick)
    results["load_after"] = os.getloadavg()
    results["runtime_s"] = time.monotonic() - started
    (outdir / "results.json").write_text(json.dumps(results, default=_jsonable, indent=1))
    text = report.render(results, order, cases)
    (outdir / "report.txt").write_text(text + "\n")
    print()
    print(text)
    print(f"\nresults and logs: {outdir}")
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, load.Result):
        return asdict(value)
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        procs.stop_all()
        sys.exit(130)
