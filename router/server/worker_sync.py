"""What a worker shares with the other workers of its server, through the state store
(router.state), about twice a second, off the event loop:

* writes its status: pid, generation, requests served, memory, CPU, and its health book
  (error messages redacted as `/provider_health` shows them);
* reads the runtime overrides, and recompiles its Plan with them when they changed;
* reads the runtime client keys' fingerprint (router.state.keys), and the keys when it
  changed: a key made, changed or revoked through any worker applies here within a round;
* reads the commands other workers were asked (forget a pool's health, learn a health
  check's results) and does them;
* writes its events: health changes and reloads.

The hot path never waits on any of it: requests read the Plan and the health book, which
this loop updates between requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from router.access.keys import ClientKey
from router.compiler.plan import Plan
from router.pool.health import HEALTH
from router.records import outcome, store
from router.server.management import instance_view
from router.server.state import PlanHolder
from router.server.system import rss_bytes, uptime_seconds
from router.state import events, keys, overrides, workers

log = logging.getLogger("router.state")
INTERVAL = 0.5  # seconds
PRUNE_EVERY = 60.0  # seconds
KeysRead = tuple[keys.Fingerprint, dict[str, ClientKey]]  # the runtime keys, as of a fingerprint
_HEALTH_FIELDS = (
    "healthy",
    "consecutive_errors",
    "successes",
    "failures",
    "last_used",
    "last_error",
    "down_since",
    "recovers_at",
    "cooldown_until",
)


class WorkerSync:
    def __init__(self, holder: PlanHolder, database: Path) -> None:
        self.holder = holder
        self.database = database
        self.pid = os.getpid()
        self.started = time.time()
        self.served = 0
        self.pending: list[tuple[str, dict[str, Any]]] = []  # events not written yet
        self._healthy: dict[tuple[str, str], bool] = {}
        self._last_command: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._pruned_at = 0.0
        self._failing_said = 0.0
        self._keys_seen: keys.Fingerprint | None = None  # of the keys the holder has

    def start(self, stop: asyncio.Event) -> asyncio.Task[None]:
        outcome.subscribe(self._count)
        self.holder.listeners.append(self._reloaded)
        return asyncio.create_task(self._run(stop))

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """An event for the console, written with the next exchange."""
        self.pending.append((kind, {**data, "worker": self.pid}))

    async def exchange_now(self) -> None:
        """One exchange at once (after this worker changed shared state itself)."""
        await self._exchange_once()

    async def broadcast(self, action: str, data: dict[str, Any]) -> None:
        """Ask every other worker to do `action` (this one did it already)."""
        await asyncio.to_thread(self._send, action, data)

    def apply_keys(self, fingerprint: keys.Fingerprint, found: dict[str, ClientKey]) -> None:
        """Make `found` (the runtime keys as of `fingerprint`) this worker's keys, unless
        newer ones are applied already (an exchange may have read before a write that
        was applied meanwhile). On the event loop only."""
        seen = self._keys_seen
        if seen is not None and (fingerprint == seen or fingerprint[1] < seen[1]):
            return
        self._keys_seen = fingerprint
        self.holder.runtime_keys = found

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        """Write an event for the console now (an operator's action)."""
        await asyncio.to_thread(self._append, kind, {**data, "worker": self.pid})

    async def close(self) -> None:
        outcome.unsubscribe(self._count)
        with contextlib.suppress(sqlite3.Error, OSError):
            await asyncio.to_thread(self._leave)

    # --- the loop ---------------------------------------------------------------------

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._exchange_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL)

    async def _exchange_once(self) -> None:
        plan = self.holder.plan
        status = self._status(plan)
        self._health_events(plan)
        written, self.pending = self.pending, []
        try:
            found, commands, read_keys = await asyncio.to_thread(self._exchange, status, written)
        except (sqlite3.Error, OSError) as exc:
            self.pending = written + self.pending
            self._say_failing(exc)
            return
        if read_keys is not None:
            self.apply_keys(*read_keys)
        for action, data in commands:
            self._do(action, data)
        if commands:  # show what they changed now, not a round later
            await asyncio.to_thread(self._beat, self._status(self.holder.plan))
        if found != self.holder.overrides:
            self.holder.overrides = found
            await asyncio.to_thread(self.holder.reload, self.holder.fingerprint)

    def _exchange(
        self, status: dict[str, Any], written: list[tuple[str, dict[str, Any]]]
    ) -> tuple[overrides.Overrides, list[tuple[str, dict[str, Any]]], KeysRead | None]:
        connection = self._open()
        connection.execute("BEGIN IMMEDIATE")
        try:
            workers.beat(connection, self.pid, self.started, status)
            for kind, data in written:
                events.append(connection, kind, data)
            if self._last_command is None:  # commands sent before this worker began are done
                self._last_command = workers.last_command(connection)
            self._last_command, commands = workers.received(
                connection, self._last_command, self.pid
            )
            found = overrides.read(connection)
            read_keys = None
            fingerprint = keys.fingerprint(connection)
            if fingerprint != self._keys_seen:  # rebuilt only when a key was written
                read_keys = fingerprint, keys.read_all(connection)
            if time.monotonic() - self._pruned_at > PRUNE_EVERY:
                self._pruned_at = time.monotonic()
                workers.prune(connection)
                events.prune(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return found, commands, read_keys

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = store.connect(self.database, check_same_thread=False)
        return self._connection

    def _beat(self, status: dict[str, Any]) -> None:
        workers.beat(self._open(), self.pid, self.started, status)

    def _send(self, action: str, data: dict[str, Any]) -> None:
        with store.connect(self.database) as connection:
            workers.send(connection, self.pid, action, data)

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        with store.connect(self.database) as connection:
            events.append(connection, kind, data)

    def _leave(self) -> None:
        connection = self._open()
        workers.leave(connection, self.pid)
        connection.close()
        self._connection = None

    # --- what this worker knows ---------------------------------------------------------

    def _count(self, _: outcome.Outcome) -> None:
        self.served += 1

    def _reloaded(self, loaded: bool) -> None:
        plan, error = self.holder.plan, self.holder.last_error
        if loaded and plan is not None:
            self.note("reload", {"ok": True, "generation": plan.generation})
        elif error is not None:
            self.note("reload", {"ok": False, "error": list(error.diagnostics)})

    def _status(self, plan: Plan | None) -> dict[str, Any]:
        times = os.times()
        return {
            "generation": plan.generation if plan else None,
            "requests": self.served,
            "rss_bytes": rss_bytes(),
            "cpu_s": round(times.user + times.system, 3),
            "uptime_s": round(uptime_seconds(), 3),
            "health": health_book(plan) if plan else {},
        }

    def _health_events(self, plan: Plan | None) -> None:
        if plan is None:
            return
        for provider in plan.providers.values():
            for instance in provider.instances:
                key = (provider.name, instance.id)
                healthy = HEALTH.of(*key).healthy
                before = self._healthy.get(key)
                self._healthy[key] = healthy
                if before is not None and before != healthy:
                    self.note("health", {"pool": key[0], "instance": key[1], "healthy": healthy})

    def _do(self, action: str, data: dict[str, Any]) -> None:
        if action == "reset-health":
            for pool in data.get("pools", []):
                HEALTH.reset(pool)
        elif action == "probed":
            learn_probes(self.holder.plan, data)

    def _say_failing(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._failing_said > 60.0:
            self._failing_said = now
            log.warning("state store unavailable to this worker (%s); trying again", exc)


HealthBook = dict[str, dict[str, dict[str, Any]]]  # pool -> instance id -> health fields


def health_book(plan: Plan) -> HealthBook:
    """This worker's health of every instance, as `/provider_health` shows it."""
    book: HealthBook = {}
    for provider in plan.providers.values():
        for instance in provider.instances:
            view = instance_view(provider, instance)
            book.setdefault(provider.name, {})[instance.id] = {
                name: view[name] for name in _HEALTH_FIELDS
            }
    return book


def learn_probes(plan: Plan | None, data: dict[str, Any]) -> None:
    """Results of a health check another worker ran, into this worker's health book."""
    if plan is None or data.get("pool") not in plan.providers:
        return
    provider = plan.providers[data["pool"]]
    for result in data.get("results", []):
        if "id" not in result or not result.get("counted"):
            continue  # skipped, or neutral (the upstream rejected the probe itself)
        health = HEALTH.of(provider.name, result["id"])
        if result.get("ok"):
            health.succeed()
        else:
            message = result.get("error") or ""
            health.fail(provider.health, result.get("status"), message, result.get("retry_after"))
