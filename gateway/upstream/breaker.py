"""Circuit breaker: stop calling a provider that keeps failing, and probe it now and then.

::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
      ▲                                                   │ cooldown_seconds pass
      │ probe succeeds                                    ▼
      └────────────────────────────────────────────── HALF_OPEN ──probe fails──▶ OPEN (again)

In HALF_OPEN exactly **one** request (the probe) is let through; callers arriving while it is in
flight are refused, as they are while OPEN. The transition OPEN → HALF_OPEN happens lazily, the
first time anyone looks (`state`, `allow()`), so no timer task is needed.

What counts as a failure (the client decides, per attempt; see `gateway.upstream.client`):

* a timeout, a transport error (refused, reset, DNS), an HTTP 5xx answer;
* a malformed body (not JSON, too large) and a body of the wrong shape (reported by the parser
  through `UpstreamClient.report_payload_error`, or by `request_parsed`).

What does **not** count: 4xx client errors (the provider is up; the request was wrong) and rate
limiting (429, or 418/503 with Retry-After: handled by waiting, not by declaring the provider
broken). Such neutral answers neither reset nor extend the failure count; a neutral answer to
a half-open probe just frees the probe slot for the next caller.

Results that arrive while OPEN come from requests admitted before the circuit opened and are
ignored. Time is `trio.current_time()` unless a `clock` is injected.

This module never sleeps and never raises for a state change; `on_change` observers must be
quick and must not raise.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

import trio

from gateway.config import BreakerSpec

__all__ = ["BreakerState", "ChangeCallback", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


ChangeCallback = Callable[[BreakerState, BreakerState], None]
"""`on_change(old, new)`."""

# A marker for `record_payload_failure`: the success being revoked had closed a half-open
# circuit, so revoking it re-opens the circuit.
_REOPEN: Final = -1


class CircuitBreaker:
    """One provider's breaker; see the module docstring.

    `allow()` is asked before every request (and claims the probe slot when half-open); the
    request's outcome is then reported with `record_success()`, `record_failure()`, or
    `release()` for an outcome that is neither (a 4xx, a 429, a cancellation).
    """

    def __init__(
        self,
        spec: BreakerSpec | None = None,
        *,
        provider_id: str = "",
        on_change: ChangeCallback | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.spec = spec or BreakerSpec()
        if self.spec.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.spec.cooldown_seconds < 0:
            raise ValueError("cooldown_seconds must not be negative")
        self.provider_id = provider_id
        self.on_change = on_change
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_since: float | None = None  # when the half-open probe was let through
        self._undo: int | None = None  # failure count before the last success (or _REOPEN)
        self.opened_count = 0  # how many times the circuit has opened

    # -- reading ----------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns into HALF_OPEN here once the cool-down is over."""
        if self._state is BreakerState.OPEN and self._clock() >= self.retry_at:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def retry_at(self) -> float:
        """Clock time at which an OPEN circuit lets a probe through."""
        return self._opened_at + self.spec.cooldown_seconds

    def retry_in(self) -> float:
        """Seconds until a probe may go (0 unless OPEN)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.retry_at - self._clock())

    def would_allow(self) -> bool:
        """Whether `allow()` would say yes now, without claiming anything."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        return not self._probe_in_flight()

    # -- asking and reporting ---------------------------------------------------------------

    def allow(self) -> bool:
        """May a request go now? In HALF_OPEN, True claims the single probe slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight():
            return False
        self._probe_since = self._clock()
        return True

    def release(self) -> None:
        """The request ended without a verdict (4xx, 429, cancelled): free the probe slot."""
        self._probe_since = None

    def record_success(self) -> None:
        state = self.state
        if state is BreakerState.OPEN:
            return
        self._undo = self._failures if state is BreakerState.CLOSED else _REOPEN
        self._failures = 0
        self._probe_since = None
        if state is BreakerState.HALF_OPEN:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        state = self.state
        self._undo = None
        if state is BreakerState.OPEN:
            return
        self._probe_since = None
        if state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.spec.failure_threshold:
            self._open()

    def record_payload_failure(self) -> None:
        """A success already recorded turned out to be a failure (its body did not parse).

        Revokes the last `record_success()` and records a failure in its place, so a provider
        that answers 200 with garbage every time still opens its circuit (and a probe answered
        that way re-opens it). Without a success to revoke it is a plain failure.
        """
        undo, self._undo = self._undo, None
        if undo is None:
            self.record_failure()
        elif undo == _REOPEN:
            if self.state is BreakerState.CLOSED:
                self._open()
        else:
            if self.state is BreakerState.CLOSED:
                self._failures = max(self._failures, undo)
            self.record_failure()

    def reset(self) -> None:
        """Force CLOSED (an operator's override)."""
        self._failures = 0
        self._probe_since = None
        self._undo = None
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    # -- internals --------------------------------------------------------------------------

    def _probe_in_flight(self) -> bool:
        if self._probe_since is None:
            return False
        # A probe that never reported (a caller that forgot to) must not wedge the breaker:
        # after another cool-down without a verdict, a new probe may go.
        if self._clock() - self._probe_since >= max(self.spec.cooldown_seconds, 1.0):
            self._probe_since = None
            return False
        return True

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_since = None
        self.opened_count += 1
        self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self.on_change is not None:
            self.on_change(old, new)
