"""Tests for gateway.storage: migrations, the batching writer, durability, and the read queries.

Every SQLite call runs in a worker thread, and trio's autojump clock jumps whenever the event loop
is idle, including while a task waits for a thread: under it a `fail_after` or a batch deadline
would expire in the middle of a commit. So these tests use the real clock with short batch
deadlines, and wait for "everything is blocked" with `wait_all_tasks_blocked` instead of sleeping.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog.testing
import trio
import trio.testing

from gateway.config import Settings
from gateway.errors import BadUserInput, StorageError
from gateway.models import PriceTick
from gateway.storage import Storage
from gateway.store import dialect, migrations, ticks
from gateway.store import writer as store_writer

T0 = datetime(2024, 1, 1, tzinfo=UTC)
FAST = Settings(storage_batch_rows=500, storage_batch_seconds=0.01, storage_queue=10_000)


def tick(
    seconds: float = 0,
    *,
    symbol: str = "BTC",
    provider: str = "alpha",
    usd: float = 100.0,
    **extra: float,
) -> PriceTick:
    return PriceTick(symbol, usd, provider, T0 + timedelta(seconds=seconds), **extra)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _sql(path: Path | str, query: str, params: Any) -> list[Any]:
    if isinstance(path, str):  # PostgreSQL: the same statement as the store would send it
        text, numbered = dialect.postgres_sql(query)
        with psycopg.connect(path, autocommit=True) as pg:
            cursor = pg.execute(text, dialect.postgres_params(params, numbered))
            return cursor.fetchall() if cursor.description is not None else []
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(query, params).fetchall()
    finally:
        conn.close()


async def sql(path: Path | str, query: str, *params: object) -> list[Any]:
    """Inspect (or tamper with) the database the way another process would, off the loop."""
    named = len(params) == 1 and isinstance(params[0], dict)
    return await trio.to_thread.run_sync(_sql, path, query, params[0] if named else params)


@pytest.fixture
def db_path(store_target: Path | str, tmp_path: Path) -> Any:
    """Once per engine (tests/conftest.py): a SQLite file in a folder not made yet, or a
    fresh PostgreSQL database's URL."""
    return store_target if isinstance(store_target, str) else tmp_path / "data" / "gateway.db"


