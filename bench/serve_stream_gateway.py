"""The gateway under bench/stream_latency.py: fed by one exchange stream and nothing else.

Starts `gateway.nursery.Gateway` with a providers file of a single entry, `binance-stream`,
whose `base_url` points at the bench's simulated exchange (`--upstream`), so every tick a
subscriber sees came in over the real stream path: trio-websocket client, Binance parser,
`StreamClient`, ingest (outlier watch, bus, storage), the subscription hub, `gateway/api/ws/`,
hypercorn. No REST collector runs (none is configured), the interest is BTC only, the database
is a throwaway, logging is at warning, and the GC is tuned as `gateway serve` tunes it.

The anonymous tier's per-address limits are lifted, as in serve_gateway.py: the load client is
a thousand users behind one loopback address.

`--coalesce off` sets `stream_publish_interval=0` (GATEWAY_STREAM_PUBLISH_INTERVAL=0: every
upstream message is published); `--coalesce product` leaves the shipped default (at most one
tick per symbol per second, the latest wins).

Prints one `ready PID PORT` line, then obeys stdin lines:

    status          `status {json}`: subscription members, whether every shared subscription
                    listens on the bus, the stream's connection state and tick count
    stats T0 T1     `stats {json}`: the stream's counters, WebSocket frames sent / dropped,
                    slow-consumer closes, GC in [T0, T1) (wall clock)
    quit (or EOF)   shut the gateway down and exit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from gcstats import POLICIES, GCStats
from serve_gateway import raise_fd_limit, say

from gateway.config import ProviderConfig, ProvidersFile, Settings
from gateway.gc_tuning import tune_gc
from gateway.log import configure_logging
from gateway.nursery import Gateway, RunningGateway

PROVIDER_ID = "binance-stream"


def stream_status(running: RunningGateway) -> dict[str, Any]:
    streams = running.services.streams
    clients = [c for c in (streams.clients if streams else []) if c.provider_id == PROVIDER_ID]
    if not clients:
        return {"connected": False}
    status = clients[0].status()
    return {
        "connected": status.connected,
        "live": list(status.live),
        "ticks": status.ticks,
        "connects": status.connects,
        "reconnects": status.reconnects,
        "silences": status.silences,
        "malformed": status.malformed,
        "last_error": status.last_error,
        "min_publish_interval": clients[0].settings.min_publish_interval,
    }


async def serve(
    upstream: str, port: int, db_dir: Path, gc_stats: GCStats, overrides: dict[str, Any]
) -> None:
    settings = Settings(
        **overrides,
        port=port,
        db_path=db_dir / "bench.db",
        symbols=("BTC",),
        tier_free_subscriptions=0,
        tier_free_connections=0,  # sockets per address (gateway/api/ws/admission.py)
        http_max_connections_per_client=0,  # handshakes in flight (gateway/api/connections.py)
        tier_free_per_minute=0,
        tier_free_per_day=0,
    ).validated()
    provider = ProviderConfig(
        id=PROVIDER_ID,
        name="Binance stream (bench simulator)",
        categories=("MARKET_DATA",),
        base_url=upstream,
        timeout_seconds=5,
    )
    gateway = Gateway(settings, ProvidersFile((provider,)))
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(gateway.run)
        if gc_stats.policy == "product":
            tune_gc()  # as `gateway serve` does once started (gateway/nursery.py)
        say(f"ready {os.getpid()} {running.port}")
        services = running.services
        try:
            for _ in range(10_000):  # bounded: the driver polls a few hundred times at most
                line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                words = line.split()
                if not words or words[0] == "quit":
                    break
                hub = services.hub
                if words[0] == "status":
                    listening = sum(topic.subscriber_count for topic in services.bus.topics)
                    say(
                        "status "
                        + json.dumps(
                            {
                                "members": hub.member_count if hub else 0,
                                "listening": hub is not None and listening >= hub.group_count,
                                "stream": stream_status(running),
                            }
                        )
                    )
                elif words[0] == "start":
                    gc_stats.before_publishing()
                elif words[0] == "stats":
                    t0, t1 = float(words[1]), float(words[2])
                    ws = services.ws_stats
                    say(
                        "stats "
                        + json.dumps(
                            {
                                "stream": stream_status(running),
                                "executions": hub.executions if hub else None,
                                "frames_sent": ws.frames_sent,
                                "dropped": ws.frames_dropped,
                                "slow_consumer_closes": ws.slow_consumer_closes,
                                "bus_dropped": services.bus.prices.dropped,
                                "gc": gc_stats.window(t0, t1),
                            }
                        )
                    )
        finally:
            gateway.shutdown.set()
            with trio.move_on_after(6):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="the gateway under bench/stream_latency.py")
    parser.add_argument("--upstream", required=True, help="ws://127.0.0.1:PORT/binance/stream")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--coalesce", choices=("off", "product"), default="off")
    parser.add_argument("--gc", choices=POLICIES, default="product", help="see gcstats.py")
    parser.add_argument(
        "--storage-batch-seconds", type=float, help="Settings.storage_batch_seconds (diagnosis)"
    )
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.storage_batch_seconds is not None:
        overrides["storage_batch_seconds"] = args.storage_batch_seconds
    raise_fd_limit()
    configure_logging("json", "warning")
    if args.coalesce == "off":
        overrides["stream_publish_interval"] = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-stream-gateway-") as tmp:
        trio.run(serve, args.upstream, args.port, Path(tmp), GCStats(args.gc), overrides)


if __name__ == "__main__":
    main()
