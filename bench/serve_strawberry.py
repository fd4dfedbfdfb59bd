"""The "strawberry" server of bench/fanout.py: the stack a user would otherwise pick.

The same subscription (`priceTicks(symbols) { symbol usd provider observedAt … }`) served by
strawberry's own asyncio graphql-transport-ws handlers (`strawberry.asgi.GraphQL`) under
uvicorn. Each subscriber's resolver reads its own bounded asyncio.Queue, fed by one publisher
task (drop-oldest when a queue is full, like the gateway's buffers), so strawberry executes
and serializes the subscription once per subscriber per event: that is the point of the
comparison with the gateway's shared execution.

Prints `ready PID PORT`, then obeys the same stdin lines as serve_gateway.py:
`start RATE SECONDS`, `stats T0 T1`, `count`, `quit` (or EOF).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

import strawberry
import uvicorn
from gcstats import POLICIES, GCStats
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

QUEUE_SIZE = 256  # the gateway's ws_send_queue default


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    usd: float
    provider: str
    observed_at: datetime


class Broadcast:
    """One bounded queue per subscriber; publishing never blocks (drop-oldest)."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[Tick]] = set()
        self.published_at: list[float] = []
        self.dropped = 0

    def publish(self, tick: Tick) -> None:
        for queue in self.queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(tick)


BROADCAST = Broadcast()


@strawberry.type
class Price:
    symbol: str
    usd: float
    market_cap_usd: float | None
    volume_24h_usd: float | None
    change_24h_pct: float | None
    provider: str
    sources: list[str]
    observed_at: datetime


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def price_ticks(self, symbols: list[str]) -> AsyncGenerator[Price, None]:
        wanted = {s.strip().upper() for s in symbols}
        queue: asyncio.Queue[Tick] = asyncio.Queue(QUEUE_SIZE)
        BROADCAST.queues.add(queue)
        try:
            while True:
                tick = await queue.get()
                if tick.symbol in wanted:
                    yield Price(
                        symbol=tick.symbol,
                        usd=tick.usd,
                        market_cap_usd=None,
                        volume_24h_usd=None,
                        change_24h_pct=None,
                        provider=tick.provider,
                        sources=[tick.provider],
                        observed_at=tick.observed_at,
                    )
        finally:
            BROADCAST.queues.discard(queue)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def publish(rate: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    interval = 1.0 / rate
    start = loop.time()
    lags: list[float] = []
    end = start + seconds
    for i in range(count):
        due = start + i * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        if now > end:  # time is up: a saturated loop published fewer ticks than scheduled
            break
        lags.append(now - due)
        tick = Tick("BTC", 60_000.0 + i * 0.01, "bench", datetime.now(UTC))
        BROADCAST.published_at.append(tick.observed_at.timestamp())
        BROADCAST.publish(tick)
    lags.sort()
    say(
        "done "
        + json.dumps(
            {
                "published": len(BROADCAST.published_at),
                "scheduled": count,
                "lag_p50": lags[len(lags) // 2],
                "lag_p99": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                "lag_max": lags[-1],
            }
        )
    )


async def commands(server: uvicorn.Server, gc_stats: GCStats) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    try:
        for _ in range(10_000):  # bounded: the driver sends a handful of commands
            words = (await reader.readline()).decode().split()
            if not words or words[0] == "quit":
                break
            if words[0] == "start":
                gc_stats.before_publishing()
                task = asyncio.create_task(publish(float(words[1]), float(words[2])))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif words[0] == "stats":
                t0, t1 = float(words[1]), float(words[2])
                stats = {
                    "published_window": sum(
                        1 for t in BROADCAST.published_at if t0 <= t < t1
                    ),
                    "members": len(BROADCAST.queues),
                    "dropped": BROADCAST.dropped,
                    "gc": gc_stats.window(t0, t1),
                }
                say("stats " + json.dumps(stats))
            elif words[0] == "count":
                say(f"count {len(BROADCAST.queues)}")
    finally:
        server.should_exit = True


async def serve(port: int, ws: str, gc_stats: GCStats) -> None:
    schema = strawberry.Schema(query=Query, subscription=Subscription)
    app = GraphQL(schema, subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=sock.getsockname()[1], log_level="warning", ws=ws,
        access_log=False, lifespan="off",
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
    await commands(server, gc_stats)
    server.force_exit = True
    await asyncio.wait_for(serving, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description="strawberry + uvicorn under bench/fanout.py")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--ws", default="auto", help="uvicorn ws implementation (auto, websockets, wsproto, …)"
    )
    parser.add_argument("--gc", choices=POLICIES, default="default", help="see gcstats.py")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.ws, GCStats(args.gc)))


if __name__ == "__main__":
    main()
