"""Live candles: the open bucket of one (symbol, interval) series, kept up to date from the bus.

`live_candles` is the source of the `candles` subscription. Its candles follow the rules of
`Storage.candles`, so a live candle and the stored one agree:

- one provider per candle. On subscribe that is the provider the store picks for the bucket so
  far (most minutes with a tick; ties to the alphabetically first); when nothing is stored yet,
  the first provider whose tick arrives. The choice holds for the whole bucket, so another
  provider's ticks can never make a price jump inside one candle;
- buckets are aligned to multiples of the interval since the epoch; open and close are the
  earliest and latest tick by `observed_at` (not by arrival), high and low the extremes;
- `complete` is false while the bucket is open, and at its end true when every minute of it
  holds a tick; `volume` is None (ticks carry 24-hour volume only).

One bucket's life: seeded from the store on subscribe and sent at once if it holds ticks; then
updated by each live tick of its provider, sent whenever the candle changes. A timer at the
bucket's end (not the next tick: a quiet symbol still gets its close) starts a short settle, long
enough for the storage writer to commit what was published before the boundary (ticks are published
once queued for the store, before their commit: see `gateway.ingest`). The bucket is then
read back from the store and sent once more (even if unchanged: it is the close) as final: the
stored candle, what `Storage.candles` (behind priceHistory) returns for that interval, unless the
store picks another provider for it than the live series has (then the live candle is final,
`complete` by the same rule) or holds nothing for it. The next bucket sends nothing until its first
tick, and nothing before the final candle of the previous one.

Must never: invent a price (every number is a tick's); hold more than three buckets (closing,
open, and the next one for ticks stamped a little past our clock's boundary), each at most a set
of minute numbers; buffer more than the bus subscription's fixed ring; or wait on anything but
the bus, a timer and a store read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import ceil, isfinite
from typing import TYPE_CHECKING, Final

import structlog
import trio

from gateway.config import SECONDS
from gateway.errors import StorageError
from gateway.models import Candle, PriceTick, epoch_ms, from_epoch_ms, utc_now

if TYPE_CHECKING:
    from gateway.pubsub import EventBus
    from gateway.sources.interest import SymbolInterest
    from gateway.storage import Storage

__all__ = ["OpenCandle", "bucket_start", "live_candles", "wall_clock"]

log = structlog.get_logger(__name__)

_MS: Final = timedelta(milliseconds=1)
_MINUTE_MS: Final = 60_000
# On top of the writer's batch window: the commit itself, and the hop through a worker thread.
_COMMIT_MARGIN: Final = 0.5 * SECONDS
_SEED_PAGE: Final = 2_000  # stored ticks per read while seeding the last stored minute

# The wall clock that places bucket boundaries. Module-level so tests can shift it (a candle
# boundary is a minute away at best); everything here reads it through `_now_ms`.
wall_clock: Callable[[], datetime] = utc_now


def _now_ms() -> int:
    return epoch_ms(wall_clock())


def bucket_start(interval_seconds: int) -> datetime:
    """The start of the bucket of `interval_seconds` that is open now."""
    width = interval_seconds * 1000
    return from_epoch_ms(_now_ms() // width * width)


@dataclass(slots=True)
class OpenCandle:
    """One bucket's candle of one provider's ticks, folded in as they arrive.

    `open_ms` and `close_ms` are the times of the ticks behind open and close, so a tick that
    arrives late moves them only if it was observed earlier (later). Folding the same tick twice
    changes nothing, which is what lets the seed from the store and the live ticks overlap.
    """

    symbol: str
    start_ms: int
    width_ms: int
    provider: str | None = None
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    open_ms: int = 0
    close_ms: int = 0
    minutes: set[int] = field(default_factory=set)  # minutes since start_ms holding a tick

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.width_ms

    @property
    def empty(self) -> bool:
        return not self.minutes

    def add(self, tick: PriceTick) -> bool:
        """Fold `tick` in; False (and nothing changed) when it is of another symbol, another
        bucket, or another provider than the one this candle is built from."""
        at = epoch_ms(tick.observed_at)
        if tick.symbol != self.symbol or not self.start_ms <= at < self.end_ms:
            return False
        if self.provider is None:
            self.provider = tick.provider
        elif tick.provider != self.provider:
            return False
        if not self.minutes:
            self.open = self.high = self.low = self.close = tick.usd
            self.open_ms = self.close_ms = at
        else:
            if at < self.open_ms:
                self.open, self.open_ms = tick.usd, at
            if at > self.close_ms:
                self.close, self.close_ms = tick.usd, at
            self.high = max(self.high, tick.usd)
            self.low = min(self.low, tick.usd)
        self.minutes.add((at - self.start_ms) // _MINUTE_MS)
        return True

    def seed(self, minutes: Sequence[Candle]) -> int | None:
        """Start from stored one-minute candles of one provider (oldest first, in this bucket).

        They do not say when within its minute the first and last tick fell, so open keeps the
        start of its minute as its time (only a tick from an earlier minute replaces it) and
        close the instant before its minute: the caller must then fold in the stored ticks from
        that minute on, whose latest becomes the close (and whose earliest becomes the open when
        the bucket's ticks all lie in that one minute). Returns that minute's start (ms), or
        None when there is nothing to seed.
        """
        held = [m for m in minutes if self.start_ms <= epoch_ms(m.open_time) < self.end_ms]
        if not held:
            return None
        first, last = epoch_ms(held[0].open_time), epoch_ms(held[-1].open_time)
        self.provider = held[0].provider
        self.open, self.close = held[0].open, held[-1].close
        self.high = max(m.high for m in held)
        self.low = min(m.low for m in held)
        self.open_ms = first if first < last else last + _MINUTE_MS
        self.close_ms = last - 1
        self.minutes = {(epoch_ms(m.open_time) - self.start_ms) // _MINUTE_MS for m in held}
        return last

    def record(self, *, closed: bool) -> Candle:
        """The candle as `Storage.candles` would state it (`closed`: the interval has ended)."""
        assert self.provider is not None, "an empty bucket has no candle"
        interval_seconds = self.width_ms // 1000
        needed = ceil(interval_seconds / 60) if interval_seconds >= 60 else 0
        return Candle(
            symbol=self.symbol,
            interval_seconds=interval_seconds,
            open_time=from_epoch_ms(self.start_ms),
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=None,
            provider=self.provider,
            complete=closed and len(self.minutes) >= needed,
        )


async def _seed(storage: Storage, bucket: OpenCandle, now_ms: int) -> None:
    """Fold what the store holds of `bucket` up to now into it.

    The minute grid up to the end of the current minute keeps the read on the one-minute table
    and makes the provider choice the one the final read of the whole bucket makes (most
    minutes); ticks stamped later in the current minute are real ticks all the same.
    """
    end_ms = min(bucket.end_ms, -(-now_ms // _MINUTE_MS) * _MINUTE_MS)
    if end_ms <= bucket.start_ms:
        return
    minutes = await storage.candles(
        bucket.symbol,
        60,
        from_epoch_ms(bucket.start_ms),
        from_epoch_ms(end_ms),
        from_epoch_ms(now_ms),
    )
    last = bucket.seed(minutes)
    if last is None:
        return
    # The exact ticks from the last stored minute on: a minute's worth, read in pages. Ticks
    # that straddle a page edge are folded twice, which changes nothing.
    cursor = from_epoch_ms(last - 1)
    while True:
        page = await storage.ticks_since([bucket.symbol], cursor, limit=_SEED_PAGE)
        for tick in page:
            bucket.add(tick)
        if len(page) < _SEED_PAGE or epoch_ms(page[-1].observed_at) >= bucket.end_ms:
            return
        following = page[-1].observed_at - _MS
        if following <= cursor:  # a whole page at one instant: the rest comes live
            return
        cursor = following


async def _final(storage: Storage, bucket: OpenCandle, now_ms: int) -> Candle | None:
    """The closed bucket as stored when the store builds it from the series' provider (it then
    holds every committed tick, including any the live view missed); otherwise as seen live.

    The store picks the provider with the most minutes in the bucket, which can differ from
    the one chosen live (the first to tick in a fresh bucket); the live choice is kept then, so
    the final candle is never another provider's than the updates before it.
    """
    try:
        stored = await storage.candles(
            bucket.symbol,
            bucket.width_ms // 1000,
            from_epoch_ms(bucket.start_ms),
            from_epoch_ms(bucket.end_ms),
            from_epoch_ms(now_ms),
        )
    except StorageError as exc:
        log.warning(
            "live_candles.final_unread", symbol=bucket.symbol, error=str(exc), fallback="live"
        )
        stored = []
    if stored and (bucket.provider is None or stored[0].provider == bucket.provider):
        return stored[0]  # [start, end) is exactly one bucket
    return None if bucket.empty else bucket.record(closed=True)


def _usable(tick: PriceTick) -> bool:
    # What the store would refuse (gateway.store.ticks.tick_row) is no part of a candle either.
    return isfinite(tick.usd) and tick.observed_at.tzinfo is not None


def _fold(tick: PriceTick, buckets: Iterable[OpenCandle | None]) -> OpenCandle | None:
    for bucket in buckets:
        if bucket is not None and bucket.start_ms <= epoch_ms(tick.observed_at) < bucket.end_ms:
            return bucket if bucket.add(tick) else None
    return None


async def live_candles(
    storage: Storage,
    bus: EventBus,
    symbol: str,
    interval_seconds: int,
    *,
    batch_seconds: float,
    interest: SymbolInterest | None = None,
) -> AsyncGenerator[Candle, None]:
    """Candles of `symbol` (canonical) at `interval_seconds`, as described in the module
    docstring; ends when the bus closes (shutdown). Raises StorageError if the seed cannot be
    read: a candle without the bucket's stored start would state a wrong open.

    `batch_seconds` is the storage writer's batch window (the settle before a final read);
    `interest`, when given, makes the live exchange streams subscribe to `symbol` meanwhile."""
    width = interval_seconds * 1000
    settle_ms = round((batch_seconds + _COMMIT_MARGIN) * 1000)
    held = interest.hold([symbol]) if interest is not None else nullcontext()
    with held, bus.prices.subscribe() as live:
        # Subscribed before reading the store, so ticks published during the read are buffered;
        # those that the read also saw fold in a second time without effect.
        # Ingest queues a tick for the store before publishing it: once the queue has drained,
        # a tick published before we subscribed is in the store for the seed to read.
        await storage.committed()
        now = _now_ms()
        current = OpenCandle(symbol, now // width * width, width)
        await _seed(storage, current, _now_ms())
        closing: OpenCandle | None = None  # ended; sent once the store has committed it
        ahead: OpenCandle | None = None  # the next bucket, for ticks stamped past our boundary
        sent: Candle | None = None
        if not current.empty:
            sent = current.record(closed=False)
            yield sent
        while True:
            now = _now_ms()
            if closing is None and now >= current.end_ms:
                closing, start = current, now // width * width
                if ahead is not None and ahead.start_ms == start:
                    current = ahead
                else:  # nothing ahead yet, or the clock skipped past it
                    current = OpenCandle(symbol, start, width)
                ahead = None
                continue
            if closing is not None and now >= closing.end_ms + settle_ms:
                final = await _final(storage, closing, _now_ms())
                closing = None
                if final is not None:
                    sent = final
                    yield final
                if not current.empty and (update := current.record(closed=False)) != sent:
                    sent = update
                    yield update
                continue
            deadline = closing.end_ms + settle_ms if closing is not None else current.end_ms
            tick: PriceTick | None = None
            with trio.move_on_after((deadline - now) / 1000):
                try:
                    tick = await live.receive()
                except trio.EndOfChannel:
                    return
            if tick is None or tick.symbol != symbol or not _usable(tick):
                continue
            at = epoch_ms(tick.observed_at)
            if ahead is None and current.end_ms <= at < current.end_ms + width:
                ahead = OpenCandle(symbol, current.end_ms, width)
            changed = _fold(tick, (closing, current, ahead))
            if changed is current and closing is None:
                update = current.record(closed=False)
                if update != sent:
                    sent = update
                    yield update
