"""Client-side rate limiting: one `RateLimiter` per provider, enforcing every configured window.

A provider may publish several limits at once ("30 per minute" *and* "10,000 per month"); a
request is granted only when it fits in all of them. Callers `await limiter.acquire()` and
**wait** for budget instead of failing: a collector or resolver would rather be a little late
than be refused by the upstream (or banned for ignoring its 429s).

Guarantees:

* **Never exceeded.** For every window, any half-open interval ``[t, t + seconds)`` holds at most
  `limit` grants. Each window keeps a *sliding log* of its most recent grant times (trio clock);
  a new grant is allowed once the grant `limit` places back is at least `seconds` old.
* **FIFO-fair.** Waiters queue on a `trio.Lock` (which Trio hands over in arrival order) and the
  head of the queue sleeps until the budget frees up while holding it, so a burst of hundreds of
  concurrent callers is served in the order they arrived and nobody starves. `try_acquire()`
  never jumps that queue.
* **Bounded memory.** A window's log is a deque capped at its `limit` entries: a limiter holds
  at most ``sum(window.limit)`` floats (10,000 for "10,000/month"; about 32 bytes each in
  CPython, so ~320 KB), however many requests it has served.

Time: grants are stamped with `trio.current_time()`, so tests run under `autojump_clock`.
Anything shown to people or persisted (`usage()`'s `resets_at`, `snapshot()`) is wall-clock,
mapped through the current difference between the two clocks.

What this module must never do: sleep while not holding the queue's lock (that would let later
callers overtake), or grant a request that does not fit in every window.
"""

from __future__ import annotations

import collections
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import trio

from gateway.config import RateLimitWindow

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_ALERTED_LIMIT",
    "RateLimiter",
    "ThresholdCallback",
    "WindowUsage",
]

# on_threshold fires when a window's usage reaches this fraction of its limit.
DEFAULT_THRESHOLD: Final = 0.8
# ...but only for windows of at least this many requests: "used 1 of 1" or "2 of 2" is how a
# one-request-a-second budget is meant to be used, not a warning worth an operator's attention.
MIN_ALERTED_LIMIT: Final = 5

