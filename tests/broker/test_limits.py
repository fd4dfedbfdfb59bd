"""Upstream rate limits and breakers shared by every replica (gateway/broker/limits.py),
against a real redis-server on loopback: two replicas spend one budget; a circuit one of them
opened is open for the other; with Redis down each falls back to its local limits at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gateway.broker import BrokerClient
from gateway.broker.limits import SharedBreakers, SharedCircuitBreaker, SharedRateLimiter
from gateway.config import BreakerSpec, RateLimitWindow
from gateway.config.broker import BrokerSettings
from gateway.upstream.breaker import BreakerState
from tests.redis_server import RedisServer

WINDOW = RateLimitWindow(limit=3, seconds=1.0, name="second")


@asynccontextmanager
async def client(server: RedisServer) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(BrokerSettings(server.url, timeout=0.5)) as broker:
        yield broker


async def test_two_replicas_spend_one_rate_limit(redis_server: RedisServer) -> None:
    async with client(redis_server) as a_client, client(redis_server) as b_client:
        a = SharedRateLimiter("cg", [WINDOW], client=a_client)
        b = SharedRateLimiter("cg", [WINDOW], client=b_client)
        began = trio.current_time()
        with trio.fail_after(5):
            for _ in range(3):
                await a.acquire()
            assert trio.current_time() - began < 0.5  # the first three fit at once
            await b.acquire()  # b has granted nothing itself, but the window is full
        assert trio.current_time() - began >= 0.8
        assert b.shared_waits >= 1


async def test_redis_down_falls_back_to_the_local_limit_at_once(
    redis_server: RedisServer,
) -> None:
    async with client(redis_server) as a_client:
        limiter = SharedRateLimiter("cg", [WINDOW], client=a_client)
        redis_server.pause()
        with trio.fail_after(3):
            for _ in range(3):
                await limiter.acquire()  # not blocked by the broker being away
        assert limiter.granted == 3


async def test_a_circuit_opened_on_one_replica_is_open_on_the_other(
    redis_server: RedisServer,
) -> None:
    spec = BreakerSpec(failure_threshold=2, cooldown_seconds=30)
    async with client(redis_server) as a_client, client(redis_server) as b_client:
        shared_a, shared_b = SharedBreakers(a_client), SharedBreakers(b_client)
        a = SharedCircuitBreaker(spec, shared=shared_a, provider_id="cg")
        b = SharedCircuitBreaker(spec, shared=shared_b, provider_id="cg")
        async with trio.open_nursery() as nursery:
            await nursery.start(shared_a.run)
            await nursery.start(shared_b.run)
            for _ in range(2):
                assert a.allow()
                a.record_failure()
            assert a.state is BreakerState.OPEN
            with trio.fail_after(3):
                while b.allow():
                    b.release()
                    await trio.sleep(0.05)
            assert b.state is BreakerState.OPEN and b.retry_in() > 20
            a.reset()  # closed again here (an operator, or a probe that succeeded)
            with trio.fail_after(3):
                while not b.would_allow():
                    await trio.sleep(0.05)
            assert b.state is BreakerState.CLOSED
            nursery.cancel_scope.cancel()
