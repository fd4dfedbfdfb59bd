"""The schema of the store's database, as an append-only list of migrations, and how it is applied.

Each `Migration` is a version, a name and the statements that make it; `migrate()` applies, in
order and each in a transaction of its own, every one not yet recorded in `schema_migrations`, and
refuses a database whose schema is newer than the newest one here. The tables themselves are
read and written by their own modules (`ticks` and the writer for price_ticks and candles_1m,
`provider_records`, `api_keys`, `candles`, `quarantine`, `news`, `whales`, `onchain`).

This module must never edit or reorder a migration that has shipped (append a new one instead),
and never commit a migration half applied: its statements and its record go in one transaction.
It opens no connection itself; `connection` hands it the writer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlite_utils import Database

from gateway.errors import StorageError
from gateway.models import utc_now
from gateway.store.dialect import postgres_ddl, table_keys

__all__ = ["MIGRATIONS", "Migration", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One schema change: its statements are applied, and recorded as `version`, together.

    `statements` are SQLite's; PostgreSQL runs them through `dialect.postgres_ddl` (types),
    except where the dialects differ: `postgresql` replaces statement `i` by its own form
    ("" drops it) and `postgresql_after` adds statements after them (`statements_for`).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    postgresql: tuple[tuple[int, str], ...] = ()
    postgresql_after: tuple[str, ...] = ()

    def statements_for(self, engine: str) -> tuple[str, ...]:
        """The statements of this migration on `engine` ("sqlite" or "postgresql")."""
        if engine == "sqlite":
            return self.statements
        replaced = dict(self.postgresql)
        chosen = [replaced.get(i, sql) for i, sql in enumerate(self.statements)]
        return tuple(postgres_ddl(sql) for sql in (*chosen, *self.postgresql_after) if sql)


# Append only; never edit a migration that has shipped. Versions count up from 1.
#
# price_ticks is WITHOUT ROWID: the natural key (symbol, provider, observed_ms) *is* the table's
# b-tree, so there is no hidden rowid b-tree plus a separate unique index to keep in step, the
# rows are small (well under the size where WITHOUT ROWID stops paying), and the queries that
# pick one provider (candles, latest tick) become range scans of the table itself. The second
# index serves queries across providers ordered by time (ticks_since, the provider choice).
MIGRATIONS: Final = (
    Migration(
        1,
        "create price_ticks",
        (
            """CREATE TABLE price_ticks (
                symbol TEXT NOT NULL,
                provider TEXT NOT NULL,
                observed_ms INTEGER NOT NULL,
                usd REAL NOT NULL,
                market_cap_usd REAL,
                volume_24h_usd REAL,
                change_24h_pct REAL,
                PRIMARY KEY (symbol, provider, observed_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX price_ticks_symbol_time ON price_ticks (symbol, observed_ms)",
        ),
    ),
    # The provider records (gateway.store.provider_records). Every time column is epoch
    # milliseconds; each table that is read by time has an index led by what the queries filter on.
    Migration(
        2,
        "provider records: attempts, failures, rate-limit usage, pools, rotations, alerts",
        (
            """CREATE TABLE connection_attempts (
                id INTEGER PRIMARY KEY,
                provider TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                status INTEGER,
                latency_ms REAL,
                error_type TEXT,
                at_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX connection_attempts_provider_time"
            " ON connection_attempts (provider, at_ms)",
            "CREATE INDEX connection_attempts_time ON connection_attempts (at_ms)",
            """CREATE TABLE failures (
                id INTEGER PRIMARY KEY,
                provider TEXT NOT NULL,
                error_type TEXT NOT NULL,
                message TEXT NOT NULL,
                http_status INTEGER,
                at_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX failures_provider_time ON failures (provider, at_ms)",
            "CREATE INDEX failures_time ON failures (at_ms)",
            """CREATE TABLE rate_limit_usage (
                provider TEXT NOT NULL,
                window TEXT NOT NULL,
                snapshot TEXT NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (provider, window)
            ) WITHOUT ROWID""",
            """CREATE TABLE providers (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                last_checked_ms INTEGER,
                last_error TEXT,
                updated_ms INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE pools (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                category TEXT NOT NULL,
                strategy TEXT NOT NULL,
                created_ms INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE pool_members (
                pool TEXT NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
                provider TEXT NOT NULL,
                priority INTEGER NOT NULL,
                weight REAL NOT NULL,
                PRIMARY KEY (pool, provider)
            ) WITHOUT ROWID""",
            """CREATE TABLE rotation_history (
                id INTEGER PRIMARY KEY,
                pool TEXT NOT NULL,
                from_provider TEXT,
                to_provider TEXT NOT NULL,
                reason TEXT NOT NULL,
                at_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX rotation_history_pool_time ON rotation_history (pool, at_ms)",
            "CREATE INDEX rotation_history_time ON rotation_history (at_ms)",
            """CREATE TABLE rotation_state (
                pool TEXT PRIMARY KEY,
                current_provider TEXT,
                updated_ms INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE alerts (
                id INTEGER PRIMARY KEY,
                severity TEXT NOT NULL,
                kind TEXT NOT NULL,
                message TEXT NOT NULL,
                provider TEXT,
                at_ms INTEGER NOT NULL,
                acknowledged INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX alerts_unacknowledged_time ON alerts (acknowledged, at_ms)",
        ),
    ),
    # API keys (gateway.store.api_keys): only the SHA-256 of a key is stored, found by its public
    # prefix. Revoked keys keep their row (ids are never reused; `keys list` shows them).
    # api_key_usage holds each key's requests per UTC day, saved periodically by
    # gateway.api.auth.control.
    Migration(
        3,
        "API keys and their daily usage",
        (
            """CREATE TABLE api_keys (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                tier TEXT NOT NULL,
                prefix TEXT NOT NULL UNIQUE,
                hash TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                last_used_ms INTEGER,
                revoked_ms INTEGER
            )""",
            """CREATE TABLE api_key_usage (
                key_id INTEGER NOT NULL REFERENCES api_keys (id),
                day TEXT NOT NULL,
                requests INTEGER NOT NULL,
                PRIMARY KEY (key_id, day)
            ) WITHOUT ROWID""",
        ),
    ),
    # One-minute candles per (symbol, provider), maintained by the writer in the same
    # transaction as the ticks they summarise, so candles of any interval of a minute or more
    # aggregate at most one row per minute instead of every tick (a stream at one tick per
    # second is 60x fewer rows). The INSERT … SELECT fills it from ticks already stored.
    Migration(
        4,
        "one-minute candles maintained on ingest",
        (
            """CREATE TABLE candles_1m (
                symbol TEXT NOT NULL,
                provider TEXT NOT NULL,
                minute_ms INTEGER NOT NULL,
                open REAL NOT NULL,
                high REAL NOT NULL,
                low REAL NOT NULL,
                close REAL NOT NULL,
                first_ms INTEGER NOT NULL,
                last_ms INTEGER NOT NULL,
                PRIMARY KEY (symbol, provider, minute_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX candles_1m_symbol_time ON candles_1m (symbol, minute_ms)",
            """INSERT INTO candles_1m
            SELECT DISTINCT symbol, provider, m,
                   first_value(usd) OVER w, max(usd) OVER w, min(usd) OVER w,
                   last_value(usd) OVER w, min(observed_ms) OVER w, max(observed_ms) OVER w
            FROM (SELECT *, observed_ms / 60000 * 60000 AS m FROM price_ticks)
            WINDOW w AS (PARTITION BY symbol, provider, m ORDER BY observed_ms
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)""",
        ),
        # PostgreSQL wants a name for the subquery.
        postgresql=(
            (
                2,
                """INSERT INTO candles_1m
            SELECT DISTINCT symbol, provider, m,
                   first_value(usd) OVER w, max(usd) OVER w, min(usd) OVER w,
                   last_value(usd) OVER w, min(observed_ms) OVER w, max(observed_ms) OVER w
            FROM (SELECT *, observed_ms / 60000 * 60000 AS m FROM price_ticks) AS t
            WINDOW w AS (PARTITION BY symbol, provider, m ORDER BY observed_ms
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)""",
            ),
        ),
    ),
    # Providers' own closed candles (from gap filling and `gateway backfill`), and which
    # [start, end) ranges of each (symbol, interval, provider) series have been asked for.
    # Coverage is what makes filling resumable and idempotent: a range a provider has answered
    # is never asked of it again, whether it returned candles or an honest nothing.
    Migration(
        5,
        "upstream candles and their coverage",
        (
            """CREATE TABLE upstream_candles (
                symbol TEXT NOT NULL,
                interval_s INTEGER NOT NULL,
                provider TEXT NOT NULL,
                open_ms INTEGER NOT NULL,
                open REAL NOT NULL,
                high REAL NOT NULL,
                low REAL NOT NULL,
                close REAL NOT NULL,
                volume REAL,
                PRIMARY KEY (symbol, interval_s, provider, open_ms)
            ) WITHOUT ROWID""",
            """CREATE INDEX upstream_candles_series_time
                ON upstream_candles (symbol, interval_s, open_ms)""",
            """CREATE TABLE candle_coverage (
                symbol TEXT NOT NULL,
                interval_s INTEGER NOT NULL,
                provider TEXT NOT NULL,
                start_ms INTEGER NOT NULL,
                end_ms INTEGER NOT NULL,
                PRIMARY KEY (symbol, interval_s, provider, start_ms)
            ) WITHOUT ROWID""",
        ),
    ),
    # Ticks the plausibility gate refused (gateway.prices.plausibility): kept for inspection,
    # never read by candles, consensus or subscriptions. `reference_usd` is what the gate
    # compared with (NULL when the price itself was not a positive number).
    Migration(
        6,
        "quarantined ticks",
        (
            """CREATE TABLE quarantined_ticks (
                id INTEGER PRIMARY KEY,
                symbol TEXT NOT NULL,
                provider TEXT NOT NULL,
                observed_ms INTEGER NOT NULL,
                usd REAL,
                reference_usd REAL,
                reason TEXT NOT NULL,
                quarantined_ms INTEGER NOT NULL
            )""",
            """CREATE INDEX quarantined_ticks_time ON quarantined_ticks (quarantined_ms)""",
            """CREATE INDEX quarantined_ticks_series
                ON quarantined_ticks (symbol, provider, quarantined_ms)""",
        ),
    ),
    # News (gateway.store.news): one row per story, however many sources carried it
    # (news_article_sources: each source's link and title, so a story is found again by any of
    # its canonical URLs or by a title near any of its sources' titles; `rank` is the provider
    # priority of the source whose title and link the story shows); the coins it mentions,
    # keyed for the `news(coin)` walk in time order; an external-content FTS5 index over title
    # and summary kept in step by triggers; and the daily Fear & Greed values per provider.
    # Pages are walked by (published_ms, id), never by offset, so a page boundary stays put
    # while new stories arrive.
    Migration(
        7,
        "news articles, their sources and coins, full-text search, fear & greed",
        (
            """CREATE TABLE news_articles (
                id INTEGER PRIMARY KEY,
                url TEXT NOT NULL,
                title TEXT NOT NULL,
                summary TEXT,
                source TEXT NOT NULL,
                rank INTEGER NOT NULL,
                published_ms INTEGER NOT NULL,
                seen_ms INTEGER NOT NULL,
                coins TEXT NOT NULL,
                sentiment_label TEXT,
                sentiment_score REAL,
                sentiment_confidence REAL,
                sentiment_model TEXT,
                scored_ms INTEGER
            )""",
            "CREATE INDEX news_articles_time ON news_articles (published_ms, id)",
            """CREATE TABLE news_article_sources (
                article_id INTEGER NOT NULL REFERENCES news_articles (id) ON DELETE CASCADE,
                source TEXT NOT NULL,
                url TEXT NOT NULL,
                title_key TEXT NOT NULL,
                published_ms INTEGER NOT NULL,
                seen_ms INTEGER NOT NULL,
                PRIMARY KEY (article_id, source)
            ) WITHOUT ROWID""",
            "CREATE INDEX news_article_sources_url ON news_article_sources (url)",
            """CREATE INDEX news_article_sources_title
                ON news_article_sources (length(title_key), published_ms)""",
            """CREATE TABLE news_article_coins (
                coin TEXT NOT NULL,
                published_ms INTEGER NOT NULL,
                article_id INTEGER NOT NULL REFERENCES news_articles (id) ON DELETE CASCADE,
                PRIMARY KEY (coin, published_ms, article_id)
            ) WITHOUT ROWID""",
            """CREATE VIRTUAL TABLE news_fts USING fts5(
                title, summary, content = 'news_articles', content_rowid = 'id',
                tokenize = 'unicode61 remove_diacritics 2'
            )""",
            """CREATE TRIGGER news_articles_fts_insert AFTER INSERT ON news_articles BEGIN
                INSERT INTO news_fts (rowid, title, summary)
                VALUES (new.id, new.title, new.summary);
            END""",
            """CREATE TRIGGER news_articles_fts_delete AFTER DELETE ON news_articles BEGIN
                INSERT INTO news_fts (news_fts, rowid, title, summary)
                VALUES ('delete', old.id, old.title, old.summary);
            END""",
            """CREATE TRIGGER news_articles_fts_update
                AFTER UPDATE OF title, summary ON news_articles BEGIN
                INSERT INTO news_fts (news_fts, rowid, title, summary)
                VALUES ('delete', old.id, old.title, old.summary);
                INSERT INTO news_fts (rowid, title, summary)
                VALUES (new.id, new.title, new.summary);
            END""",
            """CREATE TABLE fear_greed (
                provider TEXT NOT NULL,
                day_ms INTEGER NOT NULL,
                value INTEGER NOT NULL,
                classification TEXT NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (provider, day_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX fear_greed_day ON fear_greed (day_ms)",
        ),
        # PostgreSQL: no FTS5 table and triggers; a generated tsvector column (kept in step by
        # the database itself) with a GIN index, matched by dialect.postgres_sql's rewrite of
        # `news_fts MATCH`. The 'simple' configuration lower-cases and does not stem, as
        # unicode61 does (it keeps diacritics, which unicode61 removes).
        postgresql=((6, ""), (7, ""), (8, ""), (9, "")),
        postgresql_after=(
            """ALTER TABLE news_articles ADD COLUMN search tsvector GENERATED ALWAYS AS
                (to_tsvector('simple', title || ' ' || coalesce(summary, ''))) STORED""",
            "CREATE INDEX news_articles_search ON news_articles USING GIN (search)",
        ),
    ),
    # Chain data (gateway.store.chains): each chain's head as it advanced (one row per new head
    # block, pruned after the chain-data retention), the latest report of every node of a chain
    # (one row per node, replaced each polling round: block, lag, whether it is benched as
    # lagging, its error), and fee tiers per chain as they were observed (pruned likewise).
    Migration(
        8,
        "chain heads, node heads, gas prices",
        (
            """CREATE TABLE chain_heads (
                chain TEXT NOT NULL,
                observed_ms INTEGER NOT NULL,
                block_number INTEGER NOT NULL,
                provider TEXT NOT NULL,
                lag_blocks INTEGER NOT NULL,
                PRIMARY KEY (chain, observed_ms)
            ) WITHOUT ROWID""",
            """CREATE TABLE chain_node_heads (
                chain TEXT NOT NULL,
                provider TEXT NOT NULL,
                block_number INTEGER,
                lag_blocks INTEGER,
                lagging INTEGER NOT NULL,
                error TEXT,
                observed_ms INTEGER NOT NULL,
                PRIMARY KEY (chain, provider)
            ) WITHOUT ROWID""",
            """CREATE TABLE gas_prices (
                chain TEXT NOT NULL,
                observed_ms INTEGER NOT NULL,
                provider TEXT NOT NULL,
                slow REAL NOT NULL,
                standard REAL NOT NULL,
                fast REAL NOT NULL,
                base_fee REAL,
                unit TEXT NOT NULL,
                method TEXT NOT NULL,
                block_number INTEGER,
                PRIMARY KEY (chain, observed_ms, provider)
            ) WITHOUT ROWID""",
        ),
    ),
    # Whale transfers, explorer statistics, DEX pools and volumes, stored TVL
    # (gateway.store.whales, gateway.store.onchain). A whale transfer is keyed by (chain, hash,
    # log_index), log_index -1 for a transaction's own value; `block_hash` is the block it was
    # seen in, and `removed` is set when a reorg replaced that block (the row is kept, so it is
    # revived, not duplicated, if the transfer comes back in the new branch). DEX pools and
    # volumes hold each provider's latest snapshot; TVL is one row per (scope, UTC day), so
    # `tvlHistory` has a history of its own that outlives an upstream outage and a restart.
    Migration(
        9,
        "whale transactions, network statistics, DEX pools and volumes, daily TVL",
        (
            """CREATE TABLE whale_transactions (
                chain TEXT NOT NULL,
                hash TEXT NOT NULL,
                log_index INTEGER NOT NULL,
                block_number INTEGER,
                block_hash TEXT,
                from_address TEXT NOT NULL,
                to_address TEXT NOT NULL,
                from_label TEXT,
                to_label TEXT,
                asset TEXT NOT NULL,
                amount REAL NOT NULL,
                amount_usd REAL NOT NULL,
                price_usd REAL,
                at_ms INTEGER NOT NULL,
                provider TEXT NOT NULL,
                removed INTEGER NOT NULL DEFAULT 0,
                recorded_ms INTEGER NOT NULL,
                PRIMARY KEY (chain, hash, log_index)
            )""",
            "CREATE INDEX whale_transactions_time ON whale_transactions (at_ms)",
            "CREATE INDEX whale_transactions_block ON whale_transactions (chain, block_hash)",
            """CREATE TABLE network_stats (
                chain TEXT NOT NULL,
                provider TEXT NOT NULL,
                metric TEXT NOT NULL,
                observed_ms INTEGER NOT NULL,
                value REAL NOT NULL,
                PRIMARY KEY (chain, provider, metric, observed_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX network_stats_time ON network_stats (observed_ms)",
            """CREATE TABLE dex_pools (
                provider TEXT NOT NULL,
                pool_id TEXT NOT NULL,
                chain TEXT NOT NULL,
                dex TEXT NOT NULL,
                pair TEXT NOT NULL,
                tvl_usd REAL,
                volume_24h_usd REAL,
                observed_ms INTEGER NOT NULL,
                PRIMARY KEY (provider, pool_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX dex_pools_chain_tvl ON dex_pools (chain, tvl_usd)",
            """CREATE TABLE dex_volumes (
                provider TEXT NOT NULL,
                dex TEXT NOT NULL,
                name TEXT NOT NULL,
                chains TEXT NOT NULL,
                volume_24h_usd REAL,
                change_1d_pct REAL,
                observed_ms INTEGER NOT NULL,
                PRIMARY KEY (provider, dex)
            ) WITHOUT ROWID""",
            """CREATE TABLE tvl_daily (
                scope TEXT NOT NULL,
                day_ms INTEGER NOT NULL,
                tvl_usd REAL NOT NULL,
                provider TEXT NOT NULL,
                fetched_ms INTEGER NOT NULL,
                PRIMARY KEY (scope, day_ms)
            ) WITHOUT ROWID""",
            """CREATE TABLE protocol_tvl_daily (
                slug TEXT NOT NULL,
                day_ms INTEGER NOT NULL,
                name TEXT NOT NULL,
                tvl_usd REAL NOT NULL,
                provider TEXT NOT NULL,
                PRIMARY KEY (slug, day_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX protocol_tvl_daily_day ON protocol_tvl_daily (day_ms)",
        ),
    ),
    # Operations (gateway.store.operations): one row per slot of every collector job (on time,
    # late by `delay`, or skipped with a reason) for the `schedule` query, and a system metrics
    # snapshot a minute for `systemMetrics`. Both are pruned by the retention task through their
    # time columns (an index, and the rowid, keep its batched deletes cheap).
    Migration(
        10,
        "schedule runs, system metrics",
        (
            """CREATE TABLE schedule_runs (
                id INTEGER PRIMARY KEY,
                task TEXT NOT NULL,
                interval_s REAL NOT NULL,
                expected_ms INTEGER NOT NULL,
                actual_ms INTEGER,
                outcome TEXT NOT NULL,
                reason TEXT
            )""",
            "CREATE INDEX schedule_runs_task_time ON schedule_runs (task, expected_ms)",
            "CREATE INDEX schedule_runs_time ON schedule_runs (expected_ms)",
            """CREATE TABLE system_metrics (
                at_ms INTEGER PRIMARY KEY,
                cpu_pct REAL,
                rss_bytes INTEGER,
                open_fds INTEGER,
                threads INTEGER,
                subscribers INTEGER NOT NULL,
                websockets INTEGER NOT NULL,
                write_queue INTEGER NOT NULL,
                dropped_rows INTEGER NOT NULL,
                database_bytes INTEGER NOT NULL
            )""",
        ),
    ),
    # Fencing (Storage.fence): the highest leader token that has written. A batch written under
    # a token raises it in the same transaction, or finds a newer one and rolls back, so a
    # deposed leader's writes fail instead of interleaving with its successor's.
    Migration(
        11,
        "write fence",
        (
            """CREATE TABLE write_fence (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                token INTEGER NOT NULL
            )""",
            "INSERT INTO write_fence (id, token) VALUES (1, 0)",
        ),
    ),
)

for _migration in MIGRATIONS:
    table_keys(_migration.statements)


def migrate(db: Database) -> None:
    """Apply, in order, each migration not yet recorded in schema_migrations."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    newest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    known = MIGRATIONS[-1].version
    if newest is not None and newest > known:
        raise StorageError(f"database schema version {newest} is newer than ours ({known})")
    for migration in MIGRATIONS:
        # IMMEDIATE takes the write lock before the check, so two processes opening the same
        # file at once cannot both apply the same migration.
        db.execute("BEGIN IMMEDIATE")
        try:
            done = "SELECT 1 FROM schema_migrations WHERE version = ?"
            if db.execute(done, [migration.version]).fetchone() is None:
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    [migration.version, migration.name, utc_now().isoformat()],
                )
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
