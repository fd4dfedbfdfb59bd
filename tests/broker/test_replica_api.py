"""One replica (an in-process Gateway with a broker) as its clients see it.

- `priceTicks(since:)` on a replica that is not the leader: ticks from the shared store, then
  the ones the leader published but had not committed yet (read back from the stream), then live
  ones, each once, though the store and the stream overlap in both directions;
- Redis down: `/readyz` says "degraded" with the reason (still 200: queries are answered),
  `status` says so, a running subscription ends with BROKER_UNAVAILABLE and a new one is refused
  with it; once Redis is back, subscriptions work again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.broker import BrokerBus, BrokerClient
from gateway.config import ProviderConfig, ProvidersFile
from gateway.config.broker import BrokerSettings
from gateway.models import PriceTick, ProviderStateChange, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, graphql
from tests.redis_server import RedisServer

LEADER_TOKEN = 77
TICKS = 'subscription($s: DateTime) { priceTicks(symbols: ["BTC"], since: $s) { usd } }'


def broker(server: RedisServer) -> BrokerSettings:
    return BrokerSettings(server.url, block=0.2, timeout=0.5, lease=1.0)


@asynccontextmanager
async def other_leader(server: RedisServer) -> AsyncIterator[BrokerBus]:
    """Another replica that holds the collector lease (for a minute): its bus publishes."""
    async with BrokerClient(broker(server)) as client:
        await client.redis.set(client.key("leader"), str(LEADER_TOKEN), px=60_000)
        bus = BrokerBus(64, client, fence=lambda: LEADER_TOKEN)
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            yield bus
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def subscription(
    running: RunningGateway, variables: dict[str, Any]
) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["type"] == "connection_ack"
        payload = {"query": TICKS, "variables": variables}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        yield ws


async def message(ws: WebSocketConnection, timeout: float = 5) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def delivered(running: RunningGateway, count: int) -> None:
    with trio.fail_after(5):
        while running.services.bus.prices.published < count:
            await trio.sleep(0.01)


async def test_since_on_a_follower_gets_store_then_stream_backlog_then_live_once(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    async with other_leader(redis_server) as leader:
        running = await start_gateway(broker=broker(redis_server))
        storage = running.services.storage
        assert running.services.replication is not None
        assert not running.services.replication.lease.holds()  # the other one leads
        with trio.fail_after(5):
            while not running.services.replication.client.up:
                await trio.sleep(0.01)
        start = utc_now().replace(microsecond=0) - timedelta(seconds=30)  # stored to the ms
        tick = [
            PriceTick("BTC", 100.0 + i, "coingecko", start + timedelta(seconds=i)) for i in range(5)
        ]
        # t0: stored and published long ago. t1: published, not committed yet by the leader.
        await storage.queue_ticks([tick[0]])
        leader.prices.publish(tick[0])
        leader.prices.publish(tick[1])
        # t3: committed, but the leader's publish of it is still on its way (sent below).
        await storage.queue_ticks([tick[3]])
        await storage.committed()
        await delivered(running, 2)
        async with subscription(running, {"s": (start - timedelta(seconds=1)).isoformat()}) as ws:
            got = [(await message(ws))["payload"]["data"]["priceTicks"]["usd"] for _ in range(3)]
            assert got == [100.0, 103.0, 101.0]  # the store (t0, t3), then the backlog (t1)
            leader.prices.publish(tick[3])  # already sent from the store: not again
            leader.prices.publish(tick[4])
            assert (await message(ws))["payload"]["data"]["priceTicks"]["usd"] == 104.0
            with trio.move_on_after(0.5):
                extra = await ws.get_message()
                raise AssertionError(f"a duplicate: {extra}")


async def test_redis_down_degrades_and_live_streams_say_so_then_resume(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    running = await start_gateway(broker=broker(redis_server))
    replication = running.services.replication
    assert replication is not None
    with trio.fail_after(5):
        while not (replication.client.up and replication.lease.holds()):
            await trio.sleep(0.01)
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as http:
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["broker"]["leader"] is True
        assert "gateway_leader 1" in (await http.get("/metrics")).text
        async with subscription(running, {"s": None}) as ws:
            redis_server.pause()
            ended = await message(ws, 10)
            assert ended["type"] == "error"
            assert ended["payload"][0]["extensions"]["code"] == "BROKER_UNAVAILABLE"
        response = await http.get("/readyz")
        assert response.status_code == 200, "queries are still answered from the database"
        body = response.json()
        assert body["status"] == "degraded" and "unavailable" in body["degraded"][0]
        metrics = (await http.get("/metrics")).text
        assert "gateway_broker_up 0" in metrics
        status = await graphql(running, "{ status { status broker { available reason } } }")
        assert status["data"]["status"]["status"] == "degraded"
        assert status["data"]["status"]["broker"]["available"] is False
        assert status["data"]["status"]["broker"]["reason"]
        async with subscription(running, {"s": None}) as ws:
            refused = await message(ws)
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "BROKER_UNAVAILABLE"
        redis_server.resume()
        with trio.fail_after(10):
            while (await http.get("/readyz")).json()["status"] != "ready":
                await trio.sleep(0.1)
        with trio.fail_after(10):  # leads again (the restarted Redis lost every key)
            while not replication.lease.holds():
                await trio.sleep(0.05)
        async with subscription(running, {"s": None}) as ws:
            await trio.sleep(0.3)
            running.services.bus.prices.publish(PriceTick("BTC", 5.0, "coingecko", utc_now()))
            assert (await message(ws))["payload"]["data"]["priceTicks"]["usd"] == 5.0


async def test_a_follower_shows_the_provider_states_the_leader_announced(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    provider = ProviderConfig(
        id="cg", name="cg", categories=("MARKET_DATA",), base_url="http://127.0.0.1:9"
    )
    async with other_leader(redis_server) as leader:
        # Announced before the follower started: it reads the newest states at start.
        leader.provider_states.publish(
            ProviderStateChange("cg", "UNKNOWN", "ONLINE", "answered", utc_now())
        )
        with trio.fail_after(5):
            while not await leader.provider_states.recent(1):
                await trio.sleep(0.02)
        running = await start_gateway(ProvidersFile((provider,)), broker=broker(redis_server))
        board = running.services.status_board
        with trio.fail_after(5):
            while board.state("cg") != "ONLINE":
                await trio.sleep(0.02)
        status = await graphql(running, "{ status { status providers { online } } }")
        assert status["data"]["status"] == {"status": "ok", "providers": {"online": 1}}
        leader.provider_states.publish(
            ProviderStateChange("cg", "ONLINE", "OFFLINE", "3 failures", utc_now())
        )
        with trio.fail_after(5):
            while board.state("cg") != "OFFLINE":
                await trio.sleep(0.02)
        assert board.records["cg"].reason == "3 failures"
