"""Shared rules for the candle fetchers of the market sources (helpers with no I/O of their own).

Every source's `fetch_candles(client, provider, symbol, interval_seconds, start, end, *, now,
key)` answers the same question — the provider's own candles whose `open_time` lies in
`[start, end)` — and follows the same rules, kept here so they cannot drift apart:

* `start` and `end` are aware datetimes with `start < end`; `start` is rounded down to the
  interval grid. A window longer than `MAX_CANDLES` intervals is refused (ValueError): backfill
  asks in slices rather than making one call that runs for minutes.
* `key` is the provider's API key (`gateway.providers.upstream_keys`), handed to the client;
  a fetcher whose provider needs none ignores it.
* `interval_seconds` must be one the provider serves; anything else is a ValueError naming the
  ones it does (see each module's `CANDLE_INTERVALS`). A symbol the provider does not list
  gives `[]` without a request, as collectors skip such symbols.
* A candle's `open_time` must be on the interval grid and its prices finite and positive, with
  `low <= open, close <= high`; otherwise the whole response is rejected (UpstreamPayloadError).
* `complete` is true once the interval has ended (`open_time + interval <= now`): an exchange
  still moves the last candle until then.
* `volume` is the interval's traded value in USD (the quote currency; USDT counts as USD, as
  for prices) and None where a provider reports only base-asset volume or none at all, so that
  volumes from different providers can be compared.

This module never fills a hole: an interval the provider did not report is simply absent.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.models import Candle
from gateway.sources.base import number_or_none
from gateway.upstream import UpstreamClient

__all__ = [
    "MAX_CANDLES",
    "CandleFetcher",
    "CandleSource",
    "Fail",
    "align_down",
    "check_interval",
    "check_window",
    "epoch_seconds",
    "epoch_seconds_ceil",
    "fetch_pages",
    "from_epoch",
    "iso_time",
    "iso_z",
    "make_candle",
    "ohlc",
    "pages",
    "price",
    "select",
    "volume",
]

Fail = Callable[[str], UpstreamPayloadError]

# The most intervals one fetch_candles call may cover (a week of 1-minute candles is 10,080).
MAX_CANDLES: Final = 20_000


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since the Unix epoch (the moment must be aware)."""
    return math.floor(moment.timestamp())


