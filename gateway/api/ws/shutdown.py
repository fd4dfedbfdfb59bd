"""The server's shutdown as the WebSocket connections see it: an event that, when set, also
closes every open connection (1001) at once, with no task waiting on it per connection.

Why: each connection is one task that waits for the client's next message, its next deadline
or something to send — one wait, woken by the connection's queue (gateway.api.ws.connection).
A task parked on the shutdown event as well would cost every idle socket a second task
(~2-3 KB, issue 16). So the connections are held in one set here, and `set` queues each one's
close frame, which wakes it.

`ShutdownSignal` is used where a `trio.Event` was (`set`, `is_set`, `wait`: gateway.api.app,
gateway.nursery). Must never: await in `set`, or keep a connection after it is forgotten.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["Closable", "ShutdownSignal"]


class Closable(Protocol):
    """What `set` needs of a connection: a close that queues the frame and never awaits."""

    def close(self, code: int, reason: str) -> None: ...


class ShutdownSignal:
    """A `trio.Event` for the server's shutdown, which closes every watched connection
    (1001 "server shutting down") the moment it is set."""

    __slots__ = ("_event", "_watched")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._watched: set[Closable] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self) -> None:
        """Set the event and queue a 1001 close on every watched connection (no await)."""
        if self._event.is_set():
            return
        self._event.set()
        for connection in list(self._watched):  # each close only queues a frame
            connection.close(1001, "server shutting down")

    def watch(self, connection: Closable) -> None:
        """Close `connection` when the shutdown is set (at once if it already is), until
        `forget`. Not a context manager: its generator would stay with every idle socket."""
        if self._event.is_set():
            connection.close(1001, "server shutting down")
        self._watched.add(connection)

    def forget(self, connection: Closable) -> None:
        """`connection` is over: it is no longer held here."""
        self._watched.discard(connection)

    def __len__(self) -> int:
        """How many connections are watched (for tests and metrics)."""
        return len(self._watched)
