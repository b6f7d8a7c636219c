"""The records service: one process per server (`router serve` starts it before the
workers) that takes every worker's outcome records over a Unix socket
(router.records.relay) and runs the sinks that need no request bodies: records and usage
(into the state store, or PostgreSQL: router.records.engine), the Prometheus fold and
the access log. The workers' interpreters
then spend nothing on them but the encoding; the service works on another core.

It prices records with the config the worker served: each frame names its generation,
and a generation the service has not compiled yet makes it compile the config dir again.

It stops on SIGTERM or SIGINT, or when the server that started it is gone: it stops
taking connections, reads what the workers still send until they hang up (at most
DRAIN_SECONDS), and flushes its sinks."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

from router.compiler import compile_config
from router.compiler.plan import Plan
from router.records import access_log, engine, metrics, relay, store
from router.records.threaded import ThreadedSink

log = logging.getLogger("router.records")
DRAIN_SECONDS = 15.0


class ServedPlans:
    """The plan for pricing: the config dir compiled again whenever a worker reports a
    generation not seen yet (a reload), so a record is priced as its worker routed it."""

    def __init__(self, config_dir: str) -> None:
        self.config_dir = config_dir
        self.plan: Plan | None = None
        self._tried: set[str] = set()
        self._lock = threading.Lock()

    def current(self) -> Plan | None:
        return self.plan

    def load(self) -> None:
        """Compile the config dir as it is now (at the start: which engine keeps the
        records is in it, and the first records are priced without waiting)."""
        plan, _ = compile_config(self.config_dir, env=dict(os.environ))
        if plan is not None:
            self.plan = plan

    def serving(self, generation: str) -> None:
        if self.plan is not None and self.plan.generation == generation:
            return
        with self._lock:
            if generation in self._tried:
                return
            self._tried.add(generation)
            plan, _ = compile_config(self.config_dir, env=dict(os.environ))
            if plan is not None:
                self.plan = plan


class Service:
    def __init__(self, path: str, sinks: list[ThreadedSink], plans: ServedPlans) -> None:
        self.path = path
        self.sinks = sinks
        self.plans = plans
        self.stopping = threading.Event()
        self._readers: list[threading.Thread] = []
        self._decode = relay.decoder().decode
        self.gauges = metrics.WorkerGauges(lambda: None, self.dropped)

    def dropped(self) -> int:
        return sum(sink.dropped for sink in self.sinks)

    def run(self) -> None:
        for sink in self.sinks:
            sink.start()
        listener = self._listen()
        parent = os.getppid()
        try:
            while not self.stopping.is_set():
                if os.getppid() != parent:
                    log.warning("records service: the server is gone; stopping")
                    break
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    self.gauges.tick()  # about once a second: drops
                    continue
                reader = threading.Thread(target=self._read, args=(connection,), daemon=True)
                reader.start()
                self._readers.append(reader)
        finally:
            listener.close()
            self._drain()

    def _listen(self) -> socket.socket:
        Path(self.path).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        listener.settimeout(0.5)
        return listener

    def _read(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as stream:
            while True:
                header = stream.read(relay.HEADER.size)
                if len(header) < relay.HEADER.size:
                    return
                (size,) = relay.HEADER.unpack(header)
                if size > relay.MAX_FRAME:
                    log.error("records service: a %d-byte frame; connection dropped", size)
                    return
                payload = stream.read(size)
                if len(payload) < size:
                    return
                self._take(payload)

    def _take(self, payload: bytes) -> None:
        try:
            generation, records = self._decode(payload)
        except Exception:
            log.exception("records service: an undecodable frame dropped")
            return
        self.plans.serving(generation)
        for sink in self.sinks:
            for record in records:
                sink(record)

    def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        for reader in self._readers:
            reader.join(max(deadline - time.monotonic(), 0.0))
        for sink in self.sinks:
            sink.close()
        self.gauges.tick()
        Path(self.path).unlink(missing_ok=True)


def sinks_for(plans: ServedPlans) -> list[ThreadedSink]:
    sinks: list[ThreadedSink] = []
    url = engine.database_url(plans.current())
    database = None
    try:
        database = store.prepare(store.state_dir())
    except (OSError, sqlite3.Error) as exc:
        kept = "records are not spilled" if url else "request records are not kept"
        log.error("state store unavailable (%s): %s", exc, kept)
    records = engine.record_store(database, plans.current, url)
    if records is not None:
        sinks.append(records)
    sinks.append(metrics.MetricsSink())
    access = access_log.from_environment()
    if access is not None:
        sinks.append(access)
    return sinks


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    path = argv[0] if argv else os.environ[relay.SOCKET_ENV]
    plans = ServedPlans(os.environ.get("ROUTER_CONFIG_DIR", "."))
    plans.load()
    service = Service(path, sinks_for(plans), plans)

    def stop(*_: object) -> None:
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
