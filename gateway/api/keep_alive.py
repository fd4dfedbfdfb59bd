"""One connection's keep-alive timer, for hypercorn (gateway.api.hypercorn_patches, patch 5).

Hypercorn keeps an idle timer per connection (`TrioSingleTask`): stopped when a request starts,
started again, as a new task under a `trio.Lock` through `nursery.start`, when its response is
out. Over keep-alive connections that was three scheduler round trips and a new task per
request, about a tenth of a small query's CPU (bench/http_query.py). `IdleTimer` does the same
job with one task per connection whose cancel-scope deadline is moved (`arm`, `disarm`: no
await, no task).

Must never: close a connection while a request is under way, keep a task for a connection whose
read loop is over (`stop`), or outlive a WebSocket's first `keep_alive_timeout` with a parked
task.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["IdleTimer"]


class IdleTimer:
    """One connection's keep-alive timer (patch 5): hypercorn's `TrioSingleTask` interface
    (`restart`, `stop`) plus `arm` and `disarm`, which patch 2's `protocol_send` calls for
    hypercorn's `Updated` events without awaiting anything.

    One task (`_watch`) per connection waits for the worker's `terminated` event under a cancel
    scope whose deadline is the timer's: armed (idle), `keep_alive_timeout` after the
    connection went idle; disarmed (a request under way), as long again, after which the task
    ends rather than sit parked for a WebSocket's whole life. When armed and the deadline
    passes, or the server terminates, the connection is closed as hypercorn's `_idle_timeout`
    closes it (`close`, shielded). Decisions are taken on the clock, not on whether the scope
    was cancelled, so a deadline moved while the task was being woken is honoured.
    """

    __slots__ = (
        "_armed",
        "_close",
        "_deadline",
        "_scope",
        "_terminated",
        "_timeout",
        "_wake",
        "_watching",
    )

    def __init__(
        self, timeout: float, terminated: Any, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._timeout = timeout
        self._terminated = terminated  # hypercorn's WorkerContext.terminated (wait, is_set)
        self._close = close
        self._armed = False
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None  # the wait's, while it waits
        self._watching: trio.CancelScope | None = None  # the task's, while it runs
        self._wake: trio.Event | None = None  # set by `arm` after a terminate while busy

    @property
    def running(self) -> bool:
        """Whether the timer's task runs (tests)."""
        return self._watching is not None

    async def restart(self, task_group: Any, action: object = None) -> None:
        """hypercorn's call when the connection starts (and goes idle): arm. `action` (its
        `_idle_timeout`) is what `_watch` does."""
        self.arm(task_group)

    async def stop(self) -> None:
        """The connection's read loop is over: end the task."""
        self._armed = False
        self._deadline = math.inf
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None

    def arm(self, task_group: Any) -> None:
        """The connection is idle: close it `timeout` from now unless a request starts."""
        self._armed = True
        self._set_deadline(trio.current_time() + self._timeout)
        if self._wake is not None:
            self._wake.set()
        if self._watching is None:
            self._watching = trio.CancelScope()
            task_group._nursery.start_soon(self._watch, self._watching)

    def disarm(self) -> None:
        """A request started: no keep-alive timeout until it is over."""
        self._armed = False
        self._set_deadline(trio.current_time() + self._timeout)  # then the parked task ends

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self._scope is not None:
            self._scope.deadline = deadline

    async def _watch(self, watching: trio.CancelScope) -> None:
        with watching:
            while True:
                with trio.CancelScope(deadline=self._deadline) as scope:
                    self._scope = scope
                    await self._terminated.wait()
                self._scope = None
                if self._terminated.is_set():
                    if self._armed:
                        break  # idle while the server terminates: close now
                    # Busy while the server terminates: hypercorn closes the connection after
                    # the response, or it goes idle (arm) and is closed then.
                    self._wake = trio.Event()
                    await self._wake.wait()
                    self._wake = None
                    continue
                if trio.current_time() < self._deadline:
                    continue  # moved while this task was being woken
                if self._armed:
                    break  # idle for keep_alive_timeout: close
                if self._watching is watching:
                    self._watching = None  # parked too long: end; `arm` starts another
                return
        if watching.cancelled_caught:
            return
        if self._watching is watching:
            self._watching = None
        with trio.CancelScope(shield=True):
            await self._close()
