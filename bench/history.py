"""priceHistory over a large tick store: how long one day of M5 candles takes to compute.

Fills a fresh database with N ticks (default 1,000,000) for several symbols and providers,
plus 30 days of a provider's one-minute candles for XRP (what `gateway backfill --interval M1`
stores), then times `CandleHistory.candles` without upstream filling: the whole stored read
behind priceHistory/ohlcv (candles from our ticks, stored provider candles, provider minutes
summed into wider candles, merged per bucket, holes computed). Cases: one day at M5, a week at
H1 and an hour at M1 for a symbol whose ticks arrive every second from one provider and every
minute from three others (what streams plus REST polling produce), and a week at H1 summed
from the backfilled minutes.

    python bench/history.py [--ticks 1000000] [--repeat 50] [--db sqlite|postgresql://…]

Prints the median and p95 per query; the issue's target is under 20 ms for one day at M5.
`--db` picks the engine: a temporary SQLite file (default), or a PostgreSQL server, on which a
fresh database (gateway_bench_<random>) is created from the URL's and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import trio

from gateway.config import Settings
from gateway.models import Candle, PriceTick
from gateway.prices.history import CandleHistory
from gateway.storage import Storage
from gateway.store.candles import CandleStore

SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def synthetic_ticks(total: int, end: datetime) -> list[PriceTick]:
    """BTC: one provider every second plus three every minute; other symbols: every minute."""
    ticks: list[PriceTick] = []
    per_second = int(total * 0.8)
    for n in range(per_second):
        at = end - timedelta(seconds=per_second - n)
        ticks.append(PriceTick("BTC", 60_000 + (n % 997), "binance-stream", at))
    minute = 0
    while len(ticks) < total:
        at = end - timedelta(minutes=minute)
        for symbol in SYMBOLS:
            for provider in ("coingecko", "kraken", "coinbase"):
                if len(ticks) < total:
                    ticks.append(PriceTick(symbol, 100 + minute % 50, provider, at))
        minute += 1
    return ticks


def backfilled_minutes(end: datetime, days: int) -> list[Candle]:
    """A provider's closed one-minute candles, as a backfill stores them."""
    start = end - timedelta(days=days)
    return [
        Candle("XRP", 60, start + timedelta(minutes=n), 2.0, 2.1, 1.9, 2.05, 1e5, "binance", True)
        for n in range(days * 24 * 60)
    ]


@contextlib.contextmanager
def database(db: str) -> Iterator[Path | str]:
    """A fresh, empty database of the engine `db` names, removed afterwards."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / "history.db"
        return
    name = f"gateway_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(db)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def main(total: int, repeat: int, db: str) -> None:
    settings = Settings(storage_batch_rows=5000, storage_queue=20_000)
    end = datetime(2026, 11, 20, tzinfo=UTC)
    with database(db) as target:
        storage = await Storage.open(target, settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.run)
            started = time.perf_counter()
            ticks = synthetic_ticks(total, end)
            for offset in range(0, len(ticks), 20_000):
                await storage.write_ticks(ticks[offset : offset + 20_000])
            load = time.perf_counter() - started
            count = await storage.tick_count()
            await storage.ping()  # PostgreSQL: reads the database size
            print(
                f"# {count:,} ticks stored in {load:.1f} s ({count / load:,.0f} ticks/s), "
                f"database {storage.database_bytes() / 2**20:.0f} MiB"
            )
            minutes = backfilled_minutes(end, 30)
            span_ms = (
                int((end - timedelta(days=30)).timestamp() * 1000),
                int(end.timestamp() * 1000),
            )
            await CandleStore(storage).save("XRP", 60, "binance", minutes, span_ms)
            if storage.engine == "postgresql":
                # PostgreSQL plans from table statistics, which autovacuum gathers within about
                # a minute of a bulk load; without them a join estimated at one row loops.
                await storage.execute_now("ANALYZE")
            history = CandleHistory(storage, None, tuple)
            cases = [
                ("one day at M5 (BTC, 86,400 ticks/day)", "BTC", 300, timedelta(days=1)),
                ("one week at H1 (BTC)", "BTC", 3600, timedelta(days=7)),
                ("one hour at M1 (BTC)", "BTC", 60, timedelta(hours=1)),
                ("one day at M5 (ETH, polled each minute)", "ETH", 300, timedelta(days=1)),
                ("one week at H1 (XRP, from stored M1 candles)", "XRP", 3600, timedelta(days=7)),
            ]
            print(f"{'query':45} {'candles':>8} {'median ms':>10} {'p95 ms':>8}")
            for label, symbol, width, span in cases:
                timings = []
                candles = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    found = await history.candles(
                        symbol, width, end - span, end, now=end, fill_seconds=None
                    )
                    candles = found.candles
                    timings.append((time.perf_counter() - t0) * 1000)
                timings.sort()
                p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
                print(
                    f"{label:45} {len(candles):>8} {statistics.median(timings):>10.2f} {p95:>8.2f}"
                )
            nursery.cancel_scope.cancel()
        await storage.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--db", default="sqlite", help="sqlite (a temporary file) or a postgresql:// URL"
    )
    args = parser.parse_args()
    print("$ python bench/history.py " + " ".join(sys.argv[1:]))
    trio.run(main, args.ticks, args.repeat, args.db)
