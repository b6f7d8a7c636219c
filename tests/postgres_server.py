"""A real PostgreSQL server for tests: Debian's binaries (`postgresql` package), a cluster
made by initdb in a temp dir of its own, listening on 127.0.0.1 on a free port, with no
Unix socket. PostgreSQL refuses to run as root: under root, the cluster belongs to the
`postgres` system user and its processes run as that user.

    skip = skip_reason()          # None when the binaries (and user) are there
    with PostgresServer.started() as server:
        url = server.create_database("records")
        server.stop(); server.start()   # the same cluster again, on the same port

Every wait is bounded; on the way out the server is stopped (killed if it must be) and
its directory removed."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

PREFERRED_VERSION = "15"
SYSTEM_USER = "postgres"
ROLE = "router"
PASSWORD = "pg-secret-7c1e93b0a54d"  # trust auth ignores it; tests check it is never logged
START_SECONDS = 30.0
STOP_SECONDS = 20.0
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "fsync": "off",  # a test cluster: speed over durability across an OS crash
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


def binaries() -> Path | None:
    """The bin dir of Debian's PostgreSQL (15 when there, else the newest installed)."""
    preferred = Path(f"/usr/lib/postgresql/{PREFERRED_VERSION}/bin")
    if (preferred / "initdb").exists():
        return preferred
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def skip_reason() -> str | None:
    if binaries() is None:
        return (
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; apt install postgresql)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "postgres.log"
        self.bin_dir = bin_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(SYSTEM_USER)
            self._as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(directory, user.pw_uid, user.pw_gid)

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[PostgresServer]:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError(skip_reason() or "no PostgreSQL")
        # not under pytest's tmp_path: that is root's and closed to the postgres user
        directory = Path(tempfile.mkdtemp(prefix="router-postgres-"))
        server = cls(directory, bin_dir)
        try:
            server.init()
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def url(self, database: str = "postgres", password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{ROLE}{secret}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                ROLE,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            for name, value in SETTINGS.items():
                conf.write(f"{name} = {value}\n")
            conf.write(f"port = {self.port}\n")

    def start(self) -> None:
        """Start the cluster (again) and wait until it takes connections."""
        assert self.process is None or self.process.poll() is not None
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.directory,  # the postgres user may not enter ours
            **self._as_user,
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not start in {START_SECONDS:.0f} s:\n{self.log()}")

    def stop(self, mode: int = signal.SIGINT) -> None:
        """Stop it: SIGINT is a fast shutdown (clients cut off), SIGQUIT an immediate one
        (as a crash); killed when it does not stop in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(mode)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL (with a password, which trust auth ignores)."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=START_SECONDS,
            check=False,
            cwd=self.directory,
            **self._as_user,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{output}")
