"""The single batching writer: a bounded queue of writes, committed in batches by one task.

Writes of any table go through `BatchWriter`: `enqueue()` puts rows in the queue (waiting for
room while it is full), `run()` commits them in batches, one transaction per batch, and every
`WriteRequest` learns, through its `done` event, whether its rows were committed. Tick inserts
(`ticks.INSERT_SQL`) also fold each tick into its one-minute candle in the same transaction. On
shutdown `run()` commits what is still queued, within `FLUSH_TIMEOUT`. `transact()` is the way
around the queue, for the rare write that needs its own transaction at once.

This module must never let the queue grow without bound (a full queue makes producers wait,
or `write_nowait` refuse), never leave a caller waiting for a writer that has stopped, and
never run SQLite on the event loop: every statement runs through `Connections.on_writer`.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Final, TypeVar

import structlog
import trio

from gateway.config import SECONDS, Settings
from gateway.errors import StorageError
from gateway.histogram import Histogram
from gateway.models import utc_now
from gateway.store.connection import Connections
from gateway.store.postgres import PgConnections
from gateway.store.ticks import CANDLE_UPSERT_SQL, INSERT_SQL

__all__ = ["FLUSH_TIMEOUT", "BatchWriter", "WriteRequest"]

_T = TypeVar("_T")
log = structlog.get_logger(__name__)

# Shutdown: time granted to commit what is still queued (and, in Storage.aclose, to wait for
# reads in flight). Read where it is used, not copied, so tests can shorten it.
FLUSH_TIMEOUT: Final = 5 * SECONDS

# Raises the fence to this writer's token, or matches no row when a newer token has written.
_FENCE_SQL: Final = "UPDATE write_fence SET token = ? WHERE id = 1 AND token <= ?"


@dataclass(eq=False)
class WriteRequest:
    """A slice of one write call waiting in the queue; `done` is set once it is decided.

    `sql` is the statement each row is executed with (ticks use `ticks.INSERT_SQL`; the provider
    records of gateway.store.provider_records use their own); a batch groups requests by statement.
    """

    rows: list[Sequence[Any]]
    queued_at: float
    sql: str = INSERT_SQL
    done: trio.Event = field(default_factory=trio.Event)
    error: StorageError | None = None


class BatchWriter:
    """The write queue of one database and the task (`run()`) that commits it in batches.

    `commits`, `rows_written`, `dropped_rows` and `queued_rows` are there for metrics,
    `failing_since` for readiness.
    """

    def __init__(self, connections: Connections | PgConnections, settings: Settings) -> None:
        self.commits = 0  # batches committed
        self.commit_seconds = Histogram()  # each batch's commit, queue wait excluded
        self.rows_written = 0  # tick rows actually inserted (duplicates excluded)
        self.dropped_rows = 0  # best-effort rows refused by write_nowait() on a full queue
        # When batch commits began to fail (disk full, read-only file); None once one succeeds.
        self.failing_since: datetime | None = None
        self._connections = connections
        self._path = connections.path
        self._batch_rows = settings.storage_batch_rows
        self._batch_seconds = settings.storage_batch_seconds
        self._capacity = settings.storage_queue
        self._chunk = min(self._batch_rows, self._capacity)
        self._queue: deque[WriteRequest] = deque()
        self._in_flight: WriteRequest | None = None  # the newest request of the batch committing
        self._queued_rows = 0  # queued plus being committed: what the bound applies to
        self._room = trio.lowlevel.ParkingLot()  # producers waiting for queue space
        self._work = trio.lowlevel.ParkingLot()  # the writer waiting for rows
        self._state = "idle"  # idle (accepts, not yet draining) | running | stopped
        # Storage.set_write_guard / Storage.fence: checked before, and inside, every commit.
        self.guard: Callable[[], None] | None = None
        self.fence_token: int | None = None

    @property
    def queued_rows(self) -> int:
        """Rows accepted and not yet committed (never above storage_queue)."""
        return self._queued_rows

    def _stopped(self) -> bool:
        return self._connections.closed or self._state == "stopped"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit queued rows in batches until cancelled; see `Storage.run`."""
        if self._connections.closed:
            raise StorageError(f"{self._path}: storage is closed")
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
                with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                    while self._queue:
                        await self._commit_batch()
            finally:  # nobody may be left waiting for a writer that is gone
                self.fail_queued("the writer stopped before these ticks were committed")

    async def enqueue(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[WriteRequest]:
        """Queue rows in chunks, waiting for room as needed; StorageError once stopped."""
        requests: list[WriteRequest] = []
        iterator = iter(rows)
        while chunk := list(islice(iterator, self._chunk)):
            self._check_accepting()
            while self._queued_rows + len(chunk) > self._capacity:
                await self._room.park()
                self._check_accepting()
            request = WriteRequest(chunk, trio.current_time(), sql)
            self._queue.append(request)
            self._queued_rows += len(chunk)
            self._work.unpark_all()
            requests.append(request)
        if not requests:
            self._check_accepting()
            await trio.lowlevel.checkpoint()
        return requests

    @staticmethod
    async def settled(request: WriteRequest) -> None:
        """Wait until `request` is decided; raise its StorageError if its commit failed."""
        await request.done.wait()
        if request.error is not None:
            raise request.error

    def write_nowait(self, sql: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Queue rows without waiting for room or for the commit; False, writing nothing, when
        the queue is full or the writer is not running. See `Storage.write_nowait`."""
        rows = list(rows)
        if not rows or self._stopped():
            return False
        if self._queued_rows + len(rows) > self._capacity:
            self.dropped_rows += len(rows)
            return False
        self._queue.append(WriteRequest(rows, trio.current_time(), sql))
        self._queued_rows += len(rows)
        self._work.unpark_all()
        return True

    async def committed(self) -> None:
        """Return once every write queued before this call is committed (or has failed).

        Batches commit in queue order, so waiting for the newest request is waiting for all.
        """
        newest = self._queue[-1] if self._queue else self._in_flight
        if newest is not None:
            await newest.done.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _check_accepting(self) -> None:
        if self._stopped():
            raise StorageError(f"{self._path}: the storage writer is not running")

    async def _commit_batch(self) -> None:
        """Commit queued requests, oldest first, up to `storage_batch_rows` rows in all."""
        batch = [self._queue.popleft()]
        size = len(batch[0].rows)
        while self._queue and size + len(self._queue[0].rows) <= self._batch_rows:
            batch.append(self._queue.popleft())
            size += len(batch[-1].rows)
        self._in_flight = batch[-1]
        error: StorageError | None = None
        began = time.perf_counter()
        try:
            self._check_guard()
            inserted = await self._connections.on_writer(self._insert_sync, batch)
        except StorageError as exc:
            error = exc
            self.failing_since = self.failing_since or utc_now()
            log.error("storage.commit_failed", rows=size, error=str(exc))
        except BaseException:
            # Cancelled before the thread started (once started it cannot be cancelled), or an
            # unexpected error that atomic() rolled back: nothing was written, so the batch
            # goes back to the head of the queue for the shutdown flush (or fail_queued).
            self._queue.extendleft(reversed(batch))
            self._in_flight = None
            raise
        else:
            self.commits += 1
            self.commit_seconds.observe(time.perf_counter() - began)
            self.rows_written += inserted
            self.failing_since = None
        for request in batch:
            request.error = error
            request.done.set()
        self._in_flight = None
        self._queued_rows -= size
        self._room.unpark_all()

    def _check_guard(self) -> None:
        if self.guard is None:
            return
        try:
            self.guard()
        except Exception as exc:
            raise StorageError(f"{self._path}: writes refused by the write guard: {exc}") from exc

    def _check_fence(self, conn: sqlite3.Connection) -> None:
        """Inside the commit's transaction: raise the fence, or roll back if it is past us."""
        token = self.fence_token
        if token is not None and conn.execute(_FENCE_SQL, [token, token]).rowcount != 1:
            raise StorageError(
                f"{self._path}: fenced: a writer with a token newer than {token} has written"
            )

    def _insert_sync(self, batch: list[WriteRequest]) -> int:
        """One transaction for the whole batch; returns the tick rows actually inserted."""
        writer = self._connections.writer
        inserted = 0
        try:
            with writer.atomic():
                self._check_fence(writer.conn)
                for request in batch:
                    cursor = writer.conn.executemany(request.sql, request.rows)
                    if request.sql is INSERT_SQL:
                        inserted += cursor.rowcount
                        writer.conn.executemany(
                            CANDLE_UPSERT_SQL, [row[:4] for row in request.rows]
                        )
            return inserted
        except sqlite3.Error as exc:
            rows = sum(len(request.rows) for request in batch)
            raise StorageError(f"cannot write {rows} rows to {self._path}: {exc}") from exc

    def fail_queued(self, reason: str) -> None:
        """Fail every request still queued with StorageError(`reason`), and wake the producers
        waiting for room, who then find the writer stopped (or the storage closed)."""
        for request in self._queue:
            request.error = StorageError(f"{self._path}: {reason}")
            request.done.set()
            self._queued_rows -= len(request.rows)  # a batch being committed stays counted
        self._queue.clear()
        self._room.unpark_all()  # producers waiting for room now see the writer has stopped

    async def transact(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work(conn)` on the writer connection in one transaction of its own, outside the
        queue, and return its result; see `Storage.transact`."""
        if self._stopped():
            raise StorageError(f"{self._path}: the storage writer is not running")
        self._check_guard()
        writer = self._connections.writer

        def run() -> _T:
            try:
                with writer.atomic():
                    self._check_fence(writer.conn)
                    return work(writer.conn)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write to {self._path}: {exc}") from exc

        return await self._connections.on_writer(run)

    async def execute_now(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int]:
        """One statement via `transact`; returns (lastrowid, rowcount)."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            cursor = conn.execute(sql, list(params))
            return cursor.lastrowid or 0, cursor.rowcount

        return await self.transact(run)
