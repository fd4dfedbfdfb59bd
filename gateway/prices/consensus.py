"""The consensus price: the median of the providers that agree, and who did not.

Given each provider's latest tick for one symbol, the consensus is the median of the fresh
ones (at most `fresh_seconds` old; if none is fresh, the newest tick alone). With three or more
fresh sources, a source whose price deviates from their median by more than
`max_deviation_pct` percent is an outlier: it is left out and the median is taken again over
the rest. With two sources there is no majority to tell which one is wrong: when they are
further apart than that, or when three or more have no majority that agrees, there is **no
consensus** (`usd` is None, every source listed in `used`) and the API says so instead of
serving an average that nobody reported.

`candle_consensus` applies the same rule to one bucket's candles from several providers (by
their closes), so history agrees with `prices`.

`OutlierWatch` applies the same rule at ingest, once per tick, against the other providers'
latest prices, so every exclusion is counted (and logged) once per observation rather than
once per query.

Pure computation: no I/O, no clock of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.models import Candle, PriceTick

__all__ = ["Consensus", "OutlierWatch", "candle_consensus", "consensus", "deviation_pct"]

DEFAULT_FRESH_SECONDS = 600.0
DEFAULT_MAX_DEVIATION_PCT = 2.0


def deviation_pct(price: float, reference: float) -> float:
    return abs(price - reference) / reference * 100.0 if reference > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Consensus:
    """The agreed price and its evidence; `usd` is None when the sources disagree."""

    usd: float | None
    used: tuple[PriceTick, ...]
    excluded: tuple[PriceTick, ...]

    @property
    def newest(self) -> PriceTick:
        return max(self.used, key=lambda t: t.observed_at)


def consensus(
    ticks: Sequence[PriceTick],
    now: datetime,
    *,
    fresh_seconds: float = DEFAULT_FRESH_SECONDS,
    max_deviation_pct: float = DEFAULT_MAX_DEVIATION_PCT,
) -> Consensus | None:
    """The consensus of one symbol's latest tick per provider; None without any tick."""
    if not ticks:
        return None
    fresh = [t for t in ticks if (now - t.observed_at).total_seconds() <= fresh_seconds]
    if not fresh:
        newest = max(ticks, key=lambda t: t.observed_at)
        return Consensus(newest.usd, (newest,), ())
    middle = statistics.median(t.usd for t in fresh)
    kept = [t for t in fresh if deviation_pct(t.usd, middle) <= max_deviation_pct]
    excluded = [t for t in fresh if deviation_pct(t.usd, middle) > max_deviation_pct]
    if len(fresh) < 3:
        # Two sources: no majority to tell which one is wrong. Apart: no price at all.
        return Consensus(None if excluded else middle, tuple(fresh), ())
    if len(kept) * 2 <= len(fresh):  # no majority agrees: no basis to pick a side
        return Consensus(None, tuple(fresh), ())
    return Consensus(statistics.median(t.usd for t in kept), tuple(kept), tuple(excluded))


def candle_consensus(
    candles: Sequence[Candle], *, max_deviation_pct: float = DEFAULT_MAX_DEVIATION_PCT
) -> Candle | None:
    """One bucket's candle from each provider's own (one per provider), agreed as `consensus`
    agrees prices; None when they disagree (two apart, or no majority), never an average of
    sources that contradict each other.

    Complete candles outvote incomplete ones (when any is complete, only those count). Among
    the candles that agree, each of open, high, low and close is the median of theirs (high and
    low widened to hold open and close), `volume` the median of the volumes they report (each
    one venue's traded value, not a total), and `providers` names them.
    """
    if not candles:
        return None
    pool = [c for c in candles if c.complete] or list(candles)
    if len(pool) == 1:
        return pool[0]
    middle = statistics.median(c.close for c in pool)
    kept = [c for c in pool if deviation_pct(c.close, middle) <= max_deviation_pct]
    # Two apart have no majority either way; three or more need more than half to agree.
    disputed = len(kept) < 2 if len(pool) == 2 else len(kept) * 2 <= len(pool)
    if disputed:
        return None
    if len(kept) == 1:
        return kept[0]
    open_ = statistics.median(c.open for c in kept)
    close = statistics.median(c.close for c in kept)
    volumes = [c.volume for c in kept if c.volume is not None]
    first = kept[0]
    return Candle(
        symbol=first.symbol,
        interval_seconds=first.interval_seconds,
        open_time=first.open_time,
        open=open_,
        high=max(statistics.median(c.high for c in kept), open_, close),
        low=min(statistics.median(c.low for c in kept), open_, close),
        close=close,
        volume=statistics.median(volumes) if volumes else None,
        provider="consensus",
        complete=all(c.complete for c in kept),
        providers=tuple(sorted(c.provider for c in kept)),
    )


class OutlierWatch:
    """Flags each incoming tick that the consensus rule would exclude; counts per provider."""

    def __init__(
        self,
        *,
        fresh_seconds: float = DEFAULT_FRESH_SECONDS,
        max_deviation_pct: float = DEFAULT_MAX_DEVIATION_PCT,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.max_deviation_pct = max_deviation_pct
        self.latest: dict[str, dict[str, PriceTick]] = {}
        self.outliers: dict[str, int] = {}

    def observe(self, tick: PriceTick) -> float | None:
        """Record `tick`; returns its deviation (percent) from the others' median when it is
        an outlier, else None. Needs at least two other fresh providers to judge."""
        by_provider = self.latest.setdefault(tick.symbol, {})
        by_provider[tick.provider] = tick
        others = [
            t.usd
            for provider, t in by_provider.items()
            if provider != tick.provider
            and abs((tick.observed_at - t.observed_at).total_seconds()) <= self.fresh_seconds
        ]
        if len(others) < 2:
            return None
        deviation = deviation_pct(tick.usd, statistics.median(others))
        if deviation <= self.max_deviation_pct:
            return None
        self.outliers[tick.provider] = self.outliers.get(tick.provider, 0) + 1
        return deviation
