"""`router serve`'s side of the records service (router.records.service): start it before
the workers, so they find its socket; start it again if it dies; stop it after the
workers, so it reads what they flushed on their way out."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from router.records import relay

log = logging.getLogger("router.serve")
READY_SECONDS = 10.0
STOP_SECONDS = 30.0


class RecordsService:
    def __init__(self, runtime: str) -> None:
        self.path = str(Path(runtime) / "records.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and the stop never overlap

    def start(self) -> bool:
        """Start the service and wait for its socket; False when it did not come up."""
        if not self._spawn():
            return False
        os.environ[relay.SOCKET_ENV] = self.path
        threading.Thread(target=self._watch, name="records-service", daemon=True).start()
        return True

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("records service did not stop in %.0f s; killed", STOP_SECONDS)
            process.kill()
            process.wait()

    def _spawn(self) -> bool:
        Path(self.path).unlink(missing_ok=True)
        # a session of its own: a Ctrl-C to the terminal must not stop it before the
        # workers have flushed their records to it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "router.records.service", self.path], start_new_session=True
        )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if Path(self.path).exists():
                return True
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        log.error("records service did not start; each worker keeps its own records")
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return False

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            process = self.process
            if process is None or process.poll() is None:
                continue
            with self._lock:
                if self._stopping.is_set():
                    return
                log.error("records service exited (%s); starting it again", process.returncode)
                self._spawn()
