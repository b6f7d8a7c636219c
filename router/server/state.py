"""The current Plan of this worker, swapped atomically on reload (keep-last-good).

A request reads `holder.plan` once and keeps that object to the end, so a reload in the
middle of it cannot change its routes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router.access.gate import LimitStores
from router.access.keys import ClientKey
from router.compiler import compile_config
from router.compiler.plan import Plan
from router.records.store import state_dir

log = logging.getLogger("router.reload")


@dataclass(frozen=True, slots=True)
class ReloadError:
    at: float  # unix time
    diagnostics: tuple[str, ...]


class PlanHolder:
    def __init__(self, config_dir: str) -> None:
        self.config_dir = config_dir
        self.plan: Plan | None = None
        self.last_error: ReloadError | None = None
        self.loaded_at = 0.0
        self.reloads = 0
        self.fingerprint: tuple = ()  # of the files the current attempt was compiled from
        self.listeners: list[Callable[[bool], None]] = []  # told each reload's result
        # runtime overrides of instances' `enabled` (router.state.overrides), compiled in
        self.overrides: Mapping[tuple[str, str], bool] = {}
        # keys made at run time (POST /api/keys), by digest; revoked ones stay, marked
        self.runtime_keys: Mapping[str, ClientKey] = {}
        self.limits = LimitStores(state_dir())  # the limit store of limited keys
        self._lock = threading.Lock()

    def reload(self, fingerprint: tuple = ()) -> bool:
        """Compile the config dir; swap in the new Plan if it compiles cleanly.
        Returns True when the Plan was (re)loaded. `fingerprint` identifies the file
        versions being compiled (taken before reading them)."""
        with self._lock:
            self.fingerprint = fingerprint
            plan, diagnostics = compile_config(
                self.config_dir, env=dict(os.environ), overrides=self.overrides
            )
            if plan is None:
                messages = tuple(str(d) for d in diagnostics if d.severity == "error")
                self.last_error = ReloadError(time.time(), messages)
                kept = self.plan.generation if self.plan else "none"
                log.error(
                    "config reload failed, keeping generation %s:\n  %s",
                    kept,
                    "\n  ".join(messages),
                )
                self._tell(False)
                return False
            changed = self.plan is None or plan.generation != self.plan.generation
            self.plan = plan
            self.last_error = None
            self.loaded_at = time.time()
            self.reloads += 1
            if changed:
                log.info("config generation %s loaded from %s", plan.generation, self.config_dir)
            self._tell(True)
            return True

    def _tell(self, loaded: bool) -> None:
        """Each listener, once the outcome is in place (`plan` or `last_error`)."""
        for listener in self.listeners:
            listener(loaded)
