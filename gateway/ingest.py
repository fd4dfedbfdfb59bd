"""Ingest: the one path every collected tick takes, in one order.

    validate -> plausibility gate -> queue for storage -> consensus watch -> publish live
                      └─ refused: quarantined (own table), counted on the provider, never
                         stored with the ticks, never in a candle, the consensus or a stream

Every collector and stream hands its ticks to one `Ingest` (the supervisor builds it and passes
it as the collectors' `publish`). In order:

1. **validate**: a non-finite price or a naive time is a ValueError for the whole batch (a
   source bug, which the supervisor restarts the collector for);
2. **plausibility** (`gateway.prices.plausibility`): each tick is judged against the other
   providers' believed prices, or its own provider's recent ones. A refused tick is recorded
   in the quarantine table, counted on its provider (`quarantined`, and
   `gateway_ticks_quarantined_total`), logged on the first and every hundredth, and goes no
   further. Only believed ticks become the references later ticks are judged against;
3. **queue for storage**: without waiting for the commit, or a stream could publish only one
   message per batch window (the queue's bound still pushes back on a fast source);
4. **consensus watch**: an outlier (off the others' median by more than the consensus's
   deviation, but within the plausibility band) is counted on its provider; it is stored and
   published, and the consensus leaves it out;
5. **publish** on the bus's `prices` topic, to live subscribers.

Why queue before publishing: a replaying subscriber (`priceTicks` with `since`) subscribes to
the bus, waits for `Storage.committed()`, then reads the store. A tick it did not see live was
queued before it subscribed, so it is in the store by then: no gap and no duplicate at the seam.
Nothing awaits between queueing and publishing, so no subscriber can slip in between.

Must never: publish or store (as a tick) a price the gate refused; call an upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import structlog

from gateway.models import PriceTick
from gateway.prices.consensus import OutlierWatch
from gateway.prices.plausibility import PlausibilityGate, Verdict
from gateway.providers.status import ProviderStatusBoard
from gateway.pubsub import EventBus
from gateway.storage import QuarantineStore, Storage
from gateway.symbols import known_symbols

__all__ = ["Ingest"]

log = structlog.get_logger(__name__)

# Outliers and quarantined ticks are logged on a provider's first and then every this many
# (the counts themselves are exact).
LOG_EVERY: Final = 100


class Ingest:
    """`await ingest(ticks)`: judge, store and publish a batch of ticks from one source."""

    def __init__(
        self,
        storage: Storage,
        bus: EventBus,
        board: ProviderStatusBoard,
        watch: OutlierWatch,
        gate: PlausibilityGate | None = None,
    ) -> None:
        self.storage = storage
        self.bus = bus
        self.board = board
        self.watch = watch
        self.gate = gate or PlausibilityGate()
        self.quarantine = QuarantineStore(storage)

    async def prime(self) -> int:
        """Seed the plausibility gate with the newest stored tick of every provider and symbol,
        so the first prices after a restart are judged against what was believed before it.
        Returns how many stored ticks the gate kept as references."""
        stored = await self.storage.latest_ticks(sorted(known_symbols()))
        kept = self.gate.prime(stored)
        log.info("ingest.primed", stored=len(stored), references=kept)
        return kept

    async def __call__(self, ticks: Sequence[PriceTick]) -> None:
        for tick in ticks:
            tick.check()  # the whole batch is refused before any of it is judged
        believed = []
        for tick in ticks:
            verdict = self.gate.judge(tick)
            if verdict.accepted:
                self.gate.accept(tick)
                believed.append(tick)
            else:
                self._quarantine(tick, verdict)
        if not believed:
            return
        await self.storage.queue_ticks(believed)
        for tick in believed:
            self._watch(tick)
            self.bus.prices.publish(tick)

    def _quarantine(self, tick: PriceTick, verdict: Verdict) -> None:
        reason = verdict.reason or "implausible"
        recorded = self.quarantine.record(tick, verdict.reference_usd, reason)
        count = self.board.note_quarantined(tick.provider)
        if count == 1 or count % LOG_EVERY == 0:
            log.warning(
                "ingest.quarantined",
                provider=tick.provider,
                symbol=tick.symbol,
                usd=tick.usd,
                reference_usd=verdict.reference_usd,
                reason=reason,
                quarantined=count,
                recorded=recorded,
            )

    def _watch(self, tick: PriceTick) -> None:
        deviation = self.watch.observe(tick)
        if deviation is None:
            return
        count = self.board.note_outlier(tick.provider)
        if count == 1 or count % LOG_EVERY == 0:
            log.warning(
                "consensus.outlier",
                provider=tick.provider,
                symbol=tick.symbol,
                usd=tick.usd,
                deviation_pct=round(deviation, 2),
                outliers=count,
            )
