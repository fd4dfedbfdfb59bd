"""Normalized records that flow from sources through the bus into storage and GraphQL.

Every record is a frozen dataclass: once a source has parsed an upstream payload the fact is
immutable, so the same object can be handed to the store and to many subscribers at once.
Times are timezone-aware UTC datetimes; money is USD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["Candle", "PriceTick", "epoch_ms", "from_epoch_ms", "utc_now"]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the only clock records use)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One observation of an asset's USD price by one provider.

    `observed_at` is when the provider says the price was valid (or when we fetched it, if the
    provider gives no time). `(provider, symbol, observed_at)` identifies a tick: storing the
    same tick twice keeps one row.
    """

    symbol: str
    usd: float
    provider: str
    observed_at: datetime
    market_cap_usd: float | None = None
    volume_24h_usd: float | None = None
    change_24h_pct: float | None = None

    def check(self) -> None:
        """ValueError for what no source may produce: a non-finite price or a naive time
        (SQLite would store NaN as NULL and fail a whole batch; a naive time has no instant)."""
        if not math.isfinite(self.usd):
            raise ValueError(f"{self.provider} {self.symbol}: price {self.usd!r} is not a number")
        if self.observed_at.tzinfo is None:
            raise ValueError(
                f"{self.provider} {self.symbol}: naive datetime {self.observed_at.isoformat()}: "
                "use an aware UTC datetime"
            )


@dataclass(frozen=True, slots=True)
class Candle:
    """Open/high/low/close of one provider's ticks for one symbol over one interval.

    `open_time` is the start of the interval, aligned to a multiple of `interval_seconds` since
    the Unix epoch. `volume` is None when the ticks carry no per-interval volume (price ticks
    carry 24-hour volume only). `complete` is false while the interval is still open or has
    holes, so a client knows the figures may still change or are built on partial data.
    """

    symbol: str
    interval_seconds: int
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    provider: str
    complete: bool
    # The providers whose candles this one is the consensus of ("consensus" in `provider`);
    # empty for one provider's own candle.
    providers: tuple[str, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """Every provider behind this candle."""
        return self.providers or (self.provider,)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed upstream attempt, as stored for the `failures` query."""

    provider: str
    error_type: str
    message: str
    http_status: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ProviderStateChange:
    """A provider moved from one health state to another (published and alerted)."""

    provider: str
    old_state: str
    new_state: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """Something an operator should look at; `id` is the database row id."""

    id: int
    severity: str  # LOW | MEDIUM | HIGH | CRITICAL
    kind: str
    message: str
    provider: str | None
    at: datetime
    acknowledged: bool = False


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime, as the database stores times (sub-millisecond
    parts are dropped; exact integer arithmetic, unlike a float through `timestamp()`)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: use an aware UTC datetime")
    return (moment - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds (exact, unlike `fromtimestamp`)."""
    return _EPOCH + ms * _MS
