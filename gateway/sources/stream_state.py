"""The value types around a live exchange stream: its settings, health reports and status.

`StreamSettings` holds one stream client's timeouts and bounds (attribute values are the
defaults) and `reconnect_delay` its doubling backoff; `StreamHealth` is what a stream tells the
provider status board (`HealthReport` is the callback that receives it); `StreamStatus` is a
snapshot for health pages and metrics. `gateway.sources.streams` reads the settings and
produces the rest.

Pure values: must never do I/O, hold a connection, or import the stream machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.config import SECONDS

__all__ = [
    "HealthReport",
    "StreamHealth",
    "StreamSettings",
    "StreamStatus",
    "reconnect_delay",
]


@dataclass(frozen=True)
class StreamSettings:
    """Timeouts and bounds of one stream client. Attribute values are the defaults."""

    connect_timeout: float = 10 * SECONDS
    close_timeout: float = 2 * SECONDS
    # Every public feed here sends something at least every few seconds (Kraken and Coinbase
    # heartbeats each second, Binance a mini-ticker per symbol each second while it trades).
    silence_timeout: float = 30 * SECONDS
    backoff_initial: float = 1 * SECONDS
    backoff_max: float = 60 * SECONDS
    healthy_after: float = 60 * SECONDS
    # Interest changes are applied this long after the first one, so a burst of subscriptions
    # costs one message (Binance allows 5 incoming messages per second per connection).
    resubscribe_delay: float = 0.5 * SECONDS
    keepalive_interval: float = 20 * SECONDS
    # At most one tick per symbol this often (the latest wins); 0 publishes every tick.
    min_publish_interval: float = 1 * SECONDS
    max_subscriptions: int = 200
    max_message_bytes: int = 1024 * 1024
    # Connections in a row that end without delivering a tick (refused, timed out, silent,
    # dropped) before the stream is reported OFFLINE rather than DEGRADED.
    offline_after: int = 3
    # A product the exchange refused by name is not subscribed again (not even on a reconnect)
    # for this long; at most `max_refusals` are remembered.
    refusal_memory: float = 3600 * SECONDS
    max_refusals: int = 256

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "close_timeout",
            "silence_timeout",
            "backoff_initial",
            "backoff_max",
            "keepalive_interval",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above zero")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if min(self.healthy_after, self.resubscribe_delay, self.min_publish_interval) < 0:
            raise ValueError("healthy_after, resubscribe_delay, min_publish_interval >= 0")
        if self.max_subscriptions < 1 or self.max_message_bytes < 1024:
            raise ValueError("max_subscriptions >= 1 and max_message_bytes >= 1024")
        if self.offline_after < 1:
            raise ValueError("offline_after must be at least 1")
        if not self.refusal_memory >= 0 or self.max_refusals < 1:
            raise ValueError("refusal_memory >= 0 and max_refusals >= 1")


def reconnect_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds before reconnecting after `failures` consecutive failed connections (>= 1).

    `initial`, then doubling (2x, 4x, ...) up to `cap`.
    """
    if failures <= 1:
        return min(initial, cap)
    return min(initial * 2.0 ** min(failures - 1, 32), cap)


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """What a stream tells the provider status board (`ProviderStatusBoard.report`).

    `state`: ONLINE, DEGRADED or OFFLINE; `reason`: why, for people; `failed`: this report is a
    lost or refused connection (counted as a failure); `last_success_at`: the last message.
    """

    provider: str
    state: str
    reason: str
    at: datetime
    last_success_at: datetime | None
    failed: bool = False


HealthReport = Callable[[StreamHealth], None]


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A snapshot of one stream for health pages and metrics. Symbols are canonical."""

    provider: str
    connected: bool
    connected_since: datetime | None
    last_message_at: datetime | None
    subscribed: tuple[str, ...]
    live: tuple[str, ...]
    refused: tuple[str, ...]
    connects: int
    reconnects: int
    failures: int
    malformed: int
    silences: int
    upstream_errors: int
    ticks: int
    last_error: str | None
    state: str | None = None  # ONLINE | DEGRADED | OFFLINE; None before the first report
    state_reason: str | None = None
