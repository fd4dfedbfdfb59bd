"""The schema of the store's database, as an append-only list of migrations, and how it is applied.

Each `Migration` is a version, a name and the statements that make it; `migrate()` applies, in
order and each in a transaction of its own, every one not yet recorded in `schema_migrations`, and
refuses a database whose schema is newer than the newest one here. The tables themselves are
read and written by their own modules (`ticks` and the writer for price_ticks and candles_1m,
`provider_records`, `api_keys`, `candles`).

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

__all__ = ["MIGRATIONS", "Migration", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One schema change: its statements are applied, and recorded as `version`, together."""

    version: int
    name: str
    statements: tuple[str, ...]


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
)


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
