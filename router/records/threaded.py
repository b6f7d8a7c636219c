"""The shape every I/O-doing sink shares: the event loop appends the record to a bounded
buffer (no lock, no wake-up: a deque append), and a thread of the sink's own takes
what has gathered every `interval` seconds and handles it as one batch. What does not fit
in the buffer is counted as dropped and said in the log at most once a minute; nothing
ever waits on the sink. `close()` handles what is left, then stops the thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from router.records.outcome import Outcome

log = logging.getLogger("router.records")
DROP_LOG_EVERY = 60.0  # seconds


class DropReport:
    """Says in the log how many records a sink dropped since it last said so, at most
    once every DROP_LOG_EVERY seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._said = 0
        self._said_at = 0.0

    def __call__(self, dropped: int) -> None:
        if dropped == self._said:
            return
        now = time.monotonic()
        if now - self._said_at < DROP_LOG_EVERY:
            return
        log.warning(
            "records %s: %d records dropped (buffer full or target failing)",
            self.name,
            dropped - self._said,
        )
        self._said, self._said_at = dropped, now


class ThreadedSink:
    name = "sink"
    interval = 0.2  # seconds between batches
    capacity = 100_000  # records held at most

    def __init__(self) -> None:
        self._buffer: deque[Outcome] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self._say_drops = DropReport(self.name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"records-{self.name}", daemon=True)
        self._thread.start()

    def __call__(self, outcome: Outcome) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return
        self._buffer.append(outcome)

    def close(self, timeout: float = 10.0) -> None:
        """Handle what is buffered, then stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def handle(self, batch: list[Outcome]) -> None:
        raise NotImplementedError

    def requeue(self, batch: list[Outcome]) -> None:
        """Keep `batch` for the next round (its target is busy), as far as it fits."""
        room = max(self.capacity - len(self._buffer), 0)
        kept = batch[:room]
        self.dropped += len(batch) - len(kept)
        self._buffer.extendleft(reversed(kept))

    def tick(self) -> None:
        """Called once per interval, batch or not (periodic work: retention, gauges)."""

    def finish(self) -> None:
        """Called last, in the sink's thread (release what the thread holds)."""

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.interval)
            self._flush()
            try:
                self.tick()
            except Exception:
                log.exception("records %s: periodic work failed", self.name)
            if stopping:
                self._flush()
                self.finish()
                return

    def _flush(self) -> None:
        batch = []
        buffer = self._buffer
        while buffer:
            batch.append(buffer.popleft())
        if batch:
            try:
                self.handle(batch)
            except Exception:
                self.dropped += len(batch)
                log.exception("records %s: %d records lost", self.name, len(batch))
        self._say_drops(self.dropped)
