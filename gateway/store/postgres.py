"""The PostgreSQL engine of the store (GATEWAY_DB=postgresql://…): its connection pools and the
connection object the store's SQL runs on.

`PgConnections` stands where `connection.Connections` stands for SQLite, with the same surface
(`read`, `on_writer`, `writer`, `closed`, `aclose`): a psycopg_pool pool of one connection for
the writer (one batch at a time, as on SQLite) and a small pool for readers. `PgDb` is what the
store's functions receive in place of a sqlite_utils `Database` or `sqlite3.Connection`: the
same `execute`/`executemany`/`atomic` calls, each statement rewritten by
`dialect.postgres_sql`, `lastrowid` supplied by `RETURNING id`. Opening applies the migrations
(`migrations.MIGRATIONS`, each under a transaction-scoped advisory lock, so replicas opening
together apply each once) and makes price_ticks a TimescaleDB hypertable where the extension
is available.

This module must never run psycopg on the event loop thread (psycopg has no trio support: every
call goes through `trio.to_thread.run_sync`, limited as on SQLite), never wait without a bound
(connect, pool checkout and every statement have time limits), and never let a psycopg error
escape: a database that cannot be reached is `StoreUnavailable` (GraphQL STORE_UNAVAILABLE,
/readyz 503), any other failure `StorageError`. Connections found broken after a restart of
the server are discarded by the pool's check, so the store recovers on its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar, TypeVarTuple, cast

import psycopg
import structlog
import trio
from psycopg.adapt import Loader
from psycopg.types.numeric import IntDumper
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlite_utils import Database

from gateway.errors import StorageError, StoreUnavailable
from gateway.models import utc_now
from gateway.store.dialect import identity_insert, postgres_params, postgres_sql
from gateway.store.migrations import MIGRATIONS

__all__ = ["PgConnections", "PgDb", "is_postgres_url"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_READERS: Final = 4  # as on SQLite: concurrent read queries
CONNECT_TIMEOUT: Final = 5  # seconds to open a connection
CHECKOUT_TIMEOUT: Final = 5.0  # seconds to wait for a pooled connection (server down: fail)
STATEMENT_TIMEOUT_MS: Final = 30_000  # the server cancels any statement running longer
# Once the server is found unreachable, calls fail at once (STORE_UNAVAILABLE) for this long,
# then one call probes it with PROBE_TIMEOUT: a writer or a reader must not wait
# CHECKOUT_TIMEOUT per call while it is down (the write queue would fill and hold up ingest,
# and with it the live streams).
RETRY_INTERVAL: Final = 1.0
PROBE_TIMEOUT: Final = 1.0
_MIGRATION_LOCK: Final = 0x6761_7465  # advisory lock key: "gate"


def is_postgres_url(target: object) -> bool:
    """Whether `target` (GATEWAY_DB, `--db`) names a PostgreSQL database."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class _BoolDumper(IntDumper):
    """Python bools as 0/1: the columns that hold flags are integers, as in SQLite."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericLoader(Loader):
    """numeric (what sum() of integers returns) as int when whole, else float: SQLite's types,
    never a Decimal the callers do not expect."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(bool, _BoolDumper)
    conn.adapters.register_loader("numeric", _NumericLoader)


class _Cursor:
    """The part of a sqlite3 cursor the store uses: rows, `rowcount`, `lastrowid`."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class PgDb:
    """One pooled connection, spoken to as the store speaks to SQLite (`execute`,
    `executemany`, `atomic`, `conn`)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> PgDb:
        return self

    def bind(self, conn: psycopg.Connection[Any] | None) -> None:
        self._conn = conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise StorageError(f"{self._label}: no connection (used outside the pool)")
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> _Cursor:
        text, numbered = postgres_sql(sql)
        returning = identity_insert(sql)
        if returning:
            text += " RETURNING id"
        with _errors(self._label), self._connection().cursor() as cursor:
            cursor.execute(text, postgres_params(params, numbered))
            rows = cursor.fetchall() if cursor.description is not None else []
            lastrowid = int(rows[0][0]) if returning and rows else None
            return _Cursor([] if returning else rows, cursor.rowcount, lastrowid)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _Cursor:
        text, numbered = postgres_sql(sql)
        with _errors(self._label), self._connection().cursor() as cursor:
            cursor.executemany(text, [postgres_params(row, numbered) for row in rows])
            return _Cursor([], cursor.rowcount, None)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        with _errors(self._label), self._connection().transaction():
            yield


@contextlib.contextmanager
def _errors(label: str) -> Iterator[None]:
    """psycopg's errors as the gateway's: unreachable is StoreUnavailable."""
    try:
        yield
    except psycopg.Error as exc:
        if _unreachable(exc):
            raise StoreUnavailable(label, str(exc).strip() or type(exc).__name__) from exc
        raise StorageError(f"{label}: {str(exc).strip()}") from exc


def _unreachable(exc: psycopg.Error) -> bool:
    """No pooled connection in time, a connection lost (no SQLSTATE), a connection exception
    (class 08) or the server shutting down or starting (57P01-57P03); not a statement timeout
    or a deadlock, which are OperationalErrors of a server that answers."""
    if isinstance(exc, (PoolTimeout, psycopg.InterfaceError)):
        return True
    state = exc.sqlstate or ""
    if isinstance(exc, psycopg.OperationalError) and not state:
        return True
    return state.startswith(("08", "57P"))


def _pool(url: str, size: int, name: str) -> ConnectionPool[Any]:
    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        name=name,
        open=False,
        timeout=CHECKOUT_TIMEOUT,
        check=ConnectionPool.check_connection,
        configure=_configure,
        reconnect_timeout=0,  # never give up: the pool keeps trying while the server is down
        kwargs={
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "gateway",
        },
    )


