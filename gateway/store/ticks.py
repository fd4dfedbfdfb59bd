"""The SQL of the tick tables (price_ticks, candles_1m) and the conversion of their rows.

What `Storage` runs against its two own tables: the statement that inserts a tick and the one
that folds it into its minute's candle (executed by `writer`, in the same transaction), the read
queries (newest ticks, ticks since, candles from ticks or from minutes, symbols, pruning), and
the pure functions between `PriceTick`/`Candle` and rows. Times are epoch milliseconds.

This module must never touch a connection or the event loop: it is statements and pure
functions, run by `database` through the reader pool and the writer. Nothing here may let a
tick through that SQLite would mangle (a naive time, a non-finite price).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from math import ceil
from typing import Any, Final

from gateway.errors import BadUserInput
from gateway.models import Candle, PriceTick, epoch_ms, from_epoch_ms

__all__ = [
    "CANDLES_FROM_MINUTES_SQL",
    "CANDLES_SQL",
    "CANDLE_UPSERT_SQL",
    "INSERT_SQL",
    "LATEST_SQL",
    "PRUNE_SQL",
    "SINCE_SQL",
    "SYMBOLS_SQL",
    "TickRow",
    "candles_from_rows",
    "candles_statement",
    "query_ms",
    "tick_from_row",
    "tick_row",
]

# A price_ticks row, in the order of _COLUMNS.
TickRow = tuple[str, str, int, float, float | None, float | None, float | None]

_COLUMNS = "symbol, provider, observed_ms, usd, market_cap_usd, volume_24h_usd, change_24h_pct"

# Folds one tick into its minute's candle. Open and close move only for a strictly earlier or
# later tick, so writing the same tick twice (it is ignored in price_ticks) changes nothing.
# The stored row is named `c`: PostgreSQL finds a bare column name ambiguous next to `excluded`.
CANDLE_UPSERT_SQL: Final = """
INSERT INTO candles_1m AS c (symbol, provider, minute_ms, open, high, low, close, first_ms, last_ms)
VALUES (?1, ?2, ?3 / 60000 * 60000, ?4, ?4, ?4, ?4, ?3, ?3)
ON CONFLICT (symbol, provider, minute_ms) DO UPDATE SET
    open = CASE WHEN excluded.first_ms < c.first_ms THEN excluded.open ELSE c.open END,
    first_ms = min(c.first_ms, excluded.first_ms),
    close = CASE WHEN excluded.last_ms > c.last_ms THEN excluded.close ELSE c.close END,
    last_ms = max(c.last_ms, excluded.last_ms),
    high = max(c.high, excluded.high),
    low = min(c.low, excluded.low)
"""

INSERT_SQL: Final = f"INSERT OR IGNORE INTO price_ticks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

# Loose index scan: hop from provider to provider inside each symbol (one primary-key seek per
# hop), then seek the newest row of each pair. Cost grows with providers, not with history.
LATEST_SQL: Final = f"""
WITH RECURSIVE hop(symbol, provider) AS (
    SELECT w.value, (SELECT min(provider) FROM price_ticks WHERE symbol = w.value)
    FROM (SELECT DISTINCT value FROM json_each(:symbols)) AS w
    UNION ALL
    SELECT hop.symbol, (SELECT min(provider) FROM price_ticks
                        WHERE symbol = hop.symbol AND provider > hop.provider)
    FROM hop WHERE hop.provider IS NOT NULL
)
SELECT {_COLUMNS} FROM hop JOIN price_ticks AS t USING (symbol, provider)
WHERE t.observed_ms = (SELECT max(observed_ms) FROM price_ticks
                       WHERE symbol = hop.symbol AND provider = hop.provider)
ORDER BY t.symbol, t.provider
"""

# Every symbol with ticks, one primary-key seek per symbol (a loose index scan).
SYMBOLS_SQL: Final = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM price_ticks
    UNION ALL
    SELECT (SELECT min(symbol) FROM price_ticks WHERE symbol > s.symbol) FROM s
    WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL
"""

