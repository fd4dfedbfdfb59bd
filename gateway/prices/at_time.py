"""The gateway's consensus price of a symbol at a past moment, from its own stored ticks.

`ConsensusAt(storage)(symbol, at)` takes each provider's newest tick of `symbol` observed in
[at - fresh_seconds, at + after_seconds] (the window a price "at that time" may come from: a
collector polls once a minute, a block is judged seconds after it was mined) and applies the
same consensus rule as `prices` (`gateway.prices.consensus`): the median of the providers that
agree; None when there is no tick in the window or the providers disagree. A stablecoin is
priced like anything else, by its own ticks: nothing here assumes 1.00.

Answers are cached per (symbol, minute of `at`) for a few minutes (`cache_seconds`), so a
detector scanning many transfers of one block asks the store once per symbol.

Must never price from a tick outside the window, or average providers that disagree.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Final

import trio

from gateway.prices.consensus import DEFAULT_FRESH_SECONDS, DEFAULT_MAX_DEVIATION_PCT, consensus
from gateway.storage import Storage, ticks_near

__all__ = ["AFTER_SECONDS", "ConsensusAt"]

# Ticks up to this long after the moment still count (one polling interval of the collectors).
AFTER_SECONDS: Final = 60.0
_CACHE_SIZE: Final = 1024


class ConsensusAt:
    """`await price_at(symbol, at)`: the consensus USD price then, or None (see module doc)."""

    def __init__(
        self,
        storage: Storage,
        *,
        fresh_seconds: float = DEFAULT_FRESH_SECONDS,
        after_seconds: float = AFTER_SECONDS,
        max_deviation_pct: float = DEFAULT_MAX_DEVIATION_PCT,
        cache_seconds: float = 30.0,
    ) -> None:
        self.storage = storage
        self.fresh_seconds = fresh_seconds
        self.after_seconds = after_seconds
        self.max_deviation_pct = max_deviation_pct
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[tuple[str, int], tuple[float, float | None]] = OrderedDict()
        self.lookups = 0

    async def __call__(self, symbol: str, at: datetime) -> float | None:
        key = (symbol, int(at.timestamp()) // 60)
        now = trio.current_time()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        self.lookups += 1
        ticks = await ticks_near(
            self.storage,
            symbol,
            at - timedelta(seconds=self.fresh_seconds),
            at + timedelta(seconds=self.after_seconds),
        )
        agreed = consensus(
            ticks,
            at + timedelta(seconds=self.after_seconds),
            fresh_seconds=self.fresh_seconds + self.after_seconds,
            max_deviation_pct=self.max_deviation_pct,
        )
        price = agreed.usd if agreed is not None else None
        self._cache[key] = (now, price)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return price
