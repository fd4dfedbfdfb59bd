"""Ingest: the one path every collected tick takes, in one order.

    validate  ->  queue for storage  ->  consensus watch and provider state  ->  publish live

Every collector and stream hands its ticks to one `Ingest` (the supervisor builds it and passes
it as the collectors' `publish`). In order:

1. **validate**: `Storage.queue_ticks` checks every tick of the batch before queueing any (a
   non-finite price or a naive time is a ValueError for the whole batch: a source bug, which
   the supervisor restarts the collector for);
2. **queue for storage**: without waiting for the commit, or a stream could publish only one
   message per batch window (the queue's bound still pushes back on a fast source);
3. **consensus and provider state**: the outlier watch judges each tick against the other
   providers' latest prices; an outlier is counted on its provider (and logged on the first
   and every hundredth) — it is still stored and published, and the consensus leaves it out;
4. **publish** on the bus's `prices` topic, to live subscribers.

Why queue before publishing: a replaying subscriber (`priceTicks` with `since`) subscribes to
the bus, waits for `Storage.committed()`, then reads the store. A tick it did not see live was
queued before it subscribed, so it is in the store by then: no gap and no duplicate at the seam.
Nothing awaits between queueing and publishing, so no subscriber can slip in between.

Must never: publish a tick that was not queued for storage, or call an upstream.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from gateway.models import PriceTick
from gateway.prices.consensus import OutlierWatch
from gateway.providers.status import ProviderStatusBoard
from gateway.pubsub import EventBus
from gateway.storage import Storage

__all__ = ["Ingest"]

log = structlog.get_logger(__name__)

# An outlier is logged on its provider's first and then every this many (the count is exact).
OUTLIER_LOG_EVERY = 100


class Ingest:
    """`await ingest(ticks)`: store, judge and publish a batch of ticks from one source."""

    def __init__(
        self, storage: Storage, bus: EventBus, board: ProviderStatusBoard, watch: OutlierWatch
    ) -> None:
        self.storage = storage
        self.bus = bus
        self.board = board
        self.watch = watch

    async def __call__(self, ticks: Sequence[PriceTick]) -> None:
        await self.storage.queue_ticks(ticks)  # validates the whole batch first
        for tick in ticks:
            self._judge(tick)
            self.bus.prices.publish(tick)

    def _judge(self, tick: PriceTick) -> None:
        deviation = self.watch.observe(tick)
        if deviation is None:
            return
        count = self.board.note_outlier(tick.provider)
        if count == 1 or count % OUTLIER_LOG_EVERY == 0:
            log.warning(
                "consensus.outlier",
                provider=tick.provider,
                symbol=tick.symbol,
                usd=tick.usd,
                deviation_pct=round(deviation, 2),
                outliers=count,
            )
