"""Retention: delete rows past their table's age limit in small batches, then shrink the file.

One rule per growing table (`RETENTION_RULES`: the table, its time column, the setting that
holds its limit in days). Each batch is one short transaction of at most `batch` rows through
the writer connection (`Storage.execute_now`), chosen through the time index or the primary
key, so the writer's tick batches and every reader interleave with a long prune instead of
waiting behind it. After pruning, `Storage.reclaim_space` runs `PRAGMA incremental_vacuum`
so the file shrinks (the database is in incremental auto-vacuum mode:
gateway.store.connection.incremental_vacuum).

Tables pruned elsewhere, by the task that writes them, are not listed here: raw ticks
(`Storage.prune_ticks`, `tick_retention_days`), chain heads and gas
(`chain_retention_days`), whale transactions and explorer statistics
(`whale_retention_days`, `network_stats_retention_days`).

Must never: delete a row younger than its limit, hold the write lock for more than one batch,
or prune a table whose limit is 0 (keep everything).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import structlog

from gateway.config import Settings
from gateway.models import epoch_ms
from gateway.store.database import Storage

__all__ = [
    "BATCH_ROWS",
    "RETENTION_RULES",
    "RetentionRule",
    "prune_all",
    "prune_table",
    "prune_tables",
]

log = structlog.get_logger(__name__)

BATCH_ROWS: Final = 5_000


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """`table` rows whose `column` (epoch ms) is older than `setting` days are deleted.

    `by`: "rowid" (a rowid table with an index on `column`), "symbol" (WITHOUT ROWID with an
    index on (symbol, column): per symbol through it), "news" (articles with their sources and
    coins), "plain" (a small table: one statement).
    """

    table: str
    column: str
    setting: str
    by: str = "rowid"


RETENTION_RULES: Final = (
    RetentionRule("candles_1m", "minute_ms", "candle_retention_days", "symbol"),
    RetentionRule("connection_attempts", "at_ms", "attempt_retention_days"),
    RetentionRule("failures", "at_ms", "attempt_retention_days"),
    RetentionRule("rate_limit_usage", "updated_ms", "rate_limit_retention_days", "plain"),
    RetentionRule("schedule_runs", "expected_ms", "schedule_retention_days"),
    RetentionRule("system_metrics", "at_ms", "metrics_retention_days"),
    RetentionRule("rotation_history", "at_ms", "alert_retention_days"),
    RetentionRule("alerts", "at_ms", "alert_retention_days"),
    RetentionRule("quarantined_ticks", "quarantined_ms", "quarantine_retention_days"),
    RetentionRule("news_articles", "published_ms", "news_retention_days", "news"),
)

_CANDLE_SYMBOLS: Final = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM candles_1m
    UNION ALL
    SELECT (SELECT min(symbol) FROM candles_1m WHERE symbol > s.symbol) FROM s
    WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL
"""

_CANDLE_PRUNE: Final = """
DELETE FROM candles_1m WHERE (symbol, provider, minute_ms) IN (
    SELECT symbol, provider, minute_ms FROM candles_1m INDEXED BY candles_1m_symbol_time
    WHERE symbol = ?1 AND minute_ms < ?2 LIMIT ?3
)
"""


async def _batches(storage: Storage, sql: str, params: tuple[object, ...], batch: int) -> int:
    deleted = 0
    while True:
        _, count = await storage.execute_now(sql, params)
        deleted += max(count, 0)
        if count < batch:
            return deleted


async def _prune_news(storage: Storage, cutoff: int, batch: int) -> int:
    """Articles (and their FTS rows, by trigger) with their sources and coins, a batch at a
    time: the link tables are deleted by their own keys first, so none is left orphaned."""
    deleted = 0
    while True:

        def one(conn: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM news_articles INDEXED BY news_articles_time"
                    " WHERE published_ms < ? LIMIT ?",
                    [cutoff, batch],
                )
            ]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM news_article_sources WHERE article_id IN ({marks})", ids)
            coins = [row[0] for row in conn.execute("SELECT DISTINCT coin FROM news_article_coins")]
            for coin in coins:
                conn.execute(
                    "DELETE FROM news_article_coins WHERE coin = ? AND published_ms < ?"
                    f" AND article_id IN ({marks})",
                    [coin, cutoff, *ids],
                )
            conn.execute(f"DELETE FROM news_articles WHERE id IN ({marks})", ids)
            return len(ids)

        count = await storage.transact(one)
        deleted += count
        if count < batch:
            return deleted


async def prune_table(
    storage: Storage, rule: RetentionRule, before: datetime, batch: int = BATCH_ROWS
) -> int:
    """Delete `rule.table` rows older than `before`, `batch` rows per transaction; returns how
    many were deleted."""
    cutoff = epoch_ms(before)
    table, column = rule.table, rule.column
    if rule.by == "plain":
        _, count = await storage.execute_now(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))
        return max(count, 0)
    if rule.by == "news":
        return await _prune_news(storage, cutoff, batch)
    if rule.by == "symbol":
        symbols: list[str] = await storage.read(
            lambda db: [row[0] for row in db.execute(_CANDLE_SYMBOLS).fetchall()]
        )
        deleted = 0
        for symbol in symbols:
            deleted += await _batches(storage, _CANDLE_PRUNE, (symbol, cutoff, batch), batch)
        return deleted
    sql = (
        f"DELETE FROM {table} WHERE rowid IN"
        f" (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
    )
    return await _batches(storage, sql, (cutoff, batch), batch)


async def prune_tables(
    storage: Storage, days: dict[str, float], now: datetime, batch: int = BATCH_ROWS
) -> dict[str, int]:
    """Apply every rule whose setting (`days[rule.setting]`) is above 0; the rows deleted per
    table (tables with none left out)."""
    result: dict[str, int] = {}
    for rule in RETENTION_RULES:
        limit = days.get(rule.setting, 0.0)
        if limit <= 0:
            continue
        deleted = await prune_table(storage, rule, now - timedelta(days=limit), batch)
        if deleted:
            result[rule.table] = result.get(rule.table, 0) + deleted
    return result


async def prune_all(storage: Storage, settings: Settings, now: datetime) -> dict[str, int]:
    """One retention pass: raw ticks (`tick_retention_days`), then every rule's table; when
    anything was deleted, the freed pages go back to the file system. The rows deleted per
    table."""
    deleted: dict[str, int] = {}
    if settings.tick_retention_days > 0:
        cutoff = now - timedelta(days=settings.tick_retention_days)
        if ticks := await storage.prune_ticks(cutoff):
            deleted["price_ticks"] = ticks
    days = {rule.setting: float(getattr(settings, rule.setting)) for rule in RETENTION_RULES}
    deleted.update(await prune_tables(storage, days, now))
    if deleted:
        pages = await storage.reclaim_space()
        log.info("storage.pruned", deleted=deleted, pages_freed=pages)
    return deleted
