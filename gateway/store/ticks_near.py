"""Price ticks around a moment: each provider's newest tick of a symbol within a window.

What the consensus price *at a past time* is built from (`gateway.prices.at_time`): a block
mined at 12:00:07 is valued with what every provider said in the minutes before (and a little
after, for a collector that polls once a minute). Read-only, over the tick table's primary key
and its time index; it never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.models import PriceTick
from gateway.store.database import Storage
from gateway.store.ticks import query_ms, tick_from_row

__all__ = ["ticks_near"]

_NEAR_SQL: Final = """
SELECT symbol, provider, observed_ms, usd, market_cap_usd, volume_24h_usd, change_24h_pct
FROM price_ticks AS t INDEXED BY price_ticks_symbol_time
WHERE symbol = :symbol AND observed_ms BETWEEN :start AND :end
  AND observed_ms = (SELECT max(observed_ms) FROM price_ticks
                     WHERE symbol = t.symbol AND provider = t.provider
                       AND observed_ms BETWEEN :start AND :end)
ORDER BY provider
"""


async def ticks_near(
    storage: Storage, symbol: str, start: datetime, end: datetime
) -> list[PriceTick]:
    """Each provider's newest tick of `symbol` observed in [start, end], by provider."""
    params = {"symbol": symbol, "start": query_ms(start, "start"), "end": query_ms(end, "end")}
    rows: list[Sequence[Any]] = await storage.read(
        lambda db: db.execute(_NEAR_SQL, params).fetchall()
    )
    return [tick_from_row(row) for row in rows]