PRUNE_SQL: Final = """
DELETE FROM price_ticks WHERE (symbol, provider, observed_ms) IN (
    SELECT symbol, provider, observed_ms FROM price_ticks INDEXED BY price_ticks_symbol_time
    WHERE symbol = ?1 AND observed_ms < ?2 LIMIT ?3
)
"""

SINCE_SQL: Final = f"""
SELECT {_COLUMNS} FROM price_ticks
WHERE symbol IN (SELECT value FROM json_each(:symbols)) AND observed_ms > :since
ORDER BY observed_ms, provider, symbol
LIMIT :limit
"""

# Candles of a whole number of minutes, from candles_1m; the same rules as CANDLES_SQL.
_CANDLES_FROM_MINUTES_TEMPLATE: Final = """
WITH RECURSIVE hop(provider) AS (
    SELECT (SELECT min(provider) FROM candles_1m WHERE symbol = :symbol)
    UNION ALL
    SELECT (SELECT min(provider) FROM candles_1m
            WHERE symbol = :symbol AND provider > hop.provider)
    FROM hop WHERE hop.provider IS NOT NULL
), chosen AS (
    SELECT provider FROM candles_1m INDEXED BY candles_1m_symbol_time
    WHERE symbol = :symbol AND minute_ms >= :start AND minute_ms < :end
    GROUP BY provider ORDER BY count(*) DESC, provider LIMIT 1
), bucket AS (
    SELECT provider, minute_ms / :width AS n, min(minute_ms) AS first_minute,
           max(minute_ms) AS last_minute, max(high) AS high, min(low) AS low, count(*) AS minutes
    FROM candles_1m
    WHERE symbol = :symbol AND minute_ms >= :start AND minute_ms < :end
      {provider_filter}
    GROUP BY provider, n
)
SELECT b.n, o.open, b.high, b.low, c.close, b.minutes, b.provider
FROM bucket AS b
JOIN candles_1m AS o
  ON o.symbol = :symbol AND o.provider = b.provider AND o.minute_ms = b.first_minute
JOIN candles_1m AS c
  ON c.symbol = :symbol AND c.provider = b.provider AND c.minute_ms = b.last_minute
ORDER BY b.n, b.provider
"""

# One statement, so the provider choice and the candles come from the same snapshot. The
# provider filter is 'chosen' (the one provider with the most ticks in the range, ties to the
# alphabetically first), 'each' (every provider's candles, several per bucket) or 'one'
# (`:provider`'s): one template, three statements.
# Open and close are found by joining back on the primary key at each bucket's first and last
# instant. `chosen` reads through the (symbol, time) index (INDEXED BY: without ANALYZE
# statistics the planner would rather walk the primary key on `symbol` alone, which reads the
# symbol's whole history); the candles themselves read primary-key ranges (see below).
_CANDLES_TEMPLATE: Final = """
WITH RECURSIVE hop(provider) AS (
    SELECT (SELECT min(provider) FROM price_ticks WHERE symbol = :symbol)
    UNION ALL
    SELECT (SELECT min(provider) FROM price_ticks
            WHERE symbol = :symbol AND provider > hop.provider)
    FROM hop WHERE hop.provider IS NOT NULL
), chosen AS (
    SELECT provider FROM price_ticks INDEXED BY price_ticks_symbol_time
    WHERE symbol = :symbol AND observed_ms >= :start AND observed_ms < :end
    GROUP BY provider ORDER BY count(*) DESC, provider LIMIT 1
), bucket AS (
    SELECT provider, observed_ms / :width AS n, min(observed_ms) AS first_ms,
           max(observed_ms) AS last_ms, max(usd) AS high, min(usd) AS low,
           count(DISTINCT (observed_ms % :width) / 60000) AS minutes
    FROM price_ticks
    WHERE symbol = :symbol AND observed_ms >= :start AND observed_ms < :end
      {provider_filter}
    GROUP BY provider, n
)
SELECT b.n, o.usd, b.high, b.low, c.usd, b.minutes, b.provider
FROM bucket AS b
JOIN price_ticks AS o
  ON o.symbol = :symbol AND o.provider = b.provider AND o.observed_ms = b.first_ms
JOIN price_ticks AS c
  ON c.symbol = :symbol AND c.provider = b.provider AND c.observed_ms = b.last_ms
ORDER BY b.n, b.provider
"""


