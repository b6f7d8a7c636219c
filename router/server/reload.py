"""Hot reload: watch the config dir (debounced), and a trigger file that the reload API
and SIGHUP touch, so every Granian worker recompiles and converges on one generation.

Besides file events, the watcher compares a fingerprint (name, mtime, size) of the
watched files once a second, so an edit made while a worker was still starting, or an
event the OS dropped, is still picked up. It also notices an instance's OAuth credentials
file appearing or disappearing (a sign-in by `router oauth`, an upload to another worker),
since that decides whether the instance is configured; token refreshes rewrite the file
but do not change whether it exists, so they cause no reload."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from router.compiler.plan import Plan
from router.server.state import PlanHolder

log = logging.getLogger("router.reload")

TRIGGER_NAME = "reload"
DEBOUNCE_MS = 200
POLL_MS = 1000

Fingerprint = tuple[tuple[str, int, int], ...]


def trigger_path() -> Path | None:
    runtime = os.environ.get("ROUTER_RUNTIME_DIR")
    return Path(runtime) / TRIGGER_NAME if runtime else None


def request_reload() -> bool:
    """Ask every worker to reload (touch the shared trigger). False if not shared."""
    path = trigger_path()
    if path is None:
        return False
    path.write_text(str(os.getpid()))
    return True


def _config_files(config_dir: str) -> list[Path]:
    root = Path(config_dir)
    files = [root / "providers.yaml", root / "routes.yaml"]
    files += sorted((root / "pipelines").glob("*.y*ml"))
    return files


def fingerprint(config_dir: str | None) -> Fingerprint:
    files = _config_files(config_dir) if config_dir else []
    trigger = trigger_path()
    if trigger is not None:
        files.append(trigger)
    stamps = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def credentials_news(plan: Plan | None) -> tuple[tuple[str, bool], ...]:
    """Credentials files whose existence the Plan has wrong (it was compiled before the
    file appeared, or after it was removed), with whether they exist now."""
    if plan is None:
        return ()
    news = []
    for provider in plan.providers.values():
        for instance in provider.instances:
            path = instance.options.get("credentials")
            if path is None:
                continue
            missing = any(reason.startswith("file:") for reason in instance.unconfigured)
            exists = os.path.exists(str(path))
            if exists == missing:
                news.append((str(path), exists))
    return tuple(sorted(news))


def _watched_dirs(config_dir: str) -> list[str]:
    """The folders whose files make up the config: the config dir itself (not its
    subfolders: a state dir or logs may live there) and pipelines/."""
    pipelines = Path(config_dir) / "pipelines"
    return [config_dir, *([str(pipelines)] if pipelines.is_dir() else [])]


def _config_filter(trigger: Path | None) -> Callable[[Change, str], bool]:
    """Only events on YAML files and on the trigger wake the watcher: the gateway's own
    writes (logs, state) beside them must not. Credentials files are not watched: the
    once-a-second check (`credentials_news`) notices what matters of them."""
    trigger_name = str(trigger) if trigger is not None else None

    def wanted(_change: Change, path: str) -> bool:
        return path.endswith(_CONFIG_SUFFIXES) or path == trigger_name

    return wanted


_CONFIG_SUFFIXES = (".yaml", ".yml")


async def watch(holder: PlanHolder, stop: asyncio.Event, *, config: bool = True) -> None:
    """Reload on changes to the config files (when `config`) and on the shared trigger."""
    watched_dir = holder.config_dir if config else None
    paths = _watched_dirs(holder.config_dir) if config else []
    trigger = trigger_path()
    if trigger is not None:
        paths.append(str(trigger.parent))
    if not paths:
        return
    seen = fingerprint(watched_dir)
    if seen != holder.fingerprint:
        await asyncio.to_thread(holder.reload, seen)
    tried: tuple[tuple[str, bool], ...] = ()  # credentials news a reload already tried to take in
    try:
        async for _changes in awatch(
            *paths,
            watch_filter=_config_filter(trigger),
            debounce=DEBOUNCE_MS,
            step=50,
            stop_event=stop,
            recursive=False,
            yield_on_timeout=True,
            rust_timeout=POLL_MS,
        ):
            current = fingerprint(watched_dir)
            news = credentials_news(holder.plan) if config else ()
            if current != seen or (news and news != tried):
                seen, tried = current, news
                await asyncio.to_thread(holder.reload, current)
    except Exception:  # never let the watcher take the worker down
        log.exception("config watcher stopped")
