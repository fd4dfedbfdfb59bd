"""A live stream's health as the provider status board sees it: ONLINE, DEGRADED or OFFLINE.

`StreamHealthTracker` keeps one stream client's state and the reason for it, and tells the
status board (`on_health`) each time: ONLINE once a connection delivers a tick (refreshed at
most every `HEALTH_REFRESH` while messages arrive, not once per message: a busy feed sends
hundreds a second); DEGRADED when a connection is lost, goes silent or cannot be made, while
reconnecting; OFFLINE after `offline_after` connections in a row ended without delivering a
tick. Every reason also names the products the exchange refused (`RefusalMemory`), so a stream
that carries everything but ADA says so on the provider.

Must never block (`on_health` is called synchronously), do I/O of its own, or report a state
the stream client did not observe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Final

import trio

from gateway.config import SECONDS
from gateway.models import utc_now
from gateway.sources.stream_requests import RefusalMemory
from gateway.sources.stream_state import HealthReport, StreamHealth

__all__ = ["HEALTH_REFRESH", "StreamHealthTracker"]

# While ONLINE, the status board's "last success" is refreshed at most this often.
HEALTH_REFRESH: Final = 5 * SECONDS

_REFUSED: Final = "; refused by the exchange: "


class StreamHealthTracker:
    """One stream's state, why, and how many connections in a row delivered nothing."""

    def __init__(
        self,
        provider_id: str,
        *,
        offline_after: int,
        refusals: RefusalMemory,
        on_health: HealthReport | None,
        last_message_at: Callable[[], datetime | None],
        notify: Callable[[], None],
    ) -> None:
        self.provider_id = provider_id
        self.offline_after = offline_after
        self.refusals = refusals
        # Called (synchronously; it must not block) with each health report.
        self.on_health = on_health
        self._last_message_at = last_message_at
        self._notify = notify  # on every change of state
        self.state: str | None = None
        self.reason: str | None = None
        self.bad_sessions = 0  # connections in a row that ended without delivering a tick
        self._refreshed = -math.inf

    def report(self, state: str, reason: str, *, failed: bool = False) -> None:
        reason = reason.split(_REFUSED, 1)[0]
        refused = self.refusals.describe(trio.current_time())
        if refused:
            reason = f"{reason}{_REFUSED}{refused}"
        changed = state != self.state
        self.state, self.reason = state, reason
        self._refreshed = trio.current_time()
        if self.on_health is not None:
            at, last = utc_now(), self._last_message_at()
            self.on_health(StreamHealth(self.provider_id, state, reason, at, last, failed))
        if changed:
            self._notify()

    def restate(self, reason: str | None = None) -> None:
        """The same state again (if there is one yet), with a new reason or the refused
        products of this moment."""
        if self.state is not None:
            self.report(self.state, reason or self.reason or "")

    def delivering(self) -> None:
        """A tick arrived on this connection: ONLINE, if it was not already."""
        if self.state != "ONLINE":
            self.report("ONLINE", "connected")

    def alive(self) -> None:
        """A well-formed message while ONLINE: refresh the board, at most every HEALTH_REFRESH."""
        if self.state == "ONLINE" and trio.current_time() - self._refreshed >= HEALTH_REFRESH:
            self.report("ONLINE", "connected")

    def lost(self, detail: str, *, up: bool, silent: float | None, got_tick: bool) -> None:
        """A connection ended (or was never made): DEGRADED, or OFFLINE when it keeps failing.

        `detail`: why it ended; `up`: it had been made; `silent`: it went silent for that many
        seconds; `got_tick`: it delivered a tick.
        """
        if silent is not None:
            what = f"silent for {silent:g} s"
        else:
            what = f"{'disconnected' if up else 'connect failed'}: {detail}"
        self.bad_sessions = 1 if got_tick else self.bad_sessions + 1
        if self.bad_sessions >= self.offline_after:
            self.report("OFFLINE", f"{what} ({self.bad_sessions} failures in a row)", failed=True)
        else:
            self.report("DEGRADED", f"{what}, reconnecting", failed=True)
