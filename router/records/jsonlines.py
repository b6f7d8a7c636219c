"""A sink that appends each outcome record to a file as one JSON line. Set
`ROUTER_RECORDS_FILE` to turn it on (every worker appends to the same file: one write
per batch, so the lines of workers do not interleave)."""

from __future__ import annotations

import os

import msgspec

from router.records.outcome import Outcome
from router.records.threaded import ThreadedSink, log


class JsonLinesSink(ThreadedSink):
    name = "jsonl"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._encode = msgspec.json.Encoder().encode

    def handle(self, batch: list[Outcome]) -> None:
        data = b"".join(self._encode(_without_bodies(o)) + b"\n" for o in batch)
        try:
            with open(self.path, "ab", buffering=0) as out:
                out.write(data)
        except OSError as exc:
            log.warning("cannot write %d outcome records to %s: %s", len(batch), self.path, exc)


def _without_bodies(outcome: Outcome) -> Outcome:
    if outcome.exchange is None:
        return outcome
    return msgspec.structs.replace(outcome, exchange=None)


def from_environment() -> JsonLinesSink | None:
    path = os.environ.get("ROUTER_RECORDS_FILE")
    return JsonLinesSink(path) if path else None
