"""A WebSocket connection's bounded outbound queue: everything a connection sends goes through
its `OutboundQueue`, and its task (gateway.api.ws.connection) takes from it.

When a client reads too slowly the oldest *data* frames are dropped (counted), and data frames
that waited too long are dropped at send time; control frames (ack, pong, error, complete) and
the `CloseFrame` never are. The connection decides what to do about a client that keeps
falling behind (close 4413). Must never block a producer, grow without bound on data frames,
drop a control frame, or touch the socket.
"""

from __future__ import annotations

import math

import trio
from trio.lowlevel import ParkingLot

__all__ = ["FLUSH", "CloseFrame", "Flush", "OutboundQueue"]


class CloseFrame:
    """The WebSocket close a connection ends with: the last thing its task sends."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Flush:
    """A control item asking the connection's task to send what a direct write left over
    (gateway.api.direct_write): no frame of its own."""

    __slots__ = ()


FLUSH = Flush()


class OutboundQueue:
    """A connection's bounded send queue.

    Data frames (subscription payloads) are droppable: when the queue is full the oldest one
    goes, and a data frame still unsent `max_age` seconds after it was queued is dropped at send
    time — a client that is behind gets fresh ticks rather than an ever older backlog, so its
    latency stays bounded. Control frames (ack, pong, error, complete, close) are never
    dropped; they are few and each answers something the client did.

    A consumer either awaits `take`, or calls `pop` and, when it finds nothing, waits under a
    cancel scope it sets as `waiting`: the next `put` cancels that scope (the connection's one
    task waits for frames, messages and its deadlines that way: gateway.api.ws.connection). Held by
    every idle socket, so small: a list (an empty deque is 624 bytes) and no parking lot until
    `take` needs one.
    """

    __slots__ = ("_items", "_limit", "_lot", "_max_age", "dropped", "dropped_in_a_row", "waiting")

    def __init__(self, limit: int, max_age: float = math.inf) -> None:
        # (expires_at, frame): expires_at is None for a control frame
        self._items: list[tuple[float | None, str | CloseFrame | Flush]] = []
        self._limit = limit
        self._max_age = max_age
        self._lot: ParkingLot | None = None
        self.waiting: trio.CancelScope | None = None  # cancelled, then cleared, by `put`
        self.dropped = 0
        self.dropped_in_a_row = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: str | CloseFrame | Flush, *, droppable: bool = False) -> bool:
        """Queue a frame; returns False when a data frame (an older one, or this) was dropped."""
        kept = True
        if droppable and len(self._items) >= self._limit:
            self.dropped += 1
            self.dropped_in_a_row += 1
            kept = False
            if not self._drop_oldest_data():
                return False  # nothing but control frames queued: this data frame goes
        expires = trio.current_time() + self._max_age if droppable else None
        self._items.append((expires, frame))
        self._wake()
        return kept

    def put_close(self, close: CloseFrame) -> None:
        """Queue the close frame behind pending control frames only: data can wait no more."""
        self._items = [item for item in self._items if item[0] is None]
        self._items.append((None, close))
        self._wake()

    def wake(self) -> None:
        """Wake the consumer as `put` does, with nothing queued (it has something else to
        look at: gateway.api.ws.connection's operation tasks)."""
        self._wake()

    def _wake(self) -> None:
        if self._lot:  # a consumer is parked in `take` (len(lot) > 0)
            self._lot.unpark_all()
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            waiting.cancel()

    def _drop_oldest_data(self) -> bool:
        for index, (expires, _frame) in enumerate(self._items):
            if expires is not None:
                del self._items[index]
                return True
        return False

    def pop(self) -> tuple[str | CloseFrame | Flush | None, int]:
        """The next frame worth sending, or None when there is none, without waiting; and how
        many expired data frames were dropped on the way (also counted in `dropped`).

        Age is checked here, just before the send, so however long the task waited for the
        socket, a frame older than `max_age` is never sent.
        """
        items = self._items
        expired = 0
        frame: str | CloseFrame | Flush | None = None
        expires: float | None = None
        while items:
            expires, frame = items.pop(0)  # a short list: cheaper than a deque kept per socket
            if expires is None or expires >= trio.current_time():
                break
            expired += 1
            frame = None
        if expired:
            self.dropped += expired
            self.dropped_in_a_row += expired
        elif frame is not None and expires is not None:
            self.dropped_in_a_row = 0  # a data frame is going out: the client is reading
        return frame, expired

    async def take(self) -> tuple[str | CloseFrame | Flush, int]:
        """Wait for the next frame worth sending (see `pop`)."""
        expired = 0
        while True:
            frame, dropped = self.pop()
            expired += dropped
            if frame is not None:
                return frame, expired
            if self._lot is None:
                self._lot = ParkingLot()
            await self._lot.park()
