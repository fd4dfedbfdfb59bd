"""SQLite history of price ticks: migrations, the single batching writer, and read queries.

One `Storage` owns one database file in WAL mode. Writes go through a bounded queue to a single
writer task (`run()`), which commits them in batches, one transaction per batch; a
`write_ticks()` call returns only once its batch is committed, so "acknowledged" means "on
disk" (with `synchronous=NORMAL`: safe against a crash of the process, not of the machine).
Reads use a small pool of separate, read-only connections, so they never wait for the writer.

This module must never run SQLite on the event loop thread: every call goes through
`trio.to_thread.run_sync`. Connections are opened with `check_same_thread=False` because a trio
worker thread is not a fixed thread; each connection is instead used by one thread at a time,
guaranteed by a `CapacityLimiter` (one for the writer connection, one per reader in the pool).
It must never let the write queue grow without bound: a full queue makes producers wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from math import ceil, isfinite
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog
import trio
from sqlite_utils import Database

from gateway.config import SECONDS, Settings
from gateway.errors import BadUserInput, StorageError
from gateway.models import Candle, PriceTick, epoch_ms, from_epoch_ms, utc_now

__all__ = ["Storage"]

_T = TypeVar("_T")
log = structlog.get_logger(__name__)
_Row = tuple[str, str, int, float, float | None, float | None, float | None]

_READERS: Final = 4  # concurrent read queries; more would only contend for the same disk
_BUSY_TIMEOUT_MS: Final = 5000  # another process holding the lock: wait this long, then fail
_FLUSH_TIMEOUT: Final = 5 * SECONDS  # shutdown: time granted to commit what is still queued


@dataclass(frozen=True)
class _Migration:
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
_MIGRATIONS: Final = (
    _Migration(
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
    _Migration(
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
    # api_key_usage holds each key's requests per UTC day, saved periodically by gateway.api.auth.
    _Migration(
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
    _Migration(
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
    _Migration(
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
)

_COLUMNS = "symbol, provider, observed_ms, usd, market_cap_usd, volume_24h_usd, change_24h_pct"

# Folds one tick into its minute's candle. Open and close move only for a strictly earlier or
# later tick, so writing the same tick twice (it is ignored in price_ticks) changes nothing.
_CANDLE_UPSERT_SQL: Final = """
INSERT INTO candles_1m (symbol, provider, minute_ms, open, high, low, close, first_ms, last_ms)
VALUES (?1, ?2, ?3 / 60000 * 60000, ?4, ?4, ?4, ?4, ?3, ?3)
ON CONFLICT (symbol, provider, minute_ms) DO UPDATE SET
    open = CASE WHEN excluded.first_ms < first_ms THEN excluded.open ELSE open END,
    first_ms = min(first_ms, excluded.first_ms),
    close = CASE WHEN excluded.last_ms > last_ms THEN excluded.close ELSE close END,
    last_ms = max(last_ms, excluded.last_ms),
    high = max(high, excluded.high),
    low = min(low, excluded.low)
"""

# Candles of a whole number of minutes, from candles_1m: same rules as _CANDLES_SQL.
_CANDLES_FROM_MINUTES_SQL: Final = """
WITH chosen AS (
    SELECT provider FROM candles_1m INDEXED BY candles_1m_symbol_time
    WHERE symbol = :symbol AND minute_ms >= :start AND minute_ms < :end
    GROUP BY provider ORDER BY count(*) DESC, provider LIMIT 1
), bucket AS (
    SELECT minute_ms / :width AS n, min(minute_ms) AS first_minute, max(minute_ms) AS last_minute,
           max(high) AS high, min(low) AS low, count(*) AS minutes
    FROM candles_1m
    WHERE symbol = :symbol AND provider = (SELECT provider FROM chosen)
      AND minute_ms >= :start AND minute_ms < :end
    GROUP BY n
)
SELECT b.n, o.open, b.high, b.low, c.close, b.minutes, o.provider
FROM bucket AS b
JOIN candles_1m AS o ON o.symbol = :symbol AND o.provider = (SELECT provider FROM chosen)
                     AND o.minute_ms = b.first_minute
JOIN candles_1m AS c
  ON c.symbol = :symbol AND c.provider = o.provider AND c.minute_ms = b.last_minute
