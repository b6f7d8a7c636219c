"""Summarise a py-spy `--format raw` (collapsed stacks) profile: the functions with the
most samples on top of the stack (self) and anywhere in it (cumulative).

python -m bench.profile FILE [--only router/]"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on `pid` for `seconds`, writing collapsed stacks to `out`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    # blocking mode (the default): py-spy pauses the process per sample, so stacks are
    # complete; --gil: only the thread holding the GIL, so threads parked in native code
    # (watchfiles' watcher, Granian's runtime) do not count as busy
    argv = [spy, "record", "-p", str(pid), "-d", str(round(seconds)), "-r", "100", "--gil"]
    argv += ["-f", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def package(frame: str) -> str:
    """`func (httpcore/_async/http11.py:289)` -> `httpcore`; the stdlib's modules by name."""
    where = frame.rpartition(" (")[2]
    path = where.split(":")[0]
    if path.startswith("<"):
        return "python (frozen)"
    return path.split("/")[0].removesuffix(".py")


def summarise(path: Path, top: int = 20, only: str = "", cumulative_only: str = "") -> str:
    """Self time by package and by function, then cumulative time by function; `only`
    keeps frames containing that text (both lists), `cumulative_only` the second."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:  # py-spy's idle samples
            continue
        total += samples
        own[frames[-1]] += samples
        packages[package(frames[-1])] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    if not total:
        return "no samples"
    lines = [f"{total} active samples; self time by package:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in packages.most_common(12)]
    for title, counter, text in (
        ("self", own, only),
        ("cumulative", anywhere, only or cumulative_only),
    ):
        matching = f" (frames matching {text!r})" if text else ""
        lines.append(f"  top {top} by {title} time{matching}")
        shown = [(f, n) for f, n in counter.most_common() if text in f][:top]
        lines += [f"    {100 * n / total:5.1f}%  {frame[:120]}" for frame, n in shown]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--only", default="", help="only frames containing this text")
    parser.add_argument("--cumulative-only", default="", help="the same, cumulative list only")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.file, args.top, args.only, args.cumulative_only))


if __name__ == "__main__":
    main()
