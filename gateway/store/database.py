"""The history: `Storage`, the one object the rest of the gateway writes and reads the database
through, on SQLite (the default) or PostgreSQL (`Storage.open("postgresql://…")`,
gateway.store.postgres; the same statements, rewritten by gateway.store.dialect).

One `Storage` owns one database file in WAL mode (or, on PostgreSQL, one writer connection and
a reader pool). Writes go through a bounded queue to a single
writer task (`run()`), which commits them in batches, one transaction per batch; a
`write_ticks()` call returns only once its batch is committed, so "acknowledged" means "on
disk" (with `synchronous=NORMAL`: safe against a crash of the process, not of the machine).
Reads use a small pool of separate, read-only connections, so they never wait for the writer.

`Storage` is a facade: `connection` opens the file (pragmas, WAL, migrations from `migrations`,
the reader pool), `writer` owns the queue and the commits, `ticks` holds the SQL and row
conversion of price_ticks and candles_1m. This module must never run the database on the
event loop thread (its parts run every call in a worker thread) and never let the write queue
grow without bound: a full queue makes producers wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import trio
from sqlite_utils import Database

from gateway.config import Settings
from gateway.errors import BadUserInput
from gateway.histogram import Histogram
from gateway.models import Candle, PriceTick, utc_now
from gateway.store import writer
from gateway.store.connection import Connections
from gateway.store.postgres import PgConnections, is_postgres_url
from gateway.store.ticks import (
    INSERT_SQL,
    LATEST_SQL,
    PRUNE_SQL,
    SINCE_SQL,
    SYMBOLS_SQL,
    candles_from_rows,
    candles_statement,
    query_ms,
    tick_from_row,
    tick_row,
)
from gateway.store.writer import BatchWriter, WriteRequest

__all__ = ["Storage"]

_T = TypeVar("_T")


class Storage:
    """The tick history: one writer task (`run()`), many concurrent readers.

    Open with `await Storage.open(path, settings)`, start `run()` in a nursery with
    `await nursery.start(storage.run)`, and call `aclose()` after it has returned.
    `commits`, `rows_written`, `dropped_rows` and `queued_rows` are there for metrics.
    """

    def __init__(self, connections: Connections | PgConnections, settings: Settings) -> None:
        self.path = connections.path
        self._connections = connections
        self._writes = BatchWriter(connections, settings)
        self._size_bytes = 0  # PostgreSQL: the database's size as of the latest ping()

    @classmethod
    async def open(cls, path: Path | str, settings: Settings) -> Storage:
        """Open the database `path` names and apply migrations: a SQLite file (the parent
        folder and the file are created if needed, WAL enabled), or a `postgresql://` URL
        (gateway.store.postgres: pools, migrations, a hypertable where TimescaleDB is there).

        Raises StorageError, naming the database and the cause, if any of that fails
        (StoreUnavailable when the PostgreSQL server cannot be reached).
        """
        if is_postgres_url(path):
            storage = cls(await PgConnections.open(str(path)), settings)
            try:
                await storage.ping()  # database_bytes() has a figure from the start
            except BaseException:
                await storage.aclose()
                raise
            return storage
        return cls(await Connections.open(Path(path)), settings)

    @property
    def engine(self) -> str:
        """"sqlite" or "postgresql"."""
        return "postgresql" if isinstance(self._connections, PgConnections) else "sqlite"

    @property
    def commits(self) -> int:
        """Batches committed."""
        return self._writes.commits

    @property
    def rows_written(self) -> int:
        """Tick rows actually inserted (duplicates excluded)."""
        return self._writes.rows_written

    @property
    def commit_seconds(self) -> Histogram:
        """How long each batch commit took (seconds), for metrics."""
        return self._writes.commit_seconds

    @property
    def dropped_rows(self) -> int:
        """Best-effort rows refused by write_nowait() on a full queue."""
        return self._writes.dropped_rows

    @property
    def queued_rows(self) -> int:
        """Rows accepted by write_ticks() and not yet committed (never above storage_queue)."""
        return self._writes.queued_rows

    @property
    def writes_failing_since(self) -> datetime | None:
        """When batch commits began to fail (disk full, read-only file); None while the latest
        one succeeded. /readyz answers 503 meanwhile."""
        return self._writes.failing_since

    # -- writing -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The single writer: commit queued ticks in batches until cancelled.

        A batch is committed once it holds `storage_batch_rows` rows, or `storage_batch_seconds`
        after its first row was queued. On cancellation, everything already queued is committed
        first (shielded, for at most a few seconds); whatever is still left then fails with
        StorageError in its write_ticks() call, and later calls fail at once.
        """
        await self._writes.run(task_status=task_status)

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
            await BatchWriter.settled(request)

    async def queue_ticks(self, ticks: Sequence[PriceTick]) -> list[WriteRequest]:
        """Queue ticks for the writer and return without waiting for their commit (only for
        room, while the queue is full). The same validation as write_ticks; a commit that
        fails later is logged by the writer (`storage.commit_failed`).

        For ingest: a stream must not wait a whole batch window per message, or one stream
        could publish only a few messages a second (bench/stream_latency.py found 4/s with the
        default 0.25 s batches). The ticks are in the queue when this returns, with no
        checkpoint in between: `gateway.ingest` publishes them live right after, so whoever
        sees a tick live can wait for it with `committed()`.
        """
        rows = [tick_row(tick) for tick in ticks]  # validate all before queueing any
        return await self._writes.enqueue(INSERT_SQL, rows)

    async def write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute `sql` once per row through the batching writer; returns once committed.

        The general form of write_ticks(), for the other tables (see
        gateway.store.provider_records): the same queue bound, batching, shutdown flush and error
        rules apply.
        """
        for request in await self._writes.enqueue(sql, rows):
            await BatchWriter.settled(request)

    def write_nowait(self, sql: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Queue rows without waiting for room or for the commit (for bookkeeping written from
        synchronous hooks, such as upstream attempts). Returns False, writing nothing, when the
        queue is full or the writer is not running: such records are best-effort, never a
        reason to block a request."""
        return self._writes.write_nowait(sql, rows)

    async def committed(self) -> None:
        """Return once every write queued before this call is committed (or has failed).

        For readers that must see what was already on its way to the store: ingest queues a
        tick before publishing it live (`gateway.ingest`), so a replaying subscriber that
        subscribes to the live bus, then calls this, then reads, finds every tick either in its
        live buffer or in the store. Batches commit in queue order, so waiting for the newest
        request is waiting for all of them.
        """
        await self._writes.committed()

    def set_write_guard(self, guard: Callable[[], None] | None) -> None:
        """Call `guard()` on the event loop before each commit (batches and `transact`);
        whatever it raises fails that commit instead (rows of a batch get StorageError).
        For a leader lease: a replica that has lost its lease raises, and writes nothing.
        None removes the guard."""
        self._writes.guard = guard

    def fence(self, token: int | None) -> None:
        """Write under fencing `token` from now on (None: unfenced). Each commit raises the
        database's fence (table write_fence) to `token` in its own transaction, or rolls back
        with StorageError if a newer token has written: a deposed leader that still believes
        in its lease cannot overwrite its successor's rows, whatever its clock says."""
        self._writes.fence_token = token

    async def transact(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work(conn)` on the writer connection in one transaction of its own, outside the
        batch queue, and return its result. For rare writes that must be atomic across
        statements or whose caller needs a new row's id at once (pools, alerts)."""
        return await self._writes.transact(work)

    async def execute_now(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int]:
        """One statement via `transact`; returns (lastrowid, rowcount)."""
        return await self._writes.execute_now(sql, params)

    # -- reading -------------------------------------------------------------------------------

    async def read(self, query: Callable[[Database], _T]) -> _T:
        """Run `query(db)` on an idle read-only connection in a worker thread."""
        return await self._connections.read(query)

    async def latest_ticks(self, symbols: Sequence[str]) -> list[PriceTick]:
        """For each symbol, the newest tick of each provider; ordered by symbol, then provider."""
        params = {"symbols": json.dumps(list(symbols))}
        rows = await self.read(lambda db: db.execute(LATEST_SQL, params).fetchall())
        return [tick_from_row(row) for row in rows]

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
            "since": query_ms(since, "since"),
            "limit": limit,
        }
        rows = await self.read(lambda db: db.execute(SINCE_SQL, params).fetchall())
        return [tick_from_row(row) for row in rows]

    async def candles(
        self,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        now: datetime | None = None,
        *,
        each_provider: bool = False,
        provider: str | None = None,
    ) -> list[Candle]:
        """OHLC candles of `symbol` from the ticks in [start, end), oldest first, built in SQL.

        A candle never mixes providers. By default the series is the one provider with the most
        ticks (for whole minutes: the most minutes with ticks) for the symbol in the range (ties
        go to the alphabetically first), so a change of provider between buckets cannot fake a
        price jump; `each_provider` returns every provider's candles instead (several per
        bucket, ordered by open time then provider: for a consensus across them), and
        `provider` only that provider's. Buckets are aligned to multiples of the
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
        now_ms = query_ms(now if now is not None else utc_now(), "now")
        start_ms, end_ms = query_ms(start, "start"), query_ms(end, "end")
        sql, params = candles_statement(
            symbol,
            interval_seconds * 1000,
            start_ms,
            end_ms,
            each_provider=each_provider,
            provider=provider,
        )
        rows = await self.read(lambda db: db.execute(sql, params).fetchall())
        return candles_from_rows(rows, symbol, interval_seconds, start_ms, end_ms, now_ms)

    async def prune_ticks(self, before: datetime, batch: int = 20_000) -> int:
        """Delete raw ticks observed before `before`, `batch` rows per transaction (so the
        writer and readers are never held up for long), symbol by symbol through the time
        index. The one-minute candles are kept. Returns the rows deleted."""
        cutoff = query_ms(before, "before")
        symbols: list[str] = await self.read(
            lambda db: [row[0] for row in db.execute(SYMBOLS_SQL).fetchall()]
        )
        deleted = 0
        for symbol in symbols:
            while True:
                _, count = await self.execute_now(PRUNE_SQL, (symbol, cutoff, batch))
                deleted += count
                if count < batch:
                    break
        return deleted

    async def tick_count(self) -> int:
        """How many ticks are stored."""
        count: int = await self.read(
            lambda db: db.execute("SELECT count(*) FROM price_ticks").fetchone()[0]
        )
        return count

    async def ping(self) -> None:
        """Raise StorageError unless the database answers a query (for readiness checks);
        StoreUnavailable when the PostgreSQL server cannot be reached."""
        await self.read(
            lambda db: db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        )
        if isinstance(self._connections, PgConnections):
            size = await self.read(
                lambda db: db.execute("SELECT pg_database_size(current_database())").fetchone()
            )
            self._size_bytes = int(size[0])

    async def reclaim_space(self, max_pages: int = 20_000) -> int:
        """Give up to `max_pages` free pages back to the file system (`PRAGMA
        incremental_vacuum`, then a WAL checkpoint that truncates the log), alone on the writer
        connection like any batch. Returns the pages freed; 0 when auto-vacuum is off
        (gateway.store.connection.incremental_vacuum says how to turn it on), and always 0
        on PostgreSQL, whose autovacuum does this itself."""
        if isinstance(self._connections, PgConnections):
            return 0
        writer = self._connections.writer

        def run() -> int:
            conn = writer.conn
            before = conn.execute("PRAGMA page_count").fetchone()[0]
            # executescript steps the pragma to the end; execute() would free one page only.
            conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
            # A reader in the way is not waited for long: the next checkpoint finishes the job.
            timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
            conn.execute("PRAGMA busy_timeout = 200")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
            return int(before - conn.execute("PRAGMA page_count").fetchone()[0])

        return await self._connections.on_writer(run)

    def database_bytes(self) -> int:
        """Bytes on disk: the database file plus its write-ahead log (PostgreSQL: the
        database's size as of the latest `ping()`, which /readyz and health checks run)."""
        if isinstance(self._connections, PgConnections):
            return self._size_bytes
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
        if self._connections.closed:
            return
        # No checkpoint between these two: nothing sees the queue emptied before "closed".
        self._writes.fail_queued("storage closed before these ticks were committed")
        # writer.FLUSH_TIMEOUT is read here, not imported by name, so a test may shorten it.
        await self._connections.aclose(writer.FLUSH_TIMEOUT)