ORDER BY b.n
"""
_INSERT_SQL: Final = f"INSERT OR IGNORE INTO price_ticks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

# Loose index scan: hop from provider to provider inside each symbol (one primary-key seek per
# hop), then seek the newest row of each pair. Cost grows with providers, not with history.
_LATEST_SQL: Final = f"""
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
_SYMBOLS_SQL: Final = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM price_ticks
    UNION ALL
    SELECT (SELECT min(symbol) FROM price_ticks WHERE symbol > s.symbol) FROM s
    WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL
"""

_PRUNE_SQL: Final = """
DELETE FROM price_ticks WHERE (symbol, provider, observed_ms) IN (
    SELECT symbol, provider, observed_ms FROM price_ticks INDEXED BY price_ticks_symbol_time
    WHERE symbol = ?1 AND observed_ms < ?2 LIMIT ?3
)
"""

_SINCE_SQL: Final = f"""
SELECT {_COLUMNS} FROM price_ticks
WHERE symbol IN (SELECT value FROM json_each(:symbols)) AND observed_ms > :since
ORDER BY observed_ms, provider, symbol
LIMIT :limit
"""

# One statement, so the provider choice and the candles come from the same snapshot. Open and
# close are found by joining back on the primary key at each bucket's first and last instant.
# INDEXED BY: without ANALYZE statistics the planner would rather walk the primary key on
# `symbol` alone (it yields providers already grouped), which reads the symbol's whole history.
_CANDLES_SQL: Final = """
WITH chosen AS (
    SELECT provider FROM price_ticks INDEXED BY price_ticks_symbol_time
    WHERE symbol = :symbol AND observed_ms >= :start AND observed_ms < :end
    GROUP BY provider ORDER BY count(*) DESC, provider LIMIT 1
), bucket AS (
    SELECT observed_ms / :width AS n, min(observed_ms) AS first_ms, max(observed_ms) AS last_ms,
           max(usd) AS high, min(usd) AS low,
           count(DISTINCT (observed_ms % :width) / 60000) AS minutes
    FROM price_ticks
    WHERE symbol = :symbol AND provider = (SELECT provider FROM chosen)
      AND observed_ms >= :start AND observed_ms < :end
    GROUP BY n
)
SELECT b.n, o.usd, b.high, b.low, c.usd, b.minutes, o.provider
FROM bucket AS b
JOIN price_ticks AS o ON o.symbol = :symbol AND o.provider = (SELECT provider FROM chosen)
                      AND o.observed_ms = b.first_ms
JOIN price_ticks AS c
  ON c.symbol = :symbol AND c.provider = o.provider AND c.observed_ms = b.last_ms
ORDER BY b.n
"""


def _query_ms(moment: datetime, argument: str) -> int:
    try:
        return epoch_ms(moment)
    except ValueError:
        raise BadUserInput(f"{argument} must carry a timezone (UTC)") from None


def _row(tick: PriceTick) -> _Row:
    if not isfinite(tick.usd):
        raise ValueError(f"{tick.provider} {tick.symbol}: price {tick.usd!r} is not a number")
    observed_ms = epoch_ms(tick.observed_at)
    return (tick.symbol, tick.provider, observed_ms, tick.usd, tick.market_cap_usd,
            tick.volume_24h_usd, tick.change_24h_pct)  # fmt: skip


def _tick(row: Sequence[Any]) -> PriceTick:
    symbol, provider, ms, usd, cap, volume, change = row
    return PriceTick(symbol, usd, provider, from_epoch_ms(ms), cap, volume, change)


def _connect(path: Path, *, writer: bool) -> Database:
    # isolation_level=None: no implicit transactions; every transaction here is explicit.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db = Database(conn, execute_plugins=False)
        if writer:
            db.enable_wal()
            if db.journal_mode != "wal":
                raise StorageError(f"{path}: the filesystem does not support WAL mode")
            conn.execute("PRAGMA synchronous = NORMAL")
        else:
            conn.execute("PRAGMA query_only = 1")
        return db
    except BaseException:
        conn.close()
        raise


def _migrate(db: Database) -> None:
    """Apply, in order, each migration not yet recorded in schema_migrations."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    newest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    known = _MIGRATIONS[-1].version
    if newest is not None and newest > known:
        raise StorageError(f"database schema version {newest} is newer than ours ({known})")
    for migration in _MIGRATIONS:
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


