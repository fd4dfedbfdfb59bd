"""Providers' own candles in SQLite, and the coverage that says which ranges are held.

Two tables (migration 5 in migrations.py): `upstream_candles`, one row per closed candle per
(symbol, interval, provider), and `candle_coverage`, the merged `[start, end)` ranges of each
(symbol, interval, provider) series that the provider has already answered for. A range in
coverage is held *as the provider reported it*: an interval it did not report (no trades, or
before the pair was listed) is a real hole, and asking again would only repeat the answer.

Only closed candles are stored: an exchange still moves the open one, and a stored figure that
later changes is exactly the stale data this module exists to avoid. Writing the same candle
twice keeps the first (`ON CONFLICT DO NOTHING`), so a backfill that runs twice stores nothing
twice.

This module never calls an upstream; `gateway.prices.history` decides what to fetch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlite_utils import Database

from gateway.models import Candle, epoch_ms, from_epoch_ms
from gateway.store.database import Storage

__all__ = ["CandleStore", "Span", "merge_spans", "subtract_spans"]

# Half-open millisecond range [start, end).
Span = tuple[int, int]

_INSERT_SQL: Final = """
INSERT INTO upstream_candles
    (symbol, interval_s, provider, open_ms, open, high, low, close, volume)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

_NATIVE_SQL: Final = """
SELECT provider, open_ms, open, high, low, close, volume FROM upstream_candles
WHERE symbol = :symbol AND interval_s = :interval AND open_ms >= :start AND open_ms < :end
ORDER BY open_ms, provider
"""

# Wider candles summed from one provider's stored one-minute candles (a `--interval M1`
# backfill then answers every interval). Open and close come from the bucket's first and last
# minute; volume only when every minute reported one.
_FROM_MINUTES_SQL: Final = """
WITH bucket AS (
    SELECT provider, open_ms / :width AS n, min(open_ms) AS first_ms, max(open_ms) AS last_ms,
           max(high) AS high, min(low) AS low, sum(volume) AS volume,
           count(volume) AS volumes, count(*) AS minutes
    FROM upstream_candles
    WHERE symbol = :symbol AND interval_s = 60 AND open_ms >= :start AND open_ms < :end
    GROUP BY provider, n
)
SELECT b.provider, b.n * :width, o.open, b.high, b.low, c.close,
       CASE WHEN b.volumes = b.minutes THEN b.volume END, b.minutes
FROM bucket AS b
JOIN upstream_candles AS o ON o.symbol = :symbol AND o.interval_s = 60
                           AND o.provider = b.provider AND o.open_ms = b.first_ms
JOIN upstream_candles AS c ON c.symbol = :symbol AND c.interval_s = 60
                           AND c.provider = b.provider AND c.open_ms = b.last_ms
ORDER BY b.n, b.provider
"""

_COVERAGE_SQL: Final = """
SELECT start_ms, end_ms FROM candle_coverage
WHERE symbol = ? AND interval_s = ? AND provider = ? AND start_ms < ? AND end_ms > ?
ORDER BY start_ms
"""

_SERIES_SQL: Final = """
SELECT c.symbol, c.interval_s, c.provider, c.start_ms, c.end_ms,
       (SELECT count(*) FROM upstream_candles AS u
        WHERE u.symbol = c.symbol AND u.interval_s = c.interval_s AND u.provider = c.provider
          AND u.open_ms >= c.start_ms AND u.open_ms < c.end_ms)
FROM candle_coverage AS c
WHERE (:symbol IS NULL OR c.symbol = :symbol)
ORDER BY c.symbol, c.interval_s, c.provider, c.start_ms
"""


