"""The "ours" server of bench/fanout.py: the real gateway with a synthetic price publisher.

Starts `gateway.nursery.Gateway` (no providers, a throwaway database, default WebSocket
settings, logging at warning), prints one `ready PID PORT` line, then obeys stdin lines:

    start RATE SECONDS   publish PriceTick("BTC", …, "bench", utc_now()) on the bus at RATE/s
                         for SECONDS (fixed schedule: the i-th tick is due at start + i/RATE;
                         a late tick is published at once, none after SECONDS), then print
                         `done {json}` (ticks published of scheduled, schedule lag)
    stats T0 T1          print `stats {json}`: ticks published in [T0, T1) (wall clock), …
    quit (or EOF)        shut the gateway down and exit

`observedAt` of each tick is the instant it was published, which the load client subtracts
from its receive time.

With `--broker redis://…` it is one of several replicas (bench/replicas.py): `start` then waits
until this replica holds the collector lease (only the leader may publish prices), and `stats`
adds `bus_p50`/`bus_p99`: publish instant to this replica's own bus delivery, which with a
broker is the Redis round trip (XADD, then XREAD) and in one process ~0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import trio
from gcstats import POLICIES, GCStats

from gateway.config import ProvidersFile, Settings
from gateway.config.broker import BrokerSettings
from gateway.gc_tuning import tune_gc
from gateway.log import configure_logging
from gateway.models import PriceTick, utc_now
from gateway.nursery import Gateway, RunningGateway


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Publisher:
    def __init__(self, running: RunningGateway) -> None:
        self.topic = running.services.bus.prices
        self.published_at: list[float] = []
        self.lags: list[float] = []

    async def run(self, rate: float, seconds: float, running: RunningGateway) -> None:
        replication = running.services.replication
        for _ in range(300):  # up to 15 s
            if replication is None or replication.lease.holds():
                break
            await trio.sleep(0.05)
        count = max(1, round(rate * seconds))
        interval = 1.0 / rate
        start = trio.current_time()
        price = 60_000.0
        end = start + seconds
        for i in range(count):
            due = start + i * interval
            await trio.sleep_until(due)
            now = trio.current_time()
            if now > end:  # time is up: a saturated loop published fewer ticks than scheduled
                break
            self.lags.append(now - due)
            tick = PriceTick("BTC", price + i * 0.01, "bench", utc_now())
            self.published_at.append(tick.observed_at.timestamp())
            self.topic.publish(tick)
        lags = sorted(self.lags)
        say(
            "done "
            + json.dumps(
                {
                    "published": len(self.published_at),
                    "scheduled": count,
                    "lag_p50": lags[len(lags) // 2],
                    "lag_p99": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                    "lag_max": lags[-1],
                }
            )
        )


async def bus_latency(running: RunningGateway, seen: list[float]) -> None:
    """Publish instant -> delivery on this replica's bus, for every tick (bounded list)."""
    with running.services.bus.prices.subscribe() as ticks:
        async for tick in ticks:
            if len(seen) < 1_000_000:
                seen.append(utc_now().timestamp() - tick.observed_at.timestamp())


async def serve(port: int, db_dir: Path, gc_stats: GCStats, broker: str | None) -> None:
    # The load client is N users behind one loopback address: lift the anonymous tier's
    # per-address limits (subscriptions, connections, request rates), which would otherwise
    # stop at 5.
    settings = Settings(
        port=port,
        db_path=db_dir / "bench.db",
        tier_free_subscriptions=0,
        tier_free_connections=0,  # sockets per address (gateway/api/ws/admission.py)
        http_max_connections_per_client=0,  # handshakes in flight (gateway/api/connections.py)
        tier_free_per_minute=0,
        tier_free_per_day=0,
        broker=BrokerSettings(broker) if broker else None,
    ).validated()
    gateway = Gateway(settings, ProvidersFile(()))
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(gateway.run)
        if gc_stats.policy == "product":
            tune_gc()  # as `gateway serve` does once started (gateway/nursery.py)
        publisher = Publisher(running)
        replication, seen = running.services.replication, list[float]()
        for _ in range(300):  # up to 15 s
            if replication is None or replication.client.up:
                break
            await trio.sleep(0.05)
        nursery.start_soon(bus_latency, running, seen)
        say(f"ready {os.getpid()} {running.port}")
        try:
            for _ in range(10_000):  # bounded: the driver sends a handful of commands
                line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                words = line.split()
                if not words or words[0] == "quit":
                    break
                if words[0] == "start":
                    gc_stats.before_publishing()
                    nursery.start_soon(publisher.run, float(words[1]), float(words[2]), running)
                elif words[0] == "stats":
                    t0, t1 = float(words[1]), float(words[2])
                    hub = running.services.hub
                    ws_stats = running.services.ws_stats
                    say(
                        "stats "
                        + json.dumps(
                            {
                                "published_window": sum(
                                    1 for t in publisher.published_at if t0 <= t < t1
                                ),
                                "members": hub.member_count if hub else None,
                                "executions": hub.executions if hub else None,
                                "dropped": ws_stats.frames_dropped,
                                "slow_consumer_closes": ws_stats.slow_consumer_closes,
                                "frames_sent": ws_stats.frames_sent,
                                "gc": gc_stats.window(t0, t1),
                                **_quantiles(sorted(seen)),
                            }
                        )
                    )
                elif words[0] == "count":
                    hub = running.services.hub
                    say(f"count {hub.member_count if hub else 0}")
        finally:
            gateway.shutdown.set()
            with trio.move_on_after(6):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


def _quantiles(seen: list[float]) -> dict[str, float | None]:
    if not seen:
        return {"bus_p50": None, "bus_p99": None}
    return {"bus_p50": seen[len(seen) // 2], "bus_p99": seen[int(0.99 * (len(seen) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description="the gateway under bench/fanout.py")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--gc", choices=POLICIES, default="product", help="see gcstats.py")
    parser.add_argument("--broker", help="redis://…: run as one of several replicas")
    args = parser.parse_args()
    raise_fd_limit()
    configure_logging("json", "warning")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        trio.run(serve, args.port, Path(tmp), GCStats(args.gc), args.broker)


if __name__ == "__main__":
    main()