ThresholdCallback = Callable[[str, str, int, int], None]
"""`on_threshold(provider_id, window_name, used, limit)`."""


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One window's state: `used` of `limit` grants in the last `seconds`.

    `resets_at` (UTC, wall clock) is when the oldest counted grant leaves the window, i.e. the
    next moment `used` drops and, when the window is full, the earliest time a request can be
    granted again. With nothing counted it is "now".
    """

    name: str
    limit: int
    seconds: float
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class _Window:
    """The sliding log of one window; `grants` holds trio-clock times, oldest first."""

    __slots__ = ("armed", "grants", "spec", "threshold_count")

    def __init__(self, spec: RateLimitWindow, threshold: float) -> None:
        if spec.limit < 1:
            raise ValueError(f"rate limit window {spec.name!r}: limit must be at least 1")
        if not spec.seconds > 0 or not math.isfinite(spec.seconds):
            raise ValueError(f"rate limit window {spec.name!r}: seconds must be positive")
        self.spec = spec
        self.grants: deque[float] = deque(maxlen=spec.limit)
        self.threshold_count = max(1, math.ceil(threshold * spec.limit))
        self.armed = True

    def prune(self, now: float) -> None:
        """Drop grants that no longer count: those at least `seconds` old."""
        horizon = now - self.spec.seconds
        grants = self.grants
        while grants and grants[0] <= horizon:
            grants.popleft()

    def wait(self, now: float) -> float:
        """Seconds until one more grant fits (0 if it fits now). Call `prune` first."""
        if len(self.grants) < self.spec.limit:
            return 0.0
        return self.grants[0] + self.spec.seconds - now


class RateLimiter:
    """Client-side limits for one provider; see the module docstring.

    `on_threshold(provider_id, window_name, used, limit)` is called once when a window's usage
    reaches `threshold` (80 %) of its limit (windows under `MIN_ALERTED_LIMIT` requests never
    call it), and re-armed when usage is seen below that again.
    It is called synchronously from `acquire()`/`try_acquire()`; it must be quick and must not
    raise. With no windows the limiter grants everything.
    """

    def __init__(
        self,
        provider_id: str,
        windows: Sequence[RateLimitWindow],
        *,
        on_threshold: ThresholdCallback | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.provider_id = provider_id
        self.on_threshold = on_threshold
        self._windows = [_Window(spec, threshold) for spec in windows]
        self._lock = trio.Lock()
        self.granted = 0  # total grants since creation (restored grants not included)

    @property
    def windows(self) -> tuple[RateLimitWindow, ...]:
        return tuple(w.spec for w in self._windows)

    # -- granting ---------------------------------------------------------------------------

    async def acquire(self) -> float:
        """Wait (FIFO) until a request fits in every window, and count it.

        Returns the trio-clock time the grant was stamped with (what the windows count).
        Cancellation while waiting leaves the queue and counts nothing.
        """
        if not self._windows:
            await trio.lowlevel.checkpoint()
            self.granted += 1
            return trio.current_time()
        async with self._lock:
            while True:
                wait = self._wait(trio.current_time())
                if wait <= 0:
                    break
                await trio.sleep(wait)
            return self._grant(trio.current_time())

    def try_acquire(self) -> bool:
        """Count a request and return True if it fits now; otherwise count nothing and return
        False. Never waits, and never overtakes callers already queued in `acquire()`."""
        if not self.available():
            return False
        self._grant(trio.current_time())
        return True

    def available(self) -> bool:
        """Whether a request would be granted right now, without counting one (pool
        eligibility: the request itself then goes through `acquire()`)."""
        if not self._windows:
            return True
        if self._lock.locked():
            return False
        return self._wait(trio.current_time()) <= 0

    def next_available_in(self) -> float:
        """Seconds until a request fits in every window (0: now), ignoring queued callers."""
        return max(0.0, self._wait(trio.current_time())) if self._windows else 0.0

    def _wait(self, now: float) -> float:
        wait = 0.0
        for window in self._windows:
            window.prune(now)
            wait = max(wait, window.wait(now))
        self._rearm()
        return wait

    def _grant(self, now: float) -> float:
        self.granted += 1
        for window in self._windows:
            window.grants.append(now)
        self._check_thresholds()
        return now

    # -- thresholds -------------------------------------------------------------------------

    def _rearm(self) -> None:
        for window in self._windows:
            if not window.armed and len(window.grants) < window.threshold_count:
                window.armed = True

    def _check_thresholds(self) -> None:
        for window in self._windows:
            used = len(window.grants)
            if window.spec.limit < MIN_ALERTED_LIMIT:
                continue
            if window.armed and used >= window.threshold_count:
                window.armed = False
                if self.on_threshold is not None:
                    self.on_threshold(self.provider_id, window.spec.name, used, window.spec.limit)

    # -- reporting and persistence ----------------------------------------------------------

    def usage(self) -> list[WindowUsage]:
        """Each window's current use, in configuration order (wall-clock `resets_at`)."""
        now = trio.current_time()
        self._wait(now)  # prune, and re-arm thresholds that fell back
        wall_now = time.time()
        result = []
        for window in self._windows:
            oldest = window.grants[0] + window.spec.seconds if window.grants else now
            result.append(
                WindowUsage(
                    name=window.spec.name,
                    limit=window.spec.limit,
                    seconds=window.spec.seconds,
                    used=len(window.grants),
                    resets_at=datetime.fromtimestamp(wall_now + (oldest - now), UTC),
                )
            )
        return result

    def snapshot(self) -> list[float]:
        """The grant times that still count, as Unix timestamps (wall clock), oldest first.

        This is what to persist; hand it back to `restore()` after a restart. Every window's log
        is a suffix of the same sequence of grants, so the longest log holds them all: at most
        the largest window limit entries.
        """
        now = trio.current_time()
        self._wait(now)  # prune
        offset = time.time() - now
        longest = max((w.grants for w in self._windows), key=len, default=deque())
        return [t + offset for t in longest]

    def restore(self, grants: Sequence[float]) -> None:
        """Count previously persisted grants (Unix timestamps, as `snapshot()` returns).

        Grants too old for a window are ignored by it; a window keeps the newest `limit` of the
        rest. Restoring is a union, not a sum: restoring the same (or an overlapping) snapshot
        twice counts its grants once, so one may be stored per window and each restored.
        Timestamps are compared at millisecond resolution for that; the clock mapping drifts by
        microseconds between calls. Thresholds are evaluated (and may fire) at once.
        """
        now = trio.current_time()
        offset = time.time() - now
        restored = collections.Counter(
            round(t - offset, 3) for t in grants if math.isfinite(t) and t - offset <= now
        )
        for window in self._windows:
            existing = collections.Counter(round(t, 3) for t in window.grants)
            # Grants made since start-up keep their exact times; restored ones fill in beside.
            extra = restored - existing
            merged = sorted([*window.grants, *extra.elements()])
            window.grants.clear()
            window.grants.extend(merged[-window.spec.limit :])
            window.prune(now)
        self._rearm()
        self._check_thresholds()
