"""What the store promises on both engines beyond its queries (those are test_storage.py, run
on SQLite and PostgreSQL alike): the write guard and fencing a leader lease builds on, the
SQLite-to-PostgreSQL rewrite of the store's SQL, and PostgreSQL going away and coming back
(STORE_UNAVAILABLE and /readyz 503 meanwhile, live streams unaffected, recovery on its own).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.cli import main
from gateway.config import Settings
from gateway.config.database import database_overrides
from gateway.config.environment import settings_from_env
from gateway.errors import StorageError, StoreUnavailable
from gateway.ingest import Ingest
from gateway.models import PriceTick, utc_now
from gateway.prices.consensus import OutlierWatch
from gateway.storage import Storage
from gateway.store import dialect, ticks
from tests.conftest import StartGateway, graphql, wait_members
from tests.postgres_server import PostgresServer

FAST = Settings(storage_batch_seconds=0.01)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def tick(seconds: float, usd: float = 100.0) -> PriceTick:
    return PriceTick("BTC", usd, "alpha", T0 + timedelta(seconds=seconds))


# -- write guard and fencing (both engines) ----------------------------------------------------


async def test_a_write_guard_that_refuses_fails_the_writes_and_stores_nothing(
    running_storage: Storage,
) -> None:
    deposed = True

    def guard() -> None:
        if deposed:
            raise RuntimeError("lease lost")

    with trio.fail_after(10):
        running_storage.set_write_guard(guard)
        with pytest.raises(StorageError, match="lease lost"):
            await running_storage.write_ticks([tick(0)])
        with pytest.raises(StorageError, match="lease lost"):
            await running_storage.execute_now("DELETE FROM price_ticks")
        assert await running_storage.tick_count() == 0
        deposed = False
        await running_storage.write_ticks([tick(1)])
        assert await running_storage.tick_count() == 1


async def test_a_fenced_writer_with_an_older_token_writes_nothing(
    store_target: Path | str,
) -> None:
    """Two writers on one database: once the one with token 6 has written, the one still
    holding token 5 (a deposed leader) fails every commit, whatever it believes."""
    with trio.fail_after(20):
        old, new = await Storage.open(store_target, FAST), await Storage.open(store_target, FAST)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(old.run)
                await nursery.start(new.run)
                old.fence(5)
                await old.write_ticks([tick(0)])  # 5 is the newest token so far
                new.fence(6)
                await new.write_ticks([tick(1)])
                with pytest.raises(StorageError, match="fenced"):
                    await old.write_ticks([tick(2)])
                with pytest.raises(StorageError, match="fenced"):
                    await old.transact(lambda conn: conn.execute("DELETE FROM price_ticks"))
                await new.write_ticks([tick(3)])  # its own token again: still fine
                nursery.cancel_scope.cancel()
            assert [t.observed_at for t in await new.ticks_since(["BTC"], T0 - timedelta(1))] == [
                tick(0).observed_at,
                tick(1).observed_at,
                tick(3).observed_at,
            ]
        finally:
            await old.aclose()
            await new.aclose()


# -- the dialect --------------------------------------------------------------------------------


def test_sqlite_statements_are_rewritten_for_postgres() -> None:
    upsert, numbered = dialect.postgres_sql(ticks.CANDLE_UPSERT_SQL)
    assert numbered and "%(p3)s / 60000" in upsert and "least(c.first_ms" in upsert
    insert, _ = dialect.postgres_sql(ticks.INSERT_SQL)
    assert insert.startswith("INSERT INTO price_ticks") and "ON CONFLICT DO NOTHING" in insert
    replace, _ = dialect.postgres_sql(
        "INSERT OR REPLACE INTO tvl_daily (scope, day_ms, tvl_usd, provider, fetched_ms)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    assert "ON CONFLICT (scope, day_ms) DO UPDATE SET tvl_usd = excluded.tvl_usd" in replace
    search, _ = dialect.postgres_sql(
        "SELECT id FROM news_articles WHERE id IN"
        " (SELECT rowid FROM news_fts WHERE news_fts MATCH :search) AND x LIKE '50%'"
    )
    assert "search @@ websearch_to_tsquery('simple', %(search)s)" in search
    assert search.endswith("LIKE '50%'")  # literals are left alone
    assert dialect.postgres_params([1, 2], True) == {"p1": 1, "p2": 2}


def test_gateway_db_names_a_file_or_a_postgres_url() -> None:
    url = "postgresql://gw:secret@db.internal:5432/gateway"
    assert settings_from_env({"GATEWAY_DB": url}).db_url == url
    plain = settings_from_env({"GATEWAY_DB": "/var/lib/gateway/g.db"})
    assert plain.db_path == Path("/var/lib/gateway/g.db") and not plain.db_url
    assert settings_from_env({}).db_url is None  # the default stays the SQLite file
    assert database_overrides(None) == {}


# -- PostgreSQL going away ---------------------------------------------------------------------


async def _until_answers(storage: Storage) -> None:
    with trio.fail_after(15):
        while True:
            try:
                await storage.ping()
                return
            except StoreUnavailable:
                await trio.sleep(0.1)


async def test_postgres_down_is_store_unavailable_at_once_and_recovers(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    storage = await Storage.open(postgres_url, FAST)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.run)
            with trio.fail_after(10):
                await storage.write_ticks([tick(0)])
            await trio.to_thread.run_sync(postgres_server.pause)
            try:
                with trio.fail_after(10):
                    with pytest.raises(StoreUnavailable) as caught:
                        await storage.latest_ticks(["BTC"])
                    assert caught.value.code == "STORE_UNAVAILABLE"
                    began = time.monotonic()
                    with pytest.raises(StoreUnavailable):  # known down: no waiting
                        await storage.latest_ticks(["BTC"])
                    assert time.monotonic() - began < 0.5
                    with pytest.raises(StorageError):
                        await storage.write_ticks([tick(1)])
                    assert storage.writes_failing_since is not None
            finally:
                await trio.to_thread.run_sync(postgres_server.resume)
            await _until_answers(storage)
            with trio.fail_after(10):
                await storage.write_ticks([tick(2)])
                assert storage.writes_failing_since is None
                assert [t.usd for t in await storage.latest_ticks(["BTC"])] == [100.0]
                assert await storage.tick_count() == 2
            nursery.cancel_scope.cancel()
    finally:
        await storage.aclose()


async def test_gateway_on_postgres_serves_store_unavailable_while_streams_go_on(
    start_gateway: StartGateway, postgres_server: PostgresServer, postgres_url: str
) -> None:
    running = await start_gateway(db_url=postgres_url, storage_batch_seconds=0.01)
    services = running.services
    ingest = Ingest(services.storage, services.bus, services.status_board, OutlierWatch())
    query = "{ quarantinedTicks(limit: 5) { symbol } }"
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    assert (await graphql(running, query)) == {"data": {"quarantinedTicks": []}}
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        live = 'subscription { priceTicks(symbols: ["BTC"]) { usd } }'
        await ws.send_message(
            json.dumps({"type": "subscribe", "id": "1", "payload": {"query": live}})
        )
        await wait_members(running, 1)
        await trio.to_thread.run_sync(postgres_server.pause)
        try:
            with trio.fail_after(15):
                answer = await graphql(running, query)
                assert answer["errors"][0]["extensions"]["code"] == "STORE_UNAVAILABLE", answer
                async with httpx.AsyncClient(base_url=running.urls[0]) as client:
                    ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert "unavailable" in " ".join(ready.json()["problems"])
                await ingest([PriceTick("BTC", 123.0, "p", utc_now())])  # the store is down
                message = json.loads(await ws.get_message())
                assert message["payload"]["data"]["priceTicks"]["usd"] == 123.0
        finally:
            await trio.to_thread.run_sync(postgres_server.resume)
    await _until_answers(services.storage)
    with trio.fail_after(10):
        assert (await graphql(running, query)) == {"data": {"quarantinedTicks": []}}
        async with httpx.AsyncClient(base_url=running.urls[0]) as client:
            while (await client.get("/readyz")).status_code != 200:  # a commit must succeed
                await ingest([PriceTick("BTC", 124.0, "p", utc_now())])
                await trio.sleep(0.1)


def test_backup_and_restore_refuse_a_postgres_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They copy SQLite files: on PostgreSQL they say what to use instead of backing up a
    file that is not the database."""
    monkeypatch.setenv("GATEWAY_DB", "postgresql://gw@127.0.0.1:1/gateway")
    assert main(["backup", "--to", str(tmp_path)]) == 2
    assert "pg_dump" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "x.db")]) == 2
    assert "pg_restore" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