def sqlite_only(db_path: Path | str, what: str) -> None:
    """Skip on PostgreSQL a test of something only SQLite has (`what`)."""
    if isinstance(db_path, str):
        pytest.skip(f"SQLite only: {what}")


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[Storage]:
    """A storage whose writer is running."""
    store = await Storage.open(db_path, FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()
    await store.aclose()


# -- opening and migrations ---------------------------------------------------------------------


async def test_open_creates_folder_enables_wal_and_migrates(db_path: Path) -> None:
    with trio.fail_after(10):
        store = await Storage.open(db_path, FAST)
        await store.ping()
        await store.aclose()
    assert await sql(db_path, "SELECT version, name FROM schema_migrations ORDER BY version") == [
        (m.version, m.name) for m in migrations.MIGRATIONS
    ]
    if isinstance(db_path, str):
        indexes = await sql(db_path, "SELECT indexname FROM pg_indexes")
    else:
        assert await sql(db_path, "PRAGMA journal_mode") == [("wal",)]
        indexes = await sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")
    assert ("price_ticks_symbol_time",) in indexes


async def test_opening_twice_applies_nothing_new(db_path: Path) -> None:
    with trio.fail_after(10):
        await (await Storage.open(db_path, FAST)).aclose()
        first = await sql(db_path, "SELECT version, name, applied_at FROM schema_migrations")
        await (await Storage.open(db_path, FAST)).aclose()
    assert await sql(db_path, "SELECT version, name, applied_at FROM schema_migrations") == first
    assert len(first) == len(migrations.MIGRATIONS)


def test_migration_versions_count_up_from_one() -> None:
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


OLD_SCHEMA = """
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT);
INSERT INTO schema_migrations VALUES (1, 'create price_ticks', 'long ago');
CREATE TABLE price_ticks (symbol TEXT, provider TEXT, observed_ms INTEGER,
    usd REAL NOT NULL, market_cap_usd REAL, volume_24h_usd REAL, change_24h_pct REAL,
    PRIMARY KEY (symbol, provider, observed_ms)) WITHOUT ROWID;
"""


async def test_recorded_migration_is_not_applied_again(db_path: Path) -> None:
    # A database where version 1 is recorded and price_ticks was made by hand, without the
    # time index: re-running migration 1 would fail ("table already exists") or add the index.
    sqlite_only(db_path, "a hand-made SQLite file from before migrations were recorded")

    def make_old_database() -> None:
        db_path.parent.mkdir(parents=True)
        conn = sqlite3.connect(db_path)
        conn.executescript(OLD_SCHEMA)
        conn.close()

    await trio.to_thread.run_sync(make_old_database)
    with trio.fail_after(10):
        await (await Storage.open(db_path, FAST)).aclose()
    recorded = await sql(db_path, "SELECT version, name, applied_at FROM schema_migrations")
    assert recorded[0] == (1, "create price_ticks", "long ago")  # untouched
    assert [version for version, _, _ in recorded] == [m.version for m in migrations.MIGRATIONS]
    created_indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    assert ("price_ticks_symbol_time",) not in await sql(db_path, created_indexes)


async def test_database_from_a_newer_gateway_is_refused(db_path: Path) -> None:
    with trio.fail_after(10):
        await (await Storage.open(db_path, FAST)).aclose()
        await sql(db_path, "INSERT INTO schema_migrations VALUES (99, 'future', 'tomorrow')")
        with pytest.raises(StorageError, match="99"):
            await Storage.open(db_path, FAST)


async def test_unwritable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    with trio.fail_after(10), pytest.raises(StorageError, match="not-a-folder"):
        await Storage.open(blocker / "gateway.db", FAST)


async def test_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with trio.fail_after(10), pytest.raises(StorageError, match=r"gateway\.db"):
        await Storage.open(path, FAST)


# -- writing ------------------------------------------------------------------------------------


async def test_acknowledged_write_survives_reopen(storage: Storage, db_path: Path) -> None:
    written = tick(1.5, market_cap_usd=1e12, volume_24h_usd=3e10, change_24h_pct=-1.25)
    with trio.fail_after(10):
        await storage.write_ticks([written])
        # a second connection (another process, a restart) already sees the row
        again = await Storage.open(db_path, FAST)
        try:
            assert await again.latest_ticks(["BTC"]) == [written]
        finally:
            await again.aclose()


async def test_duplicate_ticks_are_stored_once(storage: Storage) -> None:
    with trio.fail_after(10):
        await storage.write_ticks([tick(0, usd=1.0), tick(0, usd=2.0)])
        await storage.write_ticks([tick(0, usd=3.0), tick(0, provider="beta")])
        assert await storage.tick_count() == 2
        assert storage.rows_written == 2
        latest = await storage.latest_ticks(["BTC"])
    assert [(t.provider, t.usd) for t in latest] == [("alpha", 1.0), ("beta", 100.0)]


async def test_concurrent_writes_share_commits(db_path: Path) -> None:
    settings = Settings(storage_batch_rows=1000, storage_batch_seconds=0.1)
    store = await Storage.open(db_path, settings)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            async with trio.open_nursery() as writers:
                for i in range(50):
                    writers.start_soon(store.write_ticks, [tick(i)])
            nursery.cancel_scope.cancel()
        assert await store.tick_count() == 50
        await store.aclose()
    assert 1 <= store.commits <= 5


async def test_full_batch_commits_without_waiting_for_the_deadline(db_path: Path) -> None:
    store = await Storage.open(db_path, Settings(storage_batch_rows=10, storage_batch_seconds=60))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            async with trio.open_nursery() as writers:
                for i in range(10):
                    writers.start_soon(store.write_ticks, [tick(i)])
            nursery.cancel_scope.cancel()
        await store.aclose()
    assert store.commits == 1


async def test_partial_batch_commits_once_the_deadline_passes(db_path: Path) -> None:
    store = await Storage.open(
        db_path, Settings(storage_batch_rows=1000, storage_batch_seconds=0.2)
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            started = trio.current_time()
            await store.write_ticks([tick(0)])
            waited = trio.current_time() - started
            nursery.cancel_scope.cancel()
        await store.aclose()
    assert 0.2 <= waited < 5
    assert store.commits == 1


async def test_write_larger_than_the_queue_is_split(db_path: Path) -> None:
    store = await Storage.open(db_path, Settings(storage_batch_rows=3, storage_queue=4))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write_ticks([tick(i) for i in range(10)])
            nursery.cancel_scope.cancel()
        assert await store.tick_count() == 10
        await store.aclose()
    assert store.commits == 4  # 3 + 3 + 3 + 1


async def test_full_queue_makes_writers_wait(db_path: Path) -> None:
    settings = Settings(storage_batch_rows=100, storage_batch_seconds=0.01, storage_queue=5)
    store = await Storage.open(db_path, settings)
    returned: list[str] = []
    all_returned = trio.Event()

    async def write(name: str, count: int, offset: int) -> None:
        await store.write_ticks([tick(offset + i) for i in range(count)])
        returned.append(name)
        if len(returned) == 3:
            all_returned.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "a", 3, 0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "b", 2, 10)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "c", 1, 20)  # 3 + 2 + 1 > 5: must wait for room
            await trio.testing.wait_all_tasks_blocked()
            assert store.queued_rows == 5
            assert returned == []
            await nursery.start(store.run)
            await all_returned.wait()
            assert store.queued_rows == 0
            nursery.cancel_scope.cancel()
        assert await store.tick_count() == 6
        await store.aclose()


