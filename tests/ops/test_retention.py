"""Retention: every growing table is pruned past its limit, in small batches, young rows kept,
and the database file shrinks afterwards (incremental auto-vacuum)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config import Settings
from gateway.config.environment import settings_from_env
from gateway.errors import ConfigError
from gateway.models import epoch_ms, utc_now
from gateway.storage import RETENTION_RULES, Storage, prune_all, prune_table

ATTEMPT = (
    "INSERT INTO connection_attempts (provider, endpoint, status, latency_ms, error_type, at_ms)"
    " VALUES (?, ?, 200, 1.0, NULL, ?)"
)
CANDLE = (
    "INSERT INTO candles_1m (symbol, provider, minute_ms, open, high, low, close, first_ms,"
    " last_ms) VALUES (?, 'p', ?, 1, 1, 1, 1, ?, ?)"
)
RUN = (
    "INSERT INTO schedule_runs (task, interval_s, expected_ms, actual_ms, outcome, reason)"
    " VALUES ('collector:x', 30, ?, ?, 'on_time', NULL)"
)


@pytest.fixture
def storage(running_storage: Storage) -> Storage:
    """On SQLite and on PostgreSQL (tests/conftest.py)."""
    return running_storage


async def select(storage: Storage, sql: str, *params: object) -> list[Any]:
    return await storage.read(lambda db: [tuple(r) for r in db.execute(sql, params).fetchall()])


async def count(storage: Storage, table: str) -> int:
    return int((await select(storage, f"SELECT count(*) FROM {table}"))[0][0])


async def test_pruned_database_shrinks_and_young_rows_stay(storage: Storage) -> None:
    if storage.engine != "sqlite":
        pytest.skip("SQLite only: the file shrinks (PostgreSQL's autovacuum reuses the space)")
    now = utc_now()
    old = epoch_ms(now - timedelta(days=40))
    young = epoch_ms(now - timedelta(days=1))
    padding = "x" * 400
    with trio.fail_after(30):
        for chunk in range(8):
            rows = [("p", f"/{padding}/{chunk}/{n}", old + n) for n in range(2_500)]
            await storage.write(ATTEMPT, rows)
        await storage.write(ATTEMPT, [("p", "/young", young)])
        await storage.write(
            CANDLE, [(f"S{n % 5}", old + n * 60_000, old, old) for n in range(3000)]
        )
        await storage.write(CANDLE, [("S0", young, young, young)])
        await storage.write(RUN, [(old + n, old + n) for n in range(3000)] + [(young, young)])
        await storage.committed()
        await storage.reclaim_space()  # checkpoint: the size below is the file's own
        before = storage.database_bytes()
        settings = Settings(candle_retention_days=30.0)
        deleted = await prune_all(storage, settings, utc_now())
        after = storage.database_bytes()
    assert deleted == {"connection_attempts": 20_000, "candles_1m": 3000, "schedule_runs": 3000}
    assert await count(storage, "connection_attempts") == 1
    assert await count(storage, "candles_1m") == 1
    assert await count(storage, "schedule_runs") == 1
    assert before > 8_000_000
    assert after < before / 4, (before, after)


async def test_batches_are_small_and_zero_keeps_everything(storage: Storage) -> None:
    old = epoch_ms(utc_now() - timedelta(days=400))
    with trio.fail_after(30):
        await storage.write(RUN, [(old + n, old + n) for n in range(250)])
        await storage.committed()
        commits = storage.commits
        rule = next(r for r in RETENTION_RULES if r.table == "schedule_runs")
        assert await prune_table(storage, rule, utc_now(), batch=100) == 250
        # Nothing to delete from a table kept forever (0 days).
        await storage.write(RUN, [(old, old)])
        await storage.committed()
        everything_kept = Settings(
            tick_retention_days=0, schedule_retention_days=0, candle_retention_days=0
        )
        assert "schedule_runs" not in await prune_all(storage, everything_kept, utc_now())
    assert await count(storage, "schedule_runs") == 1
    assert storage.commits >= commits  # the prune ran beside the writer, not instead of it


async def test_existing_database_is_put_in_incremental_vacuum_mode(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE keep (x)")
        conn.execute("INSERT INTO keep VALUES (1)")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    store = await Storage.open(path, Settings())
    await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert conn.execute("SELECT x FROM keep").fetchall() == [(1,)]


def test_retention_settings_from_the_environment() -> None:
    settings = settings_from_env(
        {"GATEWAY_CANDLE_RETENTION_DAYS": "0", "GATEWAY_METRICS_RETENTION_DAYS": "7.5"}
    )
    assert settings.candle_retention_days == 0
    assert settings.metrics_retention_days == 7.5
    defaults = Settings()
    assert (defaults.tick_retention_days, defaults.candle_retention_days) == (30, 365)
    assert (defaults.attempt_retention_days, defaults.rate_limit_retention_days) == (30, 30)
    assert defaults.metrics_retention_days == 90
    with pytest.raises(ConfigError, match="GATEWAY_NEWS_RETENTION_DAYS"):
        settings_from_env({"GATEWAY_NEWS_RETENTION_DAYS": "-1"})


async def test_old_news_goes_with_its_sources_coins_and_search_rows(storage: Storage) -> None:
    now = utc_now()
    rows = {1: epoch_ms(now - timedelta(days=400)), 2: epoch_ms(now - timedelta(days=2))}
    with trio.fail_after(30):
        for article, at in rows.items():
            await storage.execute_now(
                "INSERT INTO news_articles (id, url, title, summary, source, rank, published_ms,"
                " seen_ms, coins) VALUES (?, ?, ?, 'bitcoin news', 's', 1, ?, ?, 'BTC')",
                (article, f"https://n/{article}", f"title {article}", at, at),
            )
            await storage.execute_now(
                "INSERT INTO news_article_sources VALUES (?, 's', ?, ?, ?, ?)",
                (article, f"https://n/{article}", f"title {article}", at, at),
            )
            await storage.execute_now(
                "INSERT INTO news_article_coins VALUES ('BTC', ?, ?)", (at, article)
            )
        deleted = await prune_all(storage, Settings(), now)
    assert deleted == {"news_articles": 1}
    assert await select(storage, "SELECT id FROM news_articles") == [(2,)]
    assert await select(storage, "SELECT article_id FROM news_article_sources") == [(2,)]
    assert await select(storage, "SELECT article_id FROM news_article_coins") == [(2,)]
    search = "SELECT rowid FROM news_fts WHERE news_fts MATCH ?"  # FTS5, or PostgreSQL's tsvector
    assert await select(
        storage, f"SELECT id FROM news_articles WHERE id IN ({search})", "bitcoin"
    ) == [(2,)]
