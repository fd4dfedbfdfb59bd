"""The broker-backed bus (gateway/broker/bus.py) against a real redis-server on loopback.

Two `BrokerBus`es stand for two replicas: every event published on one reaches the
subscribers of both, once, for every topic; a fenced topic is refused without the current lease
token (by Redis, not only by the publisher); a Redis outage ends subscriptions with
BROKER_UNAVAILABLE and they work again once it is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from gateway.broker import BrokerBus, BrokerClient
from gateway.chain_models import ChainHead, GasPrice, NodeHead
from gateway.config.broker import BrokerSettings
from gateway.errors import BrokerUnavailable
from gateway.models import AlertRecord, PriceTick, ProviderStateChange
from gateway.news_models import ArticleSource, FearGreedPoint, StoredArticle, StoredSentiment
from gateway.onchain_models import WhaleTransfer
from gateway.pubsub import Subscriber
from gateway.upstream.pool import RotationEvent
from tests.redis_server import RedisServer

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

# One event of every topic of the EventBus, with nested dataclasses, tuples and None.
SAMPLES: dict[str, Any] = {
    "prices": PriceTick("BTC", 97000.5, "coingecko", NOW, 1.9e12, None, -1.25),
    "provider_states": ProviderStateChange("coingecko", "ONLINE", "DEGRADED", "slow", NOW),
    "rotations": RotationEvent("MARKET_DATA", None, "binance", "failure", NOW),
    "alerts": AlertRecord(7, "HIGH", "provider_offline", "coingecko is offline", None, NOW),
    "news": StoredArticle(
        3,
        "BTC up",
        "https://example.test/a",
        "feed",
        NOW,
        None,
        ("BTC",),
        (ArticleSource("feed", "https://example.test/a", NOW),),
        StoredSentiment("positive", 0.8, 0.9, "minilm"),
    ),
    "fear_greed": FearGreedPoint(42, "Fear", NOW, "alternative_me"),
    "chain_heads": ChainHead(
        "ethereum", 100, "rpc-a", 0, NOW, (NodeHead("ethereum", "rpc-a", 100, 0, False, None, NOW),)
    ),
    "gas": GasPrice("ethereum", 1.0, 2.0, 3.5, None, "gwei", "FEE_HISTORY", "rpc-a", NOW, 100),
    "whales": WhaleTransfer(
        "ethereum", "0xabc", -1, "0x1", "0x2", "ETH", 500.0, 1.5e6, NOW, "rpc-a", 100
    ),
}


def settings(server: RedisServer, **changes: Any) -> BrokerSettings:
    base = BrokerSettings(server.url, block=0.2, timeout=0.5, lease=1.0, retention=1000)
    return BrokerSettings(**{**base.__dict__, **changes})


@asynccontextmanager
async def replica(
    server: RedisServer, nursery: trio.Nursery, token: int | None = 1, **changes: Any
) -> AsyncIterator[BrokerBus]:
    async with BrokerClient(settings(server, **changes)) as client:
        bus = BrokerBus(64, client, fence=lambda: token)
        async with trio.open_nursery() as inner:
            await inner.start(bus.run)
            with trio.fail_after(5):
                while not client.up:
                    await trio.sleep(0.01)
            yield bus
            inner.cancel_scope.cancel()


async def hold_lease(bus: BrokerBus, token: int) -> None:
    await bus.client.redis.set(bus.client.key("leader"), str(token))


async def receive(subscriber: Subscriber[Any], timeout: float = 3) -> Any:
    with trio.fail_after(timeout):
        return await subscriber.receive()


async def test_every_topic_reaches_every_replica_once(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with replica(redis_server, nursery) as a, replica(redis_server, nursery) as b:
        await hold_lease(a, 1)
        for name, event in SAMPLES.items():
            topic_a = next(t for t in a.topics if t.name == name)
            topic_b = next(t for t in b.topics if t.name == name)
            with topic_a.subscribe() as on_a, topic_b.subscribe() as on_b:
                topic_a.publish(event)
                assert await receive(on_a) == event, name
                assert await receive(on_b) == event, name
                await trio.sleep(0.3)  # nothing else arrives: exactly once
                assert on_a.pending == 0 and on_b.pending == 0, name


async def test_fenced_topics_need_the_current_lease_token(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    fenced: list[bool] = []
    async with (
        replica(redis_server, nursery, token=1) as old,
        replica(redis_server, nursery, token=None) as follower,
    ):
        old.on_fenced = lambda: fenced.append(True)
        await hold_lease(old, 2)  # another replica was elected since (token 2)
        with follower.prices.subscribe() as ticks, follower.alerts.subscribe() as alerts:
            old.prices.publish(SAMPLES["prices"])  # a deposed leader's late tick: Redis refuses
            follower.prices.publish(SAMPLES["prices"])  # no lease at all: refused at once
            follower.alerts.publish(SAMPLES["alerts"])  # any replica may raise an alert
            assert await receive(alerts) == SAMPLES["alerts"]
            await trio.sleep(0.5)
            assert ticks.pending == 0
        assert fenced == [True]
        assert old.refused == 1 and follower.refused == 1


async def test_backlog_reads_events_up_to_a_position(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with replica(redis_server, nursery) as a, replica(redis_server, nursery) as b:
        await hold_lease(a, 1)
        ticks = [
            PriceTick("BTC", 100.0 + i, "coingecko", NOW + timedelta(seconds=i)) for i in range(3)
        ]
        with b.prices.subscribe() as seen:
            for tick in ticks:
                a.prices.publish(tick)
            for _ in ticks:
                await receive(seen)
        position = b.prices.position()
        a.prices.publish(PriceTick("BTC", 200.0, "coingecko", NOW + timedelta(seconds=9)))
        backlog = await b.prices.backlog(position, NOW - timedelta(seconds=1))
        assert backlog == ticks  # up to the position, not after it


async def test_redis_outage_fails_subscriptions_and_they_resume(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with replica(redis_server, nursery) as a, replica(redis_server, nursery) as b:
        await hold_lease(a, 1)
        with b.prices.subscribe() as live:
            redis_server.pause()
            with trio.fail_after(5), pytest.raises(BrokerUnavailable) as failed:
                await live.receive()  # an error, not silence
        assert failed.value.code == "BROKER_UNAVAILABLE"
        assert not b.client.up and b.client.reason
        with pytest.raises(BrokerUnavailable), b.prices.subscribe():
            pass  # refused at once while Redis is down
        a.prices.publish(SAMPLES["prices"])  # kept in the outbox meanwhile
        redis_server.resume()
        with trio.fail_after(10):
            while not b.client.up:
                await trio.sleep(0.05)
        await hold_lease(a, 1)  # the restarted Redis lost its keys (no persistence)
        with b.prices.subscribe() as live:
            a.prices.publish(SAMPLES["prices"])
            assert await receive(live, 10) == SAMPLES["prices"]


async def test_a_full_outbox_drops_the_oldest_event(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with replica(redis_server, nursery, outbox=2) as a:
        redis_server.pause()
        with trio.fail_after(5):
            while a.client.up:
                await trio.sleep(0.02)
        for _ in range(5):
            a.alerts.publish(SAMPLES["alerts"])
        assert a.pending <= 2 and a.dropped >= 3


async def test_an_undecodable_entry_is_skipped_and_counted(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with replica(redis_server, nursery) as a:
        await hold_lease(a, 1)
        with a.prices.subscribe() as ticks:
            # Another gateway version (or a person with redis-cli) wrote this.
            await a.client.redis.xadd(a.prices.stream, {"e": b'{"symbol": 1}'})
            a.prices.publish(SAMPLES["prices"])
            assert await receive(ticks) == SAMPLES["prices"]
        assert a.undecodable == 1