def _close_all(connections: list[Database]) -> None:
    for db in connections:
        db.close()


def _open_sync(path: Path) -> tuple[Database, list[Database]]:
    opened: list[Database] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path, writer=True)
        opened.append(writer)
        _migrate(writer)
        readers = [_connect(path, writer=False) for _ in range(_READERS)]
        return writer, readers
    except (OSError, sqlite3.Error) as exc:
        _close_all(opened)
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    except BaseException:
        _close_all(opened)
        raise


@dataclass(eq=False)
class _Request:
    """A slice of one write call waiting in the queue; `done` is set once it is decided.

    `sql` is the statement each row is executed with (ticks use `_INSERT_SQL`; the provider
    records of gateway.store.provider_records use their own); a batch groups requests by statement.
    """

    rows: list[Sequence[Any]]
    queued_at: float
    sql: str = _INSERT_SQL
    done: trio.Event = field(default_factory=trio.Event)
    error: StorageError | None = None


class Storage:
    """The tick history: one writer task (`run()`), many concurrent readers.

    Open with `await Storage.open(path, settings)`, start `run()` in a nursery with
    `await nursery.start(storage.run)`, and call `aclose()` after it has returned.
    `commits`, `rows_written` and `queued_rows` are there for metrics.
    """

    def __init__(
        self, path: Path, settings: Settings, writer: Database, readers: list[Database]
    ) -> None:
        self.path = path
        self.commits = 0  # batches committed
        self.rows_written = 0  # tick rows actually inserted (duplicates excluded)
        self.dropped_rows = 0  # best-effort rows refused by write_nowait() on a full queue
        self._batch_rows = settings.storage_batch_rows
        self._batch_seconds = settings.storage_batch_seconds
        self._capacity = settings.storage_queue
        self._chunk = min(self._batch_rows, self._capacity)
        self._writer = writer
        self._write_limiter = trio.CapacityLimiter(1)
        self._idle_readers = readers
        self._read_limiter = trio.CapacityLimiter(len(readers))
        self._queue: deque[_Request] = deque()
        self._in_flight: _Request | None = None  # the newest request of the batch committing
        self._queued_rows = 0  # queued plus being committed: what the bound applies to
        self._room = trio.lowlevel.ParkingLot()  # producers waiting for queue space
        self._work = trio.lowlevel.ParkingLot()  # the writer waiting for rows
        self._state = "idle"  # idle (accepts, not yet draining) | running | stopped
        self._closed = False

    @classmethod
    async def open(cls, path: Path, settings: Settings) -> Storage:
        """Create the parent folder and the database if needed, enable WAL, apply migrations.

        Raises StorageError, naming the path and the cause, if any of that fails.
        """
        writer, readers = await trio.to_thread.run_sync(_open_sync, path)
        return cls(path, settings, writer, readers)

    @property
    def queued_rows(self) -> int:
        """Rows accepted by write_ticks() and not yet committed (never above storage_queue)."""
        return self._queued_rows

    # -- writing -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The single writer: commit queued ticks in batches until cancelled.

        A batch is committed once it holds `storage_batch_rows` rows, or `storage_batch_seconds`
        after its first row was queued. On cancellation, everything already queued is committed
        first (shielded, for at most a few seconds); whatever is still left then fails with
        StorageError in its write_ticks() call, and later calls fail at once.
        """
        if self._closed:
            raise StorageError(f"{self.path}: storage is closed")
        if self._state == "running":
            raise RuntimeError("Storage.run() is already running")
        self._state = "running"
        try:
            task_status.started()
            while True:
                while not self._queue:
                    await self._work.park()
                with trio.move_on_at(self._queue[0].queued_at + self._batch_seconds):
                    while self._queued_rows < self._batch_rows:
                        await self._work.park()
                await self._commit_batch()
        finally:
            self._state = "stopped"  # refuse new rows: the flush must end
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(_FLUSH_TIMEOUT):
                    while self._queue:
                        await self._commit_batch()
            finally:  # nobody may be left waiting for a writer that is gone
                self._fail_queued("the writer stopped before these ticks were committed")

    async def write_ticks(self, ticks: Sequence[PriceTick]) -> None:
        """Store ticks; returns once the transaction holding them has committed.

        Waits for room while the queue holds `storage_queue` rows (backpressure). A tick whose
        (provider, symbol, observed_at to the millisecond) is already stored is ignored: the first
        write wins. Raises StorageError if the writer has stopped or the commit failed, and
        ValueError for a tick with a naive `observed_at` or a non-finite price (SQLite would
        store NaN as NULL and fail the whole batch, other callers' ticks included). A call
        cancelled after its ticks were queued still has them committed: writes are idempotent.
        """
        for request in await self.queue_ticks(ticks):
            await self._settled(request)

    async def queue_ticks(
        self, ticks: Sequence[PriceTick], *, queued: Callable[[], None] | None = None
    ) -> list[_Request]:
        """Queue ticks for the writer and return without waiting for their commit (only for
        room, while the queue is full). The same validation as write_ticks; a commit that
        fails later is logged by the writer (`storage.commit_failed`).

        For ingest: a stream must not wait a whole batch window per message, or one stream
        could publish only a few messages a second (bench/stream_latency.py found 4/s with the
        default 0.25 s batches). `queued()` is called once every tick is in the queue: ingest
        publishes live ticks there, so whoever sees a tick live can wait for it with
        `committed()`.
        """
        rows = [_row(tick) for tick in ticks]  # validate all before queueing any
        requests = await self._enqueue(_INSERT_SQL, rows)
        if queued is not None:
            queued()
        return requests

    async def write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute `sql` once per row through the batching writer; returns once committed.

        The general form of write_ticks(), for the other tables (see
        gateway.store.provider_records): the same queue bound, batching, shutdown flush and error
        rules apply.
        """
        for request in await self._enqueue(sql, rows):
            await self._settled(request)

    async def _enqueue(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[_Request]:
        """Queue rows in chunks, waiting for room as needed; StorageError once stopped."""
        requests: list[_Request] = []
        iterator = iter(rows)
        while chunk := list(islice(iterator, self._chunk)):
            self._check_accepting()
            while self._queued_rows + len(chunk) > self._capacity:
                await self._room.park()
                self._check_accepting()
            request = _Request(chunk, trio.current_time(), sql)
            self._queue.append(request)
            self._queued_rows += len(chunk)
            self._work.unpark_all()
            requests.append(request)
        if not requests:
            self._check_accepting()
            await trio.lowlevel.checkpoint()
        return requests

    @staticmethod
    async def _settled(request: _Request) -> None:
        await request.done.wait()
        if request.error is not None:
            raise request.error

    def write_nowait(self, sql: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Queue rows without waiting for room or for the commit (for bookkeeping written from
        synchronous hooks, such as upstream attempts). Returns False, writing nothing, when the
        queue is full or the writer is not running: such records are best-effort, never a
        reason to block a request."""
        rows = list(rows)
        if not rows or self._closed or self._state == "stopped":
            return False
        if self._queued_rows + len(rows) > self._capacity:
            self.dropped_rows += len(rows)
            return False
        self._queue.append(_Request(rows, trio.current_time(), sql))
        self._queued_rows += len(rows)
        self._work.unpark_all()
        return True

    async def committed(self) -> None:
        """Return once every write queued before this call is committed (or has failed).

        For readers that must see what was already on its way to the store: ingest queues a
        tick before publishing it live (`queue_ticks(queued=…)`), so a replaying subscriber that
        subscribes to the live bus, then calls this, then reads, finds every tick either in its
        live buffer or in the store. Batches commit in queue order, so waiting for the newest
        request is waiting for all of them.
        """
        newest = self._queue[-1] if self._queue else self._in_flight
        if newest is not None:
            await newest.done.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _check_accepting(self) -> None:
        if self._closed or self._state == "stopped":
            raise StorageError(f"{self.path}: the storage writer is not running")

    async def _commit_batch(self) -> None:
        """Commit queued requests, oldest first, up to `storage_batch_rows` rows in all."""
        batch = [self._queue.popleft()]
        size = len(batch[0].rows)
        while self._queue and size + len(self._queue[0].rows) <= self._batch_rows:
            batch.append(self._queue.popleft())
            size += len(batch[-1].rows)
        self._in_flight = batch[-1]
        error: StorageError | None = None
        try:
            inserted = await trio.to_thread.run_sync(
                self._insert_sync, batch, limiter=self._write_limiter
            )
        except StorageError as exc:
            error = exc
            log.error("storage.commit_failed", rows=size, error=str(exc))
        except BaseException:
            # Cancelled before the thread started (once started it cannot be cancelled), or an
            # unexpected error that atomic() rolled back: nothing was written, so the batch
            # goes back to the head of the queue for the shutdown flush (or _fail_queued).
            self._queue.extendleft(reversed(batch))
            self._in_flight = None
            raise
        else:
            self.commits += 1
            self.rows_written += inserted
        for request in batch:
            request.error = error
            request.done.set()
        self._in_flight = None
        self._queued_rows -= size
        self._room.unpark_all()

    def _insert_sync(self, batch: list[_Request]) -> int:
        """One transaction for the whole batch; returns the tick rows actually inserted."""
        inserted = 0
        try:
            with self._writer.atomic():
                for request in batch:
                    cursor = self._writer.conn.executemany(request.sql, request.rows)
                    if request.sql is _INSERT_SQL:
                        inserted += cursor.rowcount
                        self._writer.conn.executemany(
                            _CANDLE_UPSERT_SQL, [row[:4] for row in request.rows]
                        )
            return inserted
        except sqlite3.Error as exc:
            rows = sum(len(request.rows) for request in batch)
            raise StorageError(f"cannot write {rows} rows to {self.path}: {exc}") from exc

    def _fail_queued(self, reason: str) -> None:
        for request in self._queue:
            request.error = StorageError(f"{self.path}: {reason}")
            request.done.set()
            self._queued_rows -= len(request.rows)  # a batch being committed stays counted
        self._queue.clear()
        self._room.unpark_all()  # producers waiting for room now see the writer has stopped

    async def transact(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work(conn)` on the writer connection in one transaction of its own, outside the
        batch queue, and return its result. For rare writes that must be atomic across
        statements or whose caller needs a new row's id at once (pools, alerts)."""
        if self._closed or self._state == "stopped":
            raise StorageError(f"{self.path}: the storage writer is not running")

        def run() -> _T:
            try:
                with self._writer.atomic():
                    return work(self._writer.conn)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write to {self.path}: {exc}") from exc

        return await trio.to_thread.run_sync(run, limiter=self._write_limiter)

    async def execute_now(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int]:
        """One statement via `transact`; returns (lastrowid, rowcount)."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            cursor = conn.execute(sql, list(params))
            return cursor.lastrowid or 0, cursor.rowcount

        return await self.transact(run)

    # -- reading -------------------------------------------------------------------------------

    async def read(self, query: Callable[[Database], _T]) -> _T:
        """Run `query(db)` on an idle read-only connection in a worker thread."""
        return await self._read(query)

    async def _read(self, query: Callable[[Database], _T]) -> _T:
        """Run `query` on an idle reader connection in a worker thread."""
        if self._closed:
            raise StorageError(f"{self.path}: storage is closed")
        async with self._read_limiter:
            db = self._idle_readers.pop()
            try:
                return await trio.to_thread.run_sync(self._guarded, query, db)
            finally:
                self._idle_readers.append(db)

    def _guarded(self, query: Callable[[Database], _T], db: Database) -> _T:
        try:
            return query(db)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read {self.path}: {exc}") from exc

    async def latest_ticks(self, symbols: Sequence[str]) -> list[PriceTick]:
        """For each symbol, the newest tick of each provider; ordered by symbol, then provider."""
        params = {"symbols": json.dumps(list(symbols))}
        rows = await self._read(lambda db: db.execute(_LATEST_SQL, params).fetchall())
        return [_tick(row) for row in rows]

    async def ticks_since(
        self, symbols: Sequence[str], since: datetime, limit: int = 10_000
    ) -> list[PriceTick]:
        """Ticks observed strictly after `since`, oldest first (ties by provider), `limit` at most.

        Raises BadUserInput for a negative limit or a naive `since`.
        """
        if limit < 0:
            raise BadUserInput(f"limit must not be negative, got {limit}")
        params = {
            "symbols": json.dumps(list(symbols)),
            "since": _query_ms(since, "since"),
            "limit": limit,
        }
        rows = await self._read(lambda db: db.execute(_SINCE_SQL, params).fetchall())
        return [_tick(row) for row in rows]

    async def candles(
        self,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        now: datetime | None = None,
    ) -> list[Candle]:
        """OHLC candles of `symbol` from the ticks in [start, end), oldest first, built in SQL.

        Candles never mix providers: they use the one provider with the most ticks (for whole
        minutes: the most minutes with ticks) for the symbol in the range (ties go to the
        alphabetically first), so a change of provider
        between buckets cannot fake a price jump. Buckets are aligned to multiples of the
        interval since the epoch. A candle is `complete` once its interval has ended (by `now`,
        default the current time) and, for intervals of a minute or more, every minute of it
        holds at least one tick; a bucket cut by `start` or `end` counts as holed.
        `volume` is None: ticks carry 24-hour volume, not per-interval volume.

        Intervals of whole minutes are read from the one-minute candles of every minute that
        [start, end) touches (`start` rounded down, `end` up, to the minute): 60x fewer rows
        than a one-tick-per-second stream, and still there after old raw ticks are pruned. So
        a bucket cut by a bound mid-minute may hold up to 59 s of ticks beyond it; such a
        bucket is never `complete`.
        """
        if interval_seconds < 1:
            raise BadUserInput(f"interval must be at least 1 second, got {interval_seconds}")
        width = interval_seconds * 1000
        now_ms = _query_ms(now if now is not None else utc_now(), "now")
        start_ms, end_ms = _query_ms(start, "start"), _query_ms(end, "end")
        params = {"symbol": symbol, "start": start_ms, "end": end_ms, "width": width}
        # Whole minutes: from candles_1m, one row per minute instead of one per tick
        # (bench/history.py: 100 ms -> 10 ms for a day at M5 of a one-tick-per-second stream).
        # Anything finer is computed from the ticks.
        if width % 60_000 == 0:
            sql = _CANDLES_FROM_MINUTES_SQL
            params["start"] = start_ms // 60_000 * 60_000
            params["end"] = -(-end_ms // 60_000) * 60_000
        else:
            sql = _CANDLES_SQL
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
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

    async def prune_ticks(self, before: datetime, batch: int = 20_000) -> int:
        """Delete raw ticks observed before `before`, `batch` rows per transaction (so the
        writer and readers are never held up for long), symbol by symbol through the time
        index. The one-minute candles are kept. Returns the rows deleted."""
        cutoff = _query_ms(before, "before")
        symbols: list[str] = await self._read(
            lambda db: [row[0] for row in db.execute(_SYMBOLS_SQL).fetchall()]
        )
        deleted = 0
        for symbol in symbols:
            while True:
                _, count = await self.execute_now(_PRUNE_SQL, (symbol, cutoff, batch))
                deleted += count
                if count < batch:
                    break
        return deleted

    async def tick_count(self) -> int:
        """How many ticks are stored."""
        count: int = await self._read(
            lambda db: db.execute("SELECT count(*) FROM price_ticks").fetchone()[0]
        )
        return count

    async def ping(self) -> None:
        """Raise StorageError unless the database answers a query (for readiness checks)."""
        await self._read(
            lambda db: db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        )

    def database_bytes(self) -> int:
        """Bytes on disk: the database file plus its write-ahead log."""
        total = 0
        for name in (str(self.path), f"{self.path}-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(name).st_size
        return total

    async def aclose(self) -> None:
        """Close every connection; call after run() has returned. Idempotent.

        Waits for reads in flight. Ticks still queued (run() was never started) fail with
        StorageError in their write_ticks() calls.
        """
        if self._closed:
            return
        self._closed = True
        self._fail_queued("storage closed before these ticks were committed")
        with trio.CancelScope(shield=True), trio.move_on_after(_FLUSH_TIMEOUT):
            for _ in range(int(self._read_limiter.total_tokens)):
                await self._read_limiter.acquire_on_behalf_of(object())
            await trio.to_thread.run_sync(
                _close_all, [self._writer, *self._idle_readers], limiter=self._write_limiter
            )