async def test_both_engines_have_the_same_tables_and_columns(
    tmp_path: Path, postgres_url: str
) -> None:
    """One migration list, two schemas that match: every table and column SQLite has,
    PostgreSQL has (less FTS5's own tables, plus the tsvector column that replaces them)."""

    def columns(db: Any, sql: str) -> set[tuple[str, str]]:
        return {(table, column) for table, column in db.execute(sql).fetchall()}

    sqlite_sql = (
        "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p"
        " WHERE m.type = 'table' AND m.name NOT LIKE 'news_fts%'"
    )
    postgres_sql = (
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public'"
    )
    with trio.fail_after(20):
        lite = await Storage.open(tmp_path / "g.db", FAST)
        pg = await Storage.open(postgres_url, FAST)
        try:
            on_sqlite = await lite.read(lambda db: columns(db, sqlite_sql))
            on_postgres = await pg.read(lambda db: columns(db, postgres_sql))
        finally:
            await lite.aclose()
            await pg.aclose()
    assert on_postgres - on_sqlite == {("news_articles", "search")}
    assert on_sqlite - on_postgres == set()
    assert len({table for table, _ in on_sqlite}) >= 30


async def test_replicas_opening_one_new_postgres_database_at_once_migrate_it_once(
    postgres_url: str,
) -> None:
    opened: list[Storage] = []

    async def open_one() -> None:
        opened.append(await Storage.open(postgres_url, FAST))

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(open_one)
            versions = await opened[0].read(
                lambda db: db.execute("SELECT version FROM schema_migrations").fetchall()
            )
    finally:
        for storage in opened:
            await storage.aclose()
    assert len(opened) == 3
    assert sorted(v for (v,) in versions) == list(range(1, len(versions) + 1))
