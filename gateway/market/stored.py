"""What the gateway stored itself of a market answer, for when no provider can answer.

Only TVL is stored (`gateway.chains.dex.collect_tvl` writes DefiLlama's daily series to
`tvl_daily`, scope "all"), so `stored_answer(storage, "tvl")` is that series as an `Entry`
(its provider, its newest day as the observation, when it was last fetched); every other kind
has no stored answer (None). `MarketAnswers` serves it like a last good answer: with an
`UPSTREAM_FALLBACK` warning, and only within the hard age limit, so a restart during an
upstream outage still answers `tvlHistory` from the gateway's own history.

Must never combine stored days of different providers with a fetched answer, or present a
stored answer as fresh.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Final

from gateway.market.cache import Entry
from gateway.models import utc_now
from gateway.storage import Storage, TvlStore

__all__ = ["STORED_TVL_DAYS", "stored_answer"]

# The longest TVL history served (tvlHistory's own bound: 10 years).
STORED_TVL_DAYS: Final = 3650


async def stored_answer(storage: Storage, key: str) -> Entry[Any] | None:
    """The stored answer of kind `key`, or None (no such store, or nothing stored yet)."""
    if key != "tvl":
        return None
    rows = await TvlStore(storage).series("all", utc_now() - timedelta(days=STORED_TVL_DAYS))
    if not rows:
        return None
    points = [point for point, _, _ in rows]
    _, provider, _ = rows[-1]
    fetched = max(when for _, _, when in rows)
    # clock -inf: never fresh by any TTL, so it is only ever served as a fallback.
    return Entry(points, provider, points[-1].date, fetched, -math.inf)