async def test_shutdown_commits_what_was_queued(db_path: Path) -> None:
    # Batches wait 60 s for company, so the three late writes are still queued at the cancel.
    settings = Settings(storage_batch_rows=4, storage_batch_seconds=60)
    store = await Storage.open(db_path, settings)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write_ticks([tick(i) for i in range(4)])  # a full batch: acknowledged
            for i in range(3):
                nursery.start_soon(store.write_ticks, [tick(100 + i)])
            await trio.testing.wait_all_tasks_blocked()
            assert store.queued_rows == 3
            nursery.cancel_scope.cancel()
        with pytest.raises(StorageError, match="not running"):
            await store.write_ticks([tick(200)])
        await store.aclose()
        reopened = await Storage.open(db_path, settings)
        try:
            assert await reopened.tick_count() == 7
        finally:
            await reopened.aclose()


async def test_writes_left_after_the_flush_deadline_fail_instead_of_hanging(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_writer, "FLUSH_TIMEOUT", 0)
    store = await Storage.open(db_path, Settings(storage_batch_seconds=60))
    errors: list[StorageError] = []

    async def write() -> None:
        try:
            await store.write_ticks([tick(0)])
        except StorageError as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as producers, trio.open_nursery() as writer:
            await writer.start(store.run)
            producers.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            writer.cancel_scope.cancel()
        await store.aclose()
    assert len(errors) == 1
    assert "writer stopped before these ticks were committed" in str(errors[0])
    assert store.queued_rows == 0


async def test_write_after_close_is_a_storage_error(db_path: Path) -> None:
    store = await Storage.open(db_path, FAST)
    await store.aclose()
    with trio.fail_after(10), pytest.raises(StorageError):
        await store.write_ticks([tick()])
    with trio.fail_after(10), pytest.raises(StorageError):
        await store.ping()


async def test_waiting_writes_fail_when_closed_without_a_writer(db_path: Path) -> None:
    store = await Storage.open(db_path, Settings(storage_queue=1))
    errors: list[BaseException] = []

    async def write(offset: int) -> None:
        try:
            await store.write_ticks([tick(offset)])
        except StorageError as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, 0)  # queued, waiting for a commit that never comes
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, 1)  # waiting for room
            await trio.testing.wait_all_tasks_blocked()
            await store.aclose()
    assert len(errors) == 2
    assert store.queued_rows == 0


