"""The servers of bench/http_query.py: GraphQL over HTTP, the gateway vs strawberry/uvicorn.

    python bench/serve_http.py ours --db DIR        the real `gateway.nursery.Gateway` (hypercorn
                                                    trio worker, starlette, gateway/api/), no
                                                    providers, logging at warning
    python bench/serve_http.py strawberry --db DIR  `strawberry.asgi.GraphQL` under uvicorn
                                                    (asyncio), a schema with the same two fields

Both answer `{ __typename }` and `prices(symbols) { … }`, and both read `prices` from the same
SQLite file the same way: the gateway's own `LATEST_SQL` (one newest tick per provider per
symbol) off the event loop (a worker thread), then the gateway's `consensus` per symbol.
The gateway seeds DIR/bench.db with fresh ticks (three providers, five symbols) before it
prints `ready PID PORT`; strawberry reads the file the gateway left there. Both then wait for
a line (`quit`) or EOF on stdin.

The load (wrk, one address: 127.0.0.1) is one client for the gateway's per-address limits, so
the gateway runs with the anonymous tier's request rates lifted (`tier_free_per_minute=0`,
`tier_free_per_day=0`) and no per-address connection cap: every request is still
authenticated (anonymous), counted against its tier, host-checked, size- and
complexity-limited as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import strawberry
import trio
import uvicorn
from serve_strawberry import Price  # the fan-out bench's strawberry type, the same fields
from strawberry.asgi import GraphQL

from gateway.config import ProvidersFile, Settings
from gateway.gc_tuning import tune_gc
from gateway.log import configure_logging
from gateway.models import PriceTick
from gateway.nursery import Gateway, RunningGateway
from gateway.prices.consensus import consensus
from gateway.store.ticks import LATEST_SQL, tick_from_row

SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "ADA")
PROVIDERS = ("alpha", "beta", "gamma")
BASE_USD = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "XRP": 0.6, "ADA": 0.45}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- ours ---------------------------------------------------------------------------------------


def serve_ours(port: int, db_dir: Path) -> None:
    configure_logging("json", "warning")
    settings = Settings(
        port=port,
        db_path=db_dir / "bench.db",
        tier_free_per_minute=0,  # one load client on one address: see the module docstring
        tier_free_per_day=0,
        http_max_connections_per_client=0,
        # Not loaded: torch's import and model load would share the GIL with the first
        # seconds of the run (the HTTP path is what is measured).
        sentiment_model="off",
    ).validated()

    async def serve() -> None:
        gateway = Gateway(settings, ProvidersFile(()))
        async with trio.open_nursery() as nursery:
            running: RunningGateway = await nursery.start(gateway.run)
            tune_gc()  # as `gateway serve` does once started
            now = datetime.now(UTC)
            ticks = [
                PriceTick(
                    symbol, BASE_USD[symbol] * (1 + i / 1000), provider, now - timedelta(seconds=i)
                )
                for symbol in SYMBOLS
                for i, provider in enumerate(PROVIDERS)
            ]
            await running.services.storage.write_ticks(ticks)
            say(f"ready {os.getpid()} {running.port}")
            try:
                await trio.to_thread.run_sync(
                    sys.stdin.readline, abandon_on_cancel=True
                )  # quit/EOF
            finally:
                gateway.shutdown.set()
                with trio.move_on_after(6):
                    await gateway.stopped.wait()
                nursery.cancel_scope.cancel()

    trio.run(serve)


# -- strawberry ---------------------------------------------------------------------------------


_LOCAL = threading.local()  # one read connection per worker thread, as the gateway keeps


def _latest(db_path: str, symbols: list[str]) -> list[Any]:
    db = getattr(_LOCAL, "db", None)
    if db is None:
        db = _LOCAL.db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    return db.execute(LATEST_SQL, {"symbols": json.dumps(symbols)}).fetchall()


@strawberry.type
class Query:
    @strawberry.field
    async def prices(self, info: strawberry.Info, symbols: list[str]) -> list[Price]:
        wanted = [s.strip().upper() for s in symbols]
        rows = await asyncio.to_thread(_latest, info.context["db_path"], wanted)
        by_symbol: dict[str, list[PriceTick]] = {}
        for row in rows:
            tick = tick_from_row(row)
            by_symbol.setdefault(tick.symbol, []).append(tick)
        now = datetime.now(UTC)
        out = []
        for symbol in wanted:
            agreed = consensus(by_symbol.get(symbol, []), now)
            if agreed is None or agreed.usd is None:
                continue
            newest = agreed.newest
            out.append(
                Price(
                    symbol=symbol,
                    usd=agreed.usd,
                    market_cap_usd=newest.market_cap_usd,
                    volume_24h_usd=newest.volume_24h_usd,
                    change_24h_pct=newest.change_24h_pct,
                    provider="consensus" if len(agreed.used) > 1 else newest.provider,
                    sources=sorted(t.provider for t in agreed.used),
                    observed_at=newest.observed_at,
                )
            )
        return out


class _App(GraphQL):  # type: ignore[type-arg]
    def __init__(self, db_path: str) -> None:
        super().__init__(strawberry.Schema(query=Query))
        self.db_path = db_path

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        return {"request": request, "response": response, "db_path": self.db_path}


def serve_strawberry(port: int, db_dir: Path) -> None:
    async def serve() -> None:
        app = _App(str(db_dir / "bench.db"))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", backlog=1024
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(200):  # bounded wait for the listener
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        if not server.started:
            raise SystemExit("uvicorn did not start")
        say(f"ready {os.getpid()} {sock.getsockname()[1]}")
        await asyncio.to_thread(sys.stdin.readline)  # quit/EOF
        server.should_exit = True
        await asyncio.wait_for(serving, 10)

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser(description="a GraphQL-over-HTTP server for http_query.py")
    parser.add_argument("server", choices=("ours", "strawberry"))
    parser.add_argument("--db", type=Path, required=True, help="folder of bench.db")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    raise_fd_limit()
    if args.server == "ours":
        serve_ours(args.port, args.db)
    else:
        serve_strawberry(args.port, args.db)


if __name__ == "__main__":
    main()
