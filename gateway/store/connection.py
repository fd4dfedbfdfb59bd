"""The connections of one database file: opening it, its pragmas, WAL, and the reader pool.

`Connections.open` creates the parent folder and the file if needed, opens the one writer
connection (WAL, `synchronous=NORMAL`), applies the migrations on it, and opens a small pool of
read-only connections, so reads never wait for the writer. `read()` runs a query on an idle
reader and `on_writer()` runs work on the writer connection, both in a worker thread;
`aclose()` waits for reads in flight, then closes every connection.

This module must never run SQLite on the event loop thread: every call goes through
`trio.to_thread.run_sync`. Connections are opened with `check_same_thread=False` because a trio
worker thread is not a fixed thread; each connection is instead used by one thread at a time,
guaranteed by a `CapacityLimiter` (one for the writer connection, one per reader in the pool).
It must never decide what is written or when: batching and commits belong to `writer`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple

import structlog
import trio
from sqlite_utils import Database

from gateway.errors import StorageError
from gateway.store.migrations import migrate

__all__ = ["VACUUM_AT_OPEN_MAX_BYTES", "Connections", "incremental_vacuum"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_READERS: Final = 4  # concurrent read queries; more would only contend for the same disk
_BUSY_TIMEOUT_MS: Final = 5000  # another process holding the lock: wait this long, then fail


def _connect(path: Path, *, writer: bool) -> Database:
    # isolation_level=None: no implicit transactions; every transaction here is explicit.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db = Database(conn, execute_plugins=False)
        if writer:
            # Takes effect at once on a new, empty file (see incremental_vacuum for old ones).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
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


# An existing database without incremental auto-vacuum is converted (one VACUUM, which
# rewrites the file) at open only up to this size; a larger one logs how to do it offline.
VACUUM_AT_OPEN_MAX_BYTES: Final = 256 * 1024 * 1024


def incremental_vacuum(db: Database, path: Path) -> None:
    """Put the file in `auto_vacuum = INCREMENTAL` mode, so the retention task's
    `PRAGMA incremental_vacuum` gives pruned pages back to the file system. A new database takes
    the mode at once; an existing one needs a VACUUM, done here when it is small (seconds), else
    logged with the command to run while the gateway is stopped (README "Operations")."""
    conn = db.conn
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return  # a new, empty file: the mode took effect without a VACUUM
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = pages * conn.execute("PRAGMA page_size").fetchone()[0]
    if size <= VACUUM_AT_OPEN_MAX_BYTES:
        conn.execute("VACUUM")
        log.info("storage.auto_vacuum_enabled", path=str(path), bytes=size)
    else:
        log.warning(
            "storage.auto_vacuum_off",
            path=str(path),
            bytes=size,
            hint=f"stop the gateway, then: sqlite3 {path} 'PRAGMA auto_vacuum = INCREMENTAL;"
            " VACUUM;' (pruned space is reused meanwhile, but the file does not shrink)",
        )


def _close_all(connections: list[Database]) -> None:
    for db in connections:
        db.close()


def _open_sync(path: Path) -> tuple[Database, list[Database]]:
    opened: list[Database] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path, writer=True)
        opened.append(writer)
        incremental_vacuum(writer, path)
        migrate(writer)
        readers = [_connect(path, writer=False) for _ in range(_READERS)]
        return writer, readers
    except (OSError, sqlite3.Error) as exc:
        _close_all(opened)
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    except BaseException:
        _close_all(opened)
        raise


class Connections:
    """The writer connection and the read-only pool of one database file.

    `closed` turns true at the start of `aclose()`; from then on `read()` raises StorageError,
    and the writer (gateway.store.writer) refuses new work.
    """

    def __init__(self, path: Path, writer: Database, readers: list[Database]) -> None:
        self.path = path
        self.writer = writer  # used only inside on_writer()
        self.closed = False
        self._write_limiter = trio.CapacityLimiter(1)
        self._idle_readers = readers
        self._read_limiter = trio.CapacityLimiter(len(readers))

    @classmethod
    async def open(cls, path: Path) -> Connections:
        """Create the parent folder and the database if needed, enable WAL, apply migrations.

        Raises StorageError, naming the path and the cause, if any of that fails.
        """
        writer, readers = await trio.to_thread.run_sync(_open_sync, path)
        return cls(path, writer, readers)

    async def on_writer(self, work: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run `work(*args)` in a worker thread, alone on the writer connection."""
        return await trio.to_thread.run_sync(work, *args, limiter=self._write_limiter)

    async def read(self, query: Callable[[Database], _T]) -> _T:
        """Run `query` on an idle reader connection in a worker thread."""
        if self.closed:
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

    async def aclose(self, grace: float) -> None:
        """Mark the connections closed, wait for reads in flight, then close every connection;
        all of it shielded from cancellation and bounded by `grace` seconds."""
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(grace):
            for _ in range(int(self._read_limiter.total_tokens)):
                await self._read_limiter.acquire_on_behalf_of(object())
            await trio.to_thread.run_sync(
                _close_all, [self.writer, *self._idle_readers], limiter=self._write_limiter
            )