# choice -> provider condition. Each reads primary-key ranges (symbol, provider, time), with no
# lookups: one provider's range, or (each) one range per provider found by the `hop` loose
# index scan (a seek per provider). Through the (symbol, time) index instead, every row would
# cost a lookup into the table: 41 ms instead of 24 for a week of four providers' minutes.
_PROVIDER_FILTERS: Final = {
    "chosen": "AND provider = (SELECT provider FROM chosen)",
    "each": "AND provider IN (SELECT provider FROM hop WHERE provider IS NOT NULL)",
    "one": "AND provider = :provider",
}
# choice -> statement
CANDLES_SQL: Final = {
    choice: _CANDLES_TEMPLATE.format(provider_filter=condition)
    for choice, condition in _PROVIDER_FILTERS.items()
}
CANDLES_FROM_MINUTES_SQL: Final = {
    choice: _CANDLES_FROM_MINUTES_TEMPLATE.format(provider_filter=condition)
    for choice, condition in _PROVIDER_FILTERS.items()
}

def query_ms(moment: datetime, argument: str) -> int:
    """`moment` in epoch milliseconds; BadUserInput, naming `argument`, if it is naive."""
    try:
        return epoch_ms(moment)
    except ValueError:
        raise BadUserInput(f"{argument} must carry a timezone (UTC)") from None


def tick_row(tick: PriceTick) -> TickRow:
    """The price_ticks row of `tick`; ValueError for a non-finite price or a naive time."""
    tick.check()
    observed_ms = epoch_ms(tick.observed_at)
    return (tick.symbol, tick.provider, observed_ms, tick.usd, tick.market_cap_usd,
            tick.volume_24h_usd, tick.change_24h_pct)  # fmt: skip


def tick_from_row(row: Sequence[Any]) -> PriceTick:
    """The tick of a row selected as _COLUMNS."""
    symbol, provider, ms, usd, cap, volume, change = row
    return PriceTick(symbol, usd, provider, from_epoch_ms(ms), cap, volume, change)


def candles_statement(
    symbol: str,
    width: int,
    start_ms: int,
    end_ms: int,
    *,
    each_provider: bool = False,
    provider: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The query for candles `width` ms wide in [start_ms, end_ms), and its parameters: of the
    one provider with the most ticks, or (`each_provider`) of every provider, or of `provider`.

    Whole minutes are read over every minute the range touches (`start` rounded down, `end`
    up, to the minute).
    """
    choice = "one" if provider is not None else "each" if each_provider else "chosen"
    params: dict[str, Any] = {
        "symbol": symbol,
        "start": start_ms,
        "end": end_ms,
        "width": width,
        "provider": provider,
    }
    # Whole minutes: from candles_1m, one row per minute instead of one per tick
    # (bench/history.py: 100 ms -> 10 ms for a day at M5 of a one-tick-per-second stream).
    # Anything finer is computed from the ticks.
    if width % 60_000 == 0:
        params["start"] = start_ms // 60_000 * 60_000
        params["end"] = -(-end_ms // 60_000) * 60_000
        return CANDLES_FROM_MINUTES_SQL[choice], params
    return CANDLES_SQL[choice], params


def candles_from_rows(
    rows: Iterable[Sequence[Any]],
    symbol: str,
    interval_seconds: int,
    start_ms: int,
    end_ms: int,
    now_ms: int,
) -> list[Candle]:
    """The candles of the rows of `candles_statement`: complete once the interval has ended (by
    `now_ms`) inside [start_ms, end_ms) and, from a minute up, every minute of it has a tick."""
    width = interval_seconds * 1000
    minutes_needed = ceil(interval_seconds / 60) if interval_seconds >= 60 else 0
    return [
        Candle(
            symbol=symbol,
            interval_seconds=interval_seconds,
            open_time=from_epoch_ms(n * width),
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=None,
            provider=provider,
            complete=start_ms <= n * width
            and (n + 1) * width <= min(end_ms, now_ms)
            and minutes >= minutes_needed,
        )
        for n, open_, high, low, close, minutes, provider in rows
    ]
