"""The state bridge: what the servers of a set share, carried between each server's state
store and Redis (`state.redis`). One per server, a thread of `router serve`'s main
process; the workers never wait on it and know nothing of Redis: they keep exchanging
with their server's store (router.server.worker_sync), and the bridge keeps that store
in step with the others, about five times a second.

* Runtime overrides and runtime keys: Redis holds every server's rows; the newest write
  of a row wins (`changed`, compared in a Lua script). A server's local writes go up, the
  others' come down. Removing an override leaves a tombstone, so the removal travels too.
  Keys are never removed (a revoked key keeps its row).
* Events (for `/api/events`) and worker commands (forget a pool's health, learn a health
  check): appended to Redis streams, read by the other servers into their own store.
* Worker status and health books: each server publishes its live workers with a short
  expiry; the others keep them in `remote_workers`, so `/provider_health` and
  `/api/system` show the whole set.

While Redis is away, every server keeps serving from its own store (what it last
learned), and the bridge tries again with a growing pause (0.5 s up to 10 s)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from router.compiler import compile_config
from router.records import store
from router.server.reload import fingerprint
from router.state import keys as runtime_keys
from router.state import workers

log = logging.getLogger("router.state")

INTERVAL = 0.2  # seconds between rounds
BACKOFF = (0.5, 10.0)  # seconds: first pause after a failure, longest
TIMEOUT = 0.5  # seconds, per Redis call
STREAM_LENGTH = 10_000  # events and commands kept in Redis (approximately)
SERVER_TTL = 5.0  # seconds a server's published workers count without a refresh
PREFIX = "router:state:"
VERSION = PREFIX + "version"
OVERRIDES = PREFIX + "overrides"
KEYS = PREFIX + "keys"
EVENTS = PREFIX + "events"
COMMANDS = PREFIX + "commands"
SERVERS = PREFIX + "servers"  # hash: server -> {"seen", "workers"}

# HSET the row when it is newer than the one held; bump the version when it was
_PUT_IF_NEWER = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local changed = cjson.decode(held)['changed']
  if changed and changed >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""

Row = dict[str, Any]


class StateBridge:
    def __init__(self, database: Path, server: str, redis_url: Callable[[], str | None]) -> None:
        """`redis_url` says where Redis is now (the current config's `state.redis`)."""
        self.database = database
        self.server = server
        self.redis_url = redis_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._url: str | None = None
        self._put: Any = None
        self._connection: sqlite3.Connection | None = None
        self._pause = 0.0
        self._warned_at = 0.0
        self._reset()

    def _reset(self) -> None:
        """Forget what was exchanged: a new Redis starts from scratch."""
        self._version: bytes | None = None
        self._known: dict[str, dict[str, float]] = {"overrides": {}, "keys": {}}
        self._event_sent: int | None = None
        self._command_sent: int | None = None
        self._stream_seen: dict[str, bytes] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="state-bridge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._connection is not None:
            self._connection.close()

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL + self._pause):
            try:
                self.exchange()
                self._pause = 0.0
            except (redis.RedisError, OSError) as exc:
                self._pause = min(max(self._pause * 2, BACKOFF[0]), BACKOFF[1])
                self._say("Redis", exc)
                self._drop_client()
            except sqlite3.Error as exc:
                self._pause = BACKOFF[0]
                self._say("the state store", exc)
            except Exception:
                log.exception("state bridge round failed")
                self._pause = BACKOFF[1]

    def exchange(self) -> None:
        """One round: push what changed here, pull what changed elsewhere."""
        client = self._redis()
        if client is None:
            return
        connection = self._local()
        version = client.get(VERSION) or b"0"
        fresh = version != self._version  # a row changed somewhere since the last look
        self._overrides(connection, client, fresh)
        self._keys(connection, client, fresh)
        self._version = version
        self._events(connection, client)
        self._commands(connection, client)
        self._servers(connection, client)

    def _redis(self) -> redis.Redis | None:
        url = self.redis_url()
        if url != self._url:
            self._drop_client()
            self._url = url
            self._reset()
        if url is None:
            return None
        if self._client is None:
            self._client = redis.Redis.from_url(
                url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
            self._put = self._client.register_script(_PUT_IF_NEWER)
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def _local(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = store.connect(self.database, check_same_thread=False)
        return self._connection

    def _say(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60.0:
            self._warned_at = now
            log.warning(
                "state bridge: %s unavailable (%s); this server serves from its own state",
                what,
                exc,
            )

    # --- overrides and keys: the newest write wins ----------------------------------------

    def _overrides(self, connection: sqlite3.Connection, client: redis.Redis, fresh: bool) -> None:
        local = {
            f"{pool}\t{instance}": {"enabled": bool(enabled), "changed": changed}
            for pool, instance, enabled, changed in connection.execute(
                "SELECT pool, instance, enabled, changed FROM overrides"
            )
        }
        known = self._known["overrides"]
        for field in [field for field in known if field not in local]:  # removed here
            self._push(client, OVERRIDES, field, {"enabled": None, "changed": time.time()})
            del known[field]
        self._push_newer(client, OVERRIDES, local, known)
        if not fresh:
            return
        remote = _rows(client.hgetall(OVERRIDES))
        for field, row in remote.items():
            mine = local.get(field)
            if mine is not None and mine["changed"] >= row["changed"]:
                continue
            pool, _, instance = field.partition("\t")
            if row["enabled"] is None:
                if mine is not None:
                    connection.execute(
                        "DELETE FROM overrides WHERE pool = ? AND instance = ?", (pool, instance)
                    )
                known.pop(field, None)
                continue
            connection.execute(
                "INSERT INTO overrides (pool, instance, enabled, changed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pool, instance) DO UPDATE SET enabled = excluded.enabled, "
                "changed = excluded.changed",
                (pool, instance, int(row["enabled"]), row["changed"]),
            )
            known[field] = row["changed"]

    def _keys(self, connection: sqlite3.Connection, client: redis.Redis, fresh: bool) -> None:
        local = {key.name: _key_row(key) for key in runtime_keys.listed(connection)}
        known = self._known["keys"]
        self._push_newer(client, KEYS, local, known)
        if not fresh:
            return
        remote = _rows(client.hgetall(KEYS))
        for name, row in remote.items():
            mine = local.get(name)
            if mine is not None and mine["changed"] >= row["changed"]:
                continue
            if _store_key(connection, name, row):
                known[name] = row["changed"]

    def _push_newer(
        self, client: redis.Redis, table: str, local: dict[str, Row], known: dict[str, float]
    ) -> None:
        for field, row in local.items():
            if known.get(field) != row["changed"]:
                self._push(client, table, field, row)
                known[field] = row["changed"]

    def _push(self, client: redis.Redis, table: str, field: str, row: Row) -> None:
        self._put(keys=[table, VERSION], args=[field, json.dumps(row), row["changed"]])

    # --- events and commands: streams --------------------------------------------------------

    def _events(self, connection: sqlite3.Connection, client: redis.Redis) -> None:
        if self._event_sent is None:  # only what happens from now on travels
            self._event_sent = _last_id(connection, "events")
        rows = connection.execute(
            "SELECT id, time, kind, data FROM events WHERE id > ? ORDER BY id",
            (self._event_sent,),
        ).fetchall()
        for number, at, kind, data in rows:
            self._event_sent = number
            if "server" in json.loads(data):
                continue  # one that came from another server
            entry = {"server": self.server, "time": at, "kind": kind, "data": data}
            client.xadd(EVENTS, entry, maxlen=STREAM_LENGTH, approximate=True)
        for entry in self._read_stream(client, EVENTS):
            data = {**json.loads(entry["data"]), "server": entry["server"]}
            connection.execute(
                "INSERT INTO events (time, kind, data) VALUES (?, ?, ?)",
                (float(entry["time"]), entry["kind"], json.dumps(data, separators=(",", ":"))),
            )
        self._event_sent = max(self._event_sent, _last_id(connection, "events"))

    def _commands(self, connection: sqlite3.Connection, client: redis.Redis) -> None:
        if self._command_sent is None:
            self._command_sent = workers.last_command(connection)
        rows = connection.execute(
            "SELECT id, origin, action, data FROM commands WHERE id > ? ORDER BY id",
            (self._command_sent,),
        ).fetchall()
        for number, origin, action, data in rows:
            self._command_sent = number
            if origin == workers.REMOTE_ORIGIN:
                continue
            entry = {"server": self.server, "action": action, "data": data}
            client.xadd(COMMANDS, entry, maxlen=STREAM_LENGTH, approximate=True)
        for entry in self._read_stream(client, COMMANDS):
            workers.send(
                connection, workers.REMOTE_ORIGIN, entry["action"], json.loads(entry["data"])
            )
        self._command_sent = max(self._command_sent, workers.last_command(connection))

    def _read_stream(self, client: redis.Redis, stream: str) -> list[dict[str, str]]:
        """The entries other servers added since the last read (from now, the first time)."""
        seen = self._stream_seen.get(stream)
        if seen is None:
            newest = client.xrevrange(stream, count=1)
            self._stream_seen[stream] = newest[0][0] if newest else b"0-0"
            return []
        found = client.xread({stream: seen}, count=1000)
        entries: list[dict[str, str]] = []
        for _, items in found:
            for entry_id, fields in items:
                self._stream_seen[stream] = entry_id
                entry = {k.decode(): v.decode() for k, v in fields.items()}
                if entry.get("server") != self.server:
                    entries.append(entry)
        return entries

    # --- workers of the other servers ----------------------------------------------------------

    def _servers(self, connection: sqlite3.Connection, client: redis.Redis) -> None:
        """Publish this server's live workers; keep the others' that are fresh. One hash
        of servers, not a key each: no SCAN over the whole keyspace five times a second."""
        now = time.time()
        mine = {"seen": now, "workers": workers.live(connection)}
        client.hset(SERVERS, self.server, json.dumps(mine))
        others: dict[str, list[dict[str, Any]]] = {}
        gone: list[str] = []
        for field, value in client.hgetall(SERVERS).items():
            name = field.decode()
            if name == self.server:
                continue
            entry = json.loads(value)
            if entry.get("seen", 0) < now - SERVER_TTL:
                gone.append(name)
                continue
            others[name] = entry.get("workers", [])
        if gone:
            client.hdel(SERVERS, *gone)
        workers.replace_remote(connection, others)


def _rows(found: dict[bytes, bytes]) -> dict[str, Row]:
    return {field.decode(): json.loads(value) for field, value in found.items()}


def _last_id(connection: sqlite3.Connection, table: str) -> int:
    return int(connection.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])


def _key_row(key: runtime_keys.StoredKey) -> Row:
    return {
        "digest": key.digest,
        "prefix": key.prefix,
        "models": list(key.models) if key.models is not None else None,
        "providers": list(key.providers) if key.providers is not None else None,
        "limits": key.limits.as_dict(),
        "expires": key.expires,
        "created": key.created,
        "changed": key.changed,
        "revoked": key.revoked,
    }


def _store_key(connection: sqlite3.Connection, name: str, row: Row) -> bool:
    """Another server's key into this store; False when its digest is already another
    name's here (two servers made keys apart while Redis was away: the first stays)."""
    clash = connection.execute(
        "SELECT 1 FROM keys WHERE digest = ? AND name != ?", (row["digest"], name)
    ).fetchone()
    if clash:
        log.warning("runtime key %r: its digest is another key's on this server; skipped", name)
        return False
    version = runtime_keys.fingerprint(connection)[1] + 1
    connection.execute(
        "INSERT INTO keys (name, digest, prefix, models, providers, limits, expires, created, "
        "changed, revoked, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, prefix = excluded.prefix, "
        "models = excluded.models, providers = excluded.providers, limits = excluded.limits, "
        "expires = excluded.expires, changed = excluded.changed, revoked = excluded.revoked, "
        "version = excluded.version",
        (
            name,
            row["digest"],
            row["prefix"],
            None if row["models"] is None else json.dumps(row["models"]),
            None if row["providers"] is None else json.dumps(row["providers"]),
            json.dumps(row["limits"]),
            row["expires"],
            row["created"],
            row["changed"],
            row["revoked"],
            version,
        ),
    )
    return True


class RedisOfConfig:
    """`state.redis` of the config dir as it is now: compiled again when its files change
    (looked at every few seconds), for the bridge in `router serve`'s main process."""

    RECHECK = 2.0  # seconds

    def __init__(self, config_dir: str, url: str | None) -> None:
        self.config_dir = config_dir
        self.url = url
        self._checked = time.monotonic()
        self._files = fingerprint(config_dir)

    def __call__(self) -> str | None:
        if time.monotonic() - self._checked < self.RECHECK:
            return self.url
        self._checked = time.monotonic()
        files = fingerprint(self.config_dir)
        if files != self._files:
            self._files = files
            plan, _ = compile_config(self.config_dir, env=dict(os.environ))
            if plan is not None:  # a broken config keeps the last good one, as the workers do
                self.url = plan.state.redis.value if plan.state.redis else None
        return self.url
