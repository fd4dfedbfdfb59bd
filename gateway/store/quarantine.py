"""Quarantined ticks: prices the plausibility gate refused, kept apart for inspection.

The table (migration 6) is written only by ingest and read only by operators (the
`quarantinedTicks` query): no candle, consensus or subscription ever reads it, which is the
point. Writes are best-effort (`Storage.write_nowait`): a feed that sends garbage as fast as
it can must not be able to slow the ingest of good prices, so when the writer's queue is full
the record is dropped and counted in `Storage.dropped_rows`. Rows older than the retention
are pruned with the raw ticks.

Must never: let a quarantined value reach `price_ticks` or `candles_1m`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.models import PriceTick, epoch_ms, from_epoch_ms, utc_now
from gateway.store.database import Storage

__all__ = ["QUARANTINE_RETENTION_DAYS", "QuarantineStore", "QuarantinedTick"]

# Refused ticks are evidence for a short investigation, not history.
QUARANTINE_RETENTION_DAYS: Final = 7.0

_INSERT_SQL: Final = """
INSERT INTO quarantined_ticks
    (symbol, provider, observed_ms, usd, reference_usd, reason, quarantined_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_LIST_SQL: Final = """
SELECT symbol, provider, observed_ms, usd, reference_usd, reason, quarantined_ms
FROM quarantined_ticks
WHERE (:symbol IS NULL OR symbol = :symbol) AND (:provider IS NULL OR provider = :provider)
ORDER BY quarantined_ms DESC, id DESC
LIMIT :limit
"""
_PRUNE_SQL: Final = "DELETE FROM quarantined_ticks WHERE quarantined_ms < ?"


@dataclass(frozen=True, slots=True)
class QuarantinedTick:
    """A refused tick, what it was compared with, and why it was refused."""

    tick: PriceTick
    reference_usd: float | None
    reason: str
    quarantined_at: datetime


class QuarantineStore:
    """Reads and writes `quarantined_ticks` through the storage writer and readers."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def record(self, tick: PriceTick, reference_usd: float | None, reason: str) -> bool:
        """Queue one refused tick (best-effort; False when dropped)."""
        row = (
            tick.symbol,
            tick.provider,
            epoch_ms(tick.observed_at),
            tick.usd if tick.usd == tick.usd else None,  # NaN is stored as NULL anyway
            reference_usd,
            reason,
            epoch_ms(utc_now()),
        )
        return self.storage.write_nowait(_INSERT_SQL, [row])

    async def recent(
        self, *, symbol: str | None = None, provider: str | None = None, limit: int = 50
    ) -> list[QuarantinedTick]:
        """The newest refused ticks first, optionally of one symbol and/or provider."""
        params = {"symbol": symbol, "provider": provider, "limit": limit}
        rows: Sequence[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_LIST_SQL, params).fetchall()
        )
        return [
            QuarantinedTick(
                PriceTick(symbol_, usd if usd is not None else float("nan"), provider_,
                          from_epoch_ms(observed)),
                reference,
                reason,
                from_epoch_ms(quarantined),
            )
            for symbol_, provider_, observed, usd, reference, reason, quarantined in rows
        ]  # fmt: skip

    async def prune(self, before: datetime) -> None:
        """Delete refused ticks recorded before `before`."""
        await self.storage.write(_PRUNE_SQL, [(epoch_ms(before),)])
