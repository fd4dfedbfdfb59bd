"""What a live stream asked an exchange for, and what the exchange refused.

`PendingRequests` keeps, per connection, the upstream ids each request asked for until it is
answered (an error that answers a request refuses what it asked for), the newest `limit` only.

`RefusalMemory` keeps products an exchange refused *by name* ("ADA-USD is not a valid
product"), for a while. Coinbase answers a subscribe naming a product it does not list with
that error and ignores the *whole* request; the stream client drops the product, asks again
for the others, and remembers the refusal here, so that a reconnect (which subscribes to the
interest of that moment) does not send it again and fail the same way. A refusal is
forgotten after `ttl` seconds (the exchange may list the product by then); at most `limit`
are kept, the oldest forgotten first. Times are whatever clock the caller passes (the
stream client uses `trio.current_time()`).

Only what the exchange *named* is remembered: an error that merely answers a request (rate
limited, malformed) refuses nothing beyond its connection.

Must never do I/O, remember a refusal the exchange did not name, or grow past `limit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PendingRequests", "Refusal", "RefusalMemory"]

# At most this many refused products are named in one health reason; the rest are counted.
_NAMED_IN_REASON = 5


class PendingRequests:
    """Request id -> the upstream ids it asked for; ids keep counting across connections."""

    __slots__ = ("_asked", "_last_id", "limit")

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._asked: dict[int, tuple[str, ...]] = {}  # insertion order: oldest first
        self._last_id = 0

    def next_id(self) -> int:
        """A fresh request id (for a request whose answer nothing waits for: a ping)."""
        self._last_id += 1
        return self._last_id

    def track(self, ids: Sequence[str]) -> int:
        """A fresh request id, remembered with what it asks for until it is answered."""
        if len(self._asked) >= self.limit:
            del self._asked[next(iter(self._asked))]
        request_id = self.next_id()
        self._asked[request_id] = tuple(ids)
        return request_id

    def answered(self, request_id: int) -> tuple[str, ...]:
        """What the request asked for (empty if unknown or forgotten); it is pending no more."""
        return self._asked.pop(request_id, ())

    def clear(self) -> None:
        """A new connection: nothing it sends has been answered yet."""
        self._asked.clear()


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused product: the exchange's id, our symbol, what the exchange said, and when
    (on the caller's clock) it is forgotten."""

    upstream: str
    symbol: str
    reason: str
    until: float


class RefusalMemory:
    """Refused upstream ids, each until its time runs out; bounded by `limit`."""

    __slots__ = ("_refusals", "limit", "ttl")

    def __init__(self, ttl: float, limit: int) -> None:
        if not ttl >= 0 or limit < 1:  # NaN too
            raise ValueError("a refusal memory needs ttl >= 0 and limit >= 1")
        self.ttl = ttl
        self.limit = limit
        self._refusals: dict[str, Refusal] = {}  # insertion order: oldest first

    def add(self, upstream: str, symbol: str, reason: str, now: float) -> Refusal:
        self._refusals.pop(upstream, None)
        while len(self._refusals) >= self.limit:
            del self._refusals[next(iter(self._refusals))]
        refusal = Refusal(upstream, symbol, reason, now + self.ttl)
        self._refusals[upstream] = refusal
        return refusal

    def active(self, now: float) -> dict[str, Refusal]:
        """Upstream id -> refusal, for those not yet forgotten (expired ones are dropped)."""
        for upstream in [u for u, r in self._refusals.items() if r.until <= now]:
            del self._refusals[upstream]
        return dict(self._refusals)

    def seconds_to_expiry(self, now: float) -> float:
        """Seconds until the next refusal is forgotten; inf when none is remembered."""
        return max(0.0, min((r.until - now for r in self._refusals.values()), default=math.inf))

    def symbols(self, now: float) -> set[str]:
        """The canonical symbols of the refusals not yet forgotten."""
        return {r.symbol for r in self.active(now).values()}

    def describe(self, now: float) -> str | None:
        """`ADA (ADA-USD is not a valid product), ...` for a health reason; None if none."""
        refusals = list(self.active(now).values())
        if not refusals:
            return None
        named = ", ".join(f"{r.symbol} ({r.reason})" for r in refusals[:_NAMED_IN_REASON])
        more = len(refusals) - _NAMED_IN_REASON
        return named + (f" and {more} more" if more > 0 else "")