@dataclass(frozen=True, slots=True)
class CoverageRange:
    """One held range of a series, for `gateway backfill --status`."""

    symbol: str
    interval_seconds: int
    provider: str
    start: datetime
    end: datetime
    candles: int


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, with overlapping and touching spans joined; empty spans dropped."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract_spans(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    """The parts of `spans` that no span of `holes` covers (both merged first)."""
    result: list[Span] = []
    cutters = merge_spans(holes)
    for start, end in merge_spans(spans):
        cursor = start
        for cut_start, cut_end in cutters:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                result.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def _candle(symbol: str, interval_seconds: int, row: Sequence[Any], *, complete: bool) -> Candle:
    """A Candle from a (provider, open_ms, open, high, low, close, volume) row."""
    provider, open_ms, open_, high, low, close, volume = row
    return Candle(
        symbol,
        interval_seconds,
        from_epoch_ms(open_ms),
        open_,
        high,
        low,
        close,
        volume,
        provider,
        complete,
    )


class CandleStore:
    """Reads and writes `upstream_candles` and `candle_coverage` through a `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def save(
        self,
        symbol: str,
        interval_seconds: int,
        provider: str,
        candles: Sequence[Candle],
        covered: Span,
    ) -> int:
        """Store the closed candles of `covered` and record the span as answered, in one
        transaction (so a crash cannot record coverage without its candles). Returns the rows
        actually inserted. Open candles and candles outside `covered` are not stored."""
        start, end = covered
        rows = [
            (
                symbol,
                interval_seconds,
                provider,
                open_ms,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
            )
            for c in candles
            if c.complete and start <= (open_ms := epoch_ms(c.open_time)) < end
        ]

        def work(conn: sqlite3.Connection) -> int:
            inserted = conn.executemany(_INSERT_SQL, rows).rowcount if rows else 0
            if start < end:
                _add_coverage(conn, symbol, interval_seconds, provider, start, end)
            return inserted

        return await self.storage.transact(work)

    async def coverage(
        self, symbol: str, interval_seconds: int, provider: str, span: Span
    ) -> list[Span]:
        """The held ranges of one series that overlap `span`, oldest first."""
        params = (symbol, interval_seconds, provider, span[1], span[0])
        rows = await self.storage.read(lambda db: db.execute(_COVERAGE_SQL, params).fetchall())
        return [(int(a), int(b)) for a, b in rows]

    async def candles(self, symbol: str, interval_seconds: int, span: Span) -> list[Candle]:
        """Every provider's stored candles of exactly this interval with open time in `span`,
        plus (for wider intervals) those summed from stored one-minute candles. Ordered by
        open time; several providers may hold the same bucket."""
        params = {"symbol": symbol, "interval": interval_seconds, "start": span[0], "end": span[1]}
        summed = interval_seconds > 60 and interval_seconds % 60 == 0
        width = interval_seconds * 1000
        aligned = {**params, "width": width, "start": span[0] - span[0] % width}

        def query(db: Database) -> tuple[list[Any], list[Any]]:
            # Both in one worker-thread hop and one read snapshot.
            native = db.execute(_NATIVE_SQL, params).fetchall()
            minutes = db.execute(_FROM_MINUTES_SQL, aligned).fetchall() if summed else []
            return native, minutes

        native, minutes = await self.storage.read(query)
        needed = interval_seconds // 60
        found = [_candle(symbol, interval_seconds, row, complete=True) for row in native]
        found += [
            _candle(symbol, interval_seconds, row[:7], complete=row[7] >= needed) for row in minutes
        ]
        return found

    async def series(self, symbol: str | None = None) -> list[CoverageRange]:
        """Every held range (of one symbol, or all), with the candles stored inside it."""
        rows = await self.storage.read(
            lambda db: db.execute(_SERIES_SQL, {"symbol": symbol}).fetchall()
        )
        return [
            CoverageRange(sym, interval, provider, from_epoch_ms(start), from_epoch_ms(end), count)
            for sym, interval, provider, start, end, count in rows
        ]

    async def count(self) -> int:
        """How many upstream candles are stored (all series)."""
        count: int = await self.storage.read(
            lambda db: db.execute("SELECT count(*) FROM upstream_candles").fetchone()[0]
        )
        return count


def _add_coverage(
    conn: sqlite3.Connection, symbol: str, interval: int, provider: str, start: int, end: int
) -> None:
    """Record [start, end) as held, joining it with every range it overlaps or touches."""
    key = (symbol, interval, provider)
    touching = conn.execute(
        "SELECT start_ms, end_ms FROM candle_coverage"
        " WHERE symbol = ? AND interval_s = ? AND provider = ? AND start_ms <= ? AND end_ms >= ?",
        (*key, end, start),
    ).fetchall()
    for old_start, old_end in touching:
        start, end = min(start, old_start), max(end, old_end)
    conn.execute(
        "DELETE FROM candle_coverage"
        " WHERE symbol = ? AND interval_s = ? AND provider = ? AND start_ms >= ? AND start_ms <= ?",
        (*key, start, end),
    )
    conn.execute(
        "INSERT INTO candle_coverage (symbol, interval_s, provider, start_ms, end_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (*key, start, end),
    )
