"""What an idle WebSocket subscriber costs the server (issue 16: ≤ 25 KB without compression).

The subscribers are another process (loopback, port 0), so that tracemalloc, started in the
server's process only, counts the server's side alone: hypercorn's connection and app tasks,
the WebSocket's `Connection`, its queue, its subscription's sink and hub membership.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import tracemalloc

import trio

from gateway.nursery import RunningGateway
from tests.api.test_ws import ws_url
from tests.conftest import StartGateway

# N subscribers: each initialises, subscribes to priceTicks, then stays idle until killed.
_CLIENT = textwrap.dedent(
    """
    import json, sys, trio
    from trio_websocket import open_websocket_url

    QUERY = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider observedAt } }'

    async def one(url, n):
        async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_message(json.dumps({"type": "connection_init"}))
            await ws.get_message()
            subscribe = {"type": "subscribe", "id": str(n), "payload": {"query": QUERY}}
            await ws.send_message(json.dumps(subscribe))
            await trio.sleep(60)

    async def main(url, count):
        with trio.move_on_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(one, url, n)

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def _subscribers(running: RunningGateway, count: int) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-c", _CLIENT, ws_url(running), str(count)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _members_reach(running: RunningGateway, count: int) -> None:
    hub = running.services.hub
    assert hub is not None
    with trio.fail_after(30):
        while hub.member_count < count:
            await trio.sleep(0.05)
    await trio.sleep(0.5)  # each one's subscribe task has ended


async def test_an_idle_subscriber_costs_the_server_at_most_25_kb(
    start_gateway: StartGateway,
) -> None:
    # 101 sockets from one address: the free tier's per-address caps are lifted (0: none).
    running = await start_gateway(
        tier_free_connections=0,
        tier_free_subscriptions=0,
        tier_free_per_minute=0,
        tier_free_per_day=0,
        http_max_connections_per_client=0,
    )
    warm = await _subscribers(running, 1)  # the shared execution, caches: not per socket
    count = 100
    others: trio.Process | None = None
    try:
        await _members_reach(running, 1)
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            others = await _subscribers(running, count)
            await _members_reach(running, 1 + count)
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        for process in (warm, others):
            if process is not None:
                process.kill()
                with trio.move_on_after(5):
                    await process.wait()
    per_subscriber = (after - before) / count
    # 29.3 KB before one task served each socket (reader, writer, deadlines, shutdown) and its
    # nursery was opened only while operation tasks run; ~23 KB after.
    assert per_subscriber <= 25 * 1024, f"{per_subscriber / 1024:.1f} KB per idle subscriber"
