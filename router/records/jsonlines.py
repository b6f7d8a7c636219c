"""A sink that appends each outcome record to a file as one JSON line, written by a
thread of its own: the event loop only puts the record on a queue. Set
`ROUTER_RECORDS_FILE` to turn it on (every worker appends to the same file)."""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import IO

import msgspec

from router.records.outcome import Outcome

log = logging.getLogger("router.records")
_STOP = object()


class JsonLinesSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Outcome | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="records-jsonl", daemon=True)
        self._thread.start()

    def __call__(self, outcome: Outcome) -> None:
        self._queue.put(outcome)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _write(self) -> None:
        encode = msgspec.json.Encoder().encode
        with open(self.path, "ab", buffering=0) as out:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                lines = [encode(item) + b"\n"]
                while not self._queue.empty():  # what else is waiting goes out with it
                    more = self._queue.get()
                    if more is _STOP:
                        _write_all(out, lines)
                        return
                    lines.append(encode(more) + b"\n")
                _write_all(out, lines)


def _write_all(out: IO[bytes], lines: list[bytes]) -> None:
    try:
        out.write(b"".join(lines))  # one append: lines of workers do not interleave
    except OSError as exc:
        log.warning("cannot write %d outcome records: %s", len(lines), exc)


def from_environment() -> JsonLinesSink | None:
    path = os.environ.get("ROUTER_RECORDS_FILE")
    return JsonLinesSink(path) if path else None
