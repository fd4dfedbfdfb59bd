"""Publishing a busy live symbol at a bounded rate: at most one tick per symbol per interval.

A stream's `min_publish_interval` coalesces a symbol that ticks faster than that to its latest
tick: `TickThrottle.admit` passes a tick whose symbol has not been published for an interval
and holds the others back, the latest one per symbol winning; `due` hands back the held ticks
whose interval has passed. Times are whatever clock the caller passes (the stream client uses
`trio.current_time()`).

Must never hold more than one tick per symbol, publish anything itself, or change a tick.
"""

from __future__ import annotations

import math

from gateway.models import PriceTick

__all__ = ["TickThrottle"]


class TickThrottle:
    """One connection's publish times and held-back ticks, per symbol."""

    __slots__ = ("_pending", "_published_at", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._published_at: dict[str, float] = {}
        self._pending: dict[str, PriceTick] = {}

    def admit(self, ticks: list[PriceTick], now: float) -> list[PriceTick]:
        """The ticks to publish now; the others are held back (the latest per symbol wins)."""
        ready: list[PriceTick] = []
        for tick in ticks:
            last = self._published_at.get(tick.symbol)
            if last is None or now - last >= self.interval:
                self._published_at[tick.symbol] = now
                self._pending.pop(tick.symbol, None)
                ready.append(tick)
            else:
                self._pending[tick.symbol] = tick  # the latest wins
        return ready

    def due(self, now: float) -> list[PriceTick]:
        """The held-back ticks whose symbol's interval has passed, taken out as published."""
        due = [
            symbol
            for symbol in self._pending
            if now - self._published_at.get(symbol, -math.inf) >= self.interval
        ]
        ticks = [self._pending.pop(symbol) for symbol in due]
        for symbol in due:
            self._published_at[symbol] = now
        return ticks

    def drop_pending(self) -> None:
        """Forget the held-back ticks (the connection they came on is gone)."""
        self._pending.clear()

    def reset(self) -> None:
        """A new connection: forget the held-back ticks and when anything was published."""
        self._published_at.clear()
        self._pending.clear()
