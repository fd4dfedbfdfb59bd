"""Live prices end to end: exchange stream -> gateway -> GraphQL subscriber.

The gateway runs with a Binance stream pointed at the WebSocket simulator (and, for the
fallback test, CoinGecko's REST API at the HTTP simulator). A client's `priceTicks`
subscription drives what the stream subscribes to upstream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.config import ProviderConfig, ProvidersFile
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway
from tests.simulator.rest import run_simulator
from tests.simulator.ws import run_ws_simulator


def stream_provider(url: str) -> ProviderConfig:
    return ProviderConfig(
        id="binance-stream",
        name="Binance stream",
        categories=("MARKET_DATA",),
        base_url=url,
        timeout_seconds=2,
    )


@asynccontextmanager
async def subscribed(
    running: RunningGateway, symbols: list[str]
) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        query = "subscription($s: [String!]!) { priceTicks(symbols: $s) { symbol usd provider } }"
        payload = {"query": query, "variables": {"s": symbols}}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "p", "payload": payload}))
        yield ws


async def next_tick(ws: WebSocketConnection, want: Any) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        tick = message["payload"]["data"]["priceTicks"]
        if want(tick):
            return tick  # type: ignore[no-any-return]


async def test_a_stream_price_change_reaches_a_subscriber_and_survives_a_dropped_stream(
    start_gateway: StartGateway,
) -> None:
    async with run_ws_simulator() as exchanges:
        running = await start_gateway(
            providers=ProvidersFile((stream_provider(exchanges.url("binance")),)), symbols=("BTC",)
        )
        async with subscribed(running, ["SOL"]) as ws:
            # the subscription's interest makes the stream subscribe to SOL upstream
            with trio.fail_after(10):
                await exchanges.wait_for(lambda: "SOL" in exchanges.subscribed("binance"))
            exchanges.set_price("binance", "SOL", 181.25)
            with trio.fail_after(5):
                tick = await next_tick(ws, lambda t: t["usd"] == 181.25)
            assert tick == {"symbol": "SOL", "usd": 181.25, "provider": "binance-stream"}

            await exchanges.drop("binance", abort=True)  # the exchange connection dies
            with trio.fail_after(10):
                await exchanges.wait_for(
                    lambda: (
                        exchanges.open_connections("binance") == 1
                        and "SOL" in exchanges.subscribed("binance")
                    )
                )
            await trio.sleep(1.1)  # the stream publishes at most one tick per symbol per second
            exchanges.set_price("binance", "SOL", 182.5)
            with trio.fail_after(5):
                tick = await next_tick(ws, lambda t: t["usd"] == 182.5)
        streams = running.services.streams
        assert streams is not None
        (status,) = streams.statuses()
        assert status.reconnects >= 1


async def test_rest_polling_keeps_ticks_flowing_while_every_stream_is_down(
    start_gateway: StartGateway,
) -> None:
    async with run_simulator() as rest:
        coingecko = rest.provider("coingecko", interval_seconds=0.3, symbols=("BTC",))
        dead_stream = stream_provider("ws://127.0.0.1:9/binance/stream")  # nothing listens
        running = await start_gateway(
            providers=ProvidersFile((coingecko, dead_stream)), symbols=("BTC",)
        )
        async with subscribed(running, ["BTC"]) as ws:
            rest.set_price("BTC", 70_123.0)
            with trio.fail_after(5):
                tick = await next_tick(ws, lambda t: t["usd"] == 70_123.0)
        assert tick["provider"] == "coingecko"
        streams = running.services.streams
        assert streams is not None and streams.down_symbols(["BTC"]) == ["BTC"]
