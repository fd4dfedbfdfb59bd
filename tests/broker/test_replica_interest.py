"""Live-stream interest across replicas (gateway/sources/replica_interest.py), on a real Redis.

- A subscriber on a follower to a symbol nobody configured gets live ticks for it from the
  leader's exchange stream (the WebSocket simulator), and once it leaves the leader's stream
  unsubscribes the symbol again: the same query works on every replica.
- A replica that died without a word (published once, never renewed) stops counting after the
  TTL.
- Redis restarting (its data lost) does not lose a follower's interest: it is published again;
  while Redis is down the replica's own interest works as before.
- What the leader holds for others is bounded and only symbols the asset table knows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.broker import BrokerClient, LeaderLease
from gateway.config import ProviderConfig, ProvidersFile
from gateway.config.broker import BrokerSettings
from gateway.nursery import RunningGateway
from gateway.sources.interest import SymbolInterest
from gateway.sources.replica_interest import ReplicaInterest
from tests.conftest import StartGateway
from tests.redis_server import RedisServer
from tests.simulator.ws import run_ws_simulator

TTL = 1.0  # the lease, and so the interest TTL


def broker(server: RedisServer) -> BrokerSettings:
    return BrokerSettings(server.url, block=0.2, timeout=0.5, lease=TTL)


def binance_stream(url: str) -> ProviderConfig:
    return ProviderConfig(
        id="binance-stream",
        name="Binance stream",
        categories=("MARKET_DATA",),
        base_url=url,
        timeout_seconds=2,
    )


@asynccontextmanager
async def price_ticks(running: RunningGateway, symbol: str) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["type"] == "connection_ack"
        query = "subscription($s: [String!]!) { priceTicks(symbols: $s) { symbol usd provider } }"
        payload = {"query": query, "variables": {"s": [symbol]}}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        yield ws


async def until(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_a_follower_subscriber_gets_live_ticks_of_an_unconfigured_symbol(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    async with run_ws_simulator() as exchanges:
        providers = ProvidersFile((binance_stream(exchanges.url("binance")),))
        leader = await start_gateway(providers, broker=broker(redis_server), symbols=("BTC",))
        assert leader.services.replication is not None
        await until(leader.services.replication.lease.holds, 5)
        follower = await start_gateway(providers, broker=broker(redis_server), symbols=("BTC",))
        assert follower.services.replication is not None
        await until(lambda: follower.services.replication.client.up, 5)  # type: ignore[union-attr]
        assert not follower.services.replication.lease.holds()
        await until(lambda: "BTC" in exchanges.subscribed("binance"), 10)
        assert "SOL" not in exchanges.subscribed("binance")

        async with price_ticks(follower, "SOL") as ws:
            # published by the follower, read by the leader, subscribed by its stream: quickly
            await until(lambda: "SOL" in exchanges.subscribed("binance"), 2.5)
            await trio.sleep(1.1)  # the stream publishes at most one tick per symbol per second
            exchanges.set_price("binance", "SOL", 181.25)
            with trio.fail_after(5):
                while True:
                    tick = json.loads(await ws.get_message())["payload"]["data"]["priceTicks"]
                    if tick["usd"] == 181.25:
                        break
            assert tick == {"symbol": "SOL", "usd": 181.25, "provider": "binance-stream"}
        # The follower's last SOL subscriber left: the leader's stream lets SOL go.
        leader_interest = leader.services.interest
        assert leader_interest is not None
        await until(lambda: "SOL" not in leader_interest, 2 * TTL + 1)
        await until(lambda: "SOL" not in exchanges.subscribed("binance"), 5)
        assert "BTC" in exchanges.subscribed("binance")  # configured: never dropped


@asynccontextmanager
async def leading(server: RedisServer, interest: SymbolInterest) -> AsyncIterator[ReplicaInterest]:
    """A replica that holds the collector lease and runs its ReplicaInterest."""
    async with BrokerClient(broker(server)) as client:
        lease = LeaderLease(client)
        shared = ReplicaInterest(lease, interest)
        async with trio.open_nursery() as nursery:

            async def work(token: int) -> None:
                pass

            await nursery.start(lease.lead, work)
            await until(lease.holds, 5)
            nursery.start_soon(shared.run)
            yield shared
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def follower(server: RedisServer, interest: SymbolInterest) -> AsyncIterator[ReplicaInterest]:
    async with BrokerClient(broker(server)) as client:
        shared = ReplicaInterest(LeaderLease(client), interest)  # never leads
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shared.run)
            yield shared
            nursery.cancel_scope.cancel()


async def test_a_dead_replicas_interest_is_dropped_after_the_ttl(
    redis_server: RedisServer,
) -> None:
    interest = SymbolInterest(["BTC"])
    async with (
        leading(redis_server, interest),
        BrokerClient(broker(redis_server)) as client,
    ):
        dead = ReplicaInterest(LeaderLease(client), SymbolInterest())
        await dead.publish(frozenset({"SOL", "ETH"}))  # its last words: never renewed
        await until(lambda: interest.shared == {"SOL", "ETH"}, 2)
        held_from = trio.current_time()
        await until(lambda: not interest.shared, TTL + 2)
        assert trio.current_time() - held_from > TTL / 3, "dropped before its TTL ran out"
        assert interest.symbols == {"BTC"}


async def test_interest_survives_a_redis_restart_and_local_interest_works_while_down(
    redis_server: RedisServer,
) -> None:
    leader_interest = SymbolInterest(["BTC"])
    asking = SymbolInterest(["BTC"])
    async with (
        leading(redis_server, leader_interest),
        follower(redis_server, asking) as shared,
        BrokerClient(broker(redis_server)) as client,
    ):
        entries = client.key("interest", "symbols")
        with asking.hold(["SOL"]):
            await until(lambda: "SOL" in leader_interest, 2)
            redis_server.pause()
            with asking.hold(["ETH"]):  # Redis down: the replica's own interest still works
                assert asking.symbols == {"BTC", "SOL", "ETH"}
                await trio.sleep(0.3)
            redis_server.resume()  # empty: every key is gone
            for restarted in (False, True):
                if restarted:  # a blip with no change of holds: the next renewal repairs it
                    redis_server.pause()
                    redis_server.resume()
                with trio.fail_after(TTL + 3):
                    while await _entry(client, entries, shared.replica) != b"SOL":
                        await trio.sleep(0.05)
            await until(lambda: leader_interest.shared == {"SOL"}, 4 * TTL + 3)


async def _entry(client: BrokerClient, key: str, replica: str) -> bytes | None:
    try:
        return await client.redis.hget(key, replica)
    except Exception:  # Redis still starting, or the pooled connection died with it
        return None


async def test_shared_interest_is_bounded_and_known_symbols_only(
    redis_server: RedisServer,
) -> None:
    interest = SymbolInterest(["BTC"], max_symbols=2)
    async with (
        leading(redis_server, interest) as shared,
        BrokerClient(broker(redis_server)) as client,
    ):
        await client.redis.hset(
            client.key("interest", "symbols"), {"rogue": "SOL ETH DOGE NOTACOIN " + "X" * 5000}
        )
        await client.redis.zadd(client.key("interest", "expiry"), {"rogue": 2**50})
        await until(lambda: len(interest.shared) == 2, 2)
        assert interest.shared == {"DOGE", "ETH"}  # the first two known ones, sorted
        assert shared.truncated >= 1
        assert "NOTACOIN" not in interest
