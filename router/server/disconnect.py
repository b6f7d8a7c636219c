"""Noticing a client that went away: its request's task is cancelled, and with it the
upstream call, so an abandoned generation stops at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
Receive = Callable[[], Awaitable[Mapping[str, Any]]]

# Fast calls finish before anyone could notice a disconnect: only watch for one after this
# long, so they do not pay for a watcher task.
WATCH_DISCONNECT_AFTER = 0.2  # seconds


class ClientGone(Exception):
    """The client disconnected while its request was being dispatched."""


class DisconnectWatch:
    """Waits for the ASGI `http.disconnect` and then cancels the request's task."""

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.watcher: asyncio.Future[Mapping[str, Any]] | None = None
        self.gone = False

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self.receive())
        self.watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: asyncio.Future[Mapping[str, Any]]) -> None:
        if watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result().get("type") == "http.disconnect":
            self.gone = True
            self.task.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.remove_done_callback(self._on_message)
            self.watcher.cancel()


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so the upstream call in it) if the client
    disconnects first; then raise ClientGone. Call only after the request body was read,
    when the next ASGI message can only be `http.disconnect`."""
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch(task, receive)
    timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER, watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        watch.stop()