async def test_failed_commit_fails_its_callers_and_the_writer_carries_on(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(rows: object) -> int:
        raise StorageError("disk on fire")

    with trio.fail_after(10):
        monkeypatch.setattr(storage._writes, "_insert_sync", broken)
        with pytest.raises(StorageError, match="disk on fire"):
            await storage.write_ticks([tick(0)])
        monkeypatch.undo()
        await storage.write_ticks([tick(1)])
        assert await storage.tick_count() == 1


async def test_a_queued_write_that_fails_to_commit_is_logged(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # queue_ticks does not wait for the commit, so nobody would hear of the failure otherwise.
    def broken(rows: object) -> int:
        raise StorageError("disk on fire")

    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(storage._writes, "_insert_sync", broken)
        await storage.queue_ticks([tick(0)])
        assert storage.queued_rows == 1  # queued on return, not committed
        await storage.committed()
    failures = [e for e in logs if e["event"] == "storage.commit_failed"]
    assert len(failures) == 1 and failures[0]["rows"] == 1


async def test_invalid_ticks_are_refused_before_queueing(storage: Storage) -> None:
    with trio.fail_after(10):
        with pytest.raises(ValueError, match="not a number"):
            await storage.write_ticks([tick(0), tick(1, usd=math.nan)])
        naive = PriceTick("BTC", 1.0, "alpha", datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="naive"):
            await storage.write_ticks([naive])
        assert storage.queued_rows == 0
        assert await storage.tick_count() == 0


# -- reading ------------------------------------------------------------------------------------


async def test_latest_ticks_gives_each_providers_newest(storage: Storage) -> None:
    with trio.fail_after(10):
        await storage.write_ticks(
            [
                tick(0, usd=1),
                tick(20, usd=3),
                tick(10, usd=2),
                tick(5, provider="beta", usd=50),
                tick(30, symbol="ETH", usd=7),
                tick(40, symbol="BTCX", usd=9),
            ]
        )
        latest = await storage.latest_ticks(["BTC", "SOL", "BTC"])
        assert [(t.symbol, t.provider, t.usd, t.observed_at) for t in latest] == [
            ("BTC", "alpha", 3, T0 + timedelta(seconds=20)),
            ("BTC", "beta", 50, T0 + timedelta(seconds=5)),
        ]
        assert await storage.latest_ticks([]) == []


async def test_ticks_since_is_strict_ordered_and_limited(storage: Storage) -> None:
    with trio.fail_after(10):
        await storage.write_ticks(
            [
                tick(3, provider="beta"),
                tick(2, provider="gamma"),
                tick(2, provider="alpha"),
                tick(1),  # exactly at `since`: excluded
                tick(0),
                tick(2, symbol="ETH", provider="beta"),
                tick(2, symbol="SOL"),  # not asked for
            ]
        )
        since = T0 + timedelta(seconds=1)
        got = await storage.ticks_since(["BTC", "ETH"], since)
        assert [(t.observed_at - T0).seconds for t in got] == [2, 2, 2, 3]
        assert [(t.symbol, t.provider) for t in got[:3]] == [
            ("BTC", "alpha"),
            ("ETH", "beta"),
            ("BTC", "gamma"),
        ]
        assert await storage.ticks_since(["BTC", "ETH"], since, limit=2) == got[:2]
        with pytest.raises(BadUserInput):
            await storage.ticks_since(["BTC"], datetime(2024, 1, 1))


def minute_ticks(
    minutes: list[float], prices: list[float], provider: str = "alpha"
) -> list[PriceTick]:
    return [tick(m * 60, provider=provider, usd=p) for m, p in zip(minutes, prices, strict=True)]


async def test_candles_ohlc_buckets_and_completeness(storage: Storage) -> None:
    ticks = [
        # bucket 0:00-0:05, every minute covered; listed out of time order on purpose
        *minute_ticks([4.99, 0, 2.5, 1, 3], [9, 10, 8, 12, 11]),
        # bucket 0:05-0:10, minutes 6 and 8 missing
        *minute_ticks([5, 9.99, 7], [20, 21, 25]),
        # bucket 0:10-0:15, every minute covered, but `now` is inside it
        *minute_ticks([10, 11, 12, 13, 14], [30, 31, 32, 33, 34]),
        # on `end`: excluded
        *minute_ticks([15], [99]),
        # a provider with fewer ticks in the range is never mixed in
        *minute_ticks([0.5, 1.5, 2.5, 3.5], [1000, 1000, 1000, 1000], provider="beta"),
    ]
    with trio.fail_after(10):
        await storage.write_ticks(ticks)
        candles = await storage.candles("BTC", 300, at(0), at(15), now=at(14.5))
        assert [
            (c.open_time, c.open, c.high, c.low, c.close, c.provider, c.complete) for c in candles
        ] == [
            (at(0), 10, 12, 8, 9, "alpha", True),
            (at(5), 20, 25, 20, 21, "alpha", False),
            (at(10), 30, 34, 30, 34, "alpha", False),
        ]
        assert all(c.volume is None and c.interval_seconds == 300 for c in candles)
        later = await storage.candles("BTC", 300, at(0), at(15), now=at(15))
        assert [c.complete for c in later] == [True, False, True]
        # `start` cuts into the first bucket: it holds only part of its minutes
        cut = await storage.candles("BTC", 300, at(1), at(15), now=at(60))
        assert (cut[0].open, cut[0].complete) == (12, False)
        assert await storage.candles("BTC", 300, at(20), at(30)) == []
        assert await storage.candles("ETH", 300, at(0), at(15)) == []


async def test_candles_provider_tie_goes_alphabetically_first(storage: Storage) -> None:
    with trio.fail_after(10):
        await storage.write_ticks(
            minute_ticks([0, 1], [5, 6], provider="zeta")
            + minute_ticks([0, 1], [7, 8], provider="delta")
            + minute_ticks([2, 3, 4], [1, 1, 1], provider="zeta")  # outside the range below
        )
        candles = await storage.candles("BTC", 60, at(0), at(2), now=at(10))
    assert [(c.provider, c.open, c.complete) for c in candles] == [
        ("delta", 7, True),
        ("delta", 8, True),
    ]


async def test_candles_reject_bad_arguments(storage: Storage) -> None:
    with trio.fail_after(10):
        with pytest.raises(BadUserInput, match="interval"):
            await storage.candles("BTC", 0, at(0), at(5))
        with pytest.raises(BadUserInput, match="start"):
            await storage.candles("BTC", 60, datetime(2024, 1, 1), at(5))


def _data_reads(searches: list[str]) -> list[str]:
    """The plan's reads of rows, without the one-row min() seeks of the provider hop (by
    symbol alone, or past the previous provider), which touch no history."""
    return [s for s in searches if not s.endswith("(symbol=?)") and "provider>?)" not in s]


@pytest.mark.parametrize(
    ("query", "params", "time_range"),
    [
        (("CANDLES_SQL", "chosen"), {"symbol": "BTC", "start": 0, "end": 10**13, "width": 60_000, "provider": None}, True),
        (("CANDLES_SQL", "each"), {"symbol": "BTC", "start": 0, "end": 10**13, "width": 60_000, "provider": None}, True),
        (("CANDLES_SQL", "one"), {"symbol": "BTC", "start": 0, "end": 10**13, "width": 60_000, "provider": "a"}, True),
        ("SINCE_SQL", {"symbols": json.dumps(["BTC"]), "since": 0, "limit": 10}, True),
        ("LATEST_SQL", {"symbols": json.dumps(["BTC", "ETH"])}, False),  # min/max seeks
    ],
)
async def test_queries_are_index_range_scans(
    storage: Storage,
    db_path: Path,
    query: str | tuple[str, str],
    params: dict[str, object],
    time_range: bool,
) -> None:
    sqlite_only(db_path, "SQLite's EXPLAIN QUERY PLAN")
    with trio.fail_after(10):
        await storage.write_ticks([tick(i, provider=p) for i in range(50) for p in ("a", "b")])
        if isinstance(query, tuple):  # a statement per provider choice
            statement = "EXPLAIN QUERY PLAN " + getattr(ticks, query[0])[query[1]]
        else:
            statement = "EXPLAIN QUERY PLAN " + getattr(ticks, query)
        plan = [row[3] for row in await sql(db_path, statement, params)]
    searches = [step for step in plan if step.startswith("SEARCH price_ticks ")]
    assert searches, plan
    assert not any(step.startswith("SCAN price_ticks") for step in plan), plan
    if time_range:  # not a walk through a symbol's whole history
        assert all("observed_ms>?" in step for step in _data_reads(searches)), plan


async def test_batch_cancelled_before_reaching_sqlite_stays_queued(db_path: Path) -> None:
    # The writer can be cancelled after taking a batch off the queue but before the worker
    # thread starts; the batch must go back, or shutdown would drop it without a word.
    store = await Storage.open(db_path, FAST)
    acknowledged = trio.Event()

    async def write() -> None:
        await store.write_ticks([tick(0), tick(1)])
        acknowledged.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await store._writes._commit_batch()
            assert scope.cancelled_caught
            assert store.queued_rows == 2
            assert store.commits == 0
            await nursery.start(store.run)
            await acknowledged.wait()
            nursery.cancel_scope.cancel()
        assert await store.tick_count() == 2
        await store.aclose()


async def test_count_ping_and_size(storage: Storage, db_path: Path) -> None:
    with trio.fail_after(10):
        assert await storage.tick_count() == 0
        await storage.write_ticks([tick(i) for i in range(100)])
        assert await storage.tick_count() == 100
        await storage.ping()
    if isinstance(db_path, str):  # the server's pg_database_size, as of that ping
        assert storage.database_bytes() > 0
    else:
        assert storage.database_bytes() >= (await trio.Path(db_path).stat()).st_size > 0


async def test_minute_candles_are_an_index_range_scan(storage: Storage, db_path: Path) -> None:
    sqlite_only(db_path, "SQLite's EXPLAIN QUERY PLAN")
    with trio.fail_after(10):
        await storage.write_ticks([tick(i, provider=p) for i in range(50) for p in ("a", "b")])
        statement = "EXPLAIN QUERY PLAN " + ticks.CANDLES_FROM_MINUTES_SQL["each"]
        params = {"symbol": "BTC", "start": 0, "end": 10**13, "width": 300_000, "provider": None}
        plan = [row[3] for row in await sql(db_path, statement, params)]
    assert not any(step.startswith("SCAN candles_1m") for step in plan), plan
    searches = _data_reads([step for step in plan if step.startswith("SEARCH candles_1m ")])
    assert searches and all("minute_ms" in step for step in searches), plan


async def test_minute_candles_match_candles_from_ticks(storage: Storage) -> None:
    """The two paths agree: candles_1m (whole minutes) and the ticks themselves."""
    with trio.fail_after(10):
        ticks = [
            tick(i * 15, usd=100 + (i * 7919) % 13, provider=p)
            for i in range(240)
            for p in ("a", "b")
        ]
        await storage.write_ticks(ticks)
        await storage.write_ticks(ticks[:50])  # duplicates change nothing
        start, end = at(0), at(60)
        from_minutes = await storage.candles("BTC", 300, start, end, now=at(120))
        unaligned_end = end + timedelta(milliseconds=1)  # forces the path over the ticks
        from_ticks = await storage.candles("BTC", 300, start, unaligned_end, now=at(120))
    assert len(from_minutes) == 12
    summary = [
        (c.open_time, c.open, c.high, c.low, c.close, c.provider, c.complete) for c in from_minutes
    ]
    assert summary == [
        (c.open_time, c.open, c.high, c.low, c.close, c.provider, c.complete) for c in from_ticks
    ]


# -- retention ----------------------------------------------------------------------------------


async def test_pruning_deletes_old_ticks_in_batches_and_keeps_their_candles(
    storage: Storage,
) -> None:
    old = [
        tick(s, symbol=sym, provider=p)
        for s in range(0, 600, 5)
        for sym in ("BTC", "ETH")
        for p in ("alpha", "beta")
    ]
    recent = [tick(7200 + s) for s in range(10)]
    with trio.fail_after(10):
        await storage.write_ticks(old + recent)
        minutes = T0 + timedelta(minutes=10)
        before = await storage.candles("ETH", 300, T0, minutes, now=T0 + timedelta(days=1))
        deleted = await storage.prune_ticks(T0 + timedelta(hours=1), batch=7)
        assert deleted == len(old)
        assert await storage.tick_count() == len(recent)
        latest = await storage.latest_ticks(["BTC"])
        assert [t.observed_at for t in latest] == [recent[-1].observed_at]
        # priceHistory over whole minutes is answered from the kept one-minute candles
        after = await storage.candles("ETH", 300, T0, minutes, now=T0 + timedelta(days=1))
        assert after == before and len(after) == 2
        # bounds off the minute grid read the minutes they touch; cut buckets are not complete
        cut = await storage.candles(
            "ETH",
            300,
            T0 + timedelta(seconds=30),
            minutes - timedelta(seconds=1),
            now=T0 + timedelta(days=1),
        )
        assert [c.open_time for c in cut] == [c.open_time for c in before]
        assert [c.complete for c in cut] == [False, False]
        assert cut[0].high == before[0].high
        assert await storage.prune_ticks(T0 + timedelta(hours=1)) == 0
