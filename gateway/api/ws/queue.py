"""A WebSocket connection's bounded outbound queue: everything a connection sends goes through
its `OutboundQueue`, and its writer task takes from it.

When a client reads too slowly the oldest *data* frames are dropped (counted), and data frames
that waited too long are dropped at send time; control frames (ack, pong, error, complete) and
the `CloseFrame` never are. The connection decides what to do about a client that keeps
falling behind (close 4413). Must never block a producer, grow without bound on data frames,
drop a control frame, or touch the socket.
"""

from __future__ import annotations

import math
from collections import deque

import trio
from trio.lowlevel import ParkingLot

__all__ = ["CloseFrame", "OutboundQueue"]


class CloseFrame:
    """The WebSocket close a connection ends with: the last thing its writer sends."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class OutboundQueue:
    """A connection's bounded send queue.

    Data frames (subscription payloads) are droppable: when the queue is full the oldest one
    goes, and a data frame still unsent `max_age` seconds after it was queued is dropped at send
    time — a client that is behind gets fresh ticks rather than an ever older backlog, so its
    latency stays bounded. Control frames (ack, pong, error, complete, close) are never
    dropped; they are few and each answers something the client did.
    """

    __slots__ = ("_items", "_limit", "_lot", "_max_age", "dropped", "dropped_in_a_row")

    def __init__(self, limit: int, max_age: float = math.inf) -> None:
        # (expires_at, frame): expires_at is None for a control frame
        self._items: deque[tuple[float | None, str | CloseFrame]] = deque()
        self._limit = limit
        self._max_age = max_age
        self._lot = ParkingLot()
        self.dropped = 0
        self.dropped_in_a_row = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: str | CloseFrame, *, droppable: bool = False) -> bool:
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
        if self._lot:  # the writer is parked (len(lot) > 0); statistics() would allocate
            self._lot.unpark_all()
        return kept

    def put_close(self, close: CloseFrame) -> None:
        """Queue the close frame behind pending control frames only: data can wait no more."""
        self._items = deque(item for item in self._items if item[0] is None)
        self._items.append((None, close))
        if self._lot:
            self._lot.unpark_all()

    def _drop_oldest_data(self) -> bool:
        for index, (expires, _frame) in enumerate(self._items):
            if expires is not None:
                del self._items[index]
                return True
        return False

    async def take(self) -> tuple[str | CloseFrame, int]:
        """Wait for the next frame worth sending; returns it and how many expired data frames
        were dropped on the way (also counted in `dropped`).

        Age is checked here, just before the send, so however long the writer waited for the
        socket, a frame older than `max_age` is never sent.
        """
        expired = 0
        while True:
            while not self._items:
                await self._lot.park()
            expires, frame = self._items.popleft()
            if expires is None or expires >= trio.current_time():
                break
            expired += 1
        if expired:
            self.dropped += expired
            self.dropped_in_a_row += expired
        elif expires is not None:
            self.dropped_in_a_row = 0  # a data frame is going out: the client is reading
        return frame, expired
