"""The operator plane of one worker: which sinks of outcome records run, from the
environment, started with the worker and closed (flushed) when it stops.

* the failure log, always;
* `ROUTER_RECORDS_FILE`: every record as a JSON line (tests, debugging);
* `PROMPT_LOG_MODE=console|file`: the prompt log (router.records.prompt_log);
* unless `ROUTER_RECORDS=0`: records and usage in the state store (or PostgreSQL:
  router.records.engine), Prometheus metrics and the access log (`ROUTER_ACCESS_LOG=0`
  turns the log alone off). Under
  `router serve` these run in the server's records service (router.records.service),
  reached through a relay; a worker without one (an app made in process) runs them itself.
  The worker's own gauges (health, generation, drops) are set here either way.

`reader` reads the records and usage wherever they are kept, whoever writes them."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from router.compiler.plan import Plan
from router.records import (
    access_log,
    engine,
    failures,
    jsonlines,
    metrics,
    outcome,
    prompt_log,
    relay,
    store,
)
from router.records.reader import RecordsReader
from router.records.threaded import ThreadedSink

log = logging.getLogger("router.records")


def records_enabled() -> bool:
    return os.environ.get("ROUTER_RECORDS", "1") != "0"


class RecordsPlane:
    def __init__(
        self,
        plan: Callable[[], Plan | None],
        limits: Callable[[], metrics.LimitsHealth | None] = lambda: None,
    ) -> None:
        self.plan = plan
        self.limits = limits  # the worker's guarded limit store, for its gauges
        self.sinks: list[ThreadedSink | relay.Relay] = []
        self.database: Path | None = None
        self.state_database: Path | None = None
        self.database_url: str | None = None  # PostgreSQL's, when it keeps the records
        self.reader: RecordsReader | None = None
        self.gauges: metrics.WorkerGauges | None = None

    def start(self) -> None:
        outcome.subscribe(failures.log_failed_attempts)
        for optional in (jsonlines.from_environment(), prompt_log.from_environment()):
            if optional is not None:
                self.sinks.append(optional)
        self._open_store()  # runtime state lives there too, records or not
        if records_enabled():
            self.database_url = engine.database_url(self.plan())
            self.reader = engine.records_reader(self.database, self.database_url)
            service = os.environ.get(relay.SOCKET_ENV)
            if service:
                self.sinks.append(relay.Relay(service, self.plan))
            else:
                self._start_local()
        for sink in self.sinks:
            sink.start()
            outcome.subscribe(sink)
        if records_enabled():
            self.gauges = metrics.WorkerGauges(self.plan, self.dropped, self.limits)
            self.gauges.start()

    def _start_local(self) -> None:
        self._start_store()
        self.sinks.append(metrics.MetricsSink())
        access = access_log.from_environment()
        if access is not None:
            self.sinks.append(access)

    def _open_store(self) -> None:
        """The state store's database. `state_database` holds runtime state (overrides,
        sessions, events); `database` is the same file when it also has the records (or
        their spill, with PostgreSQL), None under ROUTER_RECORDS=0."""
        try:
            self.state_database = store.prepare(store.state_dir())
        except (OSError, sqlite3.Error) as exc:
            log.error("state store unavailable (%s): no records, no runtime state", exc)
            return
        if records_enabled():
            self.database = self.state_database

    def _start_store(self) -> None:
        sink = engine.record_store(self.database, self.plan, self.database_url)
        if sink is not None:
            self.sinks.append(sink)

    def dropped(self) -> int:
        return sum(sink.dropped for sink in self.sinks)

    def stop(self) -> None:
        for sink in self.sinks:
            outcome.unsubscribe(sink)
        for sink in self.sinks:
            sink.close()
        self.sinks.clear()
        if self.gauges is not None:
            self.gauges.close()
            self.gauges = None
        if self.reader is not None:
            self.reader.close()
        if records_enabled():
            metrics.worker_exit()