def epoch_seconds_ceil(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded up: the last whole second strictly before an
    exclusive bound `moment` is then `epoch_seconds_ceil(moment) - 1`."""
    return math.ceil(moment.timestamp())


def from_epoch(seconds: float, fail: Fail, where: str) -> datetime:
    """An aware UTC datetime from Unix seconds, or a payload error if it is not a sane time."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise fail(f"{where}: invalid time {seconds!r}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(f"{where}: time {seconds!r} is out of range") from None


def iso_time(value: Any, fail: Fail, where: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 string that names its offset (`...Z`)."""
    if not isinstance(value, str):
        raise fail(f"{where}: expected an ISO 8601 time, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{where}: invalid time {value!r}") from None
    if moment.tzinfo is None:
        raise fail(f"{where}: time {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    """`moment` as ISO 8601 UTC with a `Z`, whole seconds (what the APIs accept)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def align_down(moment: datetime, interval_seconds: int) -> datetime:
    """The start of the interval containing `moment`, on the grid since the epoch."""
    seconds = epoch_seconds(moment)
    return datetime.fromtimestamp(seconds - seconds % interval_seconds, UTC)


def check_interval(interval_seconds: int, supported: frozenset[int], provider: str) -> None:
    """ValueError unless the provider serves candles of this length."""
    if interval_seconds not in supported:
        served = ", ".join(str(s) for s in sorted(supported))
        raise ValueError(f"{provider} serves candles of {served} seconds, not {interval_seconds!r}")


def check_window(start: datetime, end: datetime, interval_seconds: int) -> datetime:
    """Validate a `[start, end)` window and return `start` rounded down to the grid."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if start >= end:
        raise ValueError(f"start {start.isoformat()} is not before end {end.isoformat()}")
    aligned = align_down(start, interval_seconds)
    count = math.ceil((end - aligned).total_seconds() / interval_seconds)
    if count > MAX_CANDLES:
        raise ValueError(
            f"{count} candles requested; at most {MAX_CANDLES} per call (ask in slices)"
        )
    return aligned


def pages(
    start: datetime, end: datetime, interval_seconds: int, per_request: int
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive `[page_start, page_end)` windows of at most `per_request` intervals that
    cover `[start, end)`; `start` must already be on the grid."""
    step = timedelta(seconds=interval_seconds * per_request)
    page_start = start
    while page_start < end:
        page_end = min(page_start + step, end)
        yield page_start, page_end
        page_start = page_end


async def fetch_pages(
    fetch_page: Callable[[datetime, datetime], Awaitable[list[Candle]]],
    start: datetime,
    end: datetime,
    interval_seconds: int,
    per_request: int,
) -> list[Candle]:
    """`fetch_page(page_start, page_end)` for each of `pages(...)` in order, one at a time (the
    provider's rate limit is shared), and `select` of what they returned; `start` must already
    be on the grid (`check_window`'s result)."""
    found: list[Candle] = []
    for page_start, page_end in pages(start, end, interval_seconds, per_request):
        found += await fetch_page(page_start, page_end)
    return select(found, start, end)


def price(value: Any, fail: Fail, where: str, *, strings: bool = True) -> float:
    """A finite price above zero, from a JSON number (or, with `strings`, a numeric string)."""
    number = number_or_none(value, strings=strings)
    if number is None or not math.isfinite(number) or number <= 0:
        raise fail(f"{where}: invalid price {value!r}")
    return number


def ohlc(
    open_: Any, high: Any, low: Any, close: Any, fail: Fail, where: str, *, strings: bool = True
) -> tuple[float, float, float, float]:
    """Four prices, checked as by `price`, in the order open, high, low, close."""
    return (
        price(open_, fail, where, strings=strings),
        price(high, fail, where, strings=strings),
        price(low, fail, where, strings=strings),
        price(close, fail, where, strings=strings),
    )


def volume(value: Any, fail: Fail, where: str, *, strings: bool = True) -> float:
    """A finite, non-negative volume."""
    number = number_or_none(value, strings=strings)
    if number is None or not math.isfinite(number) or number < 0:
        raise fail(f"{where}: invalid volume {value!r}")
    return number


def make_candle(
    *,
    symbol: str,
    interval_seconds: int,
    open_time: datetime,
    ohlc: tuple[float, float, float, float],
    volume_usd: float | None,
    provider: str,
    now: datetime,
    fail: Fail,
    where: str,
) -> Candle:
    """A Candle after the shared checks (grid, price order); see the module docstring."""
    if epoch_seconds(open_time) % interval_seconds or open_time.microsecond:
        raise fail(f"{where}: open time {open_time.isoformat()} is not on the interval grid")
    open_, high, low, close = ohlc
    if not (low <= min(open_, close) and max(open_, close) <= high):
        raise fail(f"{where}: inconsistent prices open={open_} high={high} low={low} close={close}")
    return Candle(
        symbol=symbol,
        interval_seconds=interval_seconds,
        open_time=open_time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume_usd,
        provider=provider,
        complete=open_time + timedelta(seconds=interval_seconds) <= now,
    )


def select(candles: list[Candle], start: datetime, end: datetime) -> list[Candle]:
    """The candles with `start <= open_time < end`, oldest first, one per open time (pages may
    overlap at their edges; the later copy wins, being the fresher figure)."""
    chosen = {c.open_time: c for c in candles if start <= c.open_time < end}
    return [chosen[t] for t in sorted(chosen)]


class CandleFetcher(Protocol):
    """`fetch_candles` of a source module; `key` is the provider's API key (None: keyless)."""

    def __call__(
        self,
        client: UpstreamClient,
        provider: ProviderConfig,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        *,
        now: datetime | None = None,
        key: str | None = None,
    ) -> Awaitable[list[Candle]]: ...


@dataclass(frozen=True)
class CandleSource:
    """A provider's candle fetcher and the candle lengths (seconds) it serves."""

    fetch: CandleFetcher
    intervals: frozenset[int]