def _label(url: str) -> str:
    """The URL without its password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host, db = info.get("host") or "localhost", info.get("dbname") or ""
    return f"postgresql://{host}{':' + str(info['port']) if info.get('port') else ''}/{db}"


def _migrate(db: PgDb) -> None:
    with db.atomic():  # two replicas racing CREATE TABLE IF NOT EXISTS can both try to create
        db.execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATION_LOCK])
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
    newest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
    known = MIGRATIONS[-1].version
    if newest is not None and newest[0] is not None and newest[0] > known:
        raise StorageError(f"database schema version {newest[0]} is newer than ours ({known})")
    for migration in MIGRATIONS:
        with db.atomic():
            # Replicas opening at once: each migration is applied by one of them.
            db.execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATION_LOCK])
            done = "SELECT 1 FROM schema_migrations WHERE version = ?"
            if db.execute(done, [migration.version]).fetchone() is None:
                for statement in migration.statements_for("postgresql"):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    [migration.version, migration.name, utc_now().isoformat()],
                )
    _hypertable(db)


def _hypertable(db: PgDb) -> None:
    """price_ticks as a TimescaleDB hypertable (chunks of a day) where the extension can be
    loaded; plain tables otherwise. Idempotent; a failure leaves the plain table."""
    available = db.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if available is None:
        return
    try:
        with db.atomic():
            db.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            db.execute(
                "SELECT create_hypertable('price_ticks', 'observed_ms',"
                " chunk_time_interval => 86400000, migrate_data => true, if_not_exists => true)"
            )
        log.info("storage.hypertable", table="price_ticks")
    except StorageError as exc:  # not preloaded, or not allowed: plain tables work the same
        log.warning("storage.hypertable_unavailable", error=str(exc))


class PgConnections:
    """The writer pool (one connection) and the reader pool of one PostgreSQL database.

    `path` is the URL without its password (for messages); `closed` as in `Connections`.
    """

    engine: Final = "postgresql"

    def __init__(self, url: str) -> None:
        self.path = _label(url)
        self.closed = False
        self._writer_pool = _pool(url, 1, "gateway-writer")
        self._reader_pool = _pool(url, _READERS, "gateway-readers")
        self._writer_db = PgDb(self.path)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(_READERS)
        self._down: StoreUnavailable | None = None  # set from worker threads, under the GIL
        self._retry_at = 0.0

    @property
    def writer(self) -> Database:
        """The writer connection, bound only inside on_writer(); typed as the SQLite one it
        stands for (the store's functions use only what both have)."""
        return cast(Database, self._writer_db)

    @classmethod
    async def open(cls, url: str) -> PgConnections:
        """Open both pools (waiting at most CONNECT_TIMEOUT for a first connection) and apply
        the migrations. StoreUnavailable when the server cannot be reached."""
        self = cls(url)
        try:
            await trio.to_thread.run_sync(self._open_sync)
        except BaseException:
            await trio.to_thread.run_sync(self._close_sync)
            raise
        return self

    def _open_sync(self) -> None:
        with _errors(self.path):
            self._writer_pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self._reader_pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._on_writer_sync(_migrate, self._writer_db)

    def _checkout_timeout(self) -> float:
        """Fail at once while the server is known to be down, else how long to wait."""
        down = self._down
        if down is None:
            return CHECKOUT_TIMEOUT
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(down.database, down.reason)
        self._retry_at = time.monotonic() + RETRY_INTERVAL  # this call is the probe
        return PROBE_TIMEOUT

    @contextlib.contextmanager
    def _watch(self) -> Iterator[None]:
        """Remember an unreachable server (see RETRY_INTERVAL); forget it on a success."""
        try:
            yield
        except StoreUnavailable as exc:
            if self._down is None:
                log.error("storage.unavailable", database=self.path, reason=exc.reason)
            self._down, self._retry_at = exc, time.monotonic() + RETRY_INTERVAL
            raise
        if self._down is not None:
            log.info("storage.available_again", database=self.path)
            self._down = None

    def _on_writer_sync(self, work: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        timeout = self._checkout_timeout()
        with (
            self._watch(),
            _errors(self.path),
            self._writer_pool.connection(timeout=timeout) as conn,
        ):
            self._writer_db.bind(conn)
            try:
                return work(*args)
            finally:
                self._writer_db.bind(None)

    async def on_writer(self, work: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run `work(*args)` in a worker thread with the writer connection bound."""
        return await trio.to_thread.run_sync(
            self._on_writer_sync, work, *args, limiter=self._write_limiter
        )

    async def read(self, query: Callable[[Database], _T]) -> _T:
        """Run `query` on a pooled reader connection in a worker thread."""
        if self.closed:
            raise StorageError(f"{self.path}: storage is closed")
        return await trio.to_thread.run_sync(self._read_sync, query, limiter=self._read_limiter)

    def _read_sync(self, query: Callable[[Database], _T]) -> _T:
        db = PgDb(self.path)
        timeout = self._checkout_timeout()
        with (
            self._watch(),
            _errors(self.path),
            self._reader_pool.connection(timeout=timeout) as conn,
        ):
            db.bind(conn)
            return query(cast(Database, db))

    def _close_sync(self) -> None:
        for pool in (self._reader_pool, self._writer_pool):
            with contextlib.suppress(Exception):
                pool.close(timeout=CONNECT_TIMEOUT)

    async def aclose(self, grace: float) -> None:
        """Mark closed, wait for reads in flight (at most `grace` seconds), close the pools."""
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(grace):
            for _ in range(int(self._read_limiter.total_tokens)):
                await self._read_limiter.acquire_on_behalf_of(object())
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._close_sync, limiter=self._write_limiter)
