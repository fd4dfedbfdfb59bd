"""Candle history: what the store holds, with holes filled from providers' candle endpoints.

Each provider's candle of a bucket comes from three stored sources, best first:

1. candles built from its ticks that we stored (`Storage.candles`): what we observed ourselves;
2. its own candles of that interval (`CandleStore`, written by gap filling and by
   `gateway backfill`);
3. its one-minute candles summed into the interval.

A complete candle always beats an incomplete one; among equals the order above holds. The
series served by default is, for each bucket, the consensus of every provider's candle
(`gateway.prices.consensus.candle_consensus`: the median of those that agree, outliers left
out, the contributors named), so history agrees with `prices`; a bucket whose providers
disagree with no majority is left out and reported as `disputed`, never averaged. Asked for
one `provider`, the series is that provider's own candles.

Filling: a closed bucket with no complete candle is a hole. Holes are asked of the market-data
pool's providers in pool order, each only for the ranges it has not answered before (the
coverage in `CandleStore`), until none is left or the providers run out; what a provider
returned is stored with the range it answered. Holes that remain are returned as `missing`, so
the API says so instead of handing back a series with silent gaps. A provider that fails is
logged and skipped for this fill; its range stays unanswered and is asked again next time.

Only buckets closed at least `SETTLE_SECONDS` ago count: an exchange may still be folding the
last trades of a just-closed interval into its candle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog
import trio

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamRateLimited
from gateway.models import Candle, epoch_ms, from_epoch_ms, utc_now
from gateway.prices.consensus import DEFAULT_MAX_DEVIATION_PCT, candle_consensus
from gateway.sources.candles import CandleSource
from gateway.sources.registry import candle_source_for
from gateway.storage import CandleStore, Span, Storage, merge_spans, subtract_spans
from gateway.upstream import UpstreamClient

__all__ = [
    "FILL_RESERVE",
    "SETTLE_SECONDS",
    "CandleHistory",
    "FillReport",
    "History",
    "Series",
    "closed_grid",
    "holes",
]

log = structlog.get_logger(__name__)

SETTLE_SECONDS: Final = 10
# The share of each rate-limit window left untouched by on-demand filling (see CandleHistory).
FILL_RESERVE: Final = 0.5
# Slices asked of a provider at once: the fetchers page inside a slice, and a backfill shows
# progress and commits after each one.
SLICE_INTERVALS: Final = 1000


@dataclass
class FillReport:
    """What one fill did: candles stored, ranges asked, providers that failed, holes left."""

    inserted: int = 0
    requests: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (provider, message)
    missing: list[Span] = field(default_factory=list)


@dataclass
class Series:
    """The candles served for a range, and the buckets left out because providers disagree."""

    candles: list[Candle]
    disputed: list[Span] = field(default_factory=list)


@dataclass
class History:
    """A candle series, the closed ranges in it that nobody could fill, and those whose
    providers disagree (left out too; they are not in `missing`)."""

    candles: list[Candle]
    missing: list[Span]
    fill: FillReport | None = None
    disputed: list[Span] = field(default_factory=list)


def closed_grid(
    interval_seconds: int, start: datetime, end: datetime, now: datetime
) -> Span | None:
    """The [first, last) bucket starts (ms) of the buckets that lie wholly in [start, end) and
    closed `SETTLE_SECONDS` before `now`; None if none. A bucket cut by `start` or `end` is not
    a hole: it was not asked for whole, and its candle already says it is not complete."""
    width = interval_seconds * 1000
    first = -(-epoch_ms(start) // width) * width
    limit = min(epoch_ms(end), epoch_ms(now) - SETTLE_SECONDS * 1000)
    last = limit // width * width  # exclusive: buckets starting before it end by `limit`
    return (first, last) if first < last else None


def holes(candles: Sequence[Candle], interval_seconds: int, grid: Span | None) -> list[Span]:
    """The buckets of `grid` with no complete candle, as merged spans."""
    if grid is None:
        return []
    width = interval_seconds * 1000
    held = [
        (t, t + width)
        for c in candles
        if c.complete and grid[0] <= (t := epoch_ms(c.open_time)) < grid[1]
    ]
    return subtract_spans([grid], held)


class CandleHistory:
    """Reads candle series and fills their holes; see the module docstring.

    `providers()` gives the market-data providers that may be asked now, in pool order (the
    server passes its pool's available members; the backfill CLI its configured providers).
    Fills of one series run one at a time, so two clients asking for the same holes cause one
    set of upstream requests; the lock table is bounded by assets x intervals.

    `reserve`: a provider is asked only while every one of its rate-limit windows has at least
    this share of its budget left, so that clients asking for history can never starve the
    collectors that share the same limits (they would otherwise queue in the limiter ahead of
    the next price poll). The backfill CLI, which is there to spend budget, passes 0.

    `key_for(provider)` gives a provider's API key for its candle fetcher (the supervisor and
    the backfill CLI pass `Secrets.key_for`); None, or no `key_for`, asks without a key.
    """

    def __init__(
        self,
        storage: Storage,
        client: UpstreamClient | None,
        providers: Callable[[], Sequence[ProviderConfig]],
        *,
        store: CandleStore | None = None,
        reserve: float = FILL_RESERVE,
        key_for: Callable[[ProviderConfig], str | None] | None = None,
        max_deviation_pct: float = DEFAULT_MAX_DEVIATION_PCT,
    ) -> None:
        if not 0 <= reserve < 1:
            raise ValueError(f"reserve must be in [0, 1), got {reserve!r}")
        self.storage = storage
        self.store = store or CandleStore(storage)
        self.client = client
        self.providers = providers
        self.reserve = reserve
        self.key_for = key_for
        self.max_deviation_pct = max_deviation_pct
        self._locks: dict[tuple[str, int], trio.Lock] = {}
        self._rank: dict[str, int] = {}  # provider id -> position in the last listing

    def sources(self, interval_seconds: int) -> list[tuple[ProviderConfig, CandleSource]]:
        """The providers that serve candles of this interval, in the order they are asked."""
        found = []
        providers = list(self.providers())
        self._rank = {provider.id: index for index, provider in enumerate(providers)}
        for provider in providers:
            source = candle_source_for(provider)
            if source is not None and interval_seconds in source.intervals:
                found.append((provider, source))
        return found

    async def read(
        self,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        now: datetime,
        *,
        provider: str | None = None,
    ) -> list[Candle]:
        """The served candle of each bucket in [start, end), oldest first (no fetching)."""
        series = await self.series(symbol, interval_seconds, start, end, now, provider=provider)
        return series.candles

    async def series(
        self,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        now: datetime,
        *,
        provider: str | None = None,
    ) -> Series:
        """Each bucket's consensus candle over every provider's best stored candle (or only
        `provider`'s), and the buckets left out as disputed; see the module docstring."""
        own = await self.storage.candles(
            symbol, interval_seconds, start, end, now, each_provider=True, provider=provider
        )
        width = interval_seconds * 1000
        span = (epoch_ms(start) // width * width, epoch_ms(end))
        stored = [
            c
            for c in await self.store.candles(symbol, interval_seconds, span)
            if provider is None or c.provider == provider
        ]
        # Each provider's best candle of each bucket: complete first, then our own ticks'.
        best: dict[datetime, dict[str, tuple[tuple[bool, int], Candle]]] = {}
        for origin, candles in enumerate((own, stored)):
            for candle in candles:
                if candle.open_time >= end:
                    continue
                key = (not candle.complete, origin)
                by_provider = best.setdefault(candle.open_time, {})
                held = by_provider.get(candle.provider)
                if held is None or key < held[0]:
                    by_provider[candle.provider] = (key, candle)
        # Candidates in pool order (last seen by `sources()`, not asked for here: with a
        # ROUND_ROBIN pool every listing is a pick), then by name: a lone candle is the first.
        rank = self._rank
        result = Series([])
        for moment in sorted(best):
            candidates = [
                candle
                for _key, candle in sorted(
                    best[moment].values(),
                    key=lambda kc: (kc[0], rank.get(kc[1].provider, len(rank)), kc[1].provider),
                )
            ]
            agreed = candle_consensus(candidates, max_deviation_pct=self.max_deviation_pct)
            if agreed is not None:
                result.candles.append(agreed)
            else:
                t = epoch_ms(moment)
                result.disputed.append((t, t + width))
        result.disputed = merge_spans(result.disputed)
        return result

    async def candles(
        self,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        *,
        now: datetime | None = None,
        fill_seconds: float | None = 8.0,
        provider: str | None = None,
    ) -> History:
        """The series over [start, end) (the consensus, or `provider`'s own candles), filling
        holes for at most `fill_seconds` (None: no filling). Whatever a fill stored before its
        time ran out stays stored."""
        now = now or utc_now()
        series = await self.series(symbol, interval_seconds, start, end, now, provider=provider)
        grid = closed_grid(interval_seconds, start, end, now)
        # A disputed bucket is a hole too: another provider's candle may settle it.
        missing = holes(series.candles, interval_seconds, grid)
        if missing and fill_seconds is not None and self.client is not None:
            report = FillReport()
            # The wait for another request's fill of the same series counts against the budget.
            with trio.move_on_after(fill_seconds):
                async with self._lock(symbol, interval_seconds):
                    await self.fill(symbol, interval_seconds, missing, now, report, only=provider)
            series = await self.series(symbol, interval_seconds, start, end, now, provider=provider)
            missing = holes(series.candles, interval_seconds, grid)
            return History(
                series.candles,
                subtract_spans(missing, series.disputed),
                report,
                series.disputed,
            )
        return History(
            series.candles, subtract_spans(missing, series.disputed), disputed=series.disputed
        )

    def _check_budget(self, provider: ProviderConfig) -> None:
        """UpstreamRateLimited unless every window keeps `reserve` of its budget after one more
        request (nothing is counted here: the request itself goes through the limiter)."""
        if not self.reserve or self.client is None:
            return
        for window in self.client.limiter_for(provider).usage():
            if window.remaining - 1 < window.limit * self.reserve:
                wait = max(0.0, (window.resets_at - utc_now()).total_seconds())
                raise UpstreamRateLimited(
                    f"the requests left in this {window.name} ({window.remaining} of "
                    f"{window.limit}) are reserved for live prices; try again in {wait:.0f} s",
                    provider=provider.id,
                    status=None,
                    retry_after=wait,
                )

    def _lock(self, symbol: str, interval_seconds: int) -> trio.Lock:
        return self._locks.setdefault((symbol, interval_seconds), trio.Lock())

    async def fill(
        self,
        symbol: str,
        interval_seconds: int,
        wanted: Sequence[Span],
        now: datetime,
        report: FillReport,
        *,
        only: str | None = None,
    ) -> FillReport:
        """Ask each provider in turn for the parts of `wanted` that are still holes and that it
        has not answered before; store what it returns. `report` is updated as it goes, so a
        caller that cancels still sees what was done."""
        assert self.client is not None, "filling needs an upstream client"
        width = interval_seconds * 1000
        # Fetchers mark a candle complete by the `now` they are given: hand them a `now` that
        # leaves the settle margin, so a just-closed candle is neither stored nor counted.
        settled = now - timedelta(seconds=SETTLE_SECONDS)
        remaining = merge_spans(wanted)
        for provider, source in self.sources(interval_seconds):
            if not remaining:
                break
            if only is not None and provider.id != only:
                continue
            covered = await self.store.coverage(
                symbol, interval_seconds, provider.id, (remaining[0][0], remaining[-1][1])
            )
            for start, end in subtract_spans(remaining, covered):
                try:
                    for a in range(start, end, SLICE_INTERVALS * width):
                        b = min(a + SLICE_INTERVALS * width, end)
                        self._check_budget(provider)
                        report.requests += 1
                        got = await source.fetch(
                            self.client,
                            provider,
                            symbol,
                            interval_seconds,
                            from_epoch_ms(a),
                            from_epoch_ms(b),
                            now=settled,
                            key=self.key_for(provider) if self.key_for else None,
                        )
                        report.inserted += await self.store.save(
                            symbol, interval_seconds, provider.id, got, (a, b)
                        )
                        filled = [
                            (t, t + width)
                            for c in got
                            if c.complete and a <= (t := epoch_ms(c.open_time)) < b
                        ]
                        remaining = subtract_spans(remaining, filled)
                except UpstreamError as exc:
                    log.warning(
                        "history.fill_failed",
                        provider=provider.id,
                        symbol=symbol,
                        interval=interval_seconds,
                        error=str(exc),
                    )
                    report.errors.append((provider.id, exc.reason))
                    break  # this provider is in trouble: leave its ranges to the next one
        report.missing = remaining
        return report
